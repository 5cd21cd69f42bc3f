"""Every scenario can fail: with the control it names switched off, it grades *missed*.

Each scenario declares its control (``control:``); ``control_switches.SWITCHES``
turns that control off in a throw-away target — a weakened build, or a
monkeypatch of the enforcing code held only while the scenario runs — and the
scenario must then be graded missed, from the evidence, without an error in its
steps (an error would be a miss for the wrong reason). A scenario that still
passes with its control off tests something else, or nothing: a defect of the
suite. Patched controls share one target; each weakening builds its own, once.

The sweep over every scenario is ``slow`` (about 2 min alone on 2 cores); one
scenario of each RAND group runs in ``make test``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from control_switches import SWITCHES

from strongroom.redteam.controls import CONTROLS
from strongroom.redteam.runner import run_scenario
from strongroom.redteam.schema import GROUPS, load_builtin
from strongroom.redteam.target import EmbeddedTarget

SCENARIOS = {sc.id: sc for sc in load_builtin()}
#: One scenario per group, each with a patched control (no extra build): run in make test.
REPRESENTATIVE = {"RT-GRT-001", "RT-CRED-003", "RT-TAMPER-001", "RT-EXF-003", "RT-SUP-001",
                  "RT-GW-001", "RT-AI-002", "RT-DNA-001"}


class _Targets:
    """One throw-away target per weakening (the plain one for patched controls), built lazily."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[tuple[tuple[str, str], ...], EmbeddedTarget] = {}

    def get(self, weaken: dict[str, str], own: str = "") -> EmbeddedTarget:
        """``own``: a control whose switch applies at build time gets a target of its own."""
        key = tuple(sorted(weaken.items())) + ((("own", own),) if own else ())
        if key not in self.built:
            name = "-".join(v if k == "own" else k for k, v in key) or "plain"
            self.built[key] = EmbeddedTarget.build(self.root / name, weaken=weaken)
        return self.built[key]


@pytest.fixture(scope="module")
def off_targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Targets]:
    targets = _Targets(tmp_path_factory.mktemp("rt-off"))
    try:
        yield targets
    finally:
        for t in targets.built.values():
            t.close()


def test_every_scenario_names_a_control_and_every_control_has_a_switch() -> None:
    assert set(SWITCHES) == set(CONTROLS)
    unused = set(CONTROLS) - {sc.control for sc in SCENARIOS.values()}
    assert not unused, f"controls no scenario tests: {sorted(unused)}"
    impossible = {name for name, s in SWITCHES.items() if s.impossible}
    assert impossible == {"hsm-pin"}, impossible  # a new one needs a switch, or a reason here


def test_every_group_software_can_act_on_has_two_scenarios() -> None:
    counts = {g: sum(1 for sc in SCENARIOS.values() if sc.group == g) for g in GROUPS}
    short = {g: n for g, n in counts.items() if g != "physical" and n < 2}
    assert not short, counts


def _params() -> list[object]:
    return [pytest.param(sid, id=sid, marks=() if sid in REPRESENTATIVE else pytest.mark.slow)
            for sid in SCENARIOS]


@pytest.mark.parametrize("sid", _params())
def test_with_its_control_off_the_scenario_is_missed(sid: str, off_targets: _Targets,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sc = SCENARIOS[sid]
    switch = SWITCHES[sc.control]
    if switch.impossible:
        pytest.skip(f"{sc.control} cannot be switched off: {switch.impossible}")
    if switch.at_build is not None:
        switch.at_build(monkeypatch)
        target = off_targets.get(dict(switch.weaken), own=sc.control)
    else:
        target = off_targets.get(dict(switch.weaken))
    reason = target.unsupported(sc.needs)
    if reason is not None:
        pytest.skip(reason)
    if switch.patch is not None:
        switch.patch(monkeypatch)
    result = run_scenario(target, sc, "rtoff", len(target.people))
    monkeypatch.undo()
    assert result.outcome == "missed", (sc.control, result.evidence)
    errors = [e for e in result.evidence if e["kind"] == "error"]
    assert not errors, (sc.control, errors)  # missed for want of evidence, not by a crash
    assert any(e["kind"] in ("missing", "audit-allow") for e in result.evidence), result.evidence
