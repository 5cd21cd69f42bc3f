"""age's ASCII armor (C2SP age spec, "ASCII armor"): strict PEM-like text around an age file.

An armored file is ``-----BEGIN AGE ENCRYPTED FILE-----``, the age file in
standard padded base64 at 64 columns a line (the last line shorter or full,
never empty), and ``-----END AGE ENCRYPTED FILE-----``. Readers here are as
strict as the testkit expects:

- lines end in LF or CRLF; the last line may lack its end of line;
- whitespace (space, tab, CR, LF) is allowed before the first and after the
  last line, at most :data:`MAX_OUTER_WHITESPACE` bytes each side, and nowhere
  else: not inside a line, not as an empty line;
- no armor headers, no PGP checksum, no other label, only canonical base64 with
  padding on the last line.

Anything else is an :class:`~strongroom.errors.ArmorError`. What the armor
holds is then an ordinary age file for :mod:`strongroom.crypto.age` (an empty
one is a header failure there, as the testkit says).

Use it like this::

    text = armor(age.encrypt(data, recipients))
    data = age.decrypt(dearmor(text), identities)
    if is_armored(first_bytes): ...

    with ArmoredWriter(out_file) as armored:   # streaming: 48 bytes in, 64 columns out
        age.encrypt_stream(src, armored, recipients)

Armor is for files sent as text (keys, share files, notes); the reader works on
whole buffers.
"""

from __future__ import annotations

import base64
import binascii
from typing import BinaryIO

from strongroom.errors import ArmorError

__all__ = ["BEGIN", "END", "MAX_OUTER_WHITESPACE", "ArmoredWriter", "armor", "dearmor", "is_armored"]

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
#: Bytes of whitespace allowed before and after the armor (as the age tool allows).
MAX_OUTER_WHITESPACE = 1024
_COLUMNS = 64
_WHITESPACE = b" \t\r\n"
_OBJ = "armored age file"


def armor(data: bytes | bytearray | memoryview) -> bytes:
    """The armored text of the age file ``data``."""
    encoded = base64.b64encode(bytes(data))
    lines = [encoded[i : i + _COLUMNS] for i in range(0, len(encoded), _COLUMNS)]
    return b"\n".join([BEGIN, *lines, END]) + b"\n"


class ArmoredWriter:
    """A write-only stream that armors what is written to it into ``dst``; close() ends it."""

    _LINE_BYTES = _COLUMNS // 4 * 3

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self._pending = bytearray()
        self._closed = False
        dst.write(BEGIN + b"\n")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer ``data`` and write every whole 64-column line it completes."""
        self._pending += data
        whole = len(self._pending) - len(self._pending) % self._LINE_BYTES
        if whole:
            encoded = base64.b64encode(self._pending[:whole])
            self._dst.write(b"".join(encoded[i : i + _COLUMNS] + b"\n"
                                     for i in range(0, len(encoded), _COLUMNS)))
            del self._pending[:whole]
        return len(data)

    def close(self) -> None:
        """Write the last (short or empty) line and the END line."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            self._dst.write(base64.b64encode(self._pending) + b"\n")
        self._dst.write(END + b"\n")

    def __enter__(self) -> ArmoredWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_armored(prefix: bytes | bytearray | memoryview) -> bool:
    """Whether data starting with ``prefix`` (read at least 1 KiB + 34 bytes) looks armored."""
    return bytes(prefix).lstrip(_WHITESPACE).startswith(BEGIN)


def _error(message: str) -> ArmorError:
    return ArmorError(message, obj=_OBJ)


def dearmor(text: bytes | bytearray | memoryview) -> bytes:
    """The age file inside armored ``text``; :class:`ArmorError` if the armor is not strict."""
    data = bytes(text)
    inner = data.lstrip(_WHITESPACE)
    if len(data) - len(inner) > MAX_OUTER_WHITESPACE:
        raise _error(f"more than {MAX_OUTER_WHITESPACE} bytes of whitespace before the armor")
    stripped = inner.rstrip(_WHITESPACE)
    if len(inner) - len(stripped) > MAX_OUTER_WHITESPACE:
        raise _error(f"more than {MAX_OUTER_WHITESPACE} bytes of whitespace after the armor")
    lines = [line.removesuffix(b"\r") for line in stripped.split(b"\n")]
    if lines[0] != BEGIN:
        raise _error("the first line is not -----BEGIN AGE ENCRYPTED FILE-----")
    if len(lines) < 2 or lines[-1] != END:
        raise _error("the last line is not -----END AGE ENCRYPTED FILE----- "
                     "(truncated, or something follows it)")
    body = lines[1:-1]
    out = bytearray()
    for number, line in enumerate(body, start=2):
        last = number == len(body) + 1
        if len(line) > _COLUMNS:
            raise _error(f"line {number} is longer than {_COLUMNS} columns")
        if not line:
            raise _error(f"line {number} is empty")
        if not last and len(line) != _COLUMNS:
            raise _error(f"line {number} is shorter than {_COLUMNS} columns but not the last")
        try:
            chunk = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise _error(f"line {number} is not valid base64") from None
        if base64.b64encode(chunk) != line:
            raise _error(f"line {number} is not canonical padded base64")
        out += chunk
    return bytes(out)
