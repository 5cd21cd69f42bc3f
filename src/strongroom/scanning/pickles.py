"""An opcode-level allowlist scanner for pickles, and the archives that hold them.

A pickle is a program for a small stack machine; loading one runs it, and any
``GLOBAL`` it names is imported and may be called. This module never loads a
pickle: it walks the opcodes with :func:`pickletools.genops` and simulates the
stack symbolically (string constants, memo slots, tuples and globals are
tracked; everything else is "some object"), so that ``STACK_GLOBAL`` is
resolved from the strings actually on the stack, whatever mix of
``PUT``/``BINPUT``/``MEMOIZE``/``GET`` put them there.

Use it like this::

    report = scan_pickle_file(Path("pytorch_model.bin"))   # raises, never loads
    report.globals        # every global the file names, e.g. {"collections.OrderedDict"}

A file is refused (:class:`~strongroom.errors.IntegrityError`, naming the file
and the global, e.g. ``posix.system``) when it names any global outside
:data:`SAFE_GLOBALS`, uses the extension registry (``EXT1/2/4``), calls a
value that is not a named global, calls ``_codecs.encode`` with anything but a
string constant and ``latin1`` (or ``bytes`` with any argument), or is malformed. Checks run opcode by opcode,
so a refused global is caught even in a pickle that is truncated afterwards
(the real unpickler would already have run it).

Archives: a zip (torch's ``archive/data.pkl`` layout, ``.npz``) is scanned
member by member: every ``.pkl`` member must be a clean pickle, other members
that start like a pickle are scanned too, ``.npy`` members must not hold
object arrays, zips nested inside are scanned recursively (to
:data:`MAX_ZIP_DEPTH`), and duplicate member names are refused. What cannot be
read is refused as "could not scan", never passed: encrypted members, and any
file or member that is a container strongroom does not open (7-Zip, RAR, tar
— torch's legacy format —, compressed streams; :mod:`.containers`). A
``.npy`` array (recognised by its magic) of a plain dtype holds no pickle and
is counted in :attr:`PickleReport.arrays`.

What not to do: never widen :data:`SAFE_GLOBALS` with a callable that can
reach an import, an attribute lookup, a file or a process; never "just load"
a file this module refused to check whether it is really bad.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strongroom.errors import IntegrityError, InvalidInput
from strongroom.scanning.containers import cannot_scan, container_format, is_npy

__all__ = [
    "MAX_ZIP_DEPTH",
    "SAFE_GLOBALS",
    "TORCH_STORAGE_TYPES",
    "PickleReport",
    "is_zip",
    "looks_like_pickle",
    "scan_pickle_bytes",
    "scan_pickle_file",
]

#: Torch's legacy storage classes (what ``torch.save`` still writes) -> safetensors dtype.
TORCH_STORAGE_TYPES: dict[str, str] = {
    "torch.DoubleStorage": "F64",
    "torch.FloatStorage": "F32",
    "torch.HalfStorage": "F16",
    "torch.BFloat16Storage": "BF16",
    "torch.LongStorage": "I64",
    "torch.IntStorage": "I32",
    "torch.ShortStorage": "I16",
    "torch.CharStorage": "I8",
    "torch.ByteStorage": "U8",
    "torch.BoolStorage": "BOOL",
}

#: Every global a weights pickle may name. Each is a constructor of plain data.
SAFE_GLOBALS: frozenset[str] = frozenset(
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor",
        "torch._utils._rebuild_parameter",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer",  # protocol 5 arrays
        "numpy._core.numeric._frombuffer",
        "numpy.ndarray",
        "numpy.dtype",
        "_codecs.encode",  # protocol < 3 bytes; only ``encode(<str constant>, "latin1")``
        "builtins.bytes",  # protocol < 3 empty bytes; only ``bytes()``
        *TORCH_STORAGE_TYPES,
    }
)

#: Deepest zip-inside-zip nesting scanned; deeper is refused.
MAX_ZIP_DEPTH = 3
_PICKLE_SUFFIXES = (".pkl", ".pickle")
_ZIP_ENCRYPTED = 0x1  # general-purpose flag bit 0
_HEAD = 512  # bytes read to recognise a container
_ZIP_DAMAGE: dict[type[Exception], str] = {
    zipfile.BadZipFile: "its headers, directory or checksums disagree",
    zipfile.LargeZipFile: "ZIP64 sizes beyond what a model file needs",
    EOFError: "truncated member",
    zlib.error: "corrupt compressed member",
}
_TORCH_STORAGE = re.compile(r"^[^/]+/data/\d+$")
_LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1"})
_MARK = pickletools.markobject
_STRING_OPS = frozenset(
    {
        "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
        "SHORT_BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
        "BYTEARRAY8", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
        "FLOAT", "BINFLOAT", "NONE", "NEWTRUE", "NEWFALSE",
    }
)  # fmt: skip


@dataclass(frozen=True)
class _Lit:
    value: Any


@dataclass(frozen=True)
class _Global:
    name: str


@dataclass(frozen=True)
class _Tuple:
    items: tuple[object, ...]


class _Mark:
    pass


_ANY = object()


@dataclass
class PickleReport:
    """What a scan found in one file: the globals named, the pickles and plain arrays checked."""

    path: str
    globals: set[str] = field(default_factory=set)
    pickles: list[str] = field(default_factory=list)
    arrays: int = 0
    persistent_ids: int = 0
    protocol: int | None = None


def _refuse(obj: str, why: str) -> IntegrityError:
    return IntegrityError(
        why,
        obj=obj,
        remedy="do not load this file; obtain the weights as safetensors from a trusted source",
    )


def looks_like_pickle(data: bytes) -> bool:
    """True when ``data`` starts with a PROTO opcode of protocol 2-5."""
    return len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5


def is_zip(data: bytes) -> bool:
    """True when ``data`` starts with a zip local file header."""
    return data[:4] == b"PK\x03\x04"


class _Machine:
    """Symbolic pickle VM: tracks constants, memo, tuples and globals; checks every global."""

    def __init__(self, obj: str, report: PickleReport) -> None:
        self.obj = obj
        self.report = report
        self.stack: list[object] = []
        self.memo: dict[int, object] = {}
        self.protocol = 0

    def pop(self, what: str) -> object:
        if not self.stack:
            raise _refuse(self.obj, f"malformed pickle: stack underflow at {what}")
        return self.stack.pop()

    def pop_mark(self, what: str) -> list[object]:
        for i in range(len(self.stack) - 1, -1, -1):
            if isinstance(self.stack[i], _Mark):
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise _refuse(self.obj, f"malformed pickle: {what} without a MARK")

    def check_global(self, module: str, name: str) -> _Global:
        written = f"{module}.{name}"
        if self.protocol < 3:
            # What pickle.Unpickler(fix_imports=True) really imports for Python 2 names.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        full = f"{module}.{name}"
        self.report.globals.add(full)
        if full not in SAFE_GLOBALS:
            alias = f" (written as {written})" if written != full else ""
            raise _refuse(
                self.obj, f"pickle references the global {full}{alias}, which is not allowlisted"
            )
        return _Global(full)

    def callable_of(self, value: object, opcode: str) -> _Global:
        if not isinstance(value, _Global):
            raise _refuse(
                self.obj, f"pickle {opcode} calls a value computed while loading, not a named global"
            )
        return value

    def step(self, op: pickletools.OpcodeInfo, arg: Any, pos: int) -> None:
        name = op.name
        where = f"{name} at byte {pos}"
        if name in ("EXT1", "EXT2", "EXT4"):
            raise _refuse(self.obj, f"pickle uses the copyreg extension registry ({where})")
        if name == "PROTO":
            self.protocol = int(arg)
            self.report.protocol = self.protocol
            return
        if name in _STRING_OPS:
            self.stack.append(_Lit(arg))
            return
        if name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise _refuse(self.obj, f"malformed pickle: {where} reads an empty memo slot")
            self.stack.append(self.memo[arg])
            return
        if name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            if not self.stack or isinstance(self.stack[-1], _Mark):
                raise _refuse(self.obj, f"malformed pickle: {where} with nothing to store")
            self.memo[len(self.memo) if name == "MEMOIZE" else int(arg)] = self.stack[-1]
            return
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found = self.check_global(module, attr)
            if name == "GLOBAL":
                self.stack.append(found)
            else:
                self.pop_mark(where)
                self.stack.append(_ANY)
            return
        if name == "STACK_GLOBAL":
            top, below = self.pop(where), self.pop(where)
            if not (
                isinstance(top, _Lit) and isinstance(top.value, str)
                and isinstance(below, _Lit) and isinstance(below.value, str)
            ):  # fmt: skip
                raise _refuse(
                    self.obj, f"pickle {where} takes operands that are not string constants"
                )
            self.stack.append(self.check_global(below.value, top.value))
            return
        if name == "REDUCE":
            args, func = self.pop(where), self.pop(where)
            called = self.callable_of(func, where)
            if called.name == "_codecs.encode" and not _is_latin1_encode(args):
                raise _refuse(
                    self.obj, f"pickle calls _codecs.encode with non-constant arguments ({where})"
                )
            if called.name == "builtins.bytes" and args != _Tuple(()):
                raise _refuse(self.obj, f"pickle calls builtins.bytes with arguments ({where})")
            self.stack.append(_ANY)
            return
        if name == "OBJ":
            items = self.pop_mark(where)
            if not items:
                raise _refuse(self.obj, f"malformed pickle: {where} without a class")
            self.callable_of(items[0], where)
            self.stack.append(_ANY)
            return
        if name in ("NEWOBJ", "NEWOBJ_EX"):
            if name == "NEWOBJ_EX":
                self.pop(where)
            self.pop(where)
            self.callable_of(self.pop(where), where)
            self.stack.append(_ANY)
            return
        if name in ("PERSID", "BINPERSID"):
            if name == "BINPERSID":
                self.pop(where)
            self.report.persistent_ids += 1
            self.stack.append(_ANY)
            return
        if name == "DUP":
            top = self.pop(where)
            self.stack += [top, top]
            return
        if name in ("TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"):
            if name == "TUPLE":
                items = self.pop_mark(where)
            else:
                n = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}[name]
                items = [self.pop(where) for _ in range(n)][::-1]
            self.stack.append(_Tuple(tuple(items)))
            return
        self._generic(op, where)

    def _generic(self, op: pickletools.OpcodeInfo, where: str) -> None:
        before = list(op.stack_before)
        if _MARK in before:
            self.pop_mark(where)
            below = before.index(_MARK)
            for _ in range(below):
                self.pop(where)
        else:
            for _ in before:
                self.pop(where)
        for item in op.stack_after:
            self.stack.append(_Mark() if item is _MARK else _ANY)


def _is_latin1_encode(args: object) -> bool:
    if not isinstance(args, _Tuple) or len(args.items) != 2:
        return False
    text, encoding = args.items
    return (
        isinstance(text, _Lit) and isinstance(text.value, str)
        and isinstance(encoding, _Lit) and str(encoding.value).lower() in _LATIN1
    )  # fmt: skip


def _genops(data: bytes, start: int) -> Iterator[tuple[pickletools.OpcodeInfo, Any, int]]:
    stream = io.BytesIO(data)
    stream.seek(start)
    for op, arg, pos in pickletools.genops(stream):
        yield op, arg, int(pos if pos is not None else 0)


def _scan_one(data: bytes, start: int, obj: str, report: PickleReport) -> int:
    """Scan one pickle from ``start``; return the offset after its STOP."""
    machine = _Machine(obj, report)
    end = None
    try:
        for op, arg, pos in _genops(data, start):
            machine.step(op, arg, pos)
            if op.name == "STOP":
                end = pos + 1
    except (ValueError, UnicodeDecodeError, EOFError) as exc:
        raise _refuse(obj, f"malformed pickle ({exc})") from None
    if end is None:
        raise _refuse(obj, "malformed pickle: no STOP opcode")
    return end


def scan_pickle_bytes(data: bytes, *, obj: str, report: PickleReport | None = None) -> PickleReport:
    """Scan every pickle in ``data`` (a pickle file may hold several in a row)."""
    report = report or PickleReport(obj)
    pos = _scan_one(data, 0, obj, report)
    report.pickles.append(obj)
    count = 1
    while pos < len(data) and looks_like_pickle(data[pos : pos + 2]):
        # Torch's legacy format: several pickles, then raw storage bytes. A later
        # segment that does not parse is data; a bad global in it is still refused.
        try:
            pos = _scan_one(data, pos, f"{obj} (pickle #{count + 1})", report)
        except IntegrityError as exc:
            if "malformed pickle" in exc.message:
                break
            raise
        count += 1
    return report


def _scan_npy(data: bytes, obj: str, report: PickleReport) -> None:
    import numpy as np

    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            _, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            _, _, dtype = np.lib.format.read_array_header_2_0(stream)
    except ValueError as exc:
        raise _refuse(obj, f"malformed .npy file ({exc})") from None
    if dtype.hasobject:
        raise _refuse(obj, "a .npy array of Python objects is a pickle; refusing it")
    report.arrays += 1


def _scan_zip(data: bytes, obj: str, report: PickleReport, depth: int) -> None:
    if depth > MAX_ZIP_DEPTH:
        raise _refuse(obj, f"archives nested deeper than {MAX_ZIP_DEPTH} levels")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise _refuse(obj, "zip archive holds two members with the same name")
        for info in infos:
            member = f"{obj}:{info.filename}"
            if info.flag_bits & _ZIP_ENCRYPTED:
                raise cannot_scan(member, "encrypted zip member",
                                  remedy="extract the archive with its password and scan the files it holds")
            if info.is_dir():
                continue
            if _TORCH_STORAGE.match(info.filename):
                continue  # raw tensor bytes; torch never unpickles them
            content = archive.read(info)
            _scan_member(content, info.filename, member, report, depth)
    except NotImplementedError as exc:
        # zipfile's own plain sentences: "strong encryption (flag bit 6)", "That compression method ..."
        raise cannot_scan(obj, f"zip archive uses a feature strongroom cannot read ({exc})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        # Not the exception's text: it quotes raw header bytes and member reprs.
        raise _refuse(obj, f"damaged zip archive ({_ZIP_DAMAGE.get(type(exc), 'unreadable structure')})") from None


def _scan_member(content: bytes, name: str, obj: str, report: PickleReport, depth: int) -> None:
    lower = name.lower()
    sealed = container_format(content[:_HEAD])
    if is_zip(content):
        _scan_zip(content, obj, report, depth + 1)
    elif sealed:
        raise cannot_scan(obj, sealed)
    elif lower.endswith(_PICKLE_SUFFIXES):
        scan_pickle_bytes(content, obj=obj, report=report)
    elif lower.endswith(".npy") or is_npy(content):
        _scan_npy(content, obj, report)
    elif looks_like_pickle(content):
        scan_pickle_bytes(content, obj=obj, report=report)


def scan_pickle_file(path: Path, *, data: bytes | None = None) -> PickleReport:
    """Scan a pickle-based model file (raw pickle, torch zip, .npz, .npy); never loads it.

    Raises IntegrityError for a finding, and "could not scan" for a container it cannot open.
    """
    obj = str(path)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read file ({exc.strerror})", obj=obj) from exc
    report = PickleReport(obj)
    sealed = container_format(data[:_HEAD])
    if is_zip(data):
        _scan_zip(data, obj, report, 1)
    elif sealed:
        raise cannot_scan(obj, sealed)
    elif is_npy(data):
        _scan_npy(data, obj, report)
    else:
        scan_pickle_bytes(data, obj=obj, report=report)
    return report
