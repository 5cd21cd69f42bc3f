"""The Grant rule a threshold key server runs (``GrantEvidence(break_glass=False)``) refuses break-glass.

The same break-glass, listed on the label and inside its window, releases through the vault's own
gate (``break_glass=True``, the control) and is refused, naming the design and the remedy, by the
rule each key server builds, whether it is carried in the release evidence or stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from access_kit import World, model_world

from strongroom.access.breakglass import submit_break_glass, take
from strongroom.access.evidence import NO_BREAK_GLASS, make_evidence
from strongroom.errors import AccessDenied
from strongroom.release import ReleaseRequest


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with model_world(db_url, tmp_path) as w:
        w.label("minilm", break_glass=("alice",))
        yield w


def _release(w: World, who: str, *, carried: str | None = None) -> bytearray:
    m = w.vault.manifest("minilm")
    entry = m.files[0]
    ident = w.people[who]
    ev = make_evidence(
        ident.private_key,
        artifact=m.ref,
        shard=entry.path,
        blob_id=entry.blob,
        purpose="load",
        break_glass=carried,
    )
    return w.keys.release(
        ReleaseRequest(
            principal=who,
            principal_key=ident.public.public_bytes,
            artifact=m.ref,
            shard=entry.path,
            blob_id=entry.blob,
            nbytes=entry.size,
            purpose="load",
            evidence=ev,
        )
    )


@pytest.mark.parametrize("carried", [True, False], ids=["carried", "stored"])
def test_key_server_rule_refuses_break_glass_the_vault_gate_honours(
    world: World, carried: bool
) -> None:
    w = world
    bg = take(
        w.people["alice"].private_key,
        "alice",
        "minilm",
        "load",
        "incident 4411",
        now=time.time(),
        window_s=300,
    )
    if not carried:
        submit_break_glass(w.store, bg)
    # the control: the vault's own gate honours it (critical, pending review)
    assert len(_release(w, "alice", carried=bg if carried else None)) == 16  # an age file key
    # a key server's rule: refused, naming the design and what to do instead, never released
    w.rule.break_glass = False
    with pytest.raises(AccessDenied) as refused:
        _release(w, "alice", carried=bg if carried else None)
    assert NO_BREAK_GLASS in refused.value.message
    assert "strongroom access request" in (refused.value.remedy or "")
    denied = [e for e in w.vault.audit.tail(5) if e.action == "key.release"][-1]
    assert denied.decision == "deny" and "break-glass" in denied.reason
    # a principal with neither Grant nor break-glass gets the plain Grant refusal, not this one
    with pytest.raises(AccessDenied) as plain:
        _release(w, "bob")
    assert NO_BREAK_GLASS not in plain.value.message
