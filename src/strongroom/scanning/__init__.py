"""Model-file scanning: what every import passes before the vault encrypts it.

The scanners sit below the vault (they import nothing of strongroom but
:mod:`strongroom.errors`), so the vault calls them on every import without
importing the supply-chain features built on them::

    from strongroom.scanning import scan_import
    report = scan_import(Path("model_dir"))      # raises IntegrityError naming file and global

* :mod:`.scan` — the verdict on a file, a directory or bytes in memory;
* :mod:`.pickles` — the opcode allowlist for pickles and the archives holding them;
* :mod:`.containers` — containers no scanner opens, refused as "could not scan";
* :mod:`.tensorindex` — the safetensors header, parsed and checked (the vault's
  importer reads its tensor index here too).

picklescan and modelscan are imported only when a file needs them. Converting,
signing and airgap transfer live in :mod:`strongroom.supplychain`.
"""

from __future__ import annotations

from strongroom.scanning.pickles import SAFE_GLOBALS, PickleReport, scan_pickle_file
from strongroom.scanning.scan import FileScan, ScanReport, scan_content, scan_import, scan_path

__all__ = [
    "SAFE_GLOBALS",
    "FileScan",
    "PickleReport",
    "ScanReport",
    "scan_content",
    "scan_import",
    "scan_path",
    "scan_pickle_file",
]
