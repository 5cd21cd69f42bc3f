"""Shared by the threshold tests and bench/threshold.py: a threshold-wrapped blob, its signed
manifest, release requests, and officer-signed key-server administration statements."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto import age
from strongroom.keys.threshold import ThresholdRecipient
from strongroom.release import ReleaseRequest, sign_release_evidence
from strongroom.runtime.keyserver import admin_statement
from strongroom.threshold.group import Element
from strongroom.vault.manifest import FileEntry, Manifest

VAULT = "vault-threshold-test"
ARTIFACT = "minilm@1"
SHARD = "model.safetensors"
PRINCIPAL = "inference-enclave"


@dataclass
class Blob:
    """An age file whose key is wrapped to the group key, its header, and its signed manifest."""

    plaintext: bytes
    encrypted: bytes
    header: bytes
    manifest: str
    blob_id: str


def make_blob(group_key: Element, manifest_key: Ed25519PrivateKey, size: int = 300_000) -> Blob:
    """What the vault writes at import under the threshold backend: the age file and its manifest."""
    blob_id = "blob-" + secrets.token_hex(8)
    plaintext = os.urandom(size)
    recipient = ThresholdRecipient(group_key, vault_id=VAULT, artifact=ARTIFACT, shard=SHARD, blob_id=blob_id)
    encrypted = age.encrypt(plaintext, [recipient])
    header = age.parse_header(encrypted, complete=False)
    assert header is not None
    head = encrypted[: header.size]
    entry = FileEntry(path=SHARD, blob=blob_id, kind="opaque", size=len(plaintext),
                      sha256=hashlib.sha256(plaintext).hexdigest(), ct_size=len(encrypted),
                      ct_sha256=hashlib.sha256(encrypted).hexdigest(),
                      header_sha256=hashlib.sha256(head).hexdigest())
    manifest = Manifest(name="minilm", version=1, kind="weights", created="2026-12-01T00:00:00Z",
                        compartments=(), files=(entry,)).sign(manifest_key)
    return Blob(plaintext, encrypted, head, manifest, blob_id)


class FileKeyIdentity:
    """An age identity holding one released file key (age checks the header MAC with it)."""

    def __init__(self, key: bytearray) -> None:
        self.key = bytes(key)

    def unwrap(self, stanzas: Any) -> bytes:
        return self.key


def release_request(principal: Ed25519PrivateKey, blob: Blob) -> ReleaseRequest:
    """A fresh, signed release request for the blob's shard."""
    evidence = sign_release_evidence(principal, artifact=ARTIFACT, shard=SHARD, blob_id=blob.blob_id,
                                     purpose="load")
    return ReleaseRequest(principal=PRINCIPAL, principal_key=principal.public_key().public_bytes_raw(),
                          artifact=ARTIFACT, shard=SHARD, blob_id=blob.blob_id, nbytes=len(blob.plaintext),
                          purpose="load", evidence=evidence)


@dataclass
class InProcessKeyServer:
    """A :class:`KeyServer` in this process on its own SQLite database, unsealed and set up."""

    name: str
    index: int
    server: Any  # strongroom.runtime.keyserver.KeyServer
    officer: Ed25519PrivateKey
    store: Any
    unseal: Any = None  # restarts the server in this process: a new KeyServer, unsealed again

    def admin(self, op: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.server.admin(admin_statement(self.officer, op, **fields))
        return result

    def ask(self, body: Any) -> Any:
        """The :data:`~strongroom.runtime.threshold_client.Ask` of this server, without HTTP."""
        from strongroom.threshold.wrap import Partial

        return Partial.decode(self.server.partial(body), what=self.name)

    def close(self) -> None:
        self.server.seal()
        self.store.close()


def inprocess_keyservers(tmp: Any, n: int, k: int, manifest_pub: bytes, principals: list[bytes]
                         ) -> tuple[list[InProcessKeyServer], list[Element]]:
    """``n`` key servers in this process, each with its own database and keyring; DKG k of n."""
    import base64

    from strongroom.keys.identity import Identity
    from strongroom.runtime.keyserver import KeyServer
    from strongroom.store.db import Store

    from keyring_fixtures import init_shamir, submit

    servers = []
    for i in range(1, n + 1):
        home = tmp / f"ks-{i}"
        home.mkdir(parents=True)
        store = Store.open(f"sqlite:///{home / 'strongroom.db'}")
        result, cust = init_shamir(store, home)
        ks = KeyServer(store, actor=f"ks-{i}")
        for c in (1, 2):
            submit(ks.svc, result, cust, c)
        assert result.officer_identity is not None
        officer = Identity.load(result.officer_identity).private_key
        s = InProcessKeyServer(f"ks-{i}", i, ks, officer, store)

        def restart(s: InProcessKeyServer = s, result: Any = result, cust: Any = cust) -> None:
            s.server.seal()
            s.server = KeyServer(s.store, actor=s.name)
            for c in (1, 2):
                submit(s.server.svc, result, cust, c)

        s.unseal = restart
        s.admin("setup", index=i, manifest_key=base64.b64encode(manifest_pub).decode(),
                principals=[base64.b64encode(p).decode() for p in principals])
        servers.append(s)
    recipients = {str(s.index): str(s.server.transport().recipient) for s in servers}
    dealings = [s.admin("deal", mode="dkg", threshold=k, recipients=recipients) for s in servers]
    results = [s.admin("accept", mode="dkg", dealings=dealings, epoch=1) for s in servers]
    return servers, [Element.decode(bytes.fromhex(c)) for c in results[0]["commitments"]]
