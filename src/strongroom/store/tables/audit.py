"""Tables of the audit log (owned by ``strongroom.audit``)."""

from __future__ import annotations

__all__: list[str] = []
