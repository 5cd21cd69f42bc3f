"""The runtime tests build on the access tests' kit (a real keyring, vault and people)."""

from __future__ import annotations

import sys
from pathlib import Path

_ACCESS = str(Path(__file__).resolve().parents[1] / "access")
if _ACCESS not in sys.path:
    sys.path.insert(0, _ACCESS)
