"""The keyring: states, barrier authentication, file-key wrapping, HSM backend, property tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from strongroom.crypto import shamir
from strongroom.errors import AccessDenied, ConfigError, IntegrityError, NotFound, Sealed
from strongroom.keys import ceremony
from strongroom.keys.config import KeysSettings
from strongroom.keys.keyring import Keyring
from strongroom.runtime.services import LocalKeyService
from strongroom.store.db import Store
from strongroom.store.tables.keys import KeyringEntry, KeyringState

from keyring_fixtures import MAIN, PIN, SoftHsm, audit_factory, init_shamir, softhsm, submit

__all__ = ["softhsm"]


def test_uninitialised_then_sealed_then_unsealed(store: Store, tmp_path: Path) -> None:
    ring = Keyring(store)
    assert not ring.status().initialized
    with pytest.raises(Sealed, match="not initialised"):
        ring.wrap_file_key("b", os.urandom(16))
    result, cust = init_shamir(store, tmp_path, 3, 2)
    svc = LocalKeyService(store, audit_factory=audit_factory)
    status = svc.status()
    assert status.initialized and status.sealed and status.threshold == 2 and status.shares == 3
    with pytest.raises(Sealed, match="strongroom unseal"):
        svc.wrap_file_key("b", os.urandom(16))
    submit(svc, result, cust, 3)
    assert svc.status().progress == 1 and svc.status().sealed
    submit(svc, result, cust, 1)
    status = svc.status()
    assert not status.sealed and status.kek_versions == (1,)
    assert set(svc.public_keys()) >= {"manifest", "checkpoint"}
    svc.seal()
    assert svc.status().sealed
    with pytest.raises(Sealed):
        svc.sign("manifest", b"m")


def test_root_key_never_stored(store: Store, tmp_path: Path) -> None:
    result, cust = init_shamir(store, tmp_path, 2, 2)
    shares = [ceremony.read_share_file(f, [i]).share
              for f, i in zip(result.share_files, cust.identities, strict=True)]
    root = shamir.combine(shares, threshold=2)
    with store.session() as session:
        dumped = b"".join(bytes(r.sealed) for r in session.query(KeyringEntry).all())
    assert root not in dumped
    db_file = Path(store.url.split("///", 1)[-1]) if store.dialect == "sqlite" else None
    if db_file is not None:
        assert root not in db_file.read_bytes()


def test_tampered_barrier_entry_refuses_unseal(store: Store, tmp_path: Path) -> None:
    result, cust = init_shamir(store, tmp_path, 2, 2)
    with store.session() as s:
        s.execute(update(KeyringEntry).where(KeyringEntry.path == "kek/1")
                  .values(version=KeyringEntry.version + 1))
    svc = LocalKeyService(store, audit_factory=audit_factory)
    submit(svc, result, cust, 1)
    with pytest.raises(IntegrityError, match="kek/1"):
        submit(svc, result, cust, 2)
    assert svc.status().sealed


def test_tampered_public_threshold_detected(store: Store, tmp_path: Path) -> None:
    result, cust = init_shamir(store, tmp_path, 3, 3)
    with store.session() as s:
        s.execute(update(KeyringState).values(threshold=2))
    svc = LocalKeyService(store, audit_factory=audit_factory)
    submit(svc, result, cust, 1)
    with pytest.raises(IntegrityError, match=r"keyring check|disagrees"):
        submit(svc, result, cust, 2)
    assert svc.status().sealed


def test_wrap_binds_blob_id(store: Store, tmp_path: Path) -> None:
    result, cust = init_shamir(store, tmp_path, 2, 2)
    ring = Keyring(store)
    for f, i in zip(result.share_files, cust.identities, strict=True):
        ring.submit_share(ceremony.build_submission(ring.status(), ceremony.read_share_file(f, [i])))
    key = os.urandom(16)
    stanza = ring.wrap_file_key("blob-a", key)
    assert stanza.type == "strongroom-keyring" and stanza.args[1] == "1"
    assert bytes(ring.unwrap("blob-a", ring.locate("blob-a"))) == key
    swapped = ring.locate("blob-a")
    with pytest.raises(IntegrityError, match="blob-b"):
        ring.unwrap("blob-b", swapped)
    with pytest.raises(NotFound):
        ring.locate("nope")
    # the header stanza alone also works (DB row lost)
    assert bytes(ring.unwrap("blob-x", ring.locate("blob-x", [ring.wrap_file_key("blob-x", key)])
                             )) == key


# -- property: any K of N unseal, any K-1 do not --------------------------------------


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_k_of_n(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 5))
    k = data.draw(st.integers(2, n))
    tmp = tmp_path_factory.mktemp("kn")
    store = Store.open(f"sqlite:///{tmp / 's.db'}")
    try:
        result, cust = init_shamir(store, tmp, n, k)
        order = data.draw(st.permutations(list(range(1, n + 1))))
        ring = Keyring(store)
        for idx in order[: k - 1]:
            content = ceremony.read_share_file(result.share_files[idx - 1],
                                               [cust.identities[idx - 1]])
            ring.submit_share(ceremony.build_submission(ring.status(), content))
        assert ring.status().sealed and ring.status().progress == k - 1
        idx = order[k - 1]
        content = ceremony.read_share_file(result.share_files[idx - 1], [cust.identities[idx - 1]])
        ring.submit_share(ceremony.build_submission(ring.status(), content))
        assert not ring.status().sealed
    finally:
        store.close()


# -- HSM backend ------------------------------------------------------------------------


def _hsm_settings(softhsm: SoftHsm, pin: str = PIN, token: str = MAIN) -> KeysSettings:
    return KeysSettings(key_backend="hsm", hsm_library=softhsm.library, hsm_token=token,
                        hsm_pin=pin, hsm_key_label=f"root-{os.urandom(4).hex()}")


def test_hsm_backend_unseal(store: Store, tmp_path: Path, softhsm: SoftHsm) -> None:
    s = _hsm_settings(softhsm)
    result = ceremony.init_vault(store, custodians=[], threshold=0, shares_dir=tmp_path / "sh",
                                 settings=s)
    assert result.backend == "hsm" and not result.share_files
    svc = LocalKeyService(store, s, audit_factory=audit_factory)
    assert svc.status().sealed and svc.status().ceremony is None
    with pytest.raises(Sealed, match="STRONGROOM_HSM_PIN"):
        svc.wrap_file_key("b", os.urandom(16))
    with pytest.raises(AccessDenied, match="wrong PIN"):
        svc.unseal_hsm("9999")
    assert svc.status().sealed
    bad = LocalKeyService(store, s.model_copy(update={"hsm_token": "no-such-token"}),
                          audit_factory=audit_factory)
    with pytest.raises(ConfigError, match="no HSM token"):
        bad.unseal_hsm()
    assert not svc.unseal_hsm().sealed
    svc.seal()
