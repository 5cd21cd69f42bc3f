"""``keys rotate|rewrap`` over the API as officer-signed key orders (issue 17 item 2).

On SQLite and PostgreSQL: a pinned officer's signed order rotates and rewraps
(and the weights still load); anyone else, an order signed by someone other
than the caller, an order for the other operation, a stale order and a reused
order are refused, and nothing changes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from server_kit import ServerWorld, build_world, server_db  # noqa: F401

from strongroom.access import statements
from strongroom.access.key_orders import MAX_AGE_S, key_order
from strongroom.errors import AccessDenied, AlreadyExists, IntegrityError, InvalidInput
from strongroom.keys.identity import Identity
from strongroom.server.client import Client


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("keyorders"), db_url=server_db)


def _client(world: ServerWorld, who: str) -> Client:
    ident = world.officer if who == "officer" else world.people[who]
    key = base64.b64encode(world.ctx.keys.public_keys()["manifest"]).decode()
    return Client("http://testserver", ident, http=world.http, manifest_key=key)



def _post(world: ServerWorld, who: Identity, order: str, env: str) -> Any:
    c = Client("http://testserver", who, http=world.http)
    return c.post(f"/v1/sys/keys/{order}", {"envelope": env})


def test_an_officer_rotates_and_rewraps_with_signed_orders(world: ServerWorld) -> None:
    officer = _client(world, "officer")
    size = world.audit_size()
    rotated = officer.keys_rotate()
    assert rotated["kek_version"] >= 2 and len(rotated["order"]) == 64
    rewrapped = officer.keys_rewrap()
    assert rewrapped["rewrapped"] >= 1
    later = list(world.ctx.audit().events(size, world.audit_size()))
    actions = [e.action for e in later]
    assert actions.index("keys.rotate-order") < actions.index("keys.rotate")
    assert actions.index("keys.rewrap-order") < actions.index("keys.rewrap")
    order = next(e for e in later if e.action == "keys.rotate-order")
    assert order.details["order"] == rotated["order"]
    body = _client(world, "alice").weights_show("tiny")
    assert body["files"]


def test_orders_that_do_not_hold_are_refused(world: ServerWorld) -> None:
    officer = world.officer
    now = time.time()
    with pytest.raises(AccessDenied, match="not a security officer"):
        _client(world, "alice").keys_rotate()
    # an order signed by alice, sent by the officer
    env = statements.sign("key-order", key_order("rotate", "alice", now=now),
                          world.people["alice"].private_key)
    with pytest.raises(IntegrityError):
        _post(world, officer, "rotate", env)
    # a rewrap order sent to rotate
    env = statements.sign("key-order", key_order("rewrap", "o", now=now), officer.private_key)
    with pytest.raises(InvalidInput, match="not `keys rotate`"):
        _post(world, officer, "rotate", env)
    stale = statements.sign("key-order", key_order("rotate", "o", now=now - MAX_AGE_S - 60),
                            officer.private_key)
    with pytest.raises(InvalidInput, match="stale"):
        _post(world, officer, "rotate", stale)
    fresh = statements.sign("key-order", key_order("rotate", "o", now=now), officer.private_key)
    _post(world, officer, "rotate", fresh)
    with pytest.raises(AlreadyExists, match="used already"):
        _post(world, officer, "rotate", fresh)
