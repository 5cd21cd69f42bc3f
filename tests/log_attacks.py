"""Attacks on the audit log's tables, written the way an insider with SQL access would.

Imported by name from tests in any folder (not a test module). The attacks live with
the red-team suite (:mod:`strongroom.redteam.tamper`), which replays them against its target.
"""

from __future__ import annotations

from strongroom.redteam.tamper import truncate_tail

__all__ = ["truncate_tail"]
