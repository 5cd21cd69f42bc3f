"""Query budgets and suspensions survive a restart and are shared by gateways on one database.

Each "process" here is a gateway with its own store engine and its own audit log (its own
group-commit writer) on the same database URL, as two ``strongroom gateway serve`` processes
are. Each test that proves a property also runs the same steps with persistence off (the
budget in memory only, as before) and sees the control fail: the reset it guards against.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from strongroom.audit.log import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.errors import IntegrityError
from strongroom.gateway import (
    AllowList,
    MemoryAlertSink,
    SignedRequestAuth,
    sign_release,
    start_gateway,
)
from strongroom.gateway import usage as usage_module
from strongroom.gateway.defence import DetectorConfig, LimitsConfig
from strongroom.gateway.server import Gateway, GatewayConfig
from strongroom.gateway.usage import UsageLedger
from strongroom.keys.identity import Identity
from strongroom.store.db import Store
from strongroom.vault.vault import Vault

from gateway_helpers import ToyModel, embed_request, make_toy_artifact

MODEL = "toy@1"
BUDGET = 10
IVY = Identity.generate("ivy")
JOE = Identity.generate("joe")
NATURAL = "the cat sat on the mat"


@dataclass
class Proc:
    """One gateway process: its store, its audit log, its gateway and alerts."""

    store: Store
    log: AuditLog
    gateway: Gateway
    alerts: MemoryAlertSink

    def ask(self, who: Identity, n: int, *, words: str = NATURAL, host: str = "10.0.0.1") -> int:
        texts = [f"{words} {i}" for i in range(n)]
        return embed_request(self.gateway, who, texts, host=host).status


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _model() -> ToyModel:
    rng = np.random.default_rng(3)
    tensors = {
        "toy.in.weight": rng.standard_normal((24, 64)).astype(np.float32),
        "toy.out.weight": rng.standard_normal((96, 24)).astype(np.float32),
    }
    return ToyModel(tensors, None)  # type: ignore[arg-type]


@contextmanager
def process(
    url: str,
    key: Ed25519PrivateKey,
    *,
    persist: bool = True,
    detector: DetectorConfig | None = None,
) -> Iterator[Proc]:
    """A gateway as ``start_gateway`` builds it: usage replayed from the log before serving."""
    store = Store.open(url)
    log = AuditLog(store, Ed25519Signer("gateway.test/log", key))
    alerts = MemoryAlertSink()
    config = GatewayConfig(
        limits=LimitsConfig(principal_budget=BUDGET, principal_rate=1e6, principal_burst=10**6),
        detector=detector or DetectorConfig(),
        persist_usage=persist,
    )
    usage = None
    try:
        if persist:
            usage = UsageLedger(log, MODEL, config.limits, suspend_s=config.detector.suspend_s)
            usage.load(time.time())
        gw = Gateway(
            _model(),
            MODEL,
            auth=SignedRequestAuth([IVY.public, JOE.public]),
            authorizer=AllowList({"ivy", "joe"}),
            audit=log,
            alerts=alerts,
            config=config,
            usage=usage,
        )
        yield Proc(store, log, gw, alerts)
    finally:
        log.close()
        store.close()


@pytest.mark.parametrize("persist", [True, False])
def test_budget_spent_before_a_restart_stays_spent(
    db_url: str, key: Ed25519PrivateKey, persist: bool
) -> None:
    with process(db_url, key, persist=persist) as a:
        assert a.ask(IVY, 8) == 200
    with process(db_url, key, persist=persist) as b:
        if not persist:  # the control: in memory only, a restart hands out a fresh day
            assert b.ask(IVY, 8) == 200
            return
        assert b.ask(IVY, 4) == 429
        assert b.ask(IVY, 2) == 200
        assert b.ask(IVY, 1) == 429
        assert b.ask(JOE, 10) == 200  # another caller's day is untouched
        refused = [
            e for e in b.log.tail(10) if e.decision == "throttle" and "query budget" in e.reason
        ]
        assert refused and all(e.actor == "ivy" for e in refused)
        assert any(a.kind == "query-budget" for a in b.alerts.alerts)


@pytest.mark.parametrize("persist", [True, False])
def test_a_suspension_survives_a_restart(
    db_url: str, key: Ed25519PrivateKey, persist: bool
) -> None:
    detector = DetectorConfig(random_texts=4, suspend_s=600)
    with process(db_url, key, persist=persist, detector=detector) as a:
        noise = [f"qzxv{i} brrkt{i} xjqw{i} pfft{i}" for i in range(6)]
        reply = embed_request(a.gateway, IVY, noise)
        assert reply.status == 429 and b"suspended" in reply.body
        assert a.ask(IVY, 1) == 429
    with process(db_url, key, persist=persist, detector=detector) as b:
        status = b.ask(IVY, 1)
        assert status == (429 if persist else 200)
        if persist:
            assert b.ask(JOE, 1) == 200  # only the suspended caller
            last = b.log.tail(3)
            assert any(
                e.actor == "ivy" and e.decision == "throttle" and "suspended" in e.reason
                for e in last
            )


@pytest.mark.parametrize("persist", [True, False])
def test_two_gateway_processes_share_one_budget(
    db_url: str, key: Ed25519PrivateKey, persist: bool
) -> None:
    with process(db_url, key, persist=persist) as a, process(db_url, key, persist=persist) as b:
        assert a.ask(IVY, 6) == 200
        if not persist:  # the control: each process keeps its own budget
            assert b.ask(IVY, 6) == 200
            return
        assert b.ask(IVY, 6) == 429
        assert b.ask(IVY, 4) == 200
        assert a.ask(IVY, 1) == 429


@pytest.mark.parametrize("persist", [True, False])
def test_concurrent_requests_on_two_processes_never_pass_the_budget(
    db_url: str, key: Ed25519PrivateKey, persist: bool
) -> None:
    answered: list[int] = []
    lock = threading.Lock()
    with process(db_url, key, persist=persist) as a, process(db_url, key, persist=persist) as b:

        def hammer(p: Proc) -> None:
            for _ in range(BUDGET):
                if p.ask(IVY, 1) == 200:
                    with lock:
                        answered.append(1)

        threads = [threading.Thread(target=hammer, args=(p,)) for p in (a, b, a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        charged = sum(
            e.details.get("texts", 0)
            for e in a.log.events(0)
            if e.action == "gateway.infer" and e.decision == "allow"
        )
    assert charged == len(answered)
    if persist:
        assert len(answered) == BUDGET
    else:  # the control: four requesters on two processes get more than one budget
        assert len(answered) > BUDGET


def _allow_indices(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT idx, body FROM audit_entries ORDER BY idx")).all()
    return [
        int(i)
        for i, body in rows
        if b'"gateway.infer"' in bytes(body) and b'"allow"' in bytes(body)
    ]


@contextmanager
def restarted(url: str, key: Ed25519PrivateKey) -> Iterator[UsageLedger]:
    """The ledger a restarted gateway builds (not loaded yet)."""
    store = Store.open(url)
    log = AuditLog(store, Ed25519Signer("gateway.test/log", key))
    try:
        yield UsageLedger(log, MODEL, LimitsConfig(principal_budget=BUDGET))
    finally:
        log.close()
        store.close()


def restart_after_tampering(
    url: str,
    key: Ed25519PrivateKey,
    unguard: str | None,
    monkeypatch: pytest.MonkeyPatch,
    *,
    refused: str,
    believed: int,
) -> None:
    """Restart: the load refuses naming ``refused``; with check ``unguard`` switched off it
    loads and believes ivy used only ``believed`` texts (the reset the check prevents)."""
    if unguard is not None:
        monkeypatch.setattr(UsageLedger, unguard, lambda *_: None)
    with restarted(url, key) as usage:
        if unguard is not None:
            usage.load(time.time())
            assert usage.used("ivy", time.time()) == believed
            return
        with pytest.raises(IntegrityError, match=refused):
            usage.load(time.time())
        assert usage.broken is not None


@pytest.mark.parametrize("guarded", [True, False])
@pytest.mark.parametrize("attack", ["delete", "edit"])
def test_a_dba_deleting_or_editing_a_charge_does_not_reset_the_budget(
    db_url: str,
    key: Ed25519PrivateKey,
    attack: str,
    guarded: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with process(db_url, key) as a:
        assert a.ask(IVY, 8) == 200
        a.log.checkpoint(require_quorum=False)
        if attack == "delete":
            assert a.ask(IVY, 1) == 200  # after the checkpoint: not yet covered by a signature
        victim = _allow_indices(a.store)[-1]
        with a.store.engine.begin() as conn:
            if attack == "delete":
                conn.execute(text("DELETE FROM audit_entries WHERE idx = :i"), {"i": victim})
            else:
                body = conn.execute(
                    text("SELECT body FROM audit_entries WHERE idx = :i"), {"i": victim}
                ).scalar_one()
                edited = bytes(body).replace(b'"texts":8', b'"texts":1')
                assert edited != bytes(body)
                conn.execute(
                    text("UPDATE audit_entries SET body = :b WHERE idx = :i"),
                    {"b": edited, "i": victim},
                )
    # the control: without the gap check a deleted charge is forgotten; without the Merkle
    # check an edited one is believed
    check, refused, believed = {
        "delete": ("_contiguous", f"audit entry {victim} is missing", 8),
        "edit": ("_prove", "do not match the signed checkpoint: an entry was altered", 1),
    }[attack]
    restart_after_tampering(
        db_url, key, None if guarded else check, monkeypatch, refused=refused, believed=believed
    )


def test_a_dba_deleting_charges_while_serving_is_refused_and_alerted(
    db_url: str, key: Ed25519PrivateKey
) -> None:
    with process(db_url, key) as a, process(db_url, key) as b:
        assert a.ask(IVY, 8) == 200
        (victim,) = _allow_indices(a.store)
        with a.store.engine.begin() as conn:  # b has not read it yet
            conn.execute(text("DELETE FROM audit_entries WHERE idx = :i"), {"i": victim})
        reply = embed_request(b.gateway, IVY, ["the cat 1", "the cat 2", "the cat 3"])
        assert reply.status == 503
        assert json.loads(reply.body)["error"]["type"] == "usage_evidence"
        assert b.ask(JOE, 1) == 503  # fails closed for everyone until restored and restarted
        (alert,) = [x for x in b.alerts.alerts if x.kind == "usage-evidence"]
        assert alert.severity == "critical" and str(victim) in alert.message


OWNERS = [Identity.generate(n) for n in ("alice", "bob")]


@pytest.mark.parametrize("persist", [True, False])
def test_start_gateway_replays_the_day_from_the_vaults_audit_log(
    vault: Vault, tmp_path: Path, persist: bool
) -> None:
    """The wiring ``strongroom gateway serve`` runs: ``start_gateway`` loads the ledger."""
    make_toy_artifact(tmp_path / "toy")
    vault.import_weights(tmp_path / "toy", "toy")
    release = sign_release(OWNERS)

    def start() -> Gateway:
        return start_gateway(
            vault,
            "toy",
            release=release,
            code_owners=[o.public for o in OWNERS],
            threshold=2,
            auth=SignedRequestAuth([IVY.public]),
            authorizer=AllowList({"ivy"}),
            alerts=MemoryAlertSink(),
            blas_threads=None,
            config=GatewayConfig(
                limits=LimitsConfig(principal_budget=BUDGET), persist_usage=persist
            ),
        )

    gw = start()
    try:
        assert embed_request(gw, IVY, [f"{NATURAL} {i}" for i in range(8)]).status == 200
    finally:
        gw.close()
    gw = start()
    try:
        status = embed_request(gw, IVY, [f"{NATURAL} {i}" for i in range(4)]).status
    finally:
        gw.close()
    assert status == (429 if persist else 200)
    starts = [e for e in vault.audit.tail(10) if e.action == "gateway.start"]
    if persist:
        assert starts[-1].details["usage_entries_replayed"] == 1


@pytest.mark.parametrize("edited", [False, True])
def test_the_replay_from_inside_the_log_is_proven_against_the_signed_root(
    db_url: str, key: Ed25519PrivateKey, edited: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window starts mid-log: the subtrees left of it come from one inclusion proof."""
    monkeypatch.setattr(usage_module, "_BATCH", 4)
    then = [datetime.now(UTC) - timedelta(days=3)]
    store = Store.open(db_url)
    log = AuditLog(store, Ed25519Signer("gateway.test/log", key), clock=lambda: then[0])
    try:
        for i in range(11):  # last week's entries, outside the window
            log.append(actor="ops", action="demo", obj=f"x{i}", decision="allow")
        then[0] = datetime.now(UTC)
        for i in range(5):
            log.append(
                actor="ivy",
                action="gateway.infer",
                obj=MODEL,
                decision="allow",
                details={"texts": 2, "n": i},
            )
        log.append(actor="ops", action="demo", obj="after", decision="allow")
        log.checkpoint(require_quorum=False)
        if edited:
            victim = log.size() - 3
            with store.engine.begin() as conn:
                body = conn.execute(
                    text("SELECT body FROM audit_entries WHERE idx = :i"), {"i": victim}
                ).scalar_one()
                conn.execute(
                    text("UPDATE audit_entries SET body = :b WHERE idx = :i"),
                    {"b": bytes(body).replace(b'"texts":2', b'"texts":0'), "i": victim},
                )
    finally:
        log.close()
        store.close()
    with restarted(db_url, key) as usage:  # a fresh log: nothing cached from the appends
        if edited:
            with pytest.raises(IntegrityError, match="an entry was altered"):
                usage.load(time.time())
            return
        assert usage.load(time.time()) == 5
        assert usage.used("ivy", time.time()) == 10
