"""The keyring's barrier: the sealed database entries a root key opens, and what they hold.

HKDF derives the *barrier key* from the root key. Every secret of the keyring
(KEK versions, the manifest and checkpoint signing keys, the officers' public
keys, the ceremony configuration) is a ``keyring_entries`` row sealed under it
with AES-256-GCM, whose associated data is vault id ‖ path ‖ entry version, so
rows can be neither forged nor swapped. A *keyring check* (known plaintext in
``keyring_state``) lets unseal tell a correct root key from wrong shares before
anything is used. Opening the barrier also checks the public ``keyring_state``
against the authenticated ceremony configuration.

Only :class:`~strongroom.keys.keyring.Keyring` and the KEK ring
(:mod:`strongroom.keys.kek`) use it::

    check, entries = initial_entries(root_key, config, "shamir", officers, 1, now)
    barrier, contents = Barrier.open(root_key, state, store)   # IntegrityError if wrong
    with store.session() as session:
        barrier.put(session, "kek/2", {...}, now)

Never persist, log or return the root key or the barrier key.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select

from strongroom.crypto.dsse import key_id
from strongroom.crypto.ed25519 import checked
from strongroom.errors import IntegrityError
from strongroom.store.db import Store
from strongroom.store.tables.keys import KeyringEntry, KeyringState

__all__ = [
    "KEK_PREFIX",
    "NONCE_LEN",
    "ROOT_KEY_LEN",
    "SIGNING_PURPOSES",
    "Barrier",
    "BarrierContents",
    "CeremonyConfig",
    "KekVersion",
    "b64",
    "derive_barrier_key",
    "initial_entries",
    "unb64",
]

ROOT_KEY_LEN = 32
#: AES-GCM nonce length of every sealed entry and wrapped file key.
NONCE_LEN = 12
_BARRIER_INFO = b"strongroom/keyring/barrier/v1"
_CHECK_PLAINTEXT = b"strongroom keyring check v1"
_CHECK_PATH = "core/check"
_CEREMONY_PATH = "core/ceremony"
_OFFICERS_PATH = "core/officers"
_SIGNING_PREFIX = "core/signing/"
#: Barrier path prefix of entries other packages seal through the keyring (``ext/<name>``).
EXT_PREFIX = "ext/"
#: Barrier path prefix of KEK versions (``kek/<version>``).
KEK_PREFIX = "kek/"
SIGNING_PURPOSES = ("manifest", "checkpoint")


def derive_barrier_key(root_key: bytes | bytearray) -> bytes:
    """The barrier's AES-256 key, derived from the root key with HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_BARRIER_INFO).derive(
        bytes(root_key)
    )


