"""The keyring pins a hybrid officer's ML-DSA-65 key beside its Ed25519 key (issue 23 item 3).

``init --officer`` with a ``keys new-identity --pq`` public key pins both; the
public keys carry ``officer-mldsa65:<key id>``; a keyring written before hybrid
officers (its officers entry has no ML-DSA part) still opens, its officers
classical; an ML-DSA key pinned for no officer is a tampered barrier.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from strongroom.crypto.age import parse_identities
from strongroom.errors import AccessDenied, IntegrityError
from strongroom.keys import ceremony
from strongroom.keys.barrier import b64
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity
from strongroom.keys.keyring import Keyring
from strongroom.keys.officers import Officers
from strongroom.store.db import Store

from keyring_fixtures import init_shamir


def _officers(tmp: Path) -> tuple[Identity, Identity, list[Path]]:
    hybrid, classical = Identity.generate("olivia", pq=True), Identity.generate("oscar")
    paths = []
    for ident in (hybrid, classical):
        path = tmp / f"{ident.name}.pub"
        path.write_text(ident.public.to_text())
        paths.append(path)
    return hybrid, classical, paths


def _unsealed(store: Store, tmp: Path) -> Keyring:
    ring = Keyring(store, KeysSettings(key_backend="shamir"))
    shares = sorted((tmp / "shares").glob("share-*.age"))
    for i in (1, 2):
        ident = parse_identities((tmp / "custodians" / f"custodian{i}.key").read_text())
        content = ceremony.read_share_file(shares[i - 1], ident)
        ring.submit_share(ceremony.build_submission(ring.status(), content))
    return ring


def _reseal_officers(ring: Keyring, store: Store, value: object) -> None:
    """Rewrite the barrier's officers entry (as an older strongroom, or a tamperer, would)."""
    barrier = ring._barrier  # the only way to write a barrier entry is from inside it
    assert barrier is not None
    with store.session() as session:
        barrier.put(session, "core/officers", value, datetime.now(UTC))


def test_a_hybrid_officers_mldsa_key_is_pinned_beside_ed25519(store: Store, tmp_path: Path) -> None:
    hybrid, classical, pubs = _officers(tmp_path)
    init_shamir(store, tmp_path, officers=pubs)
    ring = _unsealed(store, tmp_path)
    pq = hybrid.mldsa_key
    assert pq is not None
    pinned = ring.officer_mldsa()
    assert set(pinned) == {hybrid.public.key_id}
    assert pinned[hybrid.public.key_id].public_bytes_raw() == pq.public_key().public_bytes_raw()
    officers = Officers.from_public_keys(ring.public_keys())
    assert set(officers.ed25519) == {hybrid.public.key_id, classical.public.key_id}
    assert officers.classical() == [classical.public.key_id]
    # the officer signs with the pinned key only; an identity without it is refused
    assert officers.mldsa_signer(hybrid.public.key_id, pq) is pq
    with pytest.raises(AccessDenied, match="pins an ML-DSA-65 key"):
        officers.mldsa_signer(hybrid.public.key_id, None)
    with pytest.raises(AccessDenied, match="not the one the keyring pins"):
        officers.mldsa_signer(hybrid.public.key_id, Identity.generate(pq=True).mldsa_key)
    ring.seal()


def test_a_keyring_written_before_hybrid_officers_still_opens(store: Store, tmp_path: Path) -> None:
    hybrid, classical, pubs = _officers(tmp_path)
    init_shamir(store, tmp_path, officers=pubs)
    ring = _unsealed(store, tmp_path)
    old = {
        "threshold": 1,
        "keys": [b64(hybrid.public.public_bytes), b64(classical.public.public_bytes)],
    }
    _reseal_officers(ring, store, old)  # the format before hybrid officers: no "mldsa"
    ring.seal()
    ring = _unsealed(store, tmp_path)
    assert set(ring.officers()) == {hybrid.public.key_id, classical.public.key_id}
    assert ring.officer_mldsa() == {}
    assert not any(k.startswith("officer-mldsa65:") for k in ring.public_keys())
    ring.seal()


def test_an_mldsa_key_pinned_for_no_officer_is_refused(store: Store, tmp_path: Path) -> None:
    hybrid, classical, pubs = _officers(tmp_path)
    init_shamir(store, tmp_path, officers=pubs[1:])  # oscar alone
    ring = _unsealed(store, tmp_path)
    pq = hybrid.mldsa_key
    assert pq is not None
    _reseal_officers(
        ring,
        store,
        {
            "threshold": 1,
            "keys": [b64(classical.public.public_bytes)],
            "mldsa": {hybrid.public.key_id: b64(pq.public_key().public_bytes_raw())},
        },
    )
    ring.seal()
    with pytest.raises(IntegrityError, match="ML-DSA-65 key of no officer"):
        _unsealed(store, tmp_path)
