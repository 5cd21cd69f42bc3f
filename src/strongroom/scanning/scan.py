"""Every import is scanned before it is accepted: safetensors structurally, pickles by opcode.

Use it like this::

    report = scan_import(Path("./Llama-shards"))     # raises before anything is encrypted
    for f in report.files: print(f.path, f.kind, sorted(f.globals))

What each kind of file gets:

* ``.safetensors`` — the header checks of :mod:`.tensorindex`
  (length limit, JSON, known dtypes, ``dtype × shape`` = byte length, offsets
  in bounds, no overlaps, no holes); nothing else is read.
* any file whose first bytes are a container strongroom does not open
  (7-Zip, RAR, tar, gzip/bzip2/xz/zstd/lz4 streams, …; :mod:`.containers`),
  whatever its name — refused: "could not scan: 7-Zip archive".
* pickle-based files (``.bin .pt .pth .ckpt .pkl .pickle .npy .npz``, zips,
  and any file whose first bytes look like a pickle, a zip or a ``.npy``,
  whatever its name) — strongroom's own opcode allowlist (:mod:`.pickles`),
  then picklescan and modelscan used as libraries as a second opinion. Any
  finding refuses the file, naming the global. Plain ``.npy``/``.npz`` arrays
  (no object dtype, no pickle) are kind ``numpy``: their headers are checked
  by :mod:`.pickles` and picklescan; modelscan is not consulted (there is no
  pickle for it to judge, and its numpy reader fails on numpy 2).
* Keras/TensorFlow files (``.h5 .keras .pb``) — modelscan; any issue refuses.
* anything else (configs, tokenizers) — accepted as opaque bytes once its
  first bytes show it is neither a pickle nor an archive.

Refusals raise :class:`~strongroom.errors.IntegrityError` (dangerous content,
or "could not scan: …" when a scanner failed or a container cannot be
opened) or :class:`~strongroom.errors.InvalidInput` (malformed safetensors),
naming the file. A scanner's failure is never passed and never reported as a
finding; its exception text is not shown. Do not catch these to "import
anyway": convert the file instead (:mod:`strongroom.supplychain.convert`),
extract the archive, or get a clean copy.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from strongroom.errors import IntegrityError, InvalidInput, NotFound
from strongroom.scanning.containers import cannot_scan, container_format, is_npy
from strongroom.scanning.pickles import (
    SAFE_GLOBALS,
    PickleReport,
    is_zip,
    looks_like_pickle,
    scan_pickle_file,
)
from strongroom.scanning.tensorindex import parse_header, read_index

__all__ = [
    "PICKLE_SUFFIXES",
    "FileScan",
    "ScanReport",
    "scan_content",
    "scan_file",
    "scan_import",
    "scan_path",
]

#: File name endings that are pickle-based whatever their first bytes say.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".npy", ".npz", ".joblib")
_MODELSCAN_SUFFIXES = (".h5", ".keras", ".pb")
_SNIFF = 512


@dataclass(frozen=True)
class FileScan:
    """The verdict on one file: its kind, and the globals it names (pickles only)."""

    path: str
    kind: str  # "safetensors", "pickle", "numpy", "keras", "opaque"
    size: int
    globals: frozenset[str] = frozenset()
    tensors: int = 0


@dataclass(frozen=True)
class ScanReport:
    """Every file under one import path, each of which passed."""

    root: str
    files: tuple[FileScan, ...]

    @property
    def pickle_files(self) -> list[FileScan]:
        """The files that are pickle-based (candidates for ``--convert``)."""
        return [f for f in self.files if f.kind == "pickle"]


def _refused(obj: str, tool: str, what: Iterable[str]) -> IntegrityError:
    names = ", ".join(sorted(set(what))) or "unspecified issue"
    return IntegrityError(
        f"{tool} flags this file: {names}",
        obj=obj,
        remedy="do not load this file; obtain the weights as safetensors from a trusted source",
    )


_SCANNER_REMEDY = (
    "run the named scanner on the file to see its error and check the installation "
    "(`strongroom doctor`); or obtain the weights as safetensors from a trusted source"
)


def _scanner_failed(obj: str, tool: str, exc: Exception) -> IntegrityError:
    # Only the exception's type: its text may hold reprs of the scanner's internals.
    return cannot_scan(obj, f"{tool} stopped with {type(exc).__name__}", remedy=_SCANNER_REMEDY)


def _picklescan(obj: str, lower: str, stream: BinaryIO, head: bytes) -> None:
    """picklescan's verdict on ``stream``, told the format the content shows (it goes by extension)."""
    from picklescan.scanner import SafetyLevel, scan_bytes  # type: ignore[import-untyped]

    ext = ".npy" if is_npy(head) else (Path(lower).suffix or ".pkl")
    try:
        result = scan_bytes(stream, obj, ext if ext != ".bin" else ".pt")
    except Exception as exc:  # a third-party scanner's crash refuses the file; it is never a pass
        raise _scanner_failed(obj, "picklescan", exc) from None
    _judge_picklescan(obj, result, SafetyLevel)


