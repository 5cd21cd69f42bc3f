"""The CLI's units are the console's (strongroom.units): one formatter, never two that drift."""

from __future__ import annotations

from strongroom import units
from strongroom.cli import render


def test_cli_units_are_the_shared_formatters() -> None:
    assert render.human_bytes is units.human_bytes
    for s in (0, 45, 90, 14400, 86400, 302400):
        assert render.duration(s) == units.duration(s)
    assert render.duration(86400) == "1 day" and render.duration(14400) == "4 h"
    assert render.duration(float("inf")) == "never (cap 0)"  # a zero cap's time to exfiltrate