def b64(data: bytes) -> str:
    """Standard base64 text, as barrier entries store keys."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    """Inverse of :func:`b64` (strict)."""
    return base64.b64decode(text, validate=True)


def _entry_aad(vault_id: str, path: str, version: int) -> bytes:
    return f"strongroom-barrier-v1\x00{vault_id}\x00{path}\x00{version}".encode()


@dataclass(frozen=True)
class CeremonyConfig:
    """Who can unseal: custodians' age recipients, threshold, published share commitments."""

    vault_id: str
    generation: int
    threshold: int
    custodians: tuple[str, ...]
    commitments: tuple[str, ...]

    def to_json(self) -> str:
        """Canonical JSON of the configuration."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CeremonyConfig:
        """Parse what ``to_json`` wrote (IntegrityError if malformed)."""
        try:
            d = json.loads(text)
            return cls(str(d["vault_id"]), int(d["generation"]), int(d["threshold"]),
                       tuple(str(c) for c in d["custodians"]),
                       tuple(str(c) for c in d["commitments"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError("ceremony configuration is malformed", obj="keyring_state") from exc


@dataclass
class KekVersion:
    """One KEK version opened from the barrier (``aead`` is a zero key once retired)."""

    version: int
    aead: AESGCM
    retired: bool
    created: str


@dataclass(frozen=True)
class BarrierContents:
    """What an opened barrier authenticates, parsed."""

    config: CeremonyConfig
    backend: str
    keks: dict[int, KekVersion]
    signing: dict[str, Ed25519PrivateKey]
    #: Officers' public keys by DSSE key id.
    officers: dict[str, Ed25519PublicKey]
    officer_threshold: int
    #: Hybrid officers' ML-DSA-65 keys by the DSSE key id of their Ed25519 key (a keyring
    #: written before hybrid officers has none: its officers are classical).
    officer_mldsa: dict[str, MLDSA65PublicKey] = field(default_factory=dict)


def initial_entries(
    root_key: bytes | bytearray,
    config: CeremonyConfig,
    backend: str,
    officers: list[bytes] | tuple[bytes, ...],
    officer_threshold: int,
    now: datetime,
    officer_mldsa: dict[bytes, bytes] | None = None,
) -> tuple[bytes, list[KeyringEntry]]:
    """A new barrier: the keyring check and the entries (ceremony, officers, KEK v1, signing).

    ``officer_mldsa`` maps a hybrid officer's raw Ed25519 key to its raw ML-DSA-65 key.
    """
    aead = AESGCM(derive_barrier_key(root_key))
    vid = config.vault_id

    def seal(path: str, value: Any) -> KeyringEntry:
        nonce = os.urandom(NONCE_LEN)
        body = json.dumps(value, sort_keys=True).encode()
        sealed = nonce + aead.encrypt(nonce, body, _entry_aad(vid, path, 1))
        return KeyringEntry(path=path, version=1, sealed=sealed, updated_at=now)

    check_nonce = os.urandom(NONCE_LEN)
    check = check_nonce + aead.encrypt(
        check_nonce, _CHECK_PLAINTEXT, _entry_aad(vid, _CHECK_PATH, 0)
    )
    entries = [
        seal(_CEREMONY_PATH, json.loads(config.to_json()) | {"backend": backend}),
        seal(_OFFICERS_PATH, {"threshold": officer_threshold,
                              "keys": [b64(k) for k in officers],
                              "mldsa": {key_id(Ed25519PublicKey.from_public_bytes(k)): b64(pq)
                                        for k, pq in (officer_mldsa or {}).items()}}),
        seal(f"{KEK_PREFIX}1", {"key": b64(os.urandom(32)), "created": now.isoformat(),
                                "retired": False}),
    ]
    for purpose in SIGNING_PURPOSES:
        raw = Ed25519PrivateKey.generate().private_bytes_raw()
        entries.append(seal(_SIGNING_PREFIX + purpose, {"key": b64(raw)}))
    return check, entries


class Barrier:
    """The barrier of one vault, opened: seals new entry versions under the barrier key."""

    def __init__(self, aead: AESGCM, vault_id: str) -> None:
        self._aead = aead
        self.vault_id = vault_id

    @classmethod
    def open(cls, root: bytearray, state: KeyringState,
             store: Store) -> tuple[Barrier, BarrierContents]:
        """Check ``root`` against the keyring check, then open and parse every entry."""
        vid = state.vault_id
        aead = AESGCM(derive_barrier_key(root))
        try:
            aead.decrypt(state.check[:NONCE_LEN], state.check[NONCE_LEN:],
                         _entry_aad(vid, _CHECK_PATH, 0))
        except InvalidTag:
            raise IntegrityError(
                "the root key does not open this vault's keyring check: wrong, forged or "
                "mixed shares (or a tampered keyring); nothing was unsealed",
                obj=f"vault {vid}", remedy="start again (`strongroom unseal --reset`) "
                "with the custodians' own share files",
            ) from None
        contents = cls._parse(state, cls._load_entries(store, aead, vid))
        return cls(aead, contents.config.vault_id), contents

    @staticmethod
    def _load_entries(store: Store, aead: AESGCM, vid: str) -> dict[str, Any]:
        with store.session() as session:
            rows = session.scalars(select(KeyringEntry)).all()
        out: dict[str, Any] = {}
        for row in rows:
            try:
                body = aead.decrypt(row.sealed[:NONCE_LEN], row.sealed[NONCE_LEN:],
                                    _entry_aad(vid, row.path, row.version))
                out[row.path] = json.loads(body)
            except (InvalidTag, ValueError) as exc:
                raise IntegrityError("barrier entry fails authentication",
                                     obj=f"keyring entry {row.path!r}") from exc
        return out

    @staticmethod
    def _parse(state: KeyringState, entries: dict[str, Any]) -> BarrierContents:
        try:
            ceremony = dict(entries[_CEREMONY_PATH])
            backend = ceremony.pop("backend")
            config = CeremonyConfig.from_json(json.dumps(ceremony))
            officers = entries[_OFFICERS_PATH]
            signing = {p: Ed25519PrivateKey.from_private_bytes(
                unb64(entries[_SIGNING_PREFIX + p]["key"])) for p in SIGNING_PURPOSES}
            keks = {
                int(path[len(KEK_PREFIX):]): KekVersion(int(path[len(KEK_PREFIX):]),
                                                        AESGCM(unb64(v["key"])),
                                                        bool(v["retired"]), str(v["created"]))
                for path, v in entries.items() if path.startswith(KEK_PREFIX)
            }
            officer_keys = [checked(Ed25519PublicKey.from_public_bytes(unb64(k)), obj="officer key")
                            for k in officers["keys"]]
            officer_threshold = int(officers["threshold"])
            officer_mldsa = {str(kid): MLDSA65PublicKey.from_public_bytes(unb64(v))
                             for kid, v in dict(officers.get("mldsa") or {}).items()}
        except (KeyError, ValueError, TypeError) as exc:
            raise IntegrityError("the keyring barrier is missing or has malformed entries",
                                 obj=f"vault {state.vault_id}",
                                 remedy="restore the keyring tables from a trusted backup") from exc
        public = CeremonyConfig.from_json(state.ceremony_json)
        if public != config or backend != state.backend or state.threshold != config.threshold:
            raise IntegrityError(
                "keyring_state disagrees with the authenticated ceremony configuration",
                obj=f"vault {state.vault_id}",
                remedy="the public keyring state was tampered with; restore it from backup",
            )
        if not keks:
            raise IntegrityError("the keyring holds no KEK version", obj=f"vault {state.vault_id}")
        pinned = {key_id(k): k for k in officer_keys}
        if not set(officer_mldsa) <= set(pinned):
            raise IntegrityError("the keyring pins an ML-DSA-65 key of no officer",
                                 obj=f"vault {state.vault_id}",
                                 remedy="restore the keyring tables from a trusted backup")
        return BarrierContents(config, backend, keks, signing, pinned, officer_threshold,
                               officer_mldsa)

    def put(self, session: Any, path: str, value: Any, now: datetime) -> None:
        """Seal ``value`` as the next version of entry ``path`` in ``session``'s transaction."""
        row = session.get(KeyringEntry, path)
        version = (row.version + 1) if row is not None else 1
        nonce = os.urandom(NONCE_LEN)
        sealed = nonce + self._aead.encrypt(
            nonce, json.dumps(value, sort_keys=True).encode(),
            _entry_aad(self.vault_id, path, version),
        )
        if row is None:
            session.add(KeyringEntry(path=path, version=version, sealed=sealed, updated_at=now))
        else:
            row.version, row.sealed, row.updated_at = version, sealed, now

    def get(self, session: Any, path: str) -> Any | None:
        """Open entry ``path`` (None when absent); IntegrityError when it fails authentication."""
        row = session.get(KeyringEntry, path)
        if row is None:
            return None
        try:
            return json.loads(self._aead.decrypt(row.sealed[:NONCE_LEN], row.sealed[NONCE_LEN:],
                                                 _entry_aad(self.vault_id, path, row.version)))
        except (InvalidTag, ValueError) as exc:
            raise IntegrityError("barrier entry fails authentication",
                                 obj=f"keyring entry {path!r}") from exc

    def put_ceremony(self, session: Any, config: CeremonyConfig, backend: str,
                     now: datetime) -> None:
        """Seal a new ceremony configuration (after a rekey)."""
        self.put(session, _CEREMONY_PATH, json.loads(config.to_json()) | {"backend": backend},
                 now)
