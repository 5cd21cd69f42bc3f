"""The scenario schema: the shipped files load; bad files are refused with clear errors."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.errors import InvalidInput
from strongroom.redteam.schema import GROUPS, Scenario, load_builtin, load_scenario, parse_scenario

VALID: dict[str, Any] = {
    "id": "RT-TEST-001",
    "title": "a test scenario",
    "group": "credentials",
    "control": "grant-evidence",
    "mitre": {"attack": ["T1078"]},
    "adversary": "OC2",
    "preconditions": [{"step": "enroll", "args": {"who": "eve"}}],
    "steps": [{"step": "load_weights", "args": {"who": "eve"}}],
    "expect": {"blocked": {"action": "key.release", "reason": "no grant"}},
    "needs": ["insider"],
    "timeout_s": 10,
}

#: Topics issue #10 requires, by scenario id.
REQUIRED = {
    "RT-CRED-001": "stolen engineer credentials", "RT-MPA-001": "one approver compromised",
    "RT-MPA-002": "self-approval", "RT-MPA-003": "replayed approval",
    "RT-DBA-001": "a DBA inserting a Grant", "RT-KEY-001": "key operations on a sealed vault",
    "RT-KEY-002": "share replay across ceremonies", "RT-EXF-002": "slow exfiltration",
    "RT-EXF-001": "bulk exfiltration", "RT-EXF-003": "canary touch",
    "RT-TAMPER-001": "audit edit", "RT-TAMPER-002": "audit delete",
    "RT-TAMPER-003": "audit truncate", "RT-TAMPER-004": "audit fork",
    "RT-SUP-001": "malicious pickle", "RT-SUP-002": "tampered airgap bundle",
    "RT-GW-001": "unsigned gateway code", "RT-GW-002": "extraction on the gateway",
    "RT-VET-001": "lapsed vetting", "RT-CMP-001": "document across compartments",
    "RT-BG-001": "break-glass", "RT-BG-002": "break-glass abuse",
    "RT-KEY-003": "HSM PIN guessing", "RT-SRV-001": "RFC 9421 request replay",
    "RT-SRV-002": "CSRF on approval",
}


def test_shipped_scenarios_load() -> None:
    scenarios = load_builtin()
    assert len(scenarios) >= 25
    ids = [s.id for s in scenarios]
    assert len(ids) == len(set(ids))
    assert set(REQUIRED) <= set(ids), set(REQUIRED) - set(ids)
    for s in scenarios:
        assert s.group in GROUPS and s.steps and (s.attack or s.atlas)
        assert s.expect.blocked or s.expect.detected
    tamper = [s for s in scenarios if s.id.startswith("RT-TAMPER")]
    assert all("T1070" in s.attack and "T1070" in s.attack_pre_v19 for s in tamper)


def test_every_scenario_declares_known_needs() -> None:
    from strongroom.redteam.schema import NEEDS

    for s in load_builtin():
        assert s.needs and set(s.needs) <= set(NEEDS), s.id
    live = {s.id for s in load_builtin() if set(s.needs) <= {"network", "insider", "dba"}}
    assert {"RT-CRED-001", "RT-SRV-001", "RT-ABS-006", "RT-DBA-001"} <= live


def test_select_by_id_and_unknown_id() -> None:
    assert [s.id for s in load_builtin(["RT-CRED-001"])] == ["RT-CRED-001"]
    with pytest.raises(InvalidInput, match="RT-NOPE-001"):
        load_builtin(["RT-NOPE-001"])


def _with(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize(("doc", "message"), [
    (_with(id="cred-1"), "id"),
    (_with(group="hacking"), "not one of RAND's groups"),
    (_with(control="the-firewall"), "not a known control"),
    (_with(control=None), "control"),
    (_with(steps=[{"step": "__import__", "args": {}}]), "not a valid name"),
    (_with(steps=[{"step": "rm_rf_slash"}]), "unknown step 'rm_rf_slash'"),
    (_with(steps=[{"step": "load_weights", "code": "os.system('x')"}]), "steps[0]"),
    (_with(steps=[]), "at least one step"),
    (_with(steps=None), "at least one step"),
    (_with(mitre={"attack": ["1078"]}), "mitre.attack"),
    (_with(mitre={"attack": [], "atlas": []}), "at least one ATT&CK or ATLAS"),
    (_with(mitre={"attack": ["T1078"], "capec": []}), "mitre"),
    (_with(adversary="APT29"), "adversary"),
    (_with(expect={}), "blocked, detected or both"),
    (_with(expect={"blocked": True}), "needs checks"),
    (_with(expect={"detected": "not a detector!"}), "expect.detected"),
    (_with(expect={"blocked": {"action": "key.release", "why": "x"}}), "expect.blocked"),
    (_with(expect={"detected": "SR-X", "checks": [{"check": "nope"}]}), "unknown check"),
    (_with(timeout_s=0), "timeout_s"),
    (_with(timeout_s=True), "timeout_s"),
    (_with(timeout_s=10_000), "timeout_s"),
    (_with(extra_field=1), "unknown field"),
    (_with(title=""), "title"),
    (_with(preconditions=[{"step": "enroll", "args": ["eve"]}]), "args must be a mapping"),
    (_with(needs=None), "must list what the attacker must hold"),
    (_with(needs=[]), "must list what the attacker must hold"),
    (_with(needs=["root-on-everything"]), "unknown need(s) root-on-everything"),
])
def test_bad_documents_are_refused_naming_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_scenario(doc, "bad.yaml")
    assert message in err.value.message
    assert err.value.obj == "bad.yaml"


def test_yaml_errors_and_non_mappings() -> None:
    with pytest.raises(InvalidInput, match="does not parse"):
        load_scenario("id: [unclosed", "x.yaml")
    with pytest.raises(InvalidInput, match="must be a mapping"):
        load_scenario("- a\n- b\n", "x.yaml")
    with pytest.raises(InvalidInput):
        load_scenario("!!python/object/apply:os.system ['true']", "x.yaml")


def test_valid_document_round_trips() -> None:
    sc = load_scenario(yaml.safe_dump(VALID), "ok.yaml")
    assert isinstance(sc, Scenario)
    assert sc.expect.audit_action == "key.release" and sc.expect.reason == "no grant"


_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
                  st.lists(st.text(max_size=6), max_size=3))
_value = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from([*sorted(VALID), "notes", "needs", "cleanup", "zzz"]), value=_value)
def test_any_mutation_parses_or_is_refused_cleanly(key: str, value: Any) -> None:
    doc = copy.deepcopy(VALID)
    doc[key] = value
    try:
        parse_scenario(doc, "fuzz.yaml")
    except InvalidInput as exc:
        assert exc.obj == "fuzz.yaml" and exc.message


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_loader(text: str) -> None:
    with contextlib.suppress(InvalidInput):
        load_scenario(text, "fuzz.yaml")
