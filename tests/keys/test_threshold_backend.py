"""The threshold backend's custody: a key server's share sealed in its barrier, and its formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import update

from strongroom.crypto import age
from strongroom.errors import IntegrityError, NotFound, Sealed
from strongroom.keys.threshold import (
    SHARE_ENTRY,
    STANZA_TYPE,
    ThresholdRecipient,
    find_wrapped,
    load_share,
    request_digest,
    share_entry,
)
from strongroom.release import ReleaseRequest
from strongroom.store.db import Store
from strongroom.store.tables.keys import KeyringEntry
from strongroom.threshold.group import random_scalar
from strongroom.threshold.shares import KeyShare, combine, deal

from keyring_fixtures import unsealed_service


def _share() -> KeyShare:
    dealings = [deal(random_scalar(), threshold=2, indices=[1, 2, 3], dealer=d) for d in (1, 2, 3)]
    return combine([d.for_index(2) for d in dealings])


def test_share_is_sealed_in_the_barrier_and_checked_on_load(store: Store, tmp_path: Path) -> None:
    svc, *_ = unsealed_service(store, tmp_path)
    share = _share()
    svc.keyring.seal_entry(SHARE_ENTRY, share_entry(share, epoch=3))
    loaded, epoch = load_share(svc.keyring.sealed_entry(SHARE_ENTRY), obj="share")
    assert loaded == share and epoch == 3
    assert svc.keyring.sealed_entry("threshold/none") is None
    # nothing of the share is in the database in the clear
    with store.session() as session:
        row = session.get(KeyringEntry, "ext/" + SHARE_ENTRY)
        assert row is not None and share.value.to_bytes(32, "little") not in row.sealed
    # a share that does not match its commitments is refused
    bad = share_entry(KeyShare(share.index, random_scalar(), share.commitments), epoch=3)
    with pytest.raises(IntegrityError, match="does not match"):
        load_share(bad, obj="key server share")
    with pytest.raises(IntegrityError, match="malformed"):
        load_share({"index": 2}, obj="key server share")
    # a tampered row fails the barrier's authentication
    with store.session() as session:
        session.execute(update(KeyringEntry).where(KeyringEntry.path == "ext/" + SHARE_ENTRY)
                        .values(sealed=row.sealed[:-1] + bytes([row.sealed[-1] ^ 1])))
    with pytest.raises(IntegrityError, match="fails authentication"):
        svc.keyring.sealed_entry(SHARE_ENTRY)
    svc.seal()
    with pytest.raises(Sealed):
        svc.keyring.sealed_entry(SHARE_ENTRY)
    svc.close()


def test_stanza_round_trip_and_request_digest() -> None:
    share = _share()
    recipient = ThresholdRecipient(share.public_key, vault_id="v", artifact="a@1", shard="s", blob_id="b")
    data = age.encrypt(b"weights", [recipient])
    header = age.parse_header(data, complete=False)
    assert header is not None and header.stanzas[0].type == STANZA_TYPE
    wrapped = find_wrapped(header.stanzas, share.public_key, obj="a@1/s")
    with pytest.raises(NotFound, match="no file key wrapped"):
        find_wrapped(header.stanzas, _share().public_key, obj="a@1/s")
    request = ReleaseRequest(principal="p", principal_key=os.urandom(32), artifact="a@1", shard="s",
                             blob_id="b", nbytes=7, purpose="load", evidence="e1")
    digest = request_digest(request, [wrapped.u])
    assert len(digest) == 32 and digest == request_digest(request, [wrapped.u])
    other = ReleaseRequest(**{**request.__dict__, "evidence": "e2"})
    assert request_digest(other, [wrapped.u]) != digest
