"""Containers the scanners cannot look inside, recognised by their first bytes, and the refusal for them.

A scanner that cannot read a file has not shown it is safe. So a file whose
content is a 7-Zip, RAR, tar, compressed stream or other container that
strongroom does not open is refused, whatever its name, with the format named
and the remedy (extract it and scan what it holds). The same wording, "could
not scan", is used when a scanner itself fails: it is a refusal, not a finding.

Use it like this::

    fmt = container_format(head)          # "7-Zip archive", or None
    if fmt:
        raise cannot_scan(path, fmt)
"""

from __future__ import annotations

import re

from strongroom.errors import IntegrityError

__all__ = ["CONTAINER_FORMATS", "EXTRACT_REMEDY", "cannot_scan", "container_format", "is_npy"]

#: Remedy for a container strongroom does not open.
EXTRACT_REMEDY = "extract it and scan the files it holds, or obtain the weights as safetensors"

#: (format, pattern matched at the start of the file); first match wins.
CONTAINER_FORMATS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("7-Zip archive", re.compile(rb"7z\xbc\xaf\x27\x1c")),
    ("RAR archive", re.compile(rb"Rar!\x1a\x07(?:\x00|\x01\x00)")),
    ("gzip-compressed file", re.compile(rb"\x1f\x8b")),
    ("bzip2-compressed file", re.compile(rb"BZh[1-9](?:1AY&SY|\x17rE8P\x90)")),
    ("xz-compressed file", re.compile(rb"\xfd7zXZ\x00")),
    ("Zstandard-compressed file", re.compile(rb"\x28\xb5\x2f\xfd")),
    ("LZ4-compressed file", re.compile(rb"\x04\x22\x4d\x18")),
    ("spanned zip archive", re.compile(rb"PK(?:\x07\x08|00PK)")),
    ("Microsoft Cabinet archive", re.compile(rb"MSCF\x00\x00\x00\x00")),
    ("ar archive", re.compile(rb"!<arch>\n")),
    ("cpio archive", re.compile(rb"07070[127][0-9A-Fa-f]{8}")),
    # POSIX and GNU tar (torch's legacy checkpoint format among them): "ustar" at byte 257.
    ("tar archive", re.compile(rb".{257}ustar", re.DOTALL)),
)

_NPY_MAGIC = b"\x93NUMPY"


def container_format(head: bytes) -> str | None:
    """The name of the container format ``head`` (a file's first 512 bytes) starts, or None."""
    for name, pattern in CONTAINER_FORMATS:
        if pattern.match(head):
            return name
    return None


def is_npy(data: bytes) -> bool:
    """True when ``data`` starts with numpy's ``.npy`` magic."""
    return data[: len(_NPY_MAGIC)] == _NPY_MAGIC


def cannot_scan(obj: str, what: str, remedy: str = EXTRACT_REMEDY) -> IntegrityError:
    """The refusal for a file no scanner could read: "could not scan", never a finding."""
    return IntegrityError(f"could not scan: {what}", obj=obj, remedy=remedy)