def _judge_picklescan(obj: str, result: Any, levels: Any) -> None:
    """Refuse on picklescan's dangerous verdicts, and on any global it doubts that we do not allow.

    picklescan marks ``_codecs.encode`` and ``builtins.bytes`` "suspicious"; our
    allowlist accepts them only with the constant arguments checked opcode by opcode.
    """
    bad = [
        f"{g.module}.{g.name}"
        for g in result.globals
        if g.safety == levels.Dangerous
        or (g.safety != levels.Innocuous and f"{g.module}.{g.name}" not in SAFE_GLOBALS)
    ]
    if result.infected_files or bad:
        raise _refused(obj, "picklescan", bad)
    if result.scan_err:
        raise cannot_scan(obj, "picklescan could not parse the file", remedy=_SCANNER_REMEDY)


def _modelscan(path: Path) -> None:
    from modelscan.modelscan import ModelScan  # type: ignore[import-untyped]

    try:
        result = ModelScan().scan(path)
    except Exception as exc:  # a third-party scanner's crash refuses the file; it is never a pass
        raise _scanner_failed(str(path), "modelscan", exc) from None
    issues = result.get("issues") or []
    if issues:
        names = [f"{i.get('module')}.{i.get('operator')}" for i in issues if isinstance(i, dict)]
        raise _refused(str(path), "modelscan", names)
    errors = [e for e in result.get("errors") or [] if isinstance(e, dict)]
    if errors or result.get("errors"):
        # modelscan's error descriptions are raw exception text; name only where it failed.
        where = sorted({str(e.get("source") or "?") for e in errors}) or ["?"]
        raise cannot_scan(str(path), f"modelscan reported an error on {', '.join(where)}",
                          remedy=_SCANNER_REMEDY)


def _sniff(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(_SNIFF)
    except OSError as exc:
        raise InvalidInput(f"cannot read file ({exc.strerror})", obj=str(path)) from exc


def _pickle_based(obj: str, lower: str, head: bytes) -> bool:
    """Whether the file needs the pickle scanners; refuses a container no scanner opens."""
    sealed = container_format(head)
    if sealed:
        raise cannot_scan(obj, sealed)
    return lower.endswith(PICKLE_SUFFIXES) or looks_like_pickle(head) or is_zip(head) or is_npy(head)


def _plain_arrays(report: PickleReport) -> bool:
    """True when the file held only numeric ``.npy`` arrays: no pickle anywhere."""
    return report.arrays > 0 and not report.pickles


def scan_file(path: Path, name: str | None = None) -> FileScan:
    """Scan one file; raises when it is refused, returns its verdict otherwise."""
    name = name or path.name
    lower = name.lower()
    size = path.stat().st_size
    if lower.endswith(".safetensors"):
        tensors, _ = read_index(str(path), obj=str(path))
        return FileScan(name, "safetensors", size, tensors=len(tensors))
    head = _sniff(path)
    if _pickle_based(str(path), lower, head):
        report = scan_pickle_file(path)
        with open(path, "rb") as fh:
            _picklescan(str(path), lower, fh, head)
        if _plain_arrays(report):
            return FileScan(name, "numpy", size)
        _modelscan(path)
        return FileScan(name, "pickle", size, frozenset(report.globals))
    if lower.endswith(_MODELSCAN_SUFFIXES):
        _modelscan(path)
        return FileScan(name, "keras", size)
    return FileScan(name, "opaque", size)


def _walk(root: Path) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            if full.is_symlink() or not full.is_file():
                raise InvalidInput("not a regular file (symlink or special file)", obj=str(full))
            out.append((full, full.relative_to(root).as_posix()))
    return out


def scan_path(path: Path) -> ScanReport:
    """Scan a file or every file under a directory; the first refusal raises."""
    if not path.exists():
        raise NotFound("no such file or directory", obj=str(path), remedy="check the path")
    if path.is_symlink():
        raise InvalidInput("refusing to scan a symbolic link", obj=str(path))
    items = [(path, path.name)] if path.is_file() else _walk(path)
    return ScanReport(str(path), tuple(scan_file(p, rel) for p, rel in items))


def scan_import(path: Path) -> ScanReport:
    """The gate every import passes: scan ``path``, raising IntegrityError/InvalidInput on refusal."""
    return scan_path(path)


def scan_content(name: str, data: bytes, *, size: int | None = None) -> FileScan:
    """Scan a file held in memory (decrypted in quarantine); never written to disk.

    For safetensors, ``data`` may be just the first bytes (the header); ``size``
    is then the whole file's size. Pickles get the allowlist and picklescan's
    in-memory scan (modelscan reads only paths, so it is not consulted here).
    """
    lower = name.lower()
    total = len(data) if size is None else size
    if lower.endswith(".safetensors"):
        tensors, _ = parse_header(data, total, obj=name)
        return FileScan(name, "safetensors", total, tensors=len(tensors))
    if _pickle_based(name, lower, data[:_SNIFF]):
        report = scan_pickle_file(Path(name), data=data)
        _picklescan(name, lower, io.BytesIO(data), data[:_SNIFF])
        kind = "numpy" if _plain_arrays(report) else "pickle"
        return FileScan(name, kind, total, frozenset(report.globals))
    if lower.endswith(_MODELSCAN_SUFFIXES):
        raise IntegrityError(
            "Keras/TensorFlow files cannot be scanned in memory", obj=name,
            remedy="convert the model to safetensors before transfer",
        )
    return FileScan(name, "opaque", total)
