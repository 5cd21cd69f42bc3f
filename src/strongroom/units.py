"""Numbers and times as people read them: bytes in binary units, durations, relative times.

One set of formatters for every face (the CLI's tables, the console's pages),
so ``1.5 GiB``, ``4 h`` and ``3 min ago`` read the same everywhere::

    human_bytes(1_610_612_736)          # "1.5 GiB"
    duration(14400)                     # "4 h"
    relative(t, now=t + 190)            # "3 min ago"; relative(t + 3600, now=t) -> "in 1 h"
    short_code("3f2a91bc77d012ef...")   # "3F2A-91BC-77D0-12EF"

Machine outputs (``--json``, exports) keep plain byte counts, seconds and UTC
stamps; these are for people only.
"""

from __future__ import annotations

from strongroom.errors import InvalidInput

__all__ = ["SHORT_CODE_HEX", "duration", "human_bytes", "relative", "short_code"]

#: Hex digits of a digest a short code shows (64 bits: no one can find a second
#: statement with the same code by trying, and it still fits on a phone screen).
SHORT_CODE_HEX = 16

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: float) -> str:
    """``n`` bytes in binary units: ``512 B``, ``1.5 KiB`` … ``2.0 TiB``."""
    value = float(n)
    for unit in _BINARY:
        if abs(value) < 1024 or unit == _BINARY[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("not reached")


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x - round(x)) < 0.05 else f"{x:,.1f}"


def duration(seconds: float) -> str:
    """A span of time as people say it: ``45 s``, ``12 min``, ``4 h``, ``3.5 days``."""
    s = abs(float(seconds))
    if s == float("inf"):
        return "forever"
    for size, unit in ((86400, " days"), (3600, " h"), (60, " min")):
        if s >= size:
            text = _num(s / size) + unit
            return text[:-1] if text == "1 days" else text
    return f"{s:,.0f} s"


def relative(when: float, *, now: float) -> str:
    """``when`` against ``now``: ``just now``, ``3 min ago``, ``in 2 h``."""
    delta = now - when
    if abs(delta) < 5:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(-delta)}"


def short_code(digest_hex: str) -> str:
    """The first :data:`SHORT_CODE_HEX` hex digits of a digest, upper case, in groups of four.

    What a person compares between two screens (the console's approval page and
    ``strongroom access show``) before touching a security key.
    """
    text = digest_hex.strip().lower()
    if len(text) < SHORT_CODE_HEX or any(c not in "0123456789abcdef" for c in text):
        raise InvalidInput(f"not a hex digest: {digest_hex[:80]!r}", obj="short code",
                           remedy="pass a statement's SHA-256 digest (64 hex digits)")
    head = text[:SHORT_CODE_HEX].upper()
    return "-".join(head[i:i + 4] for i in range(0, SHORT_CODE_HEX, 4))
