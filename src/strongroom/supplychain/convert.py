"""Turn a pickle state dict that passed the scan into safetensors, without running its globals.

Use it like this::

    report = convert_to_safetensors(Path("pytorch_model.bin"), Path("out/model.safetensors"))
    report.tensors, report.skipped          # tensor count; non-tensor entries left out

The file is scanned first (:func:`strongroom.scanning.pickles.scan_pickle_file`).
Then a restricted :class:`pickle.Unpickler` reads it, whose ``find_class``
never imports anything: each allowlisted name maps to a small function
written here (torch's ``_rebuild_tensor_v2`` becomes a bounds-checked
``numpy`` strided view of the storage file inside the zip; ``OrderedDict`` is
``collections.OrderedDict``; numpy's array reconstructors refuse object
dtypes). Torch is never imported. The safetensors file is written by this
module (so BF16 survives without torch), checked with the vault's structural
header checks, and renamed into place only when complete.

Nested mappings are flattened with ``.`` (``{"model": {"w": t}}`` ->
``model.w``); scalars (epoch counters, strings) are reported in
``skipped``; any other object refuses the conversion.

What not to do: never add a ``find_class`` entry that returns a real
third-party callable that was not written to take hostile arguments.
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import secrets
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from strongroom.errors import AlreadyExists, IntegrityError, InvalidInput
from strongroom.scanning.pickles import TORCH_STORAGE_TYPES, is_zip, scan_pickle_file
from strongroom.scanning.tensorindex import DTYPE_SIZES, read_index

__all__ = ["ConvertReport", "convert_to_safetensors", "load_state_dict", "write_safetensors"]

_NUMPY_DTYPES: dict[str, str] = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
    "uint8": "U8", "bool": "BOOL",
}  # fmt: skip
_STORAGE_NUMPY: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}  # fmt: skip


@dataclass(frozen=True)
class Tensor:
    """A converted tensor: its safetensors dtype and a C-contiguous little-endian array."""

    dtype: str
    array: np.ndarray[Any, Any]


@dataclass(frozen=True)
class ConvertReport:
    """What a conversion wrote."""

    source: str
    dest: str
    tensors: int
    nbytes: int
    skipped: tuple[str, ...]


def _bad(obj: str, why: str) -> IntegrityError:
    return IntegrityError(
        why, obj=obj, remedy="convert the file with its publisher's tools, or do not use it"
    )


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _Storage:
    dtype: str
    data: np.ndarray[Any, Any]


class _NdarrayClass:
    """Stands for ``numpy.ndarray`` as an argument of ``_reconstruct``."""


class _ArrayBuilder:
    """What ``_reconstruct`` returns; BUILD's ``__setstate__`` fills it in."""

    def __init__(self, obj: str) -> None:
        self.obj = obj
        self.array: np.ndarray[Any, Any] | None = None

    def __setstate__(self, state: Any) -> None:
        try:
            _, shape, dtype, fortran, raw = state
        except (TypeError, ValueError):
            raise _bad(self.obj, "malformed numpy array state") from None
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise _bad(self.obj, "numpy array of Python objects")
        if not isinstance(raw, bytes | bytearray):
            raise _bad(self.obj, "numpy array data is not bytes")
        count = math.prod(int(d) for d in shape)
        if count * dtype.itemsize != len(raw):
            raise _bad(self.obj, "numpy array data length disagrees with its shape")
        flat = np.frombuffer(bytes(raw), dtype=dtype, count=count)
        self.array = flat.reshape(tuple(shape), order="F" if fortran else "C")


def _check_dims(obj: str, values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple | list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    ):
        raise _bad(obj, f"tensor {what} is not a tuple of non-negative integers")
    return tuple(values)


