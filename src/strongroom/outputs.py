"""Output paths named by the user (``-o FILE``): written in place or replaced whole.

One rule for every command that writes where it is told:

- ``-`` (or no path) is standard output, written in place.
- A path that exists and is not a regular file — a character or block device
  such as ``/dev/null``, a FIFO, a socket — is opened and written in place; it
  is never replaced. So is any name directly in ``/dev`` or anywhere under ``/proc``
  (``/dev/stdout``, ``/dev/fd/3``): those names stand for open streams, not files to
  rename over. Directories below ``/dev`` such as ``/dev/shm`` hold ordinary files.
- A regular file (or a new name) is written to a temporary file in the same
  directory, fsync'd, and renamed over the target only when the writer
  succeeded; on any failure the temporary file is removed, so no partial output
  and no temporary file is left behind. New files get mode 0600.
- A symbolic link to a regular file (or to nothing) is refused: renaming over
  it would replace the link, and writing through it could land outside the
  directory the user named.

What was written in place (stdout, a FIFO) cannot be taken back: a writer that
fails part-way has already delivered a prefix there.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from strongroom.errors import AlreadyExists, InvalidInput, StorageError

__all__ = ["PRIVATE_FILE_MODE", "is_stdout", "open_output", "write_output"]

#: Mode of the files this module creates.
PRIVATE_FILE_MODE = 0o600

#: Directories whose names are streams and devices: written in place, never renamed over
#: (/dev itself, and everything under /proc; /dev/shm and other directories below /dev
#: hold ordinary files and follow the ordinary rules).
_DEV, _PROC = Path("/dev"), Path("/proc")


def is_stdout(path: Path | str | None) -> bool:
    """Whether ``path`` means standard output (absent or ``-``)."""
    return path is None or str(path) == "-"


@contextlib.contextmanager
def open_output(
    path: Path | str | None, *, overwrite: bool = True, mode: int = PRIVATE_FILE_MODE
) -> Iterator[BinaryIO]:
    """A binary stream for ``path``; a regular file appears there only if the block succeeds.

    ``overwrite=False`` refuses an existing regular file (checked before and,
    atomically, at the rename). ``mode`` applies to a newly created file.
    """
    if path is None or is_stdout(path):
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if _in_place(target):
        with _open_in_place(target) as stream:
            yield stream
        return
    with _replace(target, overwrite=overwrite, mode=mode) as stream:
        yield stream


def write_output(
    path: Path | str | None, data: bytes, *, overwrite: bool = True, mode: int = PRIVATE_FILE_MODE
) -> None:
    """Write ``data`` to ``path`` by the rules of :func:`open_output`."""
    with open_output(path, overwrite=overwrite, mode=mode) as out:
        out.write(data)


def _in_place(path: Path) -> bool:
    """Whether ``path`` is written in place (not a regular file); refuses unsafe links."""
    try:
        parent = path.parent.resolve()
    except OSError:
        parent = path.parent
    if parent in (_DEV, _PROC) or _PROC in parent.parents:
        return True  # /dev/null, /dev/stdout, /dev/fd/3 (/proc/self/fd): names of streams
    # below /dev (e.g. /dev/shm, a tmpfs): what is there decides, as anywhere else
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot inspect the output path: {exc.strerror}", obj=str(path)) from None
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError:
            raise _symlink(path) from None  # dangling
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            raise _symlink(path)
    if stat.S_ISDIR(st.st_mode):
        raise InvalidInput("the output path is a directory", obj=str(path),
                           remedy="name a file inside it")
    return not stat.S_ISREG(st.st_mode)


@contextlib.contextmanager
def _open_in_place(path: Path) -> Iterator[BinaryIO]:
    """Open a device, FIFO or stream name for writing, without creating or replacing it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(f"cannot open the output for writing: {exc.strerror}",
                           obj=str(path)) from None
    with os.fdopen(fd, "wb") as stream:
        yield stream


@contextlib.contextmanager
def _replace(path: Path, *, overwrite: bool, mode: int) -> Iterator[BinaryIO]:
    """Write a temporary file beside ``path`` and rename it into place on success."""
    import tempfile  # (with shutil and random) only when a file is written: start-up time

    if not overwrite and os.path.lexists(path):
        raise _exists(path)
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StorageError(f"cannot create a file there: {exc.strerror}", obj=str(path),
                           remedy="check that the directory exists and is writable") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as stream:
            if mode != PRIVATE_FILE_MODE:  # mkstemp creates 0600
                os.fchmod(stream.fileno(), mode)
            yield stream
            _settle(stream, tmp, path, overwrite=overwrite)
    finally:
        tmp.unlink(missing_ok=True)  # gone after a rename; left by a failure or a link()
    _sync_directory(directory)


def _settle(stream: BinaryIO, tmp: Path, path: Path, *, overwrite: bool) -> None:
    """Flush and fsync the temporary file, then give it the target's name."""
    try:
        stream.flush()
        os.fsync(stream.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write the output: {exc.strerror}", obj=str(path)) from None


def _link_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if no such name exists (atomically where possible)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError:  # a filesystem without hard links: check, then rename (a narrow race)
        if os.path.lexists(path):
            raise _exists(path) from None
        os.rename(tmp, path)


def _symlink(path: Path) -> InvalidInput:
    return InvalidInput(
        "the output path is a symbolic link; strongroom does not write through links to files",
        obj=str(path),
        remedy="name the file itself (the link's target), or remove the link",
    )


def _exists(path: Path) -> AlreadyExists:
    return AlreadyExists("refusing to overwrite an existing file", obj=str(path),
                         remedy="choose another path or move the old file away")


def _sync_directory(directory: Path) -> None:
    """Make a rename durable; not every filesystem allows it, so failures are ignored."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
