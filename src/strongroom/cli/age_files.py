"""What ``strongroom encrypt|decrypt|keygen`` do, without the Typer declarations.

:mod:`strongroom.cli.age_cmd` declares the three commands for the Typer app
and calls these functions; :mod:`strongroom.cli.entry` calls them straight
from the console script, so encrypting a file does not first load Typer, Rich
and pydantic. Both pass the same arguments (``tests/cli/test_entry.py``
compares them), so the commands behave the same either way.

Output goes through :mod:`strongroom.outputs`: a regular file is written to a
temporary name in the same directory, synced and renamed into place, so a
failed run (a corrupted input, a wrong key) leaves no partial output file;
stdout, FIFOs and devices such as ``/dev/null`` are written in place and never
replaced. Writing in place cannot be taken back: a decryption that fails
part-way has already written a prefix there.

Passphrases (``encrypt -p``, and ``decrypt`` without ``-i`` of a passphrase
file) are asked on the terminal (``/dev/tty``), never read from stdin, which
carries the data; for automation, ``STRONGROOM_PASSPHRASE_FILE`` names a file
whose first line is the passphrase. ``decrypt`` recognises ASCII armor by its
first line and removes it (strictly) before decrypting.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from strongroom.crypto import age, age_armor
from strongroom.errors import InvalidInput, NoIdentityMatched, NotFound
from strongroom.outputs import is_stdout, open_output, write_output

__all__ = ["PASSPHRASE_FILE_ENV", "decrypt", "encrypt", "keygen"]

#: Names a file whose first line is the passphrase (instead of asking on the terminal).
PASSPHRASE_FILE_ENV = "STRONGROOM_PASSPHRASE_FILE"


@contextlib.contextmanager
def _input(path: Path | None) -> Iterator[tuple[BinaryIO, int | None]]:
    """The input stream and its size when known (a regular file)."""
    if path is None or str(path) == "-":
        yield sys.stdin.buffer, None
        return
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise NotFound("no such file", obj=str(path)) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read: {exc.strerror}", obj=str(path)) from None
    with f:
        st = os.fstat(f.fileno())
        yield f, st.st_size if stat.S_ISREG(st.st_mode) else None


@contextlib.contextmanager
def _output(path: Path | None, *, binary_to_terminal: bool) -> Iterator[BinaryIO]:
    """An output stream by the rules of :func:`strongroom.outputs.open_output`."""
    if is_stdout(path) and not binary_to_terminal and sys.stdout.isatty():
        raise InvalidInput(
            "refusing to write binary ciphertext to a terminal",
            remedy="use -o FILE or redirect stdout",
        )
    with open_output(path) as out:
        yield out


@contextlib.contextmanager
def _progress(description: str, size: int | None) -> Iterator[Callable[[int], None] | None]:
    """A progress bar when the size is known and stderr is a terminal, else nothing."""
    if size is None or not sys.stderr.isatty():
        yield None
        return
    from strongroom.cli.progress import byte_progress

    with byte_progress(description, size) as advance:
        yield advance


def _read_identities(paths: list[Path]) -> list[age.AgeIdentity]:
    identities: list[age.AgeIdentity] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound("no such identity file", obj=str(path)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read identity file: {exc}", obj=str(path)) from None
        try:
            identities.extend(age.parse_identities(text))
        except InvalidInput as exc:
            raise InvalidInput(exc.message, obj=f"identity file {path}") from None
    return identities


def _passphrase_from_file(path: str) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the passphrase file: {exc}", obj=PASSPHRASE_FILE_ENV) from None
    if not lines or not lines[0]:
        raise InvalidInput("the passphrase file's first line is empty", obj=PASSPHRASE_FILE_ENV)
    return lines[0]


def _ask_passphrase(*, confirm: bool) -> str:
    """The passphrase from $STRONGROOM_PASSPHRASE_FILE, else asked on the terminal."""
    path = os.environ.get(PASSPHRASE_FILE_ENV)
    if path:
        return _passphrase_from_file(path)
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        raise InvalidInput(
            "a passphrase is needed and there is no terminal to ask it on", obj="passphrase",
            remedy=f"run in a terminal, or set {PASSPHRASE_FILE_ENV} to a file (mode 0600) "
                   "whose first line is the passphrase") from None
    import getpass

    passphrase = getpass.getpass("Enter passphrase: ")
    if not passphrase:
        raise InvalidInput("the passphrase is empty", obj="passphrase")
    if confirm and getpass.getpass("Confirm passphrase: ") != passphrase:
        raise InvalidInput("the passphrases do not match", obj="passphrase")
    return passphrase


def encrypt(recipient: list[str] | None, output: Path | None, input_path: Path | None,
            passphrase: bool = False, armor: bool = False) -> None:
    """Encrypt ``input_path`` (stdin) to every recipient or a passphrase, into ``output``."""
    if passphrase and recipient:
        raise InvalidInput("-p cannot be combined with -r", obj="encrypt",
                           remedy="a passphrase must be the file's only recipient: drop -r or -p")
    if not recipient and not passphrase:
        raise InvalidInput("no recipients given",
                           remedy="pass -r age1pq1…/age1… at least once, or -p")
    recipients: list[age.Recipient]
    if passphrase:
        from strongroom.crypto import age_scrypt  # loads hashlib: only when asked for

        recipients = [age_scrypt.ScryptRecipient(_ask_passphrase(confirm=True))]
    else:
        recipients = [age.parse_recipient(r) for r in recipient or []]
    with (
        _input(input_path) as (src, size),
        _output(output, binary_to_terminal=armor) as dst,
        _progress("encrypt", size) as advance,
    ):
        if not armor:
            age.encrypt_stream(src, dst, recipients, progress=advance)
            return
        armored = age_armor.ArmoredWriter(dst)
        age.encrypt_stream(src, cast(BinaryIO, armored), recipients, progress=advance)
        armored.close()  # only on success: a failed run leaves no END line


class _Rejoined:
    """A stream whose first bytes were already read: ``head``, then the rest of ``rest``."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data


