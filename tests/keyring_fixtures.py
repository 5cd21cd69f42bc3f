"""Shared helpers for the key-custody tests: one SoftHSM2 token directory, and vault set-up.

python-pkcs11 loads SoftHSM2 once per process and SoftHSM2 reads
``SOFTHSM2_CONF`` only then. ``test_hsm.py`` has its own session fixture; this
one initialises the *same* token labels and PIN, and whichever runs first wins
for the whole process: the other reuses the loaded library and labels. The
choice is kept in ``os.environ`` so that every importer of this module (under
any module name) sees it.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from strongroom.audit.config import AuditSettings
from strongroom.audit.log import AuditLog
from strongroom.crypto.age import X25519Identity
from strongroom.crypto.age_pq import HybridIdentity
from strongroom.errors import AccessDenied
from strongroom.keys import ceremony
from strongroom.keys.ceremony import InitResult
from strongroom.keys.config import KeysSettings
from strongroom.keys.identity import Identity
from strongroom.keys.keyring import Keyring
from strongroom.release import (
    MAX_EVIDENCE_LIFETIME_S,
    PublicKeys,
    ReleaseRequest,
    UsedNonces,
    check_release_signature,
)
from strongroom.release.gate import ACTION
from strongroom.runtime.services import LocalKeyService
from strongroom.runtime.wiring import EGRESS_WINDOW_S
from strongroom.store.db import Store

from testsupport import need_tool

LIBRARY = os.environ.get("STRONGROOM_TEST_SOFTHSM_LIB", "/usr/lib/softhsm/libsofthsm2.so")
PIN = "1234"
MAIN = "sr-main"
TOKENS = ("sr-main", "sr-fresh", "sr-spare")
_MARK = "STRONGROOM_TEST_SOFTHSM_CONF"


@dataclass(frozen=True)
class SoftHsm:
    library: str
    conf: Path


def _loaded() -> bool:
    from strongroom.keys import hsm

    return bool(hsm._LIBRARIES)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """A SoftHSM2 token directory with TOKENS (PIN 1234), shared with test_hsm.py."""
    tool = need_tool("softhsm2-util")
    if not os.path.isfile(LIBRARY):
        if os.environ.get("STRONGROOM_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"SoftHSM2 library {LIBRARY} not found")
        pytest.skip(f"SoftHSM2 library {LIBRARY} not found (apt-get install softhsm2)")
    if os.environ.get(_MARK) or (_loaded() and os.environ.get("SOFTHSM2_CONF")):
        yield SoftHsm(LIBRARY, Path(os.environ.get(_MARK) or os.environ["SOFTHSM2_CONF"]))
        return
    root = tmp_path_factory.mktemp("softhsm-keys")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}/\n"
        "objectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    os.environ[_MARK] = str(conf)
    for label in TOKENS:
        subprocess.run(
            [tool, "--init-token", "--free", "--so-pin", "0000", "--pin", PIN, "--label", label],
            check=True,
            capture_output=True,
        )
    yield SoftHsm(LIBRARY, conf)


# -- vault set-up ------------------------------------------------------------------


@dataclass
class Custodians:
    identities: list[X25519Identity | HybridIdentity]
    pubfiles: list[Path]


def make_custodians(directory: Path, n: int, pq: int = 1) -> Custodians:
    """``n`` custodians with age identities and public key files; the first ``pq`` are hybrid.

    By default one hybrid (ML-KEM-768 + X25519) custodian among classical ones, so
    every ceremony the tests run deals and unseals with both kinds.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ids: list[X25519Identity | HybridIdentity] = [
        HybridIdentity.generate() if i < pq else X25519Identity.generate() for i in range(n)]
    files = []
    for i, ident in enumerate(ids, start=1):
        pub = directory / f"custodian{i}.pub"
        pub.write_text(f"# custodian {i}\n{ident.recipient}\n")
        (directory / f"custodian{i}.key").write_text(f"{ident}\n")
        files.append(pub)
    return Custodians(ids, files)


def init_shamir(
    store: Store, tmp: Path, n: int = 3, k: int = 2, officers: Sequence[Path] = ()
) -> tuple[InitResult, Custodians]:
    """Initialise a shamir keyring k-of-n."""
    cust = make_custodians(tmp / "custodians", n)
    result = ceremony.init_vault(
        store,
        custodians=cust.pubfiles,
        threshold=k,
        shares_dir=tmp / "shares",
        officers=officers,
        settings=KeysSettings(key_backend="shamir"),
    )
    return result, cust


def audit_factory(store: Store, key: object) -> AuditLog:
    """The audit log the services use in tests."""
    return AuditSettings().open_log(store, key)  # type: ignore[arg-type]


