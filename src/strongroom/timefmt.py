"""Times as strongroom writes and reads them: UTC, ISO 8601, second precision.

One writer and one reader, so audit entries, statements, manifests and reports
agree::

    utc_stamp(0.0)                       # "1970-01-01T00:00:00Z"
    parse_utc("1970-01-01T00:00:00Z")    # 0.0
    parse_utc("2026-12-01")              # midnight UTC that day (a bare date is UTC)
    parse_utc("2026-12-01T10:00:00+02:00")  # offsets are honoured

Unreadable text raises :class:`~strongroom.errors.InvalidInput` naming ``obj``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from strongroom.errors import InvalidInput

__all__ = ["parse_utc", "utc_stamp"]


def utc_stamp(t: float | None = None) -> str:
    """``t`` (default: now) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def parse_utc(text: str, *, obj: str = "time") -> float:
    """Seconds since the epoch of an ISO 8601 time; no offset means UTC."""
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"cannot read the time {text!r}", obj=obj,
                           remedy="write an ISO 8601 time, e.g. 2026-12-01 or 2026-12-01T10:00:00Z"
                           ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
