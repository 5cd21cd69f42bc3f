"""Structural parsing of a safetensors header into a tensor index.

A safetensors file is ``<u64 little-endian N> <N bytes of JSON header> <data>``.
The header maps tensor names to ``{"dtype", "shape", "data_offsets": [begin,
end]}`` relative to the start of the data. This module checks the header the
way the reference library does, without trusting it: a length limit, valid
JSON, known dtypes, ``dtype × shape == end - begin``, offsets inside the file,
no overlaps and no holes. Nothing is executed and no tensor data is read.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from strongroom.errors import InvalidInput

__all__ = ["DTYPE_SIZES", "MAX_HEADER_SIZE", "TensorEntry", "parse_header", "read_index"]

#: The reference implementation refuses headers above 100 MB.
MAX_HEADER_SIZE = 100_000_000

#: Bytes per element of every safetensors dtype strongroom accepts.
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: absolute byte range [start, end) in the plaintext file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    def to_json(self, file: str) -> dict[str, Any]:
        """The manifest form of this entry."""
        return {
            "file": file,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "start": self.start,
            "end": self.end,
        }


def parse_header(
    prefix: bytes, file_size: int, *, obj: str
) -> tuple[list[TensorEntry], dict[str, str]]:
    """Parse and check a safetensors header; ``prefix`` holds at least its first 8+N bytes."""

    def bad(why: str) -> InvalidInput:
        return InvalidInput(
            f"not a valid safetensors file: {why}",
            obj=obj,
            remedy="import a file written by the safetensors library, or import it as an opaque file",
        )

    if file_size < 8 or len(prefix) < 8:
        raise bad("shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_SIZE:
        raise bad(f"header length {n} exceeds the {MAX_HEADER_SIZE}-byte limit")
    if 8 + n > file_size:
        raise bad(f"header length {n} runs past the end of the file ({file_size} bytes)")
    if len(prefix) < 8 + n:
        raise bad("header truncated")
    raw = bytes(prefix[8 : 8 + n])
    if not raw.startswith(b"{"):
        raise bad("header does not start with a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"header is not valid JSON ({type(exc).__name__})") from exc
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")

    metadata: dict[str, str] = {}
    entries: list[TensorEntry] = []
    data_start = 8 + n
    data_size = file_size - data_start
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in info.items()
            ):
                raise bad("__metadata__ must map strings to strings")
            metadata = dict(info)
            continue
        if not isinstance(info, dict):
            raise bad(f"tensor {name!r} is not an object")
        dtype = info.get("dtype")
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        if dtype not in DTYPE_SIZES:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise bad(f"tensor {name!r} has an invalid shape")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise bad(f"tensor {name!r} has invalid data_offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise bad(
                f"tensor {name!r} offsets [{begin}, {end}) lie outside the data ({data_size} bytes)"
            )
        expected = math.prod(shape) * DTYPE_SIZES[dtype]
        if end - begin != expected:
            raise bad(
                f"tensor {name!r}: {dtype} × {shape} is {expected} bytes but its offsets span {end - begin}"
            )
        entries.append(TensorEntry(name, dtype, tuple(shape), data_start + begin, data_start + end))

    position = data_start
    for entry in sorted(entries, key=lambda e: (e.start, e.end)):
        if entry.start < position:
            raise bad(f"tensor {entry.name!r} overlaps the tensor before it")
        if entry.start > position:
            raise bad(f"a hole of {entry.start - position} bytes lies before tensor {entry.name!r}")
        position = entry.end
    if position != file_size:
        raise bad(f"{file_size - position} bytes after the last tensor are not described")
    entries.sort(key=lambda e: e.start)
    return entries, metadata


def read_index(path: str, *, obj: str | None = None) -> tuple[list[TensorEntry], dict[str, str]]:
    """Read and check the header of the safetensors file at ``path``."""
    import os

    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) == 8:
            (n,) = struct.unpack("<Q", head)
            if n <= MAX_HEADER_SIZE and 8 + n <= size:
                head += fh.read(n)
    return parse_header(head, size, obj=obj or path)
