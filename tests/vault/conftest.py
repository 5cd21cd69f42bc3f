"""The vault tests that need Grants build on the access tests' kit (a real keyring and people)."""

from __future__ import annotations

import sys
from pathlib import Path

_ACCESS = str(Path(__file__).resolve().parents[1] / "access")
if _ACCESS not in sys.path:
    sys.path.insert(0, _ACCESS)
