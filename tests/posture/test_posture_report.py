"""Posture scoring, its JSON twin and the HTML page, from synthetic facts and a live target."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from strongroom.posture.assess import assess
from strongroom.posture.controls import CONTROLS, FAMILIES
from strongroom.posture.declaration import parse_declaration
from strongroom.posture.facts import Facts, collect
from strongroom.posture.report import render_html
from strongroom.redteam.runner import results_path, run_suite, save_results
from strongroom.redteam.schema import load_builtin
from strongroom.redteam.target import EmbeddedTarget

GROUPS = ("access-control", "ai-specific", "bypass", "credentials", "humint", "supply-chain",
          "unauthorized-code")
FULL_DECLARATION = {
    "assessor": "tester", "confidential_computing": True,
    "facility": {"physical_access_control": True, "guarded_24x7": True,
                 "side_channel_protection": True},
    "network": {"isolated_enclave": True, "airgapped": True, "hardware_bandwidth_limits": True},
    "hsm": {"certified": "fips-140-3-level-3"},
    "vetting": {"depth": "government-top-secret", "continuous_evaluation": True},
    "soc": {"staffed_24x7": True},
    "redteam": {"third_party_within_days": 30, "nation_state_exercise": True},
}


def _redteam(missed: tuple[str, ...] = ()) -> dict[str, Any]:
    ids = [s.id for s in load_builtin()]
    group = {s.id: s.group for s in load_builtin()}
    return {"run_id": "rtx", "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "results": [{"id": i, "group": group[i],
                         "outcome": "missed" if i in missed else "blocked"} for i in ids]}


def _perfect(backend: str = "shamir") -> Facts:
    return Facts(
        home="/srv/strongroom",
        keyring={"initialized": True, "sealed": False, "backend": backend, "threshold": 3,
                 "shares": 5, "officer_threshold": 2},
        officers=3, classical_officers=0,
        artifacts=[{"name": "frontier", "kind": "weights", "size": 800 * 2**30, "verified": True,
                    "compartments": ["atlas"], "labelled": True, "load_min": 2,
                    "export_groups": 2}],
        holders={"frontier": {"infer": 40, "load": 10, "export": 3}},
        caps={"infer": 100, "load": 50, "read": 50, "export": 20},
        unvetted_holders=0, enrolled=60,
        audit={"size": 1000, "checkpoints": 10, "cosigned": True, "verify_ok": True,
               "verify_message": "verified 1000 entries"},
        witnesses=3, witness_quorum=2, principal_cap_bytes=64 * 2**30,
        exfiltration=[{"artifact": "frontier", "size": 800 * 2**30, "days": 12.5}],
        canaries=2, lock_ok=True, lock_detail="pins match", redteam=_redteam(),
        wraps={"custodians": 5, "classical_custodians": 0, "transfers": 2,
               "classical_transfers": 0})


def test_software_only_never_reaches_sl4() -> None:
    result = assess(_perfect())
    assert result.level <= 3
    keys = next(f for f in result.families if f.key == "keys")
    assert keys.level == 3 and "K-4" in keys.next_step


def test_classical_custodians_hold_keys_below_sl4() -> None:
    facts = _perfect("hsm")
    assert facts.wraps is not None
    facts.wraps["classical_transfers"] = 1
    hsm = assess(facts, parse_declaration(FULL_DECLARATION))
    keys = next(f for f in hsm.families if f.key == "keys")
    assert keys.level == 3 and "K-5" in keys.next_step


def test_classical_officers_hold_keys_below_sl4() -> None:
    """K-5 flags officers who sign with Ed25519 alone, as it flags classical custodians."""
    facts = _perfect("hsm")
    declaration = parse_declaration(FULL_DECLARATION)
    keys = next(f for f in assess(facts, declaration).families if f.key == "keys")
    assert keys.level == 4  # every officer hybrid: met
    facts.classical_officers = 2
    keys = next(f for f in assess(facts, declaration).families if f.key == "keys")
    k5 = next(c for c in keys.controls if c.id == "K-5")
    assert keys.level == 3 and k5.status == "not met", k5
    assert "2 of 3 officers sign with Ed25519 alone" in k5.evidence
    facts.classical_officers = None  # sealed: not known, so not met
    keys = next(f for f in assess(facts, declaration).families if f.key == "keys")
    assert keys.level == 3


def test_every_declaration_cannot_lift_software_keys() -> None:
    result = assess(_perfect("shamir"), parse_declaration(FULL_DECLARATION))
    assert result.level <= 3
    hsm = assess(_perfect("hsm"), parse_declaration(FULL_DECLARATION))
    keys = next(f for f in hsm.families if f.key == "keys")
    assert keys.level == 4


def test_unknown_never_counts_as_met() -> None:
    result = assess(Facts(home="/x"))
    assert result.level == 0
    statuses = {c.status for f in result.families for c in f.controls}
    assert "met" not in statuses


def test_one_miss_lowers_red_teaming() -> None:
    good = next(f for f in assess(_perfect()).families if f.key == "redteam")
    bad = next(f for f in assess(_perfect().__class__(**{**_perfect().__dict__,
                                                        "redteam": _redteam(("RT-EXF-001",))})
                                 ).families if f.key == "redteam")
    assert good.level > bad.level == 1
    assert "RT-EXF-001" in bad.controls[1].evidence


def test_caps_over_sl3_limits_fail_access() -> None:
    facts = _perfect()
    facts.holders = {"frontier": {"load": 51}}
    access = next(f for f in assess(facts).families if f.key == "access")
    assert access.level == 2 and "frontier load 51/50" in access.next_step


def test_json_twin_structure() -> None:
    doc = assess(_perfect()).to_json()
    assert set(doc) == {"generated", "overall", "families", "evidence", "declaration"}
    assert [f["key"] for f in doc["families"]] == list(FAMILIES)
    for fam in doc["families"]:
        assert {"key", "title", "level", "next_level", "to_reach_next", "controls"} <= set(fam)
        for c in fam["controls"]:
            assert c["status"] in ("met", "not met", "unknown", "declared")
            assert 1 <= c["level"] <= 5 and c["evidence"]
    assert len({c.id for c in CONTROLS}) == len(CONTROLS)


def test_html_is_self_contained_and_escaped() -> None:
    facts = _perfect()
    facts.artifacts[0]["name"] = "<script>alert(1)</script>"
    facts.artifacts[0]["labelled"] = False
    decl = parse_declaration({**FULL_DECLARATION, "assessor": "<img src=x onerror=alert(1)>"},
                             "decl.yaml")
    html = render_html(assess(facts, decl))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "<svg" in html
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", html)
    assert "<link" not in html and "@import" not in html
    assert "SL" in html and "To reach SL" in html


@pytest.fixture(scope="module")
def assessed_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedTarget, Facts]]:
    target = EmbeddedTarget.build(tmp_path_factory.mktemp("posture-target"))
    try:
        report = run_suite(target, load_builtin(["RT-CRED-001", "RT-SUP-001", "RT-EXF-003"]))
        home = target.root / "home"
        save_results(results_path(home), report)
        yield target, collect(home, target.store, target.keys)
    finally:
        target.close()


def test_collect_from_a_live_deployment(assessed_target: tuple[EmbeddedTarget, Facts]) -> None:
    _, facts = assessed_target
    assert facts.keyring is not None and facts.keyring["threshold"] == 2
    assert facts.officers == 2 and facts.audit is not None and facts.audit["verify_ok"]
    assert facts.holders is not None and facts.holders["atlas-ckpt"]["load"] >= 1
    assert facts.canaries == 1 and facts.exfiltration
    assert facts.redteam is not None and len(facts.redteam["results"]) == 3
    result = assess(facts)
    assert result.level <= 2  # no witness, no declaration: an evaluation install
    keys = next(f for f in result.families if f.key == "keys")
    assert keys.level == 3