def _dearmored(src: BinaryIO) -> BinaryIO:
    """``src`` as an age file: armor recognised by its first line and removed, strictly."""
    head = src.read(len(age_armor.BEGIN) + age_armor.MAX_OUTER_WHITESPACE)
    if age_armor.is_armored(head):
        return io.BytesIO(age_armor.dearmor(head + src.read()))
    if src.seekable():
        src.seek(-len(head), io.SEEK_CUR)
        return src
    return cast(BinaryIO, _Rejoined(head, src))


def decrypt(identity: list[Path] | None, output: Path | None, input_path: Path | None) -> None:
    """Decrypt the age file ``input_path`` (stdin) with the identity files, into ``output``.

    Without identity files the file must be passphrase-encrypted; the passphrase
    is asked only once its scrypt stanza is found.
    """
    from strongroom.crypto import age_scrypt

    asked: list[bool] = []

    def ask() -> str:
        asked.append(True)
        return _ask_passphrase(confirm=False)

    identities = (_read_identities(identity) if identity
                  else [age_scrypt.ScryptIdentity(ask)])
    with (
        _input(input_path) as (src, size),
        _output(output, binary_to_terminal=True) as dst,
        _progress("decrypt", size) as advance,
    ):
        try:
            age.decrypt_stream(_dearmored(src), dst, identities, progress=advance)
        except NoIdentityMatched:
            if identity or asked:
                raise
            raise InvalidInput("no identity files given, and the file is not "
                               "passphrase-encrypted", remedy="pass -i FILE at least once") from None


def keygen(output: Path | None, pq: bool = False) -> None:
    """Write a new identity to ``output`` (stdout) like age-keygen; the public key to stderr.

    ``pq`` makes a hybrid ML-KEM-768 + X25519 key (``AGE-SECRET-KEY-PQ-1…``).
    """
    import datetime

    from strongroom.crypto import age_pq

    identity: age_pq.HybridIdentity | age.X25519Identity = (
        age_pq.HybridIdentity.generate() if pq else age.X25519Identity.generate())
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    public = str(identity.recipient)
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    write_output(output, text.encode("ascii"), overwrite=False)
    if is_stdout(output):
        return
    sys.stderr.write(f"Public key: {public}\n")
