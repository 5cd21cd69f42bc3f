"""Posture control W-4 (weights only into enclaves), scored from facts.

The live facts (the audit log's releases of an attested-labelled artifact, the
test-roots setting) are read against a real server world in
tests/server/test_server_attested_release.py; here each refusal of the score.
"""

from __future__ import annotations

from typing import Any

from strongroom.posture.assess import ControlResult, assess
from strongroom.posture.facts import Facts

MODEL = {"name": "frontier", "kind": "weights", "verified": True, "attested": "inference",
         "attested_since": 1.0}


def _w4(**kw: Any) -> ControlResult:
    facts = Facts(**{"artifacts": [MODEL],
                     "attested_releases": {"bound": 3, "unbound": 0, "unbound_examples": []},
                     **kw})
    return next(c for f in assess(facts).families for c in f.controls if c.id == "W-4")


def test_met_when_every_model_is_attested_and_every_release_bound() -> None:
    w4 = _w4()
    assert (w4.status, w4.source) == ("met", "verified")
    assert "3 release(s)" in w4.evidence


def test_an_unbound_release_is_named() -> None:
    w4 = _w4(attested_releases={"bound": 1, "unbound": 1,
                                "unbound_examples": ["frontier@1/w.safetensors to mallory"]})
    assert w4.status == "not met" and "mallory" in w4.evidence


def test_a_model_without_the_label_is_named() -> None:
    w4 = _w4(artifacts=[MODEL, {**MODEL, "name": "side", "attested": ""}])
    assert w4.status == "not met" and "side" in w4.evidence


def test_test_roots_are_critical_and_an_unread_log_is_unknown() -> None:
    w4 = _w4(attest_test_roots="/tmp/roots.pem")
    assert w4.status == "not met" and "critical" in w4.evidence
    assert _w4(attested_releases=None).status == "unknown"
    assert _w4(artifacts=[]).status == "unknown"
