"""Enrolling a small-order or non-canonical Ed25519 key over the API is refused (SQLite, PostgreSQL).

Under such a key OpenSSL accepts a forged signature (``R`` = identity, ``S`` =
0) for any message (tests/crypto/test_ed25519_keys.py). An officer-signed
enrollment of one is refused with a 400 naming the key and the remedy, and
leaves nothing behind: no statement, no audit entry. One written into the
store by hand (a hostile DBA, or an enrollment accepted before the check) makes
no principal. A normal key still enrolls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from server_kit import YEAR, ServerWorld, build_world, server_db  # noqa: F401

from strongroom.access import statements
from strongroom.access.directory import Enrollment, Vetting
from strongroom.crypto.dsse import key_id
from strongroom.keys.identity import Identity
from weak_keys import NONCANONICAL_SMALL, SMALL_ORDER


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("weak-keys"), db_url=server_db)


def _enrollment(world: ServerWorld, name: str, raw: bytes) -> str:
    """An officer-signed enrollment of ``raw``, built past Enrollment's own check of the key."""
    now = int(time.time())
    good = Enrollment(name=name, key=Identity.generate().public.public_bytes,
                      roles=("approvers",), vetting=Vetting("active", now - 10, now + YEAR),
                      issued=now)
    return statements.sign("enrollment", dict(good.to_statement(), key=raw.hex()),
                           world.officer.private_key)


def _kid(raw: bytes) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return key_id(Ed25519PublicKey.from_public_bytes(raw))


@pytest.mark.parametrize("hexkey", [*SMALL_ORDER, *NONCANONICAL_SMALL])
def test_enrolling_a_weak_key_is_a_400_and_stores_nothing(world: ServerWorld,
                                                          hexkey: str) -> None:
    raw = bytes.fromhex(hexkey)
    env = _enrollment(world, "mallory", raw)
    before = len(statements.envelopes(world.ctx.store, "enrollment"))
    entries = len(world.ctx.audit().tail(1000))
    r = world.client("officer").post("/v1/statements", {"kind": "enrollment", "envelope": env})
    assert r.status_code == 400, r.text
    body = r.json()
    assert f"Ed25519 public key {_kid(raw)} is refused" in body["error"]
    assert ("small order" in body["error"]) or ("non-canonical" in body["error"])
    assert (body["object"], body["type"]) == ("enrollment statement", "WeakPublicKey")
    assert "keys new-identity" in body["remedy"]
    assert len(statements.envelopes(world.ctx.store, "enrollment")) == before
    assert statements.by_digest(world.ctx.store, statements.payload_digest(env)) is None
    assert len(world.ctx.audit().tail(1000)) == entries
    assert world.ctx.directory().by_name("mallory") is None


def test_a_weak_key_written_into_the_store_by_hand_makes_no_principal(
        world: ServerWorld) -> None:
    raw = bytes.fromhex(SMALL_ORDER[0])
    env = _enrollment(world, "mallory", raw)  # the officers' signature is genuine
    statements.put(world.ctx.store, "enrollment", env, subject=_kid(raw))
    view = world.ctx.directory()
    assert view.principal(_kid(raw)) is None and view.by_name("mallory") is None


def test_a_normal_key_still_enrolls(world: ServerWorld) -> None:
    ident = Identity.generate("dora")
    env = _enrollment(world, "dora", ident.public.public_bytes)
    r = world.client("officer").post("/v1/statements", {"kind": "enrollment", "envelope": env})
    assert r.status_code == 201, r.text
    assert world.ctx.directory().principal(ident.public.key_id) is not None
