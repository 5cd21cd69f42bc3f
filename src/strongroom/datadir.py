"""The data directory's modes: 0700 for directories, 0600 for every file, from the first byte.

``STRONGROOM_HOME`` holds the database (and its WAL/SHM files), the audit
anchor, alerts, the agent's log, lock and socket. Nothing in it is for anyone
but the service account, so each is created private rather than tightened
afterwards (a chmod after creation leaves a window in which another user can
open the file and keep the descriptor):

- :func:`make_private_dir` creates the directory 0700 and tightens an
  existing one *before* anything is created in it;
- :func:`create_private_file` and :func:`open_private_append` create files
  with mode 0600 in the ``open()`` call itself. SQLite gives its ``-wal`` and
  ``-shm`` files the mode of the database file, so a database created here
  keeps them 0600 too.

:func:`loose_modes` lists what is looser, for ``strongroom doctor``;
:func:`require_vault` refuses (exit 2, creating nothing) a directory that holds no vault.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from strongroom.errors import ConfigError

__all__ = ["DIR_MODE", "FILE_MODE", "LooseMode", "create_private_file", "loose_modes",
           "make_private_dir", "open_private_append", "require_vault"]

#: Mode of every directory under the data directory, and of the data directory itself.
DIR_MODE = 0o700
#: Mode of every file (and socket) under the data directory.
FILE_MODE = 0o600


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if needed and make sure group and others have no access."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
        os.chmod(path, DIR_MODE)
    return path


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (it is never truncated)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE))


def open_private_append(path: Path) -> int:
    """A file descriptor appending to ``path``, which is created with mode 0600 if new."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)


@dataclass(frozen=True)
class LooseMode:
    """A path under the data directory that group or others may use."""

    path: Path
    mode: int
    wanted: int

    @property
    def remedy(self) -> str:
        """The command that fixes it."""
        return f"chmod {self.wanted:o} {self.path}"


def loose_modes(home: Path) -> list[LooseMode]:
    """Every directory, file or socket under ``home`` (itself included) looser than 0700/0600.

    Symbolic links are not followed (their own mode means nothing).
    """
    found: list[LooseMode] = []

    def check(path: Path, wanted: int) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            return  # vanished while walking
        if stat.S_ISLNK(st.st_mode):
            return
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            found.append(LooseMode(path, mode, wanted))

    if not home.is_dir():
        return found
    check(home, DIR_MODE)
    for root, dirs, files in os.walk(home):
        for name in dirs:
            check(Path(root, name), DIR_MODE)
        for name in files:
            check(Path(root, name), FILE_MODE)
    return found


def require_vault(home: Path, database_url: str | None) -> None:
    """Raise :class:`~strongroom.errors.ConfigError` (exit 2) when ``home`` holds no vault.

    With the default SQLite database the vault is ``home/strongroom.db``; with
    ``STRONGROOM_DATABASE_URL`` set the vault is in that database, and the
    keyring says whether it is initialised. Nothing is created either way:
    only ``strongroom init`` creates a data directory.
    """
    if database_url or (home / "strongroom.db").is_file():
        return
    raise ConfigError(
        f"no vault in {home}", obj=str(home),
        remedy="run the command where the vault is, set STRONGROOM_HOME to its data directory "
        "or STRONGROOM_URL to a strongroom server; `strongroom init` creates a new vault")
