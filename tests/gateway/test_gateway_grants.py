"""The gateway with the access layer: a service principal's load Grant, callers' infer Grants."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.access import statements
from strongroom.access.directory import KeyRevocation, publish
from strongroom.access.evidence import describe_resource
from strongroom.access.grants import issue_grant, revoke_grant
from strongroom.access.policy import PolicyEngine
from strongroom.errors import AccessDenied, ApprovalRequired
from strongroom.gateway import EMBEDDINGS_PATH, AuditAlertSink, sign_release, start_gateway
from strongroom.gateway.access import DirectoryCallers, GrantAuthorizer
from strongroom.gateway.auth import sign_request
from strongroom.keys.identity import Identity

from gateway_helpers import embed_request, make_toy_artifact

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "access"))
from access_kit import World, access_world

OWNERS = [Identity.generate(n) for n in ("olga", "omar", "oren")]


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with access_world(db_url, tmp_path) as w:
        make_toy_artifact(tmp_path / "toy")
        w.vault.import_weights(tmp_path / "toy", "toy", compartments=["atlas"])
        for name in ("bob", "carol"):
            w.enroll(name)
        for name in ("ivy", "eve", "lou"):
            w.enroll(name, roles=("requesters",))
        w.enroll("gw-toy", roles=("services",), kind="service")
        w.label("toy", rules={"infer": "1 of approvers", "load": "2 of approvers"})
        yield w


def _grant(w: World, who: str, action: str, *, duration: int = 3600) -> str:
    req = w.request(who, "toy", action, duration=duration)
    w.approve("bob", req)
    if action != "infer":
        w.approve("carol", req)
    m = w.vault.manifest("toy")
    directory = w.rule.reader.view()
    res = describe_resource(m.ref, m.kind, m.compartments, m.metadata).labelled(
        directory.label("toy"))
    _env, g = issue_grant(w.store, w.people[who].private_key, statements.payload_digest(req),
                         directory, PolicyEngine(), res, now=time.time())
    return g.grant_id


def _authorizer(w: World, ttl_s: float = 0.0) -> GrantAuthorizer:
    return GrantAuthorizer(w.store, w.rule.reader, w.vault.manifest("toy"), ttl_s=ttl_s)


def test_infer_needs_an_infer_grant_and_never_a_load_grant(world: World) -> None:
    w = world
    _grant(w, "ivy", "infer")
    _grant(w, "lou", "load")
    auth = _authorizer(w)
    auth.check("ivy", "infer", "toy@1")
    with pytest.raises(AccessDenied, match="eve holds no valid infer grant"):
        auth.check("eve", "infer", "toy@1")
    with pytest.raises(AccessDenied, match="lou holds no valid infer grant"):
        auth.check("lou", "infer", "toy@1")  # load does not imply infer through the gateway
    with pytest.raises(AccessDenied, match="not enrolled"):
        auth.check("mallory", "infer", "toy@1")
    with pytest.raises(AccessDenied, match="infer only"):
        auth.check("ivy", "load", "toy@1")
    # and an infer grant never releases a key
    with pytest.raises((AccessDenied, ApprovalRequired)):
        w.vault_as("ivy").open_weights("toy")


def test_revocation_and_lapsed_vetting_stop_a_caller(world: World) -> None:
    w = world
    gid = _grant(w, "ivy", "infer")
    auth = _authorizer(w)
    auth.check("ivy", "infer", "toy@1")
    revoke_grant(w.store, w.people["bob"].private_key, "bob", gid, "left the project",
                 now=time.time())
    with pytest.raises(AccessDenied, match="revoked"):
        auth.check("ivy", "infer", "toy@1")
    _grant(w, "ivy", "infer")
    auth.check("ivy", "infer", "toy@1")
    w.enroll("ivy", roles=("requesters",), status="lapsed", serial=2)
    with pytest.raises(AccessDenied, match="policy denies ivy"):
        auth.check("ivy", "infer", "toy@1")


def test_a_revocation_bites_at_the_next_request_despite_the_ttl(world: World) -> None:
    """Cached views and decisions are kept only while the access statements are unchanged."""
    w = world
    gid = _grant(w, "ivy", "infer")
    auth = _authorizer(w, ttl_s=3600.0)
    callers = DirectoryCallers(w.rule.reader, ttl_s=3600.0)
    body = b'{"input": ["x"]}'
    now = time.time()
    auth.check("ivy", "infer", "toy@1")  # cached as allowed for up to an hour
    assert callers.authenticate("POST", EMBEDDINGS_PATH,
                                sign_request(w.people["ivy"], "POST", EMBEDDINGS_PATH, body),
                                body, now).principal == "ivy"
    revoke_grant(w.store, w.people["bob"].private_key, "bob", gid, "left the project",
                 now=time.time())
    with pytest.raises(AccessDenied, match="revoked"):
        auth.check("ivy", "infer", "toy@1")
    publish(w.store, "revocation", KeyRevocation(w.people["ivy"].public.key_id, "lost laptop",
                                                 int(now)).sign(*[o.private_key
                                                                  for o in w.officers]))
    with pytest.raises(AccessDenied, match="unknown caller key"):
        callers.authenticate("POST", EMBEDDINGS_PATH,
                             sign_request(w.people["ivy"], "POST", EMBEDDINGS_PATH, body),
                             body, now)


def test_directory_callers_accept_enrolled_keys_only(world: World) -> None:
    w = world
    callers = DirectoryCallers(w.rule.reader, ttl_s=0.0)
    body = b'{"input": ["x"]}'
    now = time.time()
    caller = callers.authenticate("POST", EMBEDDINGS_PATH,
                                  sign_request(w.people["ivy"], "POST", EMBEDDINGS_PATH, body),
                                  body, now)
    assert caller.principal == "ivy"
    stranger = Identity.generate("ivy")  # same name, a key the officers never enrolled
    with pytest.raises(AccessDenied, match="unknown caller key"):
        callers.authenticate("POST", EMBEDDINGS_PATH,
                             sign_request(stranger, "POST", EMBEDDINGS_PATH, body), body, now)
    publish(w.store, "revocation", KeyRevocation(w.people["ivy"].public.key_id, "lost laptop",
                                                 int(now)).sign(*[o.private_key
                                                                  for o in w.officers]))
    with pytest.raises(AccessDenied, match="unknown caller key"):
        callers.authenticate("POST", EMBEDDINGS_PATH,
                             sign_request(w.people["ivy"], "POST", EMBEDDINGS_PATH, body),
                             body, now)


def test_the_gateway_loads_as_a_service_with_a_load_grant(world: World) -> None:
    w = world
    service = w.vault_as("gw-toy")
    release = sign_release(OWNERS[:2])
    kwargs = dict(release=release, code_owners=[o.public for o in OWNERS], threshold=2,
                  auth=DirectoryCallers(w.rule.reader),
                  authorizer=_authorizer(w, ttl_s=10.0),
                  alerts=AuditAlertSink(w.vault.audit))
    with pytest.raises(ApprovalRequired, match="no grant for gw-toy"):
        start_gateway(service, "toy", **kwargs)  # type: ignore[arg-type]
    _grant(w, "gw-toy", "load")
    _grant(w, "ivy", "infer")
    gw = start_gateway(service, "toy", **kwargs)  # type: ignore[arg-type]
    try:
        assert embed_request(gw, w.people["ivy"], ["hello"]).status == 200
        refused = embed_request(gw, w.people["eve"], ["hello"])
        assert refused.status == 403 and b"no valid infer grant" in refused.body
    finally:
        gw.close()
    starts = [e for e in w.vault.audit.tail(100) if e.action == "gateway.start"]
    assert starts and starts[-1].actor == "gw-toy"


def test_a_kept_decision_costs_one_index_read_not_a_count(world: World,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Per request the gateway reads the statements' head (an index read at any table size),
    never the full marker's count(*), which scans the table."""
    w = world
    _grant(w, "ivy", "infer")
    auth = _authorizer(w, ttl_s=3600.0)
    auth.check("ivy", "infer", "toy@1")
    heads: list[tuple[int, int]] = []
    real_head = statements.head

    def counted_head(store: object) -> tuple[int, int]:
        heads.append(real_head(store))  # type: ignore[arg-type]
        return heads[-1]

    def no_scan(store: object) -> tuple[int, int, int]:
        raise AssertionError("a kept decision read the full marker (a table scan)")

    monkeypatch.setattr(statements, "head", counted_head)
    monkeypatch.setattr(statements, "marker", no_scan)
    for _ in range(3):
        auth.check("ivy", "infer", "toy@1")
    assert len(heads) == 3
