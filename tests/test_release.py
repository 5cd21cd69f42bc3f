"""The release gate: order of checks, interim rules, audit fail-closed, on both key backends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from strongroom.errors import (
    AccessDenied,
    AuditUnavailable,
    BudgetExceeded,
    IntegrityError,
    NotFound,
    Sealed,
)
from strongroom.keys import ceremony
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity
from strongroom.release import (
    ReleaseGate,
    ReleaseRequest,
    sign_release_evidence,
)
from strongroom.runtime.services import LocalKeyService
from strongroom.runtime.wiring import default_meter
from strongroom.store.db import Store

from keyring_fixtures import (
    MAIN,
    PIN,
    ClaimedSizes,
    OfficerEvidence,
    SoftHsm,
    audit_factory,
    claimed_sizes,
    officer_evidence,
    softhsm,
    unsealed_service,
)

__all__ = ["softhsm"]


@pytest.fixture(params=["shamir", "hsm"])
def unsealed(request: pytest.FixtureRequest, store: Store, tmp_path: Path
             ) -> Iterator[tuple[LocalKeyService, Identity]]:
    """An unsealed service and its officer, on each backend."""
    if request.param == "shamir":
        svc, _, _, officer = unsealed_service(store, tmp_path)
    else:
        hsm: SoftHsm = request.getfixturevalue("softhsm")
        s = KeysSettings(key_backend="hsm", hsm_library=hsm.library, hsm_token=MAIN, hsm_pin=PIN,
                         hsm_key_label=f"root-{os.urandom(4).hex()}")
        result = ceremony.init_vault(store, custodians=[], threshold=0,
                                     shares_dir=tmp_path / "sh", settings=s)
        svc = LocalKeyService(store, s, audit_factory=audit_factory,
                              evidence_factory=officer_evidence, sizes_factory=claimed_sizes)
        svc.unseal_hsm()
        assert result.officer_identity is not None
        officer = Identity.load(result.officer_identity)
    try:
        yield svc, officer
    finally:
        svc.seal()


def _request(officer: Identity, blob: str = "blob-1", nbytes: int = 1000, **kw: object
             ) -> ReleaseRequest:
    ev = sign_release_evidence(officer.private_key, artifact="m@1", shard="w.safetensors",
                               blob_id=blob, purpose="load", **kw)  # type: ignore[arg-type]
    return ReleaseRequest(principal=officer.public.principal,
                          principal_key=officer.public.public_bytes, artifact="m@1",
                          shard="w.safetensors", blob_id=blob, nbytes=nbytes, purpose="load",
                          evidence=ev)


def _events(svc: LocalKeyService) -> list[tuple[str, str]]:
    assert svc._audit is not None
    return [(e.action, e.decision) for e in svc._audit.events(0, svc._audit.size())
            if e.action == "key.release"]


def test_release_allows_and_audits(unsealed: tuple[LocalKeyService, Identity]) -> None:
    svc, officer = unsealed
    key = os.urandom(16)
    svc.wrap_file_key("blob-1", key)
    got = svc.release(_request(officer))
    assert bytes(got) == key
    assert _events(svc) == [("key.release", "allow")]
    assert svc._audit is not None
    ev = svc._audit.tail(1)[0]
    assert ev.object == "m@1/w.safetensors" and ev.shard == "w.safetensors" and ev.nbytes == 1000


def test_denials_are_audited(unsealed: tuple[LocalKeyService, Identity]) -> None:
    svc, officer = unsealed
    svc.wrap_file_key("blob-1", os.urandom(16))
    stranger = Identity.generate("mallory")
    req = _request(stranger)
    with pytest.raises(AccessDenied, match="not a security officer"):
        svc.release(req)
    good = _request(officer)
    forged = ReleaseRequest(**{**good.__dict__, "shard": "other.safetensors"})
    with pytest.raises(AccessDenied, match="another shard"):
        svc.release(forged)
    with pytest.raises(AccessDenied, match="expired"):
        svc.release(_request(officer, ttl_s=-5))
    with pytest.raises(AccessDenied, match="3600"):
        svc.release(_request(officer, ttl_s=7200))
    svc.release(good)
    with pytest.raises(AccessDenied, match="replay"):
        svc.release(good)
    with pytest.raises(NotFound):
        svc.release(_request(officer, blob="missing"))
    assert [d for _, d in _events(svc)] == ["deny"] * 4 + ["allow", "deny", "deny"]


def test_sealed_refuses(unsealed: tuple[LocalKeyService, Identity]) -> None:
    svc, officer = unsealed
    svc.wrap_file_key("blob-1", os.urandom(16))
    svc.seal()
    with pytest.raises(Sealed, match="unseal"):
        svc.release(_request(officer))


def test_budget(unsealed: tuple[LocalKeyService, Identity]) -> None:
    from strongroom.monitor.egress import Budget, EgressMeter

    svc, officer = unsealed
    svc.wrap_file_key("blob-1", os.urandom(16))
    assert svc._gate is not None
    meter = svc._gate.egress
    assert isinstance(meter, EgressMeter)  # the monitor's durable meter, not an interim one
    meter.set_budget(Budget("principal", "*", 86400, 1500))
    svc.release(_request(officer, nbytes=1000))
    with pytest.raises(BudgetExceeded):
        svc.release(_request(officer, nbytes=1000))
    assert [d for _, d in _events(svc)] == ["allow", "deny"]


def test_audit_unavailable_refuses(unsealed: tuple[LocalKeyService, Identity]) -> None:
    from strongroom.monitor.egress import EgressMeter

    svc, officer = unsealed
    svc.wrap_file_key("blob-1", os.urandom(16))
    assert svc._gate is not None

    class Broken:
        def append(self, **_: object) -> int:
            raise AuditUnavailable("down", obj="audit")

    meter = EgressMeter(svc.store)
    gate = ReleaseGate(svc.keyring, Broken(), evidence=OfficerEvidence(svc.keyring.officers),  # type: ignore[arg-type]
                       egress=meter, sizes=ClaimedSizes())
    with pytest.raises(AuditUnavailable):
        gate.release(_request(officer))
    used = meter.usage(officer.public.principal, "m@1", now=10**10)
    assert all(u.used == 0 for u in used)  # refunded, nothing released


def test_replay_and_budget_survive_restart(store: Store, tmp_path: Path) -> None:
    svc, _, _, officer = unsealed_service(store, tmp_path)
    svc.wrap_file_key("blob-1", os.urandom(16))
    req = _request(officer, nbytes=1000)
    svc.release(req)
    assert svc._audit is not None
    gate = ReleaseGate(svc.keyring, svc._audit,
                       evidence=officer_evidence(svc.keyring, svc.store, svc._audit),
                       egress=default_meter(svc.store, svc._audit), sizes=ClaimedSizes())
    with pytest.raises(AccessDenied, match="replay"):
        gate.release(req)
    import time

    used = {u.budget.scope: u.used for u in gate.egress.usage(officer.public.principal, "m@1", now=time.time())}  # type: ignore[attr-defined]
    assert used["principal"] == 1000
    svc.seal()


def test_a_failed_audit_append_charges_nothing(store: Store, tmp_path: Path) -> None:
    # The charge is decided inside the audit append's transaction: when that fails,
    # the key stays wrapped and the ledger has no row for it (no refund needed).
    svc, _, _, officer = unsealed_service(store, tmp_path)
    try:
        svc.wrap_file_key("blob-1", os.urandom(16))
        gate, audit = svc._gate, svc._audit
        assert gate is not None and audit is not None
        real = audit._writer._insert_entry
        audit._writer._insert_entry = "INSERT INTO no_such_table VALUES (?, ?, ?)"
        try:
            with pytest.raises(AuditUnavailable):
                svc.release(_request(officer, nbytes=1000))
        finally:
            audit._writer._insert_entry = real
        with store.session(readonly=True) as s:
            assert s.execute(text("SELECT count(*) FROM egress_charges")).scalar() == 0
        assert _events(svc) == []
        svc.release(_request(officer, nbytes=1000))
        used = gate.egress.usage(officer.public.principal, "m@1")  # type: ignore[attr-defined]
        assert {u.budget.scope: u.used for u in used}["principal"] == 1000
    finally:
        svc.seal()


def test_replay_through_another_gate_is_refused_by_the_ledger(store: Store,
                                                               tmp_path: Path) -> None:
    # A second gate on the same database (another process) has not seen the nonce; the
    # ledger, which the charge shares a transaction with, has.
    svc, _, _, officer = unsealed_service(store, tmp_path)
    try:
        key = os.urandom(16)
        svc.wrap_file_key("blob-1", key)
        req = _request(officer, nbytes=1000)
        assert bytes(svc.release(req)) == key
        assert svc._audit is not None
        other = ReleaseGate(svc.keyring, svc._audit, evidence=OfficerEvidence(svc.keyring.officers),
                            egress=default_meter(svc.store, svc._audit, backfill=False),
                            sizes=ClaimedSizes())
        with pytest.raises(AccessDenied, match="replay"):
            other.release(req)
        assert [d for _, d in _events(svc)] == ["allow", "deny"]
    finally:
        svc.seal()


def test_a_batch_releases_each_good_request_and_refuses_each_bad_one(
        unsealed: tuple[LocalKeyService, Identity]) -> None:
    svc, officer = unsealed
    keys = {b: os.urandom(16) for b in ("blob-1", "blob-2", "blob-3")}
    for blob, key in keys.items():
        svc.wrap_file_key(blob, key)
    assert svc._audit is not None
    commits: list[int] = []
    svc._audit.observe_commits(lambda n, _: commits.append(n))
    replayed = _request(officer, blob="blob-2")
    out = svc.release_many([
        _request(officer, blob="blob-1"), _request(Identity.generate("mallory"), blob="blob-1"),
        replayed, replayed, _request(officer, blob="missing"), _request(officer, blob="blob-3")])
    assert bytes(out[0]) == keys["blob-1"]  # type: ignore[arg-type]
    assert isinstance(out[1], AccessDenied) and "not a security officer" in out[1].message
    assert bytes(out[2]) == keys["blob-2"]  # type: ignore[arg-type]
    assert isinstance(out[3], AccessDenied) and "replay" in out[3].message
    assert isinstance(out[4], NotFound)
    assert bytes(out[5]) == keys["blob-3"]  # type: ignore[arg-type]
    assert 3 in commits  # the three allow entries went in one transaction
    # Each allow entry was durable before its key came back: another connection reads them.
    other = Store.open(svc.store.url)
    try:
        with other.session(readonly=True) as s:
            bodies = [bytes(b) for (b,) in s.execute(text("SELECT body FROM audit_entries"))]
    finally:
        other.close()
    assert sum(b'"key.release"' in b and b'"allow"' in b for b in bodies) == 3
    assert sorted(d for _, d in _events(svc)) == ["allow"] * 3 + ["deny"] * 3
    assert svc._audit.verify().size == svc._audit.size()


def test_a_batch_counts_its_charges_in_order(unsealed: tuple[LocalKeyService, Identity]) -> None:
    from strongroom.monitor.egress import Budget

    svc, officer = unsealed
    svc.wrap_file_key("blob-1", os.urandom(16))
    assert svc._gate is not None
    svc._gate.egress.set_budget(Budget("principal", "*", 86400, 2500))  # type: ignore[attr-defined]
    out = svc.release_many([_request(officer, nbytes=1000) for _ in range(4)])
    assert [isinstance(o, bytearray) for o in out] == [True, True, False, False]
    assert all(isinstance(o, BudgetExceeded) for o in out[2:])
    used = svc._gate.egress.usage(officer.public.principal, "m@1")  # type: ignore[attr-defined]
    assert {u.budget.scope: u.used for u in used}["principal"] == 2000
    assert [d for _, d in _events(svc)] == ["allow", "allow", "deny", "deny"]


def test_a_failed_batch_commit_charges_and_releases_nothing(store: Store, tmp_path: Path) -> None:
    svc, _, _, officer = unsealed_service(store, tmp_path)
    try:
        svc.wrap_file_key("blob-1", os.urandom(16))
        audit = svc._audit
        assert audit is not None
        real = audit._writer._insert_entry
        audit._writer._insert_entry = "INSERT INTO no_such_table VALUES (?, ?, ?)"
        try:
            out = svc.release_many([_request(officer, nbytes=1000) for _ in range(3)])
        finally:
            audit._writer._insert_entry = real
        assert all(isinstance(o, AuditUnavailable) for o in out)
        with store.session(readonly=True) as s:
            assert s.execute(text("SELECT count(*) FROM egress_charges")).scalar() == 0
        assert _events(svc) == []
    finally:
        svc.seal()


def test_releases_on_one_event_loop_reach_the_agent_as_one_batch(store: Store,
                                                                 tmp_path: Path) -> None:
    # A real agent protocol (AgentServer's connection handler on a Unix socket) in front
    # of an in-process service; the server's asyncio client coalesces what is in flight.
    import asyncio
    import shutil
    import socket
    import threading

    from strongroom.runtime.agent import SOCKET_NAME, AgentClient, AgentServer
    from strongroom.runtime.services import AgentKeyService

    svc, _, _, officer = unsealed_service(store, tmp_path)
    home = Path(f"/tmp/srb-{os.urandom(4).hex()}")  # a short path: a Unix socket's limit
    home.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        key = os.urandom(16)
        svc.wrap_file_key("blob-1", key)
        sizes: list[int] = []
        real = svc.release_many

        def counted(requests: list[ReleaseRequest]) -> list[object]:
            sizes.append(len(requests))
            return real(requests)  # type: ignore[return-value]

        svc.release_many = counted  # type: ignore[assignment,method-assign]
        agent = AgentServer(home)
        agent.service = svc
        listener.bind(str(home / SOCKET_NAME))
        listener.listen(8)

        def accept() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=agent._handle, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        keys = AgentKeyService(AgentClient(home, start=False))
        requests = [_request(officer) for _ in range(5)]
        requests.insert(2, _request(Identity.generate("mallory")))

        async def go() -> list[object]:
            try:
                return await asyncio.gather(*(keys.release_async(r) for r in requests),
                                            return_exceptions=True)
            finally:
                assert keys._async is not None
                keys._async.close()

        out = asyncio.run(go())
        assert sizes == [6]  # one release_many for all six, none waiting on a timer
        assert [bytes(o) if isinstance(o, bytearray) else type(o) for o in out] == \
            [key, key, AccessDenied, key, key, key]
        out = asyncio.run(go())  # each request's nonce is spent: each its own refusal
        assert all(isinstance(o, AccessDenied) for o in out)
    finally:
        listener.close()
        svc.seal()
        shutil.rmtree(home, ignore_errors=True)


def _wrapped_key_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements the keyring runs on ``wrapped_keys`` from now on (a live list)."""
    from strongroom.keys import kek

    reads: list[str] = []
    real = kek.raw_query

    def counted(engine: object, sql: str, params: tuple[object, ...] = ()) -> object:
        if "wrapped_keys" in sql:
            reads.append(sql)
        return real(engine, sql, params)  # type: ignore[arg-type]

    monkeypatch.setattr(kek, "raw_query", counted)
    return reads


