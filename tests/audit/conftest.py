"""Fixtures for the audit tests: a signer, a log on each backend, in-process witnesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit import AuditLog, Witness, WitnessClient
from strongroom.crypto.note import (
    SIG_COSIGNATURE_V1,
    CosignatureSigner,
    Ed25519Signer,
    generate_key,
    new_signer,
)
from strongroom.store.db import Store

from audit_helpers import ORIGIN, FixedClock, MakeWitness, witness_transport


@pytest.fixture
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signer(log_key: Ed25519PrivateKey) -> Ed25519Signer:
    return Ed25519Signer(ORIGIN, log_key)


@pytest.fixture
def make_witness(tmp_path: Path) -> Iterator[MakeWitness]:
    """Build a witness (state in tmp_path) and a client talking to it in-process."""
    clients: list[httpx.Client] = []

    def make(name: str, log_vkeys: list[str]) -> tuple[Witness, WitnessClient]:
        skey, vkey = generate_key(name, SIG_COSIGNATURE_V1)
        wsigner = new_signer(skey)
        assert isinstance(wsigner, CosignatureSigner)
        state = tmp_path / f"{name.replace('/', '_')}.json"
        witness = Witness(wsigner, log_vkeys, state_path=state)
        http = httpx.Client(transport=witness_transport(witness))
        clients.append(http)
        return witness, WitnessClient("http://witness.test", vkey, client=http)

    yield make
    for http in clients:
        http.close()


@pytest.fixture
def audit_log(store: Store, signer: Ed25519Signer, tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(store, signer, ORIGIN, clock=FixedClock(), anchor_path=tmp_path / "anchor")
    try:
        yield log
    finally:
        log.close()
