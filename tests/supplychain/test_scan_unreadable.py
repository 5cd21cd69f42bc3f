"""The scanner never passes what it cannot read, never calls a scanner's failure a finding, and
accepts plain numeric arrays: a table over files shaped like picklescan's public corpus, all
generated here (7-Zip, encrypted zips, numeric and object ``.npy``/``.npz``, advisory globals).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.errors import IntegrityError
from strongroom.scanning.containers import CONTAINER_FORMATS
from strongroom.scanning.scan import scan_content, scan_path

from cli_fixtures import make_runner

_EVIL = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R."  # posix.system("id"), never loaded
_SEVEN_ZIP = b"7z\xbc\xaf\x27\x1c\x00\x04"


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _encrypted(archive: bytes) -> bytes:
    """``archive`` with the "encrypted" flag (bit 0) set on every member, as ``zip -P`` leaves it."""
    out = bytearray(archive)
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(sig)
        while pos >= 0:
            (flags,) = struct.unpack_from("<H", out, pos + at)
            struct.pack_into("<H", out, pos + at, flags | 0x1)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _npz(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


class _Reduce:
    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _stack_global(module: str, name: str) -> bytes:
    """Protocol 4: ``module.name("id")`` through STACK_GLOBAL, as the advisories' files do."""
    def text(s: str) -> bytes:
        return b"\x8c" + bytes([len(s)]) + s.encode()

    return b"\x80\x04" + text(module) + text(name) + b"\x93" + text("id") + b"\x85R."


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


#: One sample of every container format strongroom refuses, each holding a malicious pickle.
CONTAINERS: dict[str, bytes] = {
    "7-Zip archive": _SEVEN_ZIP + os.urandom(24) + _EVIL,
    "RAR archive": b"Rar!\x1a\x07\x01\x00" + _EVIL,
    "gzip-compressed file": gzip.compress(_EVIL),
    "bzip2-compressed file": bz2.compress(_EVIL),
    "xz-compressed file": lzma.compress(_EVIL),
    "Zstandard-compressed file": b"\x28\xb5\x2f\xfd\x24\x00" + _EVIL,
    "LZ4-compressed file": b"\x04\x22\x4d\x18\x64\x40" + _EVIL,
    "spanned zip archive": b"PK\x07\x08" + _zip({"data.pkl": _EVIL}),
    "Microsoft Cabinet archive": b"MSCF\x00\x00\x00\x00" + _EVIL,
    "ar archive": b"!<arch>\n" + _EVIL,
    "cpio archive": b"070701" + b"0" * 8 + _EVIL,
    "tar archive": _tar({"archive/data.pkl": _EVIL}),
}

PASS, FINDING, CANNOT = "pass", "finding", "could not scan"

#: (file name, content, verdict, text the message must hold).
TABLE: list[tuple[str, Callable[[], bytes], str, str]] = [
    ("malicious1.7z", lambda: CONTAINERS["7-Zip archive"], CANNOT, "7-Zip archive"),
    ("model.bin", lambda: CONTAINERS["7-Zip archive"], CANNOT, "7-Zip archive"),
    ("config.json", lambda: CONTAINERS["7-Zip archive"], CANNOT, "7-Zip archive"),
    ("legacy.pt", lambda: CONTAINERS["tar archive"], CANNOT, "tar archive"),
    ("benign_password_protected.zip", lambda: _encrypted(_zip({"test.txt": b"hello"})), CANNOT,
     "encrypted zip member"),
    ("malicious1_0x1.zip", lambda: _encrypted(_zip({"model/config.pkl": _EVIL})), CANNOT,
     "encrypted zip member"),
    ("model.pt", lambda: _zip({"archive/data.pkl": pickle.dumps({}, protocol=2),
                               "archive/extra": CONTAINERS["7-Zip archive"]}), CANNOT, "7-Zip archive"),
    ("int_array.npy", lambda: _npy(np.arange(10, dtype=np.int64)), PASS, "numpy"),
    ("int_arrays.npz", lambda: _npz(a=np.arange(3), b=np.ones((2, 2), dtype=np.int8)), PASS, "numpy"),
    ("int_arrays_compressed.npz", lambda: _npz(True, a=np.arange(3), b=np.zeros(4)), PASS, "numpy"),
    ("weights.dat", lambda: _npy(np.eye(3, dtype=np.float32)), PASS, "numpy"),
    ("object_array.npy", lambda: _npy(np.array([_Reduce(os.system, ("id",))], dtype=object)), FINDING,
     "objects"),
    ("innocent.dat", lambda: _npy(np.array([_Reduce(eval, ("1",))], dtype=object)), FINDING, "objects"),
    ("object_arrays.npz", lambda: _npz(a=np.arange(3), b=np.array([_Reduce(os.system, ("id",))],
                                                                     dtype=object)), FINDING, "objects"),
    ("GHSA-idlelib.pkl", lambda: _stack_global("idlelib.pyshell", "ModifiedInterpreter.runcode"), FINDING,
     "idlelib.pyshell.ModifiedInterpreter.runcode"),
    ("GHSA-pager.pkl", lambda: _stack_global("_pyrepl.pager", "pipe_pager"), FINDING,
     "_pyrepl.pager.pipe_pager"),
    ("GHSA-asyncio.bin", lambda: _stack_global("asyncio.unix_events", "_UnixSubprocessTransport._start"),
     FINDING, "asyncio.unix_events._UnixSubprocessTransport._start"),
    ("GHSA-f2py.pkl", lambda: _stack_global("numpy.f2py.crackfortran", "getlincoef"), FINDING,
     "numpy.f2py.crackfortran.getlincoef"),
    ("GHSA-ctypes.pkl", lambda: _stack_global("ctypes", "CDLL"), FINDING, "ctypes.CDLL"),
    ("GHSA-uuid.pkl", lambda: _stack_global("uuid", "_get_command_stdout"), FINDING,
     "uuid._get_command_stdout"),
    ("malicious1.zip", lambda: _zip({"data.pkl": _EVIL}, zipfile.ZIP_DEFLATED), FINDING, "posix.system"),
    ("benign0_v3.pkl", lambda: pickle.dumps({"a": 1, "b": [1, 2]}, protocol=3), PASS, "pickle"),
]


