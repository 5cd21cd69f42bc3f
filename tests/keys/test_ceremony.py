"""Init and unseal ceremonies: bad shares of every kind, replay, reset, and kill -9 during init."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from strongroom.errors import (
    AlreadyExists,
    IntegrityError,
    InvalidInput,
    NoIdentityMatched,
    NotFound,
)
from strongroom.keys import ceremony
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity, PublicIdentity
from strongroom.keys.keyring import Keyring
from strongroom.store.db import Store

from keyring_fixtures import init_shamir, make_custodians


def _content(result: ceremony.InitResult, cust: object, i: int) -> ceremony.ShareContent:
    return ceremony.read_share_file(result.share_files[i - 1], [cust.identities[i - 1]])  # type: ignore[attr-defined]


def test_init_validates(store: Store, tmp_path: Path) -> None:
    cust = make_custodians(tmp_path / "c", 3)
    for k in (1, 4):
        with pytest.raises(InvalidInput, match=f"{k}-of-3"):
            ceremony.init_vault(store, custodians=cust.pubfiles, threshold=k,
                                shares_dir=tmp_path / "s", settings=KeysSettings())
    with pytest.raises(InvalidInput, match="twice"):
        ceremony.init_vault(store, custodians=[cust.pubfiles[0]] * 2, threshold=2,
                            shares_dir=tmp_path / "s", settings=KeysSettings())
    result, _ = init_shamir(store, tmp_path / "x", 3, 2)
    assert result.officer_identity and result.officer_identity.stat().st_mode & 0o777 == 0o600
    with pytest.raises(AlreadyExists):
        init_shamir(store, tmp_path / "y", 3, 2)


def test_officers_pinned(store: Store, tmp_path: Path) -> None:
    officers = [Identity.generate(f"o{i}") for i in range(2)]
    files = []
    for o in officers:
        p = tmp_path / f"{o.name}.pub"
        p.write_text(o.public.to_text())
        files.append(p)
    cust = make_custodians(tmp_path / "c", 2)
    result = ceremony.init_vault(store, custodians=cust.pubfiles, threshold=2,
                                 shares_dir=tmp_path / "s", officers=files, officer_threshold=2,
                                 settings=KeysSettings())
    assert result.officer_identity is None and result.officers == ("o0", "o1")
    ring = Keyring(store)
    for i in (1, 2):
        ring.submit_share(ceremony.build_submission(ring.status(), _content(result, cust, i)))
    assert set(ring.officers()) == {o.public.key_id for o in officers}
    assert ring.officer_threshold == 2
    assert PublicIdentity.load(files[0]) == officers[0].public


def test_bad_shares(store: Store, tmp_path: Path) -> None:
    result, cust = init_shamir(store, tmp_path, 3, 3)
    ring = Keyring(store)
    # identity that does not match the share
    with pytest.raises(NoIdentityMatched, match=result.share_files[0].name):
        ceremony.read_share_file(result.share_files[0], [cust.identities[1]])
    # corrupted share file
    bad = tmp_path / "corrupt.age"
    data = bytearray(result.share_files[0].read_bytes())
    data[-5] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="corrupt"):
        ceremony.read_share_file(bad, [cust.identities[0]])
    with pytest.raises(NotFound):
        ceremony.read_share_file(tmp_path / "missing.age", [cust.identities[0]])
    # duplicate
    ring.submit_share(ceremony.build_submission(ring.status(), _content(result, cust, 1)))
    with pytest.raises(InvalidInput, match="already submitted"):
        ring.submit_share(ceremony.build_submission(ring.status(), _content(result, cust, 1)))
    # too few: still sealed
    ring.submit_share(ceremony.build_submission(ring.status(), _content(result, cust, 2)))
    assert ring.status().sealed and ring.status().progress == 2
    # a wrong (forged) share: right index, wrong bytes -> commitment mismatch, not counted
    c3 = _content(result, cust, 3)
    forged = ceremony.ShareContent(c3.vault_id, c3.generation, 3, 3, 3,
                                   type(c3.share)(x=3, y=os.urandom(len(c3.share.y))), "x")
    with pytest.raises(IntegrityError, match="commitment"):
        ring.submit_share(ceremony.build_submission(ring.status(), forged))
    assert ring.status().progress == 2
    ring.submit_share(ceremony.build_submission(ring.status(), c3))
    assert not ring.status().sealed


def test_replay_other_ceremony_and_reset(store: Store, tmp_path: Path) -> None:
    result, cust = init_shamir(store, tmp_path, 3, 2)
    ring = Keyring(store)
    old_status = ring.status()
    stale = ceremony.build_submission(old_status, _content(result, cust, 1))
    ring.submit_share(stale)
    assert ring.status().progress == 1
    ring.reset()
    assert ring.status().progress == 0 and ring.status().nonce != old_status.nonce
    with pytest.raises(InvalidInput, match="another ceremony"):
        ring.submit_share(stale)  # a share submitted before the reset does not count
    assert ring.status().progress == 0
    # a share file from another vault's ceremony
    other = Store.open(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        res2, cust2 = init_shamir(other, tmp_path / "other", 2, 2)
        foreign = ceremony.read_share_file(res2.share_files[0], [cust2.identities[0]])
        with pytest.raises(InvalidInput, match="belongs to vault"):
            ceremony.build_submission(ring.status(), foreign)
        status = ring.status()
        forged_status = type(status)(**{**status.__dict__, "vault_id": foreign.vault_id})
        with pytest.raises(InvalidInput, match="belongs to vault"):
            ring.submit_share(ceremony.build_submission(forged_status, foreign))
    finally:
        other.close()


def test_verify_share_against_published(store: Store, tmp_path: Path) -> None:
    result, cust = init_shamir(store, tmp_path, 2, 2)
    assert result.commitments_file is not None
    published = ceremony.published_config(result.commitments_file.read_text(), "c")
    got = ceremony.verify_share_file(result.share_files[1], [cust.identities[1]], published)
    assert got.index == 2
    tampered = type(published)(published.vault_id, 1, 2, published.custodians,
                               (published.commitments[1], published.commitments[0]))
    with pytest.raises(IntegrityError, match="published commitment"):
        ceremony.verify_share_file(result.share_files[1], [cust.identities[1]], tampered)


def test_rekey_changes_n_and_k(store: Store, tmp_path: Path) -> None:
    from strongroom.runtime.services import LocalKeyService

    from keyring_fixtures import audit_factory, submit

    result, cust = init_shamir(store, tmp_path, 2, 2)
    svc = LocalKeyService(store, audit_factory=audit_factory)
    submit(svc, result, cust, 1)
    submit(svc, result, cust, 2)
    new = make_custodians(tmp_path / "new", 4)
    recipients = [ceremony.read_custodian(p) for p in new.pubfiles]
    status = svc.rekey_start(recipients, 3)
    assert status.ceremony == "rekey"
    _, files = svc.rekey_submit(ceremony.build_submission(svc.status(), _content(result, cust, 1)))
    assert files is None
    status, files = svc.rekey_submit(
        ceremony.build_submission(svc.status(), _content(result, cust, 2)))
    assert files is not None and status.nonce
    written = ceremony.write_share_files(tmp_path / "new-shares", files)
    final = svc.rekey_commit(status.nonce)
    assert (final.threshold, final.shares, final.generation) == (3, 4, 2)
    svc.seal()
    new_result = ceremony.InitResult(final.vault_id or "", "shamir", 3, written[:-1], None, None, ())
    with pytest.raises(InvalidInput, match="generation"):
        submit(svc, result, cust, 1)  # old shares are void
    for i in (1, 2, 4):
        content = ceremony.read_share_file(new_result.share_files[i - 1], [new.identities[i - 1]])
        svc.submit_share(ceremony.build_submission(svc.status(), content))
    assert not svc.status().sealed
    svc.seal()


_CRASH_INIT = """
import os, signal, sys
from pathlib import Path
from strongroom.keys import ceremony, keyring
from strongroom.keys.config import KeysSettings
from strongroom.store.db import Store
where = sys.argv[1]
real = keyring.Keyring.create
def crash(*a, **k):
    if where == "before-commit":
        os.kill(os.getpid(), signal.SIGKILL)
    real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)