def _rebuild_tensor(obj: str) -> Callable[..., Tensor]:
    def rebuild(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> Tensor:
        if not isinstance(storage, _Storage):
            raise _bad(obj, "tensor storage is not a storage of this archive")
        shape = _check_dims(obj, size, "size")
        strides = _check_dims(obj, stride, "stride")
        if len(shape) != len(strides) or not isinstance(offset, int) or offset < 0:
            raise _bad(obj, "tensor size, stride and offset disagree")
        numel = len(storage.data)
        if math.prod(shape) > 0:
            last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
            if last >= numel:
                raise _bad(obj, f"tensor reaches element {last} of a {numel}-element storage")
            item = storage.data.itemsize
            view = np.lib.stride_tricks.as_strided(
                storage.data[offset:], shape=shape, strides=[s * item for s in strides],
                writeable=False,
            )  # fmt: skip
            array = np.ascontiguousarray(view)
        else:
            array = np.zeros(shape, dtype=storage.data.dtype)
        return Tensor(storage.dtype, array)

    return rebuild


def _frombuffer(obj: str) -> Callable[..., np.ndarray[Any, Any]]:
    def build(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray[Any, Any]:
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise _bad(obj, "numpy array of Python objects")
        if not isinstance(buf, bytes | bytearray | memoryview | pickle.PickleBuffer):
            raise _bad(obj, "numpy buffer is not bytes")
        dims = _check_dims(obj, shape, "shape")
        data = bytes(memoryview(buf))
        if math.prod(dims) * dtype.itemsize != len(data):
            raise _bad(obj, "numpy array data length disagrees with its shape")
        return np.frombuffer(data, dtype=dtype).reshape(dims, order="F" if order == "F" else "C")

    return build


def _scalar(obj: str) -> Callable[..., np.ndarray[Any, Any]]:
    def build(dtype: Any, data: Any = b"") -> np.ndarray[Any, Any]:
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
            raise _bad(obj, "numpy scalar of Python objects")
        if len(data) != dtype.itemsize:
            raise _bad(obj, "numpy scalar has the wrong size")
        return np.frombuffer(data, dtype=dtype).reshape(())

    return build


def _numpy_dtype(obj: str) -> Callable[..., np.dtype[Any]]:
    def build(spec: Any, align: Any = False, copy: Any = False) -> np.dtype[Any]:
        if not isinstance(spec, str) or not spec.isascii() or len(spec) > 8:
            raise _bad(obj, f"numpy dtype {spec!r} is not a plain type code")
        try:
            dt = np.dtype(spec)
        except TypeError:
            raise _bad(obj, f"unknown numpy dtype {spec!r}") from None
        if dt.hasobject or dt.fields is not None:
            raise _bad(obj, f"numpy dtype {spec!r} is not a plain numeric type")
        return dt

    return build


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    if not isinstance(text, str) or str(encoding).lower() not in ("latin1", "latin-1"):
        raise IntegrityError("_codecs.encode called with unexpected arguments", obj="pickle")
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise IntegrityError("builtins.bytes called with arguments", obj="pickle")
    return b""


class _RestrictedUnpickler(pickle.Unpickler):
    """Only the constructors written in this module; storages only from this archive."""

    def __init__(self, data: bytes, obj: str, storages: Callable[[str, int], bytes] | None) -> None:
        super().__init__(io.BytesIO(data))
        self.obj = obj
        self._storages = storages
        self._loaded: dict[str, _Storage] = {}
        reconstruct: Callable[..., _ArrayBuilder] = lambda cls, shape, code: _ArrayBuilder(obj)  # noqa: E731
        self._impls: dict[str, Any] = {
            "collections.OrderedDict": collections.OrderedDict,
            "torch._utils._rebuild_tensor_v2": _rebuild_tensor(obj),
            "torch._utils._rebuild_tensor": _rebuild_tensor(obj),
            "torch._utils._rebuild_parameter": lambda data, *_: data,
            "numpy.core.multiarray._reconstruct": reconstruct,
            "numpy._core.multiarray._reconstruct": reconstruct,
            "numpy.core.multiarray.scalar": _scalar(obj),
            "numpy._core.multiarray.scalar": _scalar(obj),
            "numpy.core.numeric._frombuffer": _frombuffer(obj),
            "numpy._core.numeric._frombuffer": _frombuffer(obj),
            "numpy.ndarray": _NdarrayClass,
            "numpy.dtype": _numpy_dtype(obj),
            "_codecs.encode": _latin1,
            "builtins.bytes": _empty_bytes,
            **{name: _StorageType(dt) for name, dt in TORCH_STORAGE_TYPES.items()},
        }

    def find_class(self, module: str, name: str) -> Any:
        """The implementation written here for an allowlisted global; refuses anything else."""
        impl = self._impls.get(f"{module}.{name}")
        if impl is None:
            raise _bad(self.obj, f"pickle references the global {module}.{name}")
        return impl

    def persistent_load(self, pid: Any) -> Any:
        """A torch storage read from the archive's ``data/<key>`` member."""
        if self._storages is None:
            raise _bad(self.obj, "persistent ids outside a torch zip archive are not supported")
        if (
            not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
            or not pid[2].isdigit() or not isinstance(pid[4], int)
        ):  # fmt: skip
            raise _bad(self.obj, "unexpected persistent id (not a torch storage)")
        kind, key, numel = pid[1], pid[2], pid[4]
        cached = self._loaded.get(key)
        if cached is not None:
            return cached
        dtype = np.dtype(_STORAGE_NUMPY[kind.dtype])
        raw = self._storages(key, numel * dtype.itemsize)
        storage = _Storage(kind.dtype, np.frombuffer(raw, dtype=dtype))
        self._loaded[key] = storage
        return storage


def _torch_zip(data: bytes, obj: str) -> tuple[bytes, Callable[[str, int], bytes]]:
    archive = zipfile.ZipFile(io.BytesIO(data))
    pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise _bad(obj, "not a torch zip checkpoint (expected exactly one <dir>/data.pkl)")
    prefix = pkls[0][: -len("data.pkl")]
    if f"{prefix}byteorder" in archive.namelist():
        order = archive.read(f"{prefix}byteorder").strip()
        if order != b"little":
            raise _bad(obj, f"checkpoint byte order {order!r} is not supported")

    def storage(key: str, nbytes: int) -> bytes:
        try:
            raw = archive.read(f"{prefix}data/{key}")
        except KeyError:
            raise _bad(obj, f"storage {key} is missing from the archive") from None
        if len(raw) < nbytes:
            raise _bad(obj, f"storage {key} is {len(raw)} bytes, {nbytes} expected")
        return raw[:nbytes]

    return archive.read(pkls[0]), storage


def load_state_dict(path: Path) -> tuple[dict[str, Tensor], list[str]]:
    """Scan, then read a state dict with the restricted unpickler: (tensors, skipped names)."""
    obj = str(path)
    data = path.read_bytes()
    scan_pickle_file(path, data=data)
    storages: Callable[[str, int], bytes] | None = None
    if is_zip(data):
        data, storages = _torch_zip(data, obj)
    try:
        root = _RestrictedUnpickler(data, obj, storages).load()
    except IntegrityError:
        raise
    except Exception as exc:  # the unpickler's own errors on malformed input
        raise _bad(obj, f"cannot read the state dict ({type(exc).__name__})") from None
    if not isinstance(root, Mapping):
        raise _bad(obj, "the pickle does not hold a state dict (a mapping of names to tensors)")
    tensors: dict[str, Tensor] = {}
    skipped: list[str] = []
    _flatten(root, "", tensors, skipped, obj)
    return tensors, skipped


def _flatten(
    node: Mapping[Any, Any], prefix: str, out: dict[str, Tensor], skipped: list[str], obj: str
) -> None:
    for key, value in node.items():
        if not isinstance(key, str):
            raise _bad(obj, f"state dict key {key!r} is not a string")
        name = prefix + key
        if isinstance(value, Mapping):
            _flatten(value, name + ".", out, skipped, obj)
        elif isinstance(value, Tensor):
            out[name] = value
        elif isinstance(value, _ArrayBuilder | np.ndarray):
            array = value.array if isinstance(value, _ArrayBuilder) else value
            if array is None or array.dtype.name not in _NUMPY_DTYPES:
                raise _bad(obj, f"entry {name!r} has an unsupported array type")
            le = array.astype(array.dtype.newbyteorder("<"), copy=False)
            out[name] = Tensor(_NUMPY_DTYPES[array.dtype.name], np.ascontiguousarray(le))
        elif value is None or isinstance(value, bool | int | float | str):
            skipped.append(name)
        else:
            raise _bad(obj, f"entry {name!r} is a {type(value).__name__}, not a tensor")
        if name in out and name in skipped:
            raise _bad(obj, f"entry {name!r} appears twice")


def write_safetensors(tensors: Mapping[str, Tensor], dest: Path, metadata: Mapping[str, str]) -> int:
    """Write ``tensors`` as a safetensors file at ``dest`` (new file); returns its size."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    names = sorted(tensors)
    for name in names:
        t = tensors[name]
        if t.dtype not in DTYPE_SIZES:
            raise InvalidInput(f"unsupported dtype {t.dtype}", obj=name)
        n = t.array.nbytes
        header[name] = {"dtype": t.dtype, "shape": list(t.array.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    if dest.exists():
        raise AlreadyExists("destination exists", obj=str(dest), remedy="name a new file")
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
    try:
        with open(tmp, "xb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            for name in names:
                fh.write(tensors[name].array.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        read_index(str(tmp), obj=str(dest))
        os.rename(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest.stat().st_size


def convert_to_safetensors(source: Path, dest: Path) -> ConvertReport:
    """Scan ``source`` (a pickle state dict or torch zip) and write it as safetensors at ``dest``."""
    tensors, skipped = load_state_dict(source)
    if not tensors:
        raise InvalidInput("the state dict holds no tensors", obj=str(source))
    size = write_safetensors(
        tensors, dest, {"format": "pt", "converted_from": source.name, "converted_by": "strongroom"}
    )
    return ConvertReport(str(source), str(dest), len(tensors), size, tuple(skipped))
