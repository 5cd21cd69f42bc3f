"""strongroom.units: the numbers and times people read on every face."""

from __future__ import annotations

import pytest

from strongroom.errors import InvalidInput
from strongroom.units import duration, human_bytes, relative, short_code


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"),
                                         (2147483648, "2.0 GiB"), (364974474, "348.1 MiB"),
                                         (1099511627776, "1.0 TiB")])
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(("s", "text"), [(45, "45 s"), (720, "12 min"), (14400, "4 h"),
                                         (86400, "1 day"), (3.5 * 86400, "3.5 days")])
def test_duration(s: float, text: str) -> None:
    assert duration(s) == text


def test_relative_times() -> None:
    assert relative(1000.0, now=1002.0) == "just now"
    assert relative(1000.0, now=1190.0) == "3.2 min ago"
    assert relative(1000.0 + 7200, now=1000.0) == "in 2 h"


def test_short_code_is_the_digest_head_in_groups() -> None:
    digest = "3f2a91bc77d012ef" + "0" * 48
    assert short_code(digest) == "3F2A-91BC-77D0-12EF"
    assert short_code(digest.upper()) == short_code(digest)
    with pytest.raises(InvalidInput, match="not a hex digest"):
        short_code("<script>")
