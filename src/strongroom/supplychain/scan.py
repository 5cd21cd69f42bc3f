"""Moved to :mod:`strongroom.scanning.scan`; this name stays only until ``vault/vault.py`` imports it from there.

Import :func:`~strongroom.scanning.scan.scan_import` and its kin from
:mod:`strongroom.scanning`. This module is deleted together with the
import-linter ignore ``strongroom.vault.vault -> strongroom.supplychain.scan``.
"""

from __future__ import annotations

from strongroom.scanning.scan import scan_import

__all__ = ["scan_import"]
