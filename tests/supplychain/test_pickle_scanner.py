"""The opcode allowlist refuses every dangerous pickle, by hand-written bytes, never by loading one."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import IntegrityError, InvalidInput
from strongroom.scanning.pickles import scan_pickle_bytes, scan_pickle_file
from strongroom.scanning.scan import scan_path

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


class _Reduce:
    """Pickles as a call of ``func(*args)``; these objects are only ever dumped."""

    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _refused(data: bytes, name: str) -> str:
    with pytest.raises(IntegrityError) as info:
        scan_pickle_bytes(data, obj="model.bin")
    assert name in str(info.value), str(info.value)
    assert "model.bin" in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("func", "args", "name"),
    [
        (os.system, ("id",), "posix.system"),
        (subprocess.Popen, (["id"],), "subprocess.Popen"),
        (eval, ("1+1",), "builtins.eval"),
        (exec, ("x=1",), "builtins.exec"),
        (getattr, (_Reduce(__import__, ("os",)), "system"), "builtins.getattr"),
        (__import__, ("os",), "builtins.__import__"),
    ],
)
def test_dangerous_reduce_refused_at_every_protocol(
    protocol: int, func: object, args: tuple[object, ...], name: str
) -> None:
    data = pickle.dumps({"weight": _Reduce(func, args)}, protocol=protocol)
    _refused(data, name)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_benign_state_dicts_pass_at_every_protocol(protocol: int) -> None:
    state = collections.OrderedDict(
        w=np.arange(6, dtype=np.float32).reshape(2, 3), s=np.float16(2), meta={"epoch": 3}
    )
    report = scan_pickle_bytes(pickle.dumps(state, protocol=protocol), obj="ok.pkl")
    assert "collections.OrderedDict" in report.globals


def test_memo_confusion_with_stack_global_is_resolved_from_the_real_memo() -> None:
    # picklescan issue #14: BINPUT and MEMOIZE mixed so a scanner that counts
    # MEMOIZE alone believes memo[0], memo[1] hold "torch._utils", "_rebuild_tensor_v2".
    data = (
        b"\x80\x04"
        b"\x8c\x02os" b"q\x00"            # memo[0] = "os"        (BINPUT 0)
        b"\x8c\x06system" b"q\x01"        # memo[1] = "system"    (BINPUT 1)
        b"\x8c\x0ctorch._utils" b"\x94"   # MEMOIZE -> memo[2]
        b"\x8c\x12_rebuild_tensor_v2" b"\x94"
        b"h\x00h\x01\x93"                 # BINGET 0, BINGET 1, STACK_GLOBAL
        b"\x8c\x02id\x85R."
    )  # fmt: skip
    _refused(data, "os.system")


def test_stack_global_with_computed_operands_is_refused() -> None:
    # modelscan issue #85: operands of STACK_GLOBAL produced by a call, not constants.
    data = b"\x80\x04" b"\x8c\x05numpy\x8c\x06prod.a\x93" b"\x8c\x02os\x93."
    _refused(data, "numpy.prod.a")
    data = (
        b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93)R"   # an object on the stack
        b"\x8c\x06system\x93."                                    # STACK_GLOBAL(obj, "system")
    )  # fmt: skip
    _refused(data, "not string constants")


@pytest.mark.parametrize(
    "name",
    ["importlib.import_module", "marshal.loads", "pkgutil.resolve_name", "runpy._run_code",
     "numpy.load", "torch.load", "operator.attrgetter", "builtins.open"],
)  # fmt: skip
def test_indirection_gadgets_from_advisories_are_refused(name: str) -> None:
    module, attr = name.rsplit(".", 1)
    data = b"\x80\x02c" + module.encode() + b"\n" + attr.encode() + b"\nX\x02\x00\x00\x00os\x85R."
    _refused(data, name)


def test_extension_registry_is_refused() -> None:
    _refused(b"\x80\x02\x82\x01)R.", "extension registry")
    _refused(b"\x80\x02\x83\x01\x00.", "extension registry")
    _refused(b"\x80\x02\x84\x01\x00\x00\x00.", "extension registry")


def test_inst_obj_newobj_name_the_global() -> None:
    _refused(b"(S'id'\nios\nsystem\n.", "os.system")  # protocol 0 INST
    _refused(b"\x80\x02(cposix\nsystem\nX\x02\x00\x00\x00ido.", "posix.system")  # OBJ
    _refused(b"\x80\x02csubprocess\nPopen\n)\x81.", "subprocess.Popen")  # NEWOBJ


def test_calling_a_value_computed_while_loading_is_refused() -> None:
    # OrderedDict() is allowed; calling its *result* is not a named global.
    data = b"\x80\x02ccollections\nOrderedDict\n)R)R."
    _refused(data, "computed while loading")


def test_codecs_encode_only_with_constant_latin1() -> None:
    ok = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00latin1\x86R."
    assert "_codecs.encode" in scan_pickle_bytes(ok, obj="ok").globals
    bad = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00base64\x86R."
    _refused(bad, "_codecs.encode")
    nested = b"\x80\x02c_codecs\nencode\nccollections\nOrderedDict\n)RX\x06\x00\x00\x00latin1\x86R."
    _refused(nested, "_codecs.encode")


def test_bad_global_caught_before_a_later_parse_error() -> None:
    # The real unpickler runs REDUCE before it reaches the garbage; so must the check.
    data = pickle.dumps(_Reduce(os.system, ("id",)), protocol=2)[:-1] + b"\xff\xff"
    _refused(data, "posix.system")


def test_malformed_and_unterminated_pickles_are_refused() -> None:
    _refused(b"\x80\x02}q\x00", "malformed")
    _refused(b"\x80\x02h\x05.", "empty memo slot")
    _refused(b"\x80\x02R.", "stack underflow")


def test_second_pickle_in_a_file_is_scanned() -> None:
    first = pickle.dumps(1, protocol=2)
    second = pickle.dumps(_Reduce(os.system, ("id",)), protocol=2)
    _refused(first + second, "posix.system")


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_reduce_in_a_nested_zip_is_refused(tmp_path: Path) -> None:
    evil = pickle.dumps(_Reduce(os.system, ("id",)), protocol=2)
    inner = _zip({"archive/data.pkl": evil, "archive/version": b"3\n"})
    outer = _zip({"model/data.pkl": pickle.dumps({}, protocol=2), "model/extra.bin": inner})
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(outer)
    with pytest.raises(IntegrityError, match=r"posix\.system") as info:
        scan_pickle_file(path)
    assert "extra.bin:archive/data.pkl" in str(info.value)


def test_pickle_hidden_under_another_member_name_is_scanned(tmp_path: Path) -> None:
    evil = pickle.dumps(_Reduce(os.system, ("id",)), protocol=4)
    path = tmp_path / "model.pt"
    path.write_bytes(_zip({"archive/data.pkl": pickle.dumps({}, protocol=2), "archive/config.json": evil}))
    with pytest.raises(IntegrityError, match=r"posix\.system"):
        scan_pickle_file(path)


def test_zip_bombs_of_nesting_and_duplicate_members_are_refused(tmp_path: Path) -> None:
    data = pickle.dumps({}, protocol=2)
    for _ in range(5):
        data = _zip({"a/data.pkl": pickle.dumps({}, protocol=2), "a/inner.zip": data})
    path = tmp_path / "deep.pt"
    path.write_bytes(data)
    with pytest.raises(IntegrityError, match="nested deeper"):
        scan_pickle_file(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning):
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        z.writestr("archive/data.pkl", pickle.dumps(_Reduce(os.system, ("id",)), protocol=2))
    path.write_bytes(buf.getvalue())
    with pytest.raises(IntegrityError, match="same name"):
        scan_pickle_file(path)


def test_object_npy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, a=np.arange(3), b=np.array([object()], dtype=object))
    with pytest.raises(IntegrityError, match="objects"):
        scan_pickle_file(path)
    ok = tmp_path / "ok.npz"
    np.savez(ok, a=np.arange(3))
    scan_pickle_file(ok)


def test_tar_checkpoints_are_refused(tmp_path: Path) -> None:
    import tarfile

    path = tmp_path / "legacy.pt"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("pickle")
        payload = pickle.dumps({}, protocol=2)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(IntegrityError, match="tar"):
        scan_pickle_file(path)


def test_directory_scan_sniffs_pickles_behind_innocent_names(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"w": np.ones(3, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text('{"a": 1}')
    report = scan_path(tmp_path)
    assert {f.kind for f in report.files} == {"safetensors", "opaque"}
    (tmp_path / "tokenizer.json").write_bytes(pickle.dumps(_Reduce(os.system, ("id",)), protocol=4))
    with pytest.raises(IntegrityError, match=r"posix\.system") as info:
        scan_path(tmp_path)
    assert "tokenizer.json" in str(info.value)


def test_malformed_safetensors_is_refused_by_the_vault_checks(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(InvalidInput, match="not a valid safetensors"):
        scan_path(path)


def test_the_library_scanners_agree_on_the_refusals(tmp_path: Path) -> None:
    # Defence in depth: picklescan and modelscan run too. A global our allowlist accepts
    # but picklescan flags would refuse the file; none of the allowed ones is flagged.
    state = collections.OrderedDict(w=np.arange(4, dtype=np.float32))
    path = tmp_path / "ok.bin"
    path.write_bytes(pickle.dumps(state, protocol=2))
    assert scan_path(path).files[0].kind == "pickle"


dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8, np.bool_])
arrays = st.builds(
    lambda dt, shape: np.zeros(shape, dtype=dt),
    dtypes,
    st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
)
names = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, arrays, max_size=5), st.sampled_from(list(PROTOCOLS)))
def test_property_benign_numpy_state_dicts_always_pass(state: dict[str, np.ndarray], protocol: int) -> None:
    scan_pickle_bytes(pickle.dumps(collections.OrderedDict(state), protocol=protocol), obj="p")


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, arrays, max_size=4), st.sampled_from(list(PROTOCOLS)),
       st.sampled_from([(os.system, "posix.system"), (eval, "builtins.eval"),
                        (subprocess.call, "subprocess.call")]))  # fmt: skip
def test_property_one_bad_call_anywhere_is_refused(
    state: dict[str, np.ndarray], protocol: int, bad: tuple[object, str]
) -> None:
    payload = collections.OrderedDict(state)
    payload["zz"] = _Reduce(bad[0], ("id",))
    _refused(pickle.dumps(payload, protocol=protocol), bad[1])