def submit(svc: LocalKeyService, result: InitResult, cust: Custodians, index: int) -> None:
    """Custodian ``index`` (1-based) submits their share to ``svc``."""
    content = ceremony.read_share_file(result.share_files[index - 1], [cust.identities[index - 1]])
    svc.submit_share(ceremony.build_submission(svc.status(), content))


class ClaimedSizes:
    """Key-custody tests only: believes the request's byte count for blobs with no manifest.

    These tests wrap bare file keys with no artifact behind them. The
    deployment's gate reads sizes from barrier-signed manifests
    (:class:`strongroom.vault.shards.SignedShards`); tests/test_release_sizes.py
    covers that path.
    """

    def size(self, request: ReleaseRequest) -> int:
        return request.nbytes


def claimed_sizes(_: object) -> ClaimedSizes:
    """The sizes factory of the key-custody fixtures."""
    return ClaimedSizes()


class OfficerEvidence:
    """Key-custody tests only: the principal signs the request and is an officer pinned in the barrier.

    Single use (nonces remembered until they expire, seeded from the audit log),
    bound to artifact, shard, blob and purpose, and valid for at most an hour.
    The deployment's rule is :class:`strongroom.access.evidence.GrantEvidence`.
    """

    def __init__(self, officers: Callable[[], Mapping[str, Ed25519PublicKey]]) -> None:
        self._officers = officers
        self._keys = PublicKeys()
        self.nonces = UsedNonces()

    def seed_from_audit(self, audit: AuditLog, now: float) -> None:
        """Rebuild the used nonces from the audit log's recent releases."""
        horizon = now - max(EGRESS_WINDOW_S, MAX_EVIDENCE_LIFETIME_S)
        end = audit.size()
        page = 2000
        while end > 0:
            start = max(0, end - page)
            events = audit.events(start, end)
            oldest = now
            for ev in reversed(events):
                t = datetime.fromisoformat(ev.time.replace("Z", "+00:00")).timestamp()
                oldest = min(oldest, t)
                if ev.action != ACTION or ev.decision != "allow" or t <= horizon:
                    continue
                nonce, expires = ev.details.get("nonce"), ev.details.get("expires")
                if isinstance(nonce, str) and isinstance(expires, int) and expires > now:
                    self.nonces.remember(nonce, float(expires))
            if oldest <= horizon:
                break
            end = start

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        """Check signature, officer status, binding, expiry and replay."""
        obj = request.obj
        try:
            public, kid = self._keys.load(request.principal_key)
        except (ValueError, TypeError):
            raise AccessDenied("the principal's public key is malformed", obj=obj) from None
        if kid not in self._officers():
            raise AccessDenied(
                f"principal {request.principal} (key {kid}) is not a security officer",
                obj=obj, remedy="interim rule (docs/release-gate.md): only an officer pinned "
                "at `strongroom init` may release file keys")
        nonce, expires = check_release_signature(request.evidence, public, kid, request, now)
        self.nonces.spend(nonce, expires, now, obj=obj)
        return {"evidence_key": kid, "nonce": nonce, "expires": expires}


def officer_evidence(keyring: Keyring, store: Store, audit: AuditLog,
                     shards: object = None) -> OfficerEvidence:
    """The evidence factory of the key-custody fixtures: a pinned officer's signature suffices."""
    rule = OfficerEvidence(keyring.officers)
    rule.seed_from_audit(audit, time.time())
    return rule


def unsealed_service(
    store: Store, tmp: Path, n: int = 3, k: int = 2
) -> tuple[LocalKeyService, InitResult, Custodians, Identity]:
    """A shamir keyring, initialised and unsealed in-process; and the bootstrap officer."""
    result, cust = init_shamir(store, tmp, n, k)
    svc = LocalKeyService(store, KeysSettings(key_backend="shamir"), audit_factory=audit_factory,
                          evidence_factory=officer_evidence, sizes_factory=claimed_sizes)
    for i in range(1, k + 1):
        submit(svc, result, cust, i)
    assert result.officer_identity is not None
    return svc, result, cust, Identity.load(result.officer_identity)


def unseal_existing(store: Store, tmp: Path, k: int = 2) -> tuple[LocalKeyService, Identity]:
    """Unseal, in a new process, a keyring that :func:`unsealed_service` created under ``tmp``."""
    from strongroom.crypto.age import parse_identities

    svc = LocalKeyService(store, KeysSettings(key_backend="shamir"), audit_factory=audit_factory,
                          evidence_factory=officer_evidence, sizes_factory=claimed_sizes)
    shares = sorted((tmp / "shares").glob("share-*.age"))
    for i in range(1, k + 1):
        ident = parse_identities((tmp / "custodians" / f"custodian{i}.key").read_text())
        content = ceremony.read_share_file(shares[i - 1], ident)
        svc.submit_share(ceremony.build_submission(svc.status(), content))
    return svc, Identity.load(tmp / "shares" / "officer.identity")
