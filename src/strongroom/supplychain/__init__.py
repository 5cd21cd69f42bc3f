"""Supply-chain defence: model-file scanning, model signing, airgap transfer, SBOM, doctor.

The face of the package::

    from strongroom.supplychain import scan_import, convert_to_safetensors
    scan_import(Path("model_dir"))                 # raises IntegrityError naming file and global

* the scanners every import passes live below the vault in :mod:`strongroom.scanning`
  (re-exported here);
* :mod:`.convert` — pickle state dict -> safetensors without running its globals;
* :mod:`.signing` — OpenSSF model-signing bundles (ECDSA P-256 key mode);
* :mod:`.imports` — ``import_checked``: publisher check, scan, convert, import, sign;
* :mod:`.airgap` — signed transfer bundles, quarantine and admission;
* :mod:`.sbom` / :mod:`.doctor` — CycloneDX SBOM, installed-vs-lock and unsafe settings.

Heavy modules (picklescan, modelscan, the vault) are imported only when used.
"""

from __future__ import annotations

from strongroom.scanning.pickles import SAFE_GLOBALS, PickleReport, scan_pickle_file
from strongroom.scanning.scan import FileScan, ScanReport, scan_import, scan_path
from strongroom.supplychain.convert import ConvertReport, convert_to_safetensors

__all__ = [
    "SAFE_GLOBALS",
    "ConvertReport",
    "FileScan",
    "PickleReport",
    "ScanReport",
    "convert_to_safetensors",
    "scan_import",
    "scan_path",
    "scan_pickle_file",
]
