"""Pickle state dicts become safetensors with no untrusted global ever run.

Torch-format zips are written here without torch: fake ``torch`` modules are put in
``sys.modules`` only while pickling, so the bytes match what ``torch.save`` writes.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import types
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from strongroom.errors import AlreadyExists, IntegrityError
from strongroom.scanning.tensorindex import read_index
from strongroom.supplychain.convert import convert_to_safetensors, load_state_dict

# -- torch-format zip checkpoints written without torch (fake modules only while pickling) --

STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage", np.dtype("uint8"): "ByteStorage", np.dtype("bool"): "BoolStorage",
    np.dtype("uint16"): "BFloat16Storage",  # raw bf16 bits
}  # fmt: skip


@dataclass
class Storage:
    key: str
    kind: type
    data: np.ndarray


@dataclass
class TensorSpec:
    storage: Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _build_modules() -> tuple[types.ModuleType, types.ModuleType]:
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args: Any) -> None:
        raise AssertionError("never called: only pickled by name")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2  # type: ignore[attr-defined]
    for name in set(STORAGE_NAMES.values()):
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))
    torch._utils = utils  # type: ignore[attr-defined]
    return torch, utils


_TORCH, _UTILS = _build_modules()


@contextmanager
def fake_torch() -> Iterator[types.ModuleType]:
    """Install the fake ``torch`` modules in ``sys.modules`` while pickling (never torch itself)."""
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    sys.modules["torch"], sys.modules["torch._utils"] = _TORCH, _UTILS
    try:
        yield _TORCH
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Tensor:
    def __init__(self, spec: TensorSpec, rebuild: Any) -> None:
        self.spec, self.rebuild = spec, rebuild

    def __reduce_ex__(self, proto: int) -> tuple[Any, ...]:
        s = self.spec
        return (self.rebuild, (s.storage, s.offset, s.shape, s.stride, False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Storage):
            return ("storage", obj.kind, obj.key, "cpu", len(obj.data))
        return None


def torch_zip(tensors: Mapping[str, TensorSpec | Any], *, extra: Mapping[str, bytes] = {}) -> bytes:
    """A torch zip checkpoint of ``tensors`` (values: TensorSpec or plain picklable values)."""
    with fake_torch() as torch:
        rebuild = torch._utils._rebuild_tensor_v2
        state = collections.OrderedDict(
            (k, _Tensor(v, rebuild) if isinstance(v, TensorSpec) else v) for k, v in tensors.items()
        )
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(state)
    storages = {v.storage.key: v.storage for v in tensors.values() if isinstance(v, TensorSpec)}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/version", b"3\n")
        for key, st in storages.items():
            z.writestr(f"archive/data/{key}", st.data.tobytes())
        for name, data in extra.items():
            z.writestr(name, data)
    return out.getvalue()


def storage(key: str, data: np.ndarray) -> Storage:
    """A storage of ``data`` (flat) whose class is torch's legacy storage for its dtype."""
    with fake_torch() as torch:
        kind = getattr(torch, STORAGE_NAMES[data.dtype])
    return Storage(key, kind, data.reshape(-1))


def test_torch_zip_with_views_offsets_and_shared_storage(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32)
    st = storage("0", base)
    other = storage("1", np.arange(5, dtype=np.int64))
    data = torch_zip({
        "w": TensorSpec(st, 0, (4, 6), (6, 1)),
        "w_t": TensorSpec(st, 0, (6, 4), (1, 6)),           # transposed view, same storage
        "row2": TensorSpec(st, 12, (6,), (1,)),             # offset view
        "ids": TensorSpec(other, 0, (5,), (1,)),
        "empty": TensorSpec(other, 0, (0, 3), (3, 1)),
        "step": 7,
    })  # fmt: skip
    src = tmp_path / "pytorch_model.bin"
    src.write_bytes(data)
    report = convert_to_safetensors(src, tmp_path / "model.safetensors")
    assert report.tensors == 5 and report.skipped == ("step",)
    out = load_file(str(tmp_path / "model.safetensors"))
    w = base.reshape(4, 6)
    assert np.array_equal(out["w"], w) and np.array_equal(out["w_t"], w.T)
    assert np.array_equal(out["row2"], base[12:18]) and out["ids"].dtype == np.int64
    assert out["empty"].shape == (0, 3)
    read_index(str(tmp_path / "model.safetensors"))


