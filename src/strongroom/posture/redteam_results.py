"""Where a data directory keeps its latest red-team results, and reading them back.

The red team (:mod:`strongroom.redteam.runner`) writes the file; the posture
report reads it. It lives here, below the server, so that the server can score
posture for a remote auditor without importing the red team's harness::

    results = load_results(results_path(home))   # None when there is no run
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["load_results", "results_path"]


def load_results(path: Path) -> dict[str, Any] | None:
    """The stored run, or None when there is none (or it does not parse)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("results"), list) else None


def results_path(home: Path) -> Path:
    """Where a data directory keeps its latest red-team results."""
    return home / "redteam" / "latest.json"