def test_a_batch_reads_its_wrapped_keys_once(unsealed: tuple[LocalKeyService, Identity],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # Every blob of a batch is looked up in one statement, taken when the batch is run:
    # each request still gets its own key, or its own refusal, audited in order.
    svc, officer = unsealed
    keys = {b: os.urandom(16) for b in ("blob-1", "blob-2")}
    for blob, key in keys.items():
        svc.wrap_file_key(blob, key)
    reads = _wrapped_key_reads(monkeypatch)
    out = svc.release_many([_request(officer, blob=b) for b in
                            ("blob-1", "blob-2", "missing", "blob-1", "blob-2")])
    assert len(reads) == 1 and " IN (" in reads[0]
    assert [bytes(o) if isinstance(o, bytearray) else type(o) for o in out] == \
        [keys["blob-1"], keys["blob-2"], NotFound, keys["blob-1"], keys["blob-2"]]
    assert [d for _, d in _events(svc)] == ["deny"] + ["allow"] * 4


def test_later_batches_use_the_wrapping_that_authenticated(
        unsealed: tuple[LocalKeyService, Identity], monkeypatch: pytest.MonkeyPatch) -> None:
    # A wrapped key read by a batch is kept once it unwrapped (authenticated under its KEK):
    # later batches skip the read, and a row edited in the database since is never used
    # unverified. A wrapping taken from a request's header is not kept.
    import dataclasses

    from sqlalchemy import delete, update

    from strongroom.store.tables.keys import WrappedKey

    svc, officer = unsealed
    key = os.urandom(16)
    stanza = svc.wrap_file_key("blob-1", key)
    reads = _wrapped_key_reads(monkeypatch)
    assert [bytes(o) for o in svc.release_many([_request(officer)])] == [key]  # type: ignore[arg-type]
    assert len(reads) == 1
    with svc.store.session() as session:  # a hostile edit of the row after it authenticated
        session.execute(update(WrappedKey).where(WrappedKey.blob_id == "blob-1")
                        .values(wrapped=b"\x00" * len(stanza.body)))
    out = svc.release_many([_request(officer), _request(officer)])
    assert [bytes(o) for o in out] == [key, key] and len(reads) == 1  # type: ignore[arg-type]
    header = svc.wrap_file_key("blob-2", key)
    with svc.store.session() as session:  # only the request's header holds blob-2's wrapping
        session.execute(delete(WrappedKey).where(WrappedKey.blob_id == "blob-2"))
    with_header = dataclasses.replace(_request(officer, blob="blob-2"), stanzas=(header,))
    assert [bytes(o) for o in svc.release_many([with_header])] == [key]  # type: ignore[arg-type]
    assert isinstance(svc.release_many([_request(officer, blob="blob-2")])[0], NotFound)
    assert len(reads) == 3
    svc.keyring._keks._forget()  # type: ignore[attr-defined]
    refused = svc.release_many([_request(officer)])  # read again: the edited row fails
    assert isinstance(refused[0], IntegrityError)


def test_a_deleted_wrapping_is_noticed_within_the_ttl(
        unsealed: tuple[LocalKeyService, Identity], monkeypatch: pytest.MonkeyPatch) -> None:
    # Absence is evidence: a row removed by something other than this ring (another host's
    # retirement, an operator) stops releases once the kept wrapping's second has passed.
    import types

    from sqlalchemy import delete

    from strongroom.keys import kek as kek_module
    from strongroom.store.tables.keys import WrappedKey

    clock = [1000.0]
    monkeypatch.setattr(kek_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    svc, officer = unsealed
    key = os.urandom(16)
    svc.wrap_file_key("blob-1", key)
    assert [bytes(o) for o in svc.release_many([_request(officer)])] == [key]  # type: ignore[arg-type]
    with svc.store.session() as session:
        session.execute(delete(WrappedKey).where(WrappedKey.blob_id == "blob-1"))
    clock[0] += kek_module.VERIFIED_TTL_S / 2
    assert [bytes(o) for o in svc.release_many([_request(officer)])] == [key]  # type: ignore[arg-type]
    clock[0] += kek_module.VERIFIED_TTL_S
    assert isinstance(svc.release_many([_request(officer)])[0], NotFound)


def test_a_batch_never_unwraps_a_stale_wrapping(unsealed: tuple[LocalKeyService, Identity]
                                                ) -> None:
    # A kept (verified) wrapping never outlives a change of the ring here: after a rotation,
    # a rewrap and the old version's retirement the next batch unwraps under the new
    # version, and a blob's wrapping written again (a new file key) is what it releases.
    svc, officer = unsealed
    first = os.urandom(16)
    svc.wrap_file_key("blob-1", first)
    assert [bytes(o) for o in svc.release_many([_request(officer)])] == [first]  # type: ignore[arg-type]
    old = svc.rotate() - 1
    svc.rewrap()
    svc.retire(old)
    out = svc.release_many([_request(officer), _request(officer)])
    assert [bytes(o) for o in out] == [first, first]  # type: ignore[arg-type]
    assert svc._audit is not None
    allowed = [e for e in svc._audit.events(0, svc._audit.size())
               if e.action == "key.release" and e.decision == "allow"]
    assert [e.details["kek_version"] for e in allowed] == [old, old + 1, old + 1]
    second = os.urandom(16)
    svc.wrap_file_key("blob-1", second)  # the same blob and version, a new wrapping
    assert [bytes(o) for o in svc.release_many([_request(officer)])] == [second]  # type: ignore[arg-type]