def test_bf16_survives_without_torch(tmp_path: Path) -> None:
    bits = np.array([0x3F80, 0x4000, 0xC040], dtype=np.uint16)  # 1.0, 2.0, -3.0 in bf16
    src = tmp_path / "m.pt"
    src.write_bytes(torch_zip({"b": TensorSpec(storage("0", bits), 0, (3,), (1,))}))
    dest = tmp_path / "m.safetensors"
    convert_to_safetensors(src, dest)
    entries, _ = read_index(str(dest))
    assert entries[0].dtype == "BF16"
    raw = dest.read_bytes()
    assert raw[entries[0].start : entries[0].end] == bits.tobytes()


def test_out_of_bounds_view_is_refused_not_read(tmp_path: Path) -> None:
    st = storage("0", np.arange(10, dtype=np.float32))
    src = tmp_path / "m.pt"
    src.write_bytes(torch_zip({"x": TensorSpec(st, 4, (3, 3), (3, 1))}))  # reaches element 12
    with pytest.raises(IntegrityError, match="reaches element 12 of a 10-element storage"):
        convert_to_safetensors(src, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_missing_storage_and_foreign_persistent_ids_are_refused(tmp_path: Path) -> None:
    st = storage("7", np.arange(3, dtype=np.float32))
    good = torch_zip({"x": TensorSpec(st, 0, (3,), (1,))})
    import io
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(good))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in src.namelist():
            if name != "archive/data/7":
                z.writestr(name, src.read(name))
    path = tmp_path / "m.pt"
    path.write_bytes(buf.getvalue())
    with pytest.raises(IntegrityError, match="storage 7 is missing"):
        load_state_dict(path)
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(b"\x80\x02}X\x01\x00\x00\x00aP0\ns.")  # PERSID outside a zip
    with pytest.raises(IntegrityError, match="persistent ids"):
        load_state_dict(raw)


@pytest.mark.parametrize("protocol", range(6))
def test_numpy_state_dicts_at_every_protocol(tmp_path: Path, protocol: int) -> None:
    state = collections.OrderedDict(
        a=np.arange(12, dtype=np.float64).reshape(3, 4), f=np.asfortranarray(np.ones((2, 3), np.int32)),
        nested={"b": np.array([True, False])}, s=np.float32(1.5), name="x",
    )  # fmt: skip
    src = tmp_path / "m.pkl"
    src.write_bytes(pickle.dumps(state, protocol=protocol))
    convert_to_safetensors(src, tmp_path / "m.safetensors")
    out = load_file(str(tmp_path / "m.safetensors"))
    assert np.array_equal(out["a"], state["a"]) and np.array_equal(out["f"], state["f"])
    assert np.array_equal(out["nested.b"], [True, False]) and out["s"] == np.float32(1.5)


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/strongroom-should-not-exist",))


def test_malicious_pickle_is_never_executed(tmp_path: Path) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(torch_zip({"w": _Boom()}))
    with pytest.raises(IntegrityError, match=r"posix\.system"):
        convert_to_safetensors(src, tmp_path / "m.safetensors")
    assert not Path("/tmp/strongroom-should-not-exist").exists()


def test_object_arrays_and_non_mappings_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "m.pkl"
    src.write_bytes(pickle.dumps([np.arange(3)], protocol=4))
    with pytest.raises(IntegrityError, match="state dict"):
        convert_to_safetensors(src, tmp_path / "a.safetensors")
    src.write_bytes(pickle.dumps({"o": np.array([1, "x"], dtype=object)}, protocol=2))
    with pytest.raises(IntegrityError):
        convert_to_safetensors(src, tmp_path / "b.safetensors")


def test_destination_is_never_overwritten(tmp_path: Path) -> None:
    src = tmp_path / "m.pkl"
    src.write_bytes(pickle.dumps({"a": np.ones(2, np.float32)}, protocol=4))
    dest = tmp_path / "m.safetensors"
    dest.write_bytes(b"keep")
    with pytest.raises(AlreadyExists):
        convert_to_safetensors(src, dest)
    assert dest.read_bytes() == b"keep"