keyring.Keyring.create = staticmethod(crash)
store = Store.open(sys.argv[2])
pubs = [Path(p) for p in sys.argv[4:]]
ceremony.init_vault(store, custodians=pubs, threshold=2, shares_dir=Path(sys.argv[3]),
                    settings=KeysSettings())
"""


@pytest.mark.parametrize("where", ["before-commit", "after-commit"])
def test_kill_during_init(tmp_path: Path, where: str) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    cust = make_custodians(tmp_path / "c", 3)
    proc = subprocess.run([sys.executable, "-c", _CRASH_INIT, where, url, str(tmp_path / "sh"),
                           *map(str, cust.pubfiles)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    store = Store.open(url)
    try:
        ring = Keyring(store)
        if where == "before-commit":
            assert not ring.status().initialized  # init can simply be run again
            result = ceremony.init_vault(store, custodians=cust.pubfiles, threshold=2,
                                         shares_dir=tmp_path / "sh", settings=KeysSettings())
            files = result.share_files
        else:
            status = ring.status()
            assert status.initialized
            files = tuple(sorted((tmp_path / "sh").glob(f"share-{status.vault_id}-*.age")))
        assert len(files) == 3
        for i in (1, 3):
            content = ceremony.read_share_file(files[i - 1], [cust.identities[i - 1]])
            ring.submit_share(ceremony.build_submission(ring.status(), content))
        assert not ring.status().sealed
    finally:
        store.close()


