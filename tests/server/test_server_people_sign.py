"""People are who sign, over the API (issue 17 item 7) and the remote access commands' output.

The approvals route answers 4xx with the reason for an approval that could not
count (the requester's own, a second one by the same person, the pinned
officer's, who is not an enrolled principal); ``strongroom access approve``
against the server shows that reason and exits non-zero, as on the vault host.
``access request`` shows duration, budget and rule as the local command does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from server_kit import ARTIFACT, ServerWorld, UvicornThread, build_world
from server_kit import run_cli as _cli


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    server = UvicornThread()
    try:
        yield from build_world(tmp_path_factory.mktemp("people-sign"), http_factory=server)
    finally:
        server.stop()


def test_remote_approvals_that_would_not_count_exit_non_zero(world: ServerWorld) -> None:
    from strongroom.access.approvals import approve

    unitless = _cli(world, "alice", "access", "request", ARTIFACT, "--purpose", "eval",
                    "--duration", "8", ok=False)
    assert unitless.returncode == 2 and "--duration 8 has no unit" in unitless.stderr
    out = _cli(world, "alice", "access", "request", ARTIFACT, "--purpose", "eval run",
               "--duration", "8h", "--bytes", "2G").stdout
    assert "for 8 h, 2.0 GiB; needs 2 of approvers" in out
    request_id = out.split()[1]
    # the route itself: the requester's own approval is a 403 with the reason
    req = world.client("alice").get(f"/v1/access/requests/{request_id}").json()
    own = approve(world.people["alice"].private_key, "alice", req["envelope"], now=time.time())
    r = world.client("alice").post(f"/v1/access/requests/{req['digest']}/approvals",
                                   {"envelope": own})
    assert r.status_code == 403 and "cannot approve it" in r.text
    refused = _cli(world, "alice", "access", "approve", request_id, ok=False)
    assert refused.returncode == 6
    assert "alice made this request and cannot approve it" in refused.stderr
    assert "approved" not in refused.stdout
    officer = _cli(world, "officer", "access", "approve", request_id, ok=False)
    assert officer.returncode == 6 and "not an enrolled, unrevoked principal" in officer.stderr
    assert "not yet" in _cli(world, "bob", "access", "approve", request_id).stdout
    twice = _cli(world, "bob", "access", "approve", request_id, ok=False)
    assert twice.returncode == 3 and "bob approved this request already" in twice.stderr
    pending = json.loads(_cli(world, "bob", "access", "grants", "--pending", "--json").stdout)
    mine = [p for p in pending if p["request"].startswith(request_id)]
    assert [(p["approvals"], p["duration_s"], p["byte_budget"], p["rule"]) for p in mine] == \
        [(["bob"], 8 * 3600, 2 << 30, "2 of approvers")]
    assert "issued" in _cli(world, "carol", "access", "approve", request_id).stdout
    grants = json.loads(_cli(world, "alice", "access", "grants", "--json").stdout)
    assert {"grant_id", "holder", "action", "resource", "approvers", "issued", "expires",
            "byte_budget", "issuer", "state", "revoked_by", "spent"} == set(grants[0])
    assert any(g["approvers"] == ["bob", "carol"] and g["byte_budget"] == 2 << 30
               for g in grants)
