"""Checkpoints without being asked, and a rolled-back log caught (issue 15, item 3)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from log_attacks import truncate_tail
from strongroom.audit import AuditLog, WitnessClient
from strongroom.audit.config import AuditSettings
from strongroom.audit.highwater import HIGH_WATER_NAME, HighWater, check_extends, witness_marks
from strongroom.audit.publisher import CheckpointPublisher
from strongroom.crypto.note import SIG_COSIGNATURE_V1, Ed25519Signer, generate_key
from strongroom.errors import AuditUnavailable, IntegrityError
from strongroom.keys.config import KeysSettings
from strongroom.monitor.alerts import AlertManager
from strongroom.runtime.services import LocalKeyService
from strongroom.store.db import Store

from audit_helpers import ORIGIN, MakeWitness, fill
from keyring_fixtures import init_shamir, officer_evidence, submit


def _wait(predicate: Callable[[], bool], limit: float = 10.0) -> float:
    """Seconds until ``predicate()`` held (polled every 5 ms); fails after ``limit``."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < limit, "timed out"
        time.sleep(0.005)
    return time.monotonic() - start


@pytest.fixture
def witnessed(store: Store, signer: Ed25519Signer, make_witness: MakeWitness,
              tmp_path: Path) -> Iterator[tuple[AuditLog, WitnessClient]]:
    _, client = make_witness("witness.test/w1", [signer.vkey])
    log = AuditLog(store, signer, ORIGIN, witnesses=[client], quorum=1)
    try:
        yield log, client
    finally:
        log.close()


def test_a_witness_answers_what_it_last_cosigned(
    witnessed: tuple[AuditLog, WitnessClient],
) -> None:
    log, client = witnessed
    assert client.latest(ORIGIN) is None
    assert client.latest("strongroom.test/other") is None
    fill(log, 5)
    log.checkpoint()
    view = client.latest(ORIGIN)
    assert view is not None and view.checkpoint.size == 5
    assert log.opened(view.note).cosigners == ("witness.test/w1",)  # the log's signature too


def test_new_entries_are_signed_and_witnessed_within_the_interval(
    witnessed: tuple[AuditLog, WitnessClient], tmp_path: Path,
) -> None:
    """The window of an unseen tail deletion, measured at its worst: an entry appended just
    after a checkpoint waits one interval, then the witness's answer."""
    log, client = witnessed
    interval = 0.3
    publisher = CheckpointPublisher(log, HighWater(tmp_path / HIGH_WATER_NAME, log), interval)
    publisher.start()
    try:
        fill(log, 1)
        _wait(lambda: (v := client.latest(ORIGIN)) is not None and v.checkpoint.size == 1)
        fill(log, 1)  # right after a checkpoint: the worst case
        window = _wait(lambda: (v := client.latest(ORIGIN)) is not None
                       and v.checkpoint.size == 2)
    finally:
        publisher.stop()
    print(f"tail-deletion window at interval {interval} s: {window:.3f} s")
    assert window <= interval + 0.5
    assert HighWater(tmp_path / HIGH_WATER_NAME, log).size() == 2
    assert (tmp_path / HIGH_WATER_NAME).stat().st_mode & 0o777 == 0o600
    assert publisher.status().witness_lag_s == {"witness.test/w1": 0.0}