def _verdict(run: Callable[[], object]) -> tuple[str, str]:
    try:
        scanned = run()
    except IntegrityError as exc:
        return (CANNOT if exc.message.startswith("could not scan: ") else FINDING), str(exc)
    return PASS, getattr(scanned, "kind", "")


@pytest.mark.parametrize(("name", "content", "verdict", "says"), TABLE, ids=[row[0] for row in TABLE])
def test_table_of_corpus_shaped_files(
    tmp_path: Path, name: str, content: Callable[[], bytes], verdict: str, says: str
) -> None:
    data = content()
    (tmp_path / name).write_bytes(data)
    on_disk = _verdict(lambda: scan_path(tmp_path / name).files[0])
    in_memory = _verdict(lambda: scan_content(name, data))  # the airgap quarantine's path
    for got, message in (on_disk, in_memory):
        assert got == verdict, message
        assert says in message
        assert "<ZipInfo" not in message and "Traceback" not in message


def test_every_refused_container_format_has_a_sample() -> None:
    assert set(CONTAINERS) == {name for name, _ in CONTAINER_FORMATS}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(sorted(CONTAINERS)), name=st.sampled_from(["model.bin", "x.pkl", "README", "a.npz"]),
       tail=st.binary(max_size=64))
def test_property_a_container_is_refused_by_content_whatever_its_name(
    tmp_path: Path, fmt: str, name: str, tail: bytes
) -> None:
    data = CONTAINERS[fmt] + tail
    path = tmp_path / name
    path.write_bytes(data)
    for run in (lambda: scan_path(path), lambda: scan_content(name, data)):
        with pytest.raises(IntegrityError, match=f"could not scan: {fmt}") as info:
            run()
        assert "extract it" in str(info.value)


plain_dtypes = st.sampled_from([np.int8, np.int32, np.int64, np.uint16, np.float16, np.float32, np.float64,
                                np.bool_, np.complex64, np.dtype([("x", "<i4"), ("y", "<f8")])])
shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)


@settings(max_examples=40, deadline=None)
@given(dtype=plain_dtypes, shape=shapes, count=st.integers(1, 3), compressed=st.booleans())
def test_property_plain_arrays_pass_and_one_object_array_is_refused(
    dtype: object, shape: tuple[int, ...], count: int, compressed: bool
) -> None:
    arrays = {f"a{i}": np.zeros(shape, dtype=dtype) for i in range(count)}  # type: ignore[call-overload]
    assert scan_content("w.npy", _npy(arrays["a0"])).kind == "numpy"
    assert scan_content("w.npz", _npz(compressed, **arrays)).kind == "numpy"
    arrays["evil"] = np.array([_Reduce(os.system, ("id",))], dtype=object)
    with pytest.raises(IntegrityError, match="objects"):
        scan_content("w.npz", _npz(compressed, **arrays))


def test_a_scanners_own_failure_is_could_not_scan_without_its_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelscan.modelscan
    import picklescan.scanner

    path = tmp_path / "model.bin"
    path.write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))

    def crash(*_: object, **__: object) -> object:
        raise RuntimeError("File <ZipInfo filename='x'> is encrypted, password required")

    monkeypatch.setattr(picklescan.scanner, "scan_bytes", crash)
    with pytest.raises(IntegrityError, match="could not scan: picklescan stopped with RuntimeError") as info:
        scan_path(path)
    assert "<ZipInfo" not in str(info.value) and "flags this file" not in str(info.value)
    monkeypatch.undo()

    def errors(self: object, _: object) -> dict[str, object]:
        return {"issues": [], "errors": [{"category": "MODEL_SCAN", "source": "model.bin",
                                          "description": "module <x> has no attribute '_check_version'"}]}

    monkeypatch.setattr(modelscan.modelscan.ModelScan, "scan", errors)
    with pytest.raises(IntegrityError, match=r"could not scan: modelscan reported an error on model\.bin") as info:
        scan_path(path)
    assert "_check_version" not in str(info.value) and "flags this file" not in str(info.value)


def test_cli_refuses_7z_and_encrypted_zip_in_words(tmp_path: Path) -> None:
    run = make_runner(dict(os.environ))
    (tmp_path / "malicious1.7z").write_bytes(CONTAINERS["7-Zip archive"])
    seven = run("scan", tmp_path / "malicious1.7z", ok=False)
    assert seven.returncode != 0 and "could not scan: 7-Zip archive" in seven.stderr
    assert "passed" not in seven.stdout
    (tmp_path / "secret.zip").write_bytes(_encrypted(_zip({"test.txt": b"hello"})))
    locked = run("scan", tmp_path / "secret.zip", ok=False)
    assert locked.returncode != 0 and "encrypted zip member" in locked.stderr
    assert "<ZipInfo" not in locked.stderr + locked.stdout