def test_a_witness_that_is_down_delays_no_append(
    store: Store, signer: Ed25519Signer, tmp_path: Path,
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        time.sleep(0.2)
        raise httpx.ConnectError("down", request=request)

    _, vkey = generate_key("witness.test/down", SIG_COSIGNATURE_V1)
    down = WitnessClient("http://down.test", vkey,
                         client=httpx.Client(transport=httpx.MockTransport(refuse)))
    with AuditLog(store, signer, ORIGIN, witnesses=[down]) as log:
        high_water = HighWater(tmp_path / HIGH_WATER_NAME, log)
        publisher = CheckpointPublisher(log, high_water, 0.05)
        publisher.start()
        try:
            start = time.monotonic()
            for _ in range(20):
                fill(log, 1)
            appends = time.monotonic() - start
            _wait(lambda: high_water.size() == 20)
            time.sleep(0.3)
            lag = publisher.status().witness_lag_s["witness.test/down"]
        finally:
            publisher.stop()
    # 20 one-entry commits: waiting on the 0.2 s witness would take >= 4 s; the bound is
    # loose so a loaded CI machine cannot fail it, and still far below that.
    assert appends < 2.5
    assert lag > 0.2


def _tail_and_mark(store: Store, tmp_path: Path) -> tuple[int, AuditLog]:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(store, Ed25519Signer(ORIGIN, key), ORIGIN)
    fill(log, 4)
    high_water = HighWater(tmp_path / HIGH_WATER_NAME, log)
    log.checkpoint(on_signed=high_water.record)
    fill(log, 3)
    log.checkpoint(on_signed=high_water.record)
    return 4, log


def test_a_truncated_and_recomputed_tail_passes_the_tables_but_not_the_high_water(
    store: Store, tmp_path: Path,
) -> None:
    kept, log = _tail_and_mark(store, tmp_path)
    try:
        truncate_tail(store, kept)
        report = log.verify()  # the tables agree with themselves again: the attack
        assert report.size == kept
        with pytest.raises(IntegrityError, match=r"entries 4\.\.6 are gone"):
            for mark in HighWater(tmp_path / HIGH_WATER_NAME, log).marks():
                check_extends(log, mark)
    finally:
        log.close()


def test_a_rewritten_prefix_does_not_extend_the_high_water(store: Store, tmp_path: Path) -> None:
    _, log = _tail_and_mark(store, tmp_path)
    try:
        truncate_tail(store, 2)
        fill(log, 10, actor="mallory")  # longer again, but another history
        with pytest.raises(IntegrityError, match="does not extend the checkpoint of size 7"):
            for mark in HighWater(tmp_path / HIGH_WATER_NAME, log).marks():
                check_extends(log, mark)
    finally:
        log.close()


# -- the attack of issue 15, replayed against the key service ---------------------------


class _Deployment:
    """A shamir keyring, its audit log witnessed by one in-process witness; re-unsealable."""

    def __init__(self, store: Store, tmp: Path, make_witness: MakeWitness) -> None:
        self.store, self.tmp = store, tmp
        self.result, self.cust = init_shamir(store, tmp)
        self.home = tmp / "home"
        self.home.mkdir()
        self._make_witness = make_witness
        self.witness: WitnessClient | None = None

    def audit_factory(self, store: Store, key: Ed25519PrivateKey) -> AuditLog:
        settings = AuditSettings(witnesses="", witness_quorum=0)
        if self.witness is None:
            origin = settings.default_origin(key)
            vkey = Ed25519Signer(origin, key).vkey
            _, self.witness = self._make_witness("witness.test/w1", [vkey])
        return settings.open_log(store, key, witnesses=[self.witness])

    def unseal(self) -> LocalKeyService:
        svc = LocalKeyService(self.store, KeysSettings(key_backend="shamir"),
                              audit_factory=self.audit_factory,
                              evidence_factory=officer_evidence,
                              alerts_file=self.home / "alerts.jsonl", checkpoint_interval=0.2)
        for i in (1, 2):
            submit(svc, self.result, self.cust, i)
        assert svc.audit is not None
        return svc


@pytest.mark.parametrize("evidence", ["high-water file", "witness"])
def test_checkpoint_three_releases_truncate_then_unseal_is_refused(
    store: Store, tmp_path: Path, make_witness: MakeWitness, evidence: str,
) -> None:
    """checkpoint -> 3 key.release entries -> wait > interval -> delete them and recompute
    the tree with plain SHA-256 -> the next unseal refuses releases and raises SR-AUDIT-ROLLBACK."""
    deployment = _Deployment(store, tmp_path, make_witness)
    svc = deployment.unseal()
    assert svc.audit is not None
    opened = svc.audit.opened(svc.audit.checkpoint())
    kept = opened.checkpoint.size
    for shard in range(3):
        svc.audit.append(actor="alice", action="key.release", obj="minilm@1",
                         decision="allow", shard=f"shard-{shard}", nbytes=1 << 20)
    grown = svc.audit.size()
    high_water = deployment.home / HIGH_WATER_NAME
    _wait(lambda: HighWater(high_water, svc.audit).size() >= grown)  # type: ignore[arg-type]
    svc.audit.require_intact()
    svc.close()

    truncate_tail(store, kept)
    if evidence == "witness":
        high_water.unlink()  # only the witness remembers now

    again = deployment.unseal()
    try:
        assert again.audit is not None
        with pytest.raises(AuditUnavailable, match=f"checkpoint of size {grown}") as refused:
            again.audit.require_intact()
        assert f"entries {kept}..{grown - 1} are gone" in refused.value.message
        alerts = AlertManager(store).recent()
        rollback = [a for a in alerts if a.rule == "SR-AUDIT-ROLLBACK"]
        assert rollback and rollback[0].severity == "critical"
        assert evidence in rollback[0].message
    finally:
        again.close()


def test_a_rollback_while_serving_stops_releases(
    store: Store, tmp_path: Path, make_witness: MakeWitness,
) -> None:
    deployment = _Deployment(store, tmp_path, make_witness)
    svc = deployment.unseal()
    try:
        assert svc.audit is not None and svc.publisher is not None
        kept = svc.audit.size()
        fill(svc.audit, 3)
        _wait(lambda: svc.publisher is not None and svc.publisher.status().signed_size >= kept + 3)
        truncate_tail(store, kept)
        _wait(lambda: svc.publisher is not None and svc.publisher.status().rollback is not None)
        with pytest.raises(AuditUnavailable, match="rolled back"):
            svc.audit.require_intact()
        assert any(a.rule == "SR-AUDIT-ROLLBACK" for a in AlertManager(store).recent())
        assert witness_marks(svc.audit)[0].size == kept + 3
    finally:
        svc.close()
