"""The sealed keyring: a root key that exists only in memory, and the barrier it opens.

States: *uninitialised* (no ``keyring_state`` row) → *sealed* (initialised, root
key not in memory) → *unsealed*. While sealed every key operation raises
:class:`~strongroom.errors.Sealed` naming the way to unseal.

The root key is rebuilt in memory from a quorum of custodians' Shamir shares
(backend ``shamir``) or unwrapped by a non-extractable AES key inside a PKCS#11
token (backend ``hsm``). From it, HKDF derives the *barrier key*; every secret
in the database (KEK versions, the manifest and checkpoint signing keys, the
officers' public keys, the ceremony configuration) is an AES-256-GCM entry
under it whose associated data is vault id ‖ path ‖ entry version, so rows can
be neither forged nor swapped. A *keyring check* entry (known plaintext) lets
unseal tell a correct root key from wrong shares before anything is used.

File keys are wrapped under the newest KEK version (AES-256-GCM, associated
data = vault id ‖ KEK version ‖ blob id) into the ``wrapped_keys`` table and
an age ``strongroom-keyring`` stanza for the blob header.

Use it through :mod:`strongroom.keys.service` (and the release gate), not
directly::

    ring = Keyring(store)
    ring.status()                      # KeyringStatus(initialized, sealed, progress, ...)
    ring.submit_share(submission)      # built by ceremony.build_submission; k of them unseal
    stanza = ring.wrap_file_key(blob_id, file_key)
    ring.seal()                        # wipes the root key, KEKs and signing keys

What not to do:

- Never call :meth:`Keyring.unwrap` outside ``strongroom.release``: the gate
  checks evidence, charges egress and audits first.
- Never persist, log or return the root key or the barrier key. Python cannot
  promise to erase every copy (``cryptography`` keeps its own); ``seal``
  zeroes the buffers strongroom owns and drops every reference.
- Do not trust ``keyring_state``: it is public and may be tampered with. After
  unseal it is compared with the authenticated copy in the barrier.
- The database can roll a barrier entry back to an older authentic value (for
  example un-retire a KEK version); use database access control and the audit
  log to notice that. A restored KEK is still only usable through the gate.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Engine, create_engine, delete, event, func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.exc import SQLAlchemyError

from strongroom.crypto import age, shamir
from strongroom.crypto.dsse import key_id
from strongroom.errors import (
    AlreadyExists,
    ConfigError,
    IntegrityError,
    InvalidInput,
    NoIdentityMatched,
    NotFound,
    Sealed,
    StorageError,
)
from strongroom.keys.config import KeysSettings
from strongroom.store.db import Store, dbapi_errors, raw_query
from strongroom.store.tables.keys import KeyringEntry, KeyringState, WrappedKey

__all__ = [
    "ROOT_KEY_LEN",
    "STANZA_TYPE",
    "CeremonyConfig",
    "Keyring",
    "KeyringStatus",
    "derive_barrier_key",
]

ROOT_KEY_LEN = 32
#: age stanza type of a file key wrapped by a keyring KEK: args (vault id, KEK version).
STANZA_TYPE = "strongroom-keyring"
_NONCE = 12
_BARRIER_INFO = b"strongroom/keyring/barrier/v1"
_CHECK_PLAINTEXT = b"strongroom keyring check v1"
_CHECK_PATH = "core/check"
_CEREMONY_PATH = "core/ceremony"
_OFFICERS_PATH = "core/officers"
_SIGNING_PREFIX = "core/signing/"
_KEK_PREFIX = "kek/"
SIGNING_PURPOSES = ("manifest", "checkpoint")
_REWRAP_BATCH = 64
_UNSEAL_HINT = "unseal it: `strongroom unseal --share FILE --identity IDENTITY_FILE` by k custodians"
_HSM_HINT = "unseal it: `strongroom unseal` with STRONGROOM_HSM_PIN set (or at the prompt)"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _query_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def _sqlite_reader(engine: Engine) -> Engine:
    """Readers on the same SQLite file that start deferred (no write lock for a lookup)."""
    # Pooled connections are kept (not closed and reopened) for up to 64 threads releasing at once.
    reader = create_engine(engine.url, connect_args={"timeout": 30, "isolation_level": None},
                           pool_size=64, max_overflow=64)
    event.listen(reader, "connect", _query_only)
    return reader


def derive_barrier_key(root_key: bytes | bytearray) -> bytes:
    """The barrier's AES-256 key, derived from the root key with HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_BARRIER_INFO).derive(
        bytes(root_key)
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _entry_aad(vault_id: str, path: str, version: int) -> bytes:
    return f"strongroom-barrier-v1\x00{vault_id}\x00{path}\x00{version}".encode()


def _wrap_aad(vault_id: str, version: int, blob_id: str) -> bytes:
    return f"{STANZA_TYPE} {vault_id} {version} {blob_id}".encode()


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


@dataclass(frozen=True)
class KeyringStatus:
    """What ``strongroom status`` shows; contains no secret."""

    initialized: bool
    sealed: bool
    backend: str
    vault_id: str | None = None
    generation: int = 0
    threshold: int = 0
    shares: int = 0
    progress: int = 0
    ceremony: str | None = None
    nonce: str | None = None
    ceremony_recipient: str | None = None
    submitted: tuple[int, ...] = ()
    kek_versions: tuple[int, ...] = ()
    retired_versions: tuple[int, ...] = ()
    rekey_ready: bool = False
    #: Officer signatures a directory statement needs (0 while sealed: not known).
    officer_threshold: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples become lists)."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeyringStatus:
        """Inverse of :meth:`to_dict`."""
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


@dataclass
class _Kek:
    version: int
    aead: AESGCM
    retired: bool
    created: str


@dataclass
class _Ceremony:
    """One unseal or rekey ceremony: a nonce, an ephemeral recipient, shares so far."""

    kind: str
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    identity: age.X25519Identity = field(default_factory=age.X25519Identity.generate)
    shares: dict[int, shamir.Share] = field(default_factory=dict)
    new_custodians: tuple[str, ...] = ()
    new_threshold: int = 0
    result: tuple[CeremonyConfig, list[shamir.Share]] | None = None


@dataclass(frozen=True)
class Located:
    """Where a blob's file key is: its KEK version and wrapped body."""

    version: int
    wrapped: bytes


class Keyring:
    """The keyring of one store: sealed until a quorum (or the HSM) unseals it."""

    def __init__(
        self,
        store: Store,
        settings: KeysSettings | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.settings = settings or KeysSettings()
        self.clock = clock
        self._lock = threading.RLock()
        self._root: bytearray | None = None
        self._barrier: AESGCM | None = None
        self._config: CeremonyConfig | None = None
        self._backend = ""
        self._keks: dict[int, _Kek] = {}
        self._signing: dict[str, Ed25519PrivateKey] = {}
        self._officers: dict[str, Ed25519PublicKey] = {}
        self._officer_threshold = 1
        self._ceremony: _Ceremony | None = None
        self._reader = store.engine if store.dialect != "sqlite" else _sqlite_reader(store.engine)
        mark = "?" if store.dialect == "sqlite" else "%s"
        # Plain DB-API statement: built from constants only; every release runs it.
        self._locate_sql = ("SELECT kek_version, wrapped FROM wrapped_keys "  # noqa: S608
                            f"WHERE blob_id = {mark} ORDER BY kek_version DESC")

    # -- creating -----------------------------------------------------------

    @staticmethod
    def create(
        store: Store,
        *,
        root_key: bytes | bytearray,
        backend: str,
        config: CeremonyConfig,
        officers: Sequence[bytes],
        officer_threshold: int,
        wrapped_root: bytes | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        """Write a new keyring (state, check, ceremony, officers, signing keys, KEK v1) at once."""
        if len(root_key) != ROOT_KEY_LEN:
            raise InvalidInput(f"root key must be {ROOT_KEY_LEN} bytes", obj="keyring")
        if not officers or not 1 <= officer_threshold <= len(officers):
            raise InvalidInput(
                f"officer threshold {officer_threshold} with {len(officers)} officer(s)",
                remedy="give 1 <= --officer-threshold <= number of --officer keys",
            )
        aead = AESGCM(derive_barrier_key(root_key))
        vid = config.vault_id
        now = clock()

        def seal(path: str, value: Any) -> KeyringEntry:
            nonce = os.urandom(_NONCE)
            body = json.dumps(value, sort_keys=True).encode()
            sealed = nonce + aead.encrypt(nonce, body, _entry_aad(vid, path, 1))
            return KeyringEntry(path=path, version=1, sealed=sealed, updated_at=now)

        check_nonce = os.urandom(_NONCE)
        check = check_nonce + aead.encrypt(
            check_nonce, _CHECK_PLAINTEXT, _entry_aad(vid, _CHECK_PATH, 0)
        )
        entries = [
            seal(_CEREMONY_PATH, json.loads(config.to_json()) | {"backend": backend}),
            seal(_OFFICERS_PATH, {"threshold": officer_threshold,
                                  "keys": [_b64(k) for k in officers]}),
            seal(f"{_KEK_PREFIX}1", {"key": _b64(os.urandom(32)), "created": now.isoformat(),
                                     "retired": False}),
        ]
        for purpose in SIGNING_PURPOSES:
            raw = Ed25519PrivateKey.generate().private_bytes_raw()
            entries.append(seal(_SIGNING_PREFIX + purpose, {"key": _b64(raw)}))
        state = KeyringState(
            id=1, vault_id=vid, backend=backend, generation=config.generation,
            threshold=config.threshold, shares=len(config.custodians),
            ceremony_json=config.to_json(), check=check, wrapped_root=wrapped_root,
            created_at=now,
        )
        try:
            with store.session() as session:
                if session.get(KeyringState, 1) is not None:
                    raise AlreadyExists("the vault is already initialised", obj="keyring",
                                        remedy="use `strongroom rekey` to change custodians")
                session.add(state)
                session.add_all(entries)
        except StorageError as exc:
            if isinstance(exc.__cause__, DbIntegrityError):
                raise AlreadyExists("the vault is already initialised", obj="keyring") from exc
            raise

    # -- state ----------------------------------------------------------------

    def _state(self) -> KeyringState | None:
        with self.store.session() as session:
            return session.get(KeyringState, 1)

    def _require_state(self) -> KeyringState:
        state = self._state()
        if state is None:
            raise Sealed("the vault is not initialised", obj="keyring",
                         remedy="initialise it: `strongroom init --custodian PUBKEY_FILE ... "
                                "--threshold K --shares-dir DIR`")
        return state

    @property
    def sealed(self) -> bool:
        """True unless the root key is in memory."""
        return self._root is None

    def status(self) -> KeyringStatus:
        """Initialised? sealed? threshold, ceremony progress and KEK versions."""
        with self._lock:
            state = self._state()
            if state is None:
                return KeyringStatus(initialized=False, sealed=True,
                                     backend=self.settings.key_backend)
            if self._root is not None:
                active = tuple(sorted(v for v, k in self._keks.items() if not k.retired))
                retired = tuple(sorted(v for v, k in self._keks.items() if k.retired))
            else:
                active, retired = self._listed_versions(), ()
            ceremony = self._current_ceremony(state)
            return KeyringStatus(
                initialized=True,
                sealed=self._root is None,
                backend=state.backend,
                vault_id=state.vault_id,
                generation=state.generation,
                threshold=state.threshold,
                shares=state.shares,
                progress=len(ceremony.shares) if ceremony else 0,
                ceremony=ceremony.kind if ceremony else None,
                nonce=ceremony.nonce if ceremony else None,
                ceremony_recipient=str(ceremony.identity.recipient) if ceremony else None,
                submitted=tuple(sorted(ceremony.shares)) if ceremony else (),
                kek_versions=active,
                retired_versions=retired,
                rekey_ready=bool(ceremony and ceremony.result is not None),
                officer_threshold=self._officer_threshold if self._root is not None else 0,
            )

    def _listed_versions(self) -> tuple[int, ...]:
        with self.store.session() as session:
            paths = session.scalars(
                select(KeyringEntry.path).where(KeyringEntry.path.like(f"{_KEK_PREFIX}%"))
            ).all()
        return tuple(sorted(int(p[len(_KEK_PREFIX):]) for p in paths))

    def _current_ceremony(self, state: KeyringState) -> _Ceremony | None:
        if state.backend != "shamir":
            return None
        if self._ceremony is None and self._root is None:
            self._ceremony = _Ceremony(kind="unseal")
        if self._ceremony is not None and self._ceremony.kind == "unseal" and self._root is not None:
            self._ceremony = None
        return self._ceremony

    # -- unsealing ------------------------------------------------------------

    def reset(self) -> KeyringStatus:
        """Discard the current ceremony's shares; a new nonce starts a new one."""
        with self._lock:
            self._wipe_ceremony()
            return self.status()

    def _wipe_ceremony(self) -> None:
        self._ceremony = None

    def submit_share(self, submission: bytes) -> KeyringStatus:
        """Count one custodian's share (age-encrypted to the ceremony's recipient)."""
        with self._lock:
            state = self._require_state()
            if state.backend != "shamir":
                raise ConfigError("this vault is unsealed by its HSM, not by shares",
                                  obj="keyring", remedy=_HSM_HINT)
            ceremony = self._current_ceremony(state)
            if ceremony is None:
                return self.status()  # already unsealed and no rekey running
            content = self._open_submission(ceremony, submission)
            config = CeremonyConfig.from_json(state.ceremony_json)
            if content["vault_id"] != state.vault_id or content["generation"] != state.generation:
                raise InvalidInput(
                    f"the share belongs to vault {content['vault_id']} generation "
                    f"{content['generation']}, this vault is {state.vault_id} generation "
                    f"{state.generation}",
                    obj=f"share of custodian {content['index']}",
                    remedy="submit a share file dealt for this vault (newest rekey)",
                )
            share = content["share"]
            if share.x in ceremony.shares:
                raise InvalidInput(
                    f"custodian {share.x} has already submitted a share in this ceremony",
                    obj=f"ceremony {ceremony.nonce}", remedy="another custodian must submit",
                )
            if not 1 <= share.x <= len(config.commitments) or not shamir.verify_share(
                share, config.commitments[share.x - 1]
            ):
                raise IntegrityError(
                    f"share of custodian {share.x} does not match its published commitment",
                    obj=f"share of custodian {share.x}",
                    remedy="the share file is corrupted or forged; use the custodian's own file",
                )
            ceremony.shares[share.x] = share
            if len(ceremony.shares) >= state.threshold:
                self._complete(state, ceremony)
            return self.status()

    def _open_submission(self, ceremony: _Ceremony, submission: bytes) -> dict[str, Any]:
        where = f"{ceremony.kind} ceremony {ceremony.nonce}"
        try:
            text = age.decrypt(submission, [ceremony.identity])
        except NoIdentityMatched:
            raise InvalidInput(
                "the share was submitted for another ceremony (it was reset, completed, or "
                "the agent restarted)", obj=where,
                remedy="run `strongroom status` and submit the share again",
            ) from None
        except (IntegrityError, InvalidInput) as exc:
            raise InvalidInput(f"malformed share submission ({exc.message})", obj=where) from None
        try:
            d = json.loads(text)
            if d["nonce"] != ceremony.nonce:
                raise InvalidInput("the submission names another ceremony", obj=where,
                                   remedy="run `strongroom status` and submit again")
            return {"vault_id": str(d["vault_id"]), "generation": int(d["generation"]),
                    "index": int(d["index"]),
                    "share": shamir.Share.from_bytes(_unb64(d["share"]))}
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"malformed share submission ({type(exc).__name__})",
                               obj=where) from None

    def _complete(self, state: KeyringState, ceremony: _Ceremony) -> None:
        shares = list(ceremony.shares.values())
        try:
            root = bytearray(shamir.combine(shares, threshold=state.threshold))
        except InvalidInput:
            self._wipe_ceremony()
            raise
        if ceremony.kind == "unseal":
            self._wipe_ceremony()
            self._unseal_with(root, state)
            return
        # rekey: the quorum must rebuild the very root key in memory
        current = self._root
        if current is None or not hmac.compare_digest(bytes(root), bytes(current)):
            root[:] = bytes(len(root))
            self._wipe_ceremony()
            raise IntegrityError(
                "the submitted shares do not rebuild this vault's root key; rekey cancelled",
                obj="rekey ceremony", remedy="start the rekey again with the custodians' files",
            )
        new_shares = shamir.split(root, ceremony.new_threshold, len(ceremony.new_custodians))
        root[:] = bytes(len(root))
        config = CeremonyConfig(
            vault_id=state.vault_id, generation=state.generation + 1,
            threshold=ceremony.new_threshold, custodians=ceremony.new_custodians,
            commitments=tuple(shamir.commit(new_shares)),
        )
        ceremony.result = (config, new_shares)

    def unseal_with_root(self, root_key: bytearray) -> KeyringStatus:
        """Unseal with a root key already in memory (used by ``init`` tests and the HSM path)."""
        with self._lock:
            self._unseal_with(root_key, self._require_state())
            return self.status()

    def unseal_hsm(self, pin: str | None = None) -> KeyringStatus:
        """HSM backend: log in to the token and unwrap the root key into memory."""
        from strongroom.keys.hsm import HsmKek

        with self._lock:
            state = self._require_state()
            if state.backend != "hsm" or state.wrapped_root is None:
                raise ConfigError("this vault is unsealed by custodian shares, not an HSM",
                                  obj="keyring", remedy=_UNSEAL_HINT)
            if self._root is not None:
                return self.status()
            s = self.settings
            pin = pin if pin is not None else s.hsm_pin
            if not s.hsm_token or pin is None:
                raise ConfigError("no HSM token or PIN configured", obj="keyring",
                                  remedy="set STRONGROOM_HSM_TOKEN and STRONGROOM_HSM_PIN")
            with HsmKek.open(s.hsm_library, s.hsm_token, pin, s.hsm_key_label) as kek:
                root = bytearray(kek.unwrap(state.wrapped_root, state.vault_id.encode()))
            self._unseal_with(root, state)
            return self.status()

    def _unseal_with(self, root: bytearray, state: KeyringState) -> None:
        vid = state.vault_id
        try:
            aead = AESGCM(derive_barrier_key(root))
            try:
                aead.decrypt(state.check[:_NONCE], state.check[_NONCE:],
                             _entry_aad(vid, _CHECK_PATH, 0))
            except InvalidTag:
                raise IntegrityError(
                    "the root key does not open this vault's keyring check: wrong, forged or "
                    "mixed shares (or a tampered keyring); nothing was unsealed",
                    obj=f"vault {vid}", remedy="start again (`strongroom unseal --reset`) "
                    "with the custodians' own share files",
                ) from None
            entries = self._load_entries(aead, vid)
            self._install(root, aead, state, entries)
        except BaseException:
            root[:] = bytes(len(root))
            self._drop_secrets()
            raise

    def _load_entries(self, aead: AESGCM, vid: str) -> dict[str, Any]:
        with self.store.session() as session:
            rows = session.scalars(select(KeyringEntry)).all()
        out: dict[str, Any] = {}
        for row in rows:
            try:
                body = aead.decrypt(row.sealed[:_NONCE], row.sealed[_NONCE:],
                                    _entry_aad(vid, row.path, row.version))
                out[row.path] = json.loads(body)
            except (InvalidTag, ValueError) as exc:
                raise IntegrityError("barrier entry fails authentication",
                                     obj=f"keyring entry {row.path!r}") from exc
        return out

    def _install(self, root: bytearray, aead: AESGCM, state: KeyringState,
                 entries: dict[str, Any]) -> None:
        try:
            ceremony = dict(entries[_CEREMONY_PATH])
            backend = ceremony.pop("backend")
            config = CeremonyConfig.from_json(json.dumps(ceremony))
            officers = entries[_OFFICERS_PATH]
            signing = {p: Ed25519PrivateKey.from_private_bytes(
                _unb64(entries[_SIGNING_PREFIX + p]["key"])) for p in SIGNING_PURPOSES}
            keks = {
                int(path[len(_KEK_PREFIX):]): _Kek(int(path[len(_KEK_PREFIX):]),
                                                   AESGCM(_unb64(v["key"])),
                                                   bool(v["retired"]), str(v["created"]))
                for path, v in entries.items() if path.startswith(_KEK_PREFIX)
            }
            officer_keys = [Ed25519PublicKey.from_public_bytes(_unb64(k)) for k in officers["keys"]]
            officer_threshold = int(officers["threshold"])
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
        self._root = root
        self._barrier = aead
        self._config = config
        self._backend = backend
        self._keks = keks
        self._signing = signing
        self._officers = {key_id(k): k for k in officer_keys}
        self._officer_threshold = officer_threshold

    def _drop_secrets(self) -> None:
        if self._root is not None:
            self._root[:] = bytes(len(self._root))
        self._root = None
        self._barrier = None
        self._keks = {}
        self._signing = {}
        self._officers = {}
        self._config = None

    def close(self) -> None:
        """Seal and release the reader connections."""
        self.seal()
        if self._reader is not self.store.engine:
            self._reader.dispose()

    def seal(self) -> KeyringStatus:
        """Wipe the root key, KEKs and signing keys from memory; end any ceremony."""
        with self._lock:
            self._drop_secrets()
            self._wipe_ceremony()
            return self.status()

    def require_unsealed(self) -> None:
        """Raise Sealed (with how to unseal) unless the root key is in memory."""
        if self._root is None:
            state = self._require_state()
            remedy = _HSM_HINT if state.backend == "hsm" else _UNSEAL_HINT
            raise Sealed("the vault is sealed", obj=f"vault {state.vault_id}", remedy=remedy)

    # -- rekey ----------------------------------------------------------------

    def rekey_start(self, custodians: Sequence[str], threshold: int) -> KeyringStatus:
        """Begin a rekey to ``threshold``-of-``len(custodians)``; the current quorum must submit."""
        with self._lock:
            self.require_unsealed()
            state = self._require_state()
            if state.backend != "shamir":
                raise ConfigError("rekey applies to the shamir backend only", obj="keyring")
            for c in custodians:
                age.X25519Recipient.parse(c)
            if not 2 <= threshold <= len(custodians) <= shamir.MAX_SHARES:
                raise InvalidInput(f"cannot rekey to {threshold}-of-{len(custodians)}",
                                   remedy="need 2 <= --threshold <= custodians <= 255")
            if len(set(custodians)) != len(custodians):
                raise InvalidInput("a custodian's key is given twice", obj="rekey")
            self._ceremony = _Ceremony(kind="rekey", new_custodians=tuple(custodians),
                                       new_threshold=threshold)
            return self.status()

    def rekey_result(self, nonce: str) -> tuple[CeremonyConfig, list[shamir.Share]]:
        """The new configuration and shares of the completed rekey ``nonce`` (not yet committed)."""
        with self._lock:
            c = self._ceremony
            if c is None or c.kind != "rekey" or c.nonce != nonce or c.result is None:
                raise InvalidInput("no completed rekey ceremony with that nonce", obj="rekey",
                                   remedy="start the rekey again")
            return c.result

    def rekey_commit(self, nonce: str) -> KeyringStatus:
        """Make the completed rekey the vault's ceremony (after its share files are written)."""
        with self._lock:
            self.require_unsealed()
            config, _ = self.rekey_result(nonce)
            with self.store.session() as session:
                state = session.get(KeyringState, 1)
                if state is None:
                    raise NotFound("the keyring vanished during rekey", obj="keyring")
                self._put(session, _CEREMONY_PATH,
                          json.loads(config.to_json()) | {"backend": state.backend})
                state.generation = config.generation
                state.threshold = config.threshold
                state.shares = len(config.custodians)
                state.ceremony_json = config.to_json()
            self._config = config
            self._wipe_ceremony()
            return self.status()

    # -- barrier writes -----------------------------------------------------------

    def _put(self, session: Any, path: str, value: Any) -> None:
        assert self._barrier is not None and self._config is not None
        row = session.get(KeyringEntry, path)
        version = (row.version + 1) if row is not None else 1
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._barrier.encrypt(
            nonce, json.dumps(value, sort_keys=True).encode(),
            _entry_aad(self._config.vault_id, path, version),
        )
        if row is None:
            session.add(KeyringEntry(path=path, version=version, sealed=sealed,
                                     updated_at=self.clock()))
        else:
            row.version, row.sealed, row.updated_at = version, sealed, self.clock()

    # -- KEKs and file keys ---------------------------------------------------------

    @property
    def vault_id(self) -> str:
        """The vault's id (unsealed only)."""
        self.require_unsealed()
        assert self._config is not None
        return self._config.vault_id

    def newest_version(self) -> int:
        """The newest KEK version that is not retired."""
        self.require_unsealed()
        active = [v for v, k in self._keks.items() if not k.retired]
        if not active:
            raise IntegrityError("every KEK version is retired", obj="keyring",
                                 remedy="run `strongroom keys rotate`")
        return max(active)

    def wrap_file_key(self, blob_id: str, file_key: bytes | bytearray) -> age.Stanza:
        """Wrap ``file_key`` under the newest KEK, record it for ``blob_id``, return its stanza."""
        if not isinstance(blob_id, str) or not 1 <= len(blob_id) <= 100:
            raise InvalidInput("blob id must be 1..100 characters", obj="wrap_file_key")
        if len(file_key) != age.FILE_KEY_SIZE:
            raise InvalidInput(f"a file key must be {age.FILE_KEY_SIZE} bytes", obj=blob_id)
        with self._lock:
            version = self.newest_version()
            vid = self.vault_id
            aead = self._keks[version].aead
        body = self._seal_file_key(aead, vid, version, blob_id, file_key)
        with self.store.session() as session:
            row = session.get(WrappedKey, (blob_id, version))
            if row is None:
                session.add(WrappedKey(blob_id=blob_id, kek_version=version, wrapped=body,
                                       created_at=self.clock()))
            else:
                row.wrapped, row.created_at = body, self.clock()
        return age.Stanza(STANZA_TYPE, (vid, str(version)), body)

    @staticmethod
    def _seal_file_key(aead: AESGCM, vid: str, version: int, blob_id: str,
                       file_key: bytes | bytearray) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + aead.encrypt(nonce, bytes(file_key), _wrap_aad(vid, version, blob_id))

    def locate(self, blob_id: str, stanzas: Sequence[age.Stanza] = ()) -> Located:
        """Find the newest usable wrapping of ``blob_id``'s file key (no decryption)."""
        self.require_unsealed()
        try:
            rows = raw_query(self._reader, self._locate_sql, (blob_id,))
        except dbapi_errors(self._reader) as exc:
            raise StorageError(f"cannot read wrapped keys ({type(exc).__name__})",
                               obj=f"blob {blob_id}", remedy="check the database") from exc
        candidates = [(int(v), bytes(w)) for v, w in rows]
        vid = self.vault_id
        for stanza in stanzas:
            args = stanza.args
            if stanza.type == STANZA_TYPE and len(args) == 2 and args[0] == vid \
                    and args[1].isdigit():
                candidates.append((int(args[1]), stanza.body))
        if not candidates:
            raise NotFound("no wrapped file key for this blob in the keyring",
                           obj=f"blob {blob_id}",
                           remedy="the blob was not imported under this vault's keyring")
        retired: list[int] = []
        for version, wrapped in candidates:
            kek = self._keks.get(version)
            if kek is None:
                continue
            if kek.retired:
                retired.append(version)
                continue
            return Located(version, wrapped)
        if retired:
            raise IntegrityError(
                f"the file key is wrapped only by retired KEK version(s) "
                f"{', '.join(map(str, sorted(set(retired))))}",
                obj=f"blob {blob_id}",
                remedy="a retired version must not be in use; restore the wrapped_keys rows "
                "from backup and investigate how retirement happened while in use",
            )
        raise IntegrityError("the file key is wrapped by a KEK version this keyring lacks",
                             obj=f"blob {blob_id}", remedy="restore the keyring from backup")

    def unwrap(self, blob_id: str, located: Located) -> bytearray:
        """The file key (caller zeroes it). Only ``strongroom.release`` may call this."""
        self.require_unsealed()
        kek = self._keks.get(located.version)
        if kek is None or kek.retired:
            raise IntegrityError(f"KEK version {located.version} is retired or unknown",
                                 obj=f"blob {blob_id}")
        w = located.wrapped
        try:
            key = kek.aead.decrypt(w[:_NONCE], w[_NONCE:],
                                   _wrap_aad(self.vault_id, located.version, blob_id))
        except (InvalidTag, ValueError):
            raise IntegrityError(
                f"wrapped file key fails authentication under KEK version {located.version}",
                obj=f"blob {blob_id}",
            ) from None
        return bytearray(key)

    def rotate(self) -> int:
        """Create the next KEK version; new file keys are wrapped under it."""
        with self._lock:
            self.require_unsealed()
            version = max(self._keks) + 1
            raw = os.urandom(32)
            created = self.clock().isoformat()
            with self.store.session() as session:
                self._put(session, f"{_KEK_PREFIX}{version}",
                          {"key": _b64(raw), "created": created, "retired": False})
            self._keks[version] = _Kek(version, AESGCM(raw), False, created)
            return version

    def rewrap(self, progress: Callable[[int], None] | None = None) -> int:
        """Wrap every file key also under the newest KEK (payloads untouched); returns the count.

        Each batch is one transaction that adds new rows and keeps the old ones,
        so a crash leaves every key unwrappable by the old or the new version.
        """
        newest = self.newest_version()
        vid = self.vault_id
        done = 0
        while True:
            with self.store.session() as session:
                have_newest = select(WrappedKey.blob_id).where(WrappedKey.kek_version == newest)
                rows = session.execute(
                    select(WrappedKey.blob_id, WrappedKey.kek_version, WrappedKey.wrapped)
                    .where(WrappedKey.blob_id.not_in(have_newest))
                    .order_by(WrappedKey.blob_id, WrappedKey.kek_version.desc())
                    .limit(_REWRAP_BATCH * 4)
                ).all()
                batch: dict[str, Located] = {}
                for blob_id, version, wrapped in rows:
                    kek = self._keks.get(int(version))
                    if blob_id not in batch and kek is not None and not kek.retired:
                        batch[blob_id] = Located(int(version), bytes(wrapped))
                    if len(batch) >= _REWRAP_BATCH:
                        break
                if not batch:
                    if rows:
                        raise IntegrityError(
                            f"{len({r[0] for r in rows})} file key(s) are wrapped only by "
                            "retired or unknown KEK versions", obj="rewrap",
                            remedy="restore wrapped_keys from backup")
                    return done
                aead = self._keks[newest].aead
                for blob_id, located in batch.items():
                    key = self.unwrap(blob_id, located)
                    try:
                        body = self._seal_file_key(aead, vid, newest, blob_id, key)
                    finally:
                        key[:] = bytes(len(key))
                    session.add(WrappedKey(blob_id=blob_id, kek_version=newest, wrapped=body,
                                           created_at=self.clock()))
            done += len(batch)
            if progress is not None:
                progress(done)

    def usage(self) -> dict[int, tuple[int, int]]:
        """Per KEK version: (file keys wrapped by it, of which wrapped by no other usable version)."""
        self.require_unsealed()
        with self.store.session() as session:
            rows = session.execute(select(WrappedKey.blob_id, WrappedKey.kek_version)).all()
        by_blob: dict[str, set[int]] = {}
        for blob_id, version in rows:
            by_blob.setdefault(blob_id, set()).add(int(version))
        usable = {v for v, k in self._keks.items() if not k.retired}
        out: dict[int, tuple[int, int]] = {v: (0, 0) for v in self._keks}
        for versions in by_blob.values():
            for v in versions:
                total, only = out.get(v, (0, 0))
                alone = not (versions - {v}) & usable
                out[v] = (total + 1, only + (1 if alone else 0))
        return out

    def retire(self, version: int) -> int:
        """Retire KEK ``version`` once no file key depends on it; returns the rows removed."""
        with self._lock:
            self.require_unsealed()
            kek = self._keks.get(version)
            if kek is None:
                raise NotFound(f"no KEK version {version}", obj="keyring")
            if kek.retired:
                raise InvalidInput(f"KEK version {version} is already retired", obj="keyring")
            if version == self.newest_version():
                raise InvalidInput(f"KEK version {version} is the newest; it cannot be retired",
                                   obj="keyring", remedy="run `strongroom keys rotate` first")
            total, only = self.usage().get(version, (0, 0))
            if only:
                raise InvalidInput(
                    f"KEK version {version} still wraps {only} file key(s) that no other "
                    "version wraps", obj=f"KEK version {version}",
                    remedy="run `strongroom keys rewrap`, then retire again",
                )
            try:
                with self.store.session() as session:
                    session.execute(delete(WrappedKey).where(WrappedKey.kek_version == version))
                    self._put(session, f"{_KEK_PREFIX}{version}",
                              {"key": "", "created": kek.created, "retired": True})
            except SQLAlchemyError as exc:  # pragma: no cover - wrapped by Store.session
                raise StorageError("cannot retire", obj=f"KEK version {version}") from exc
            kek.retired = True
            kek.aead = AESGCM(bytes(32))  # the old key is gone from the barrier and memory
            return total

    def count_wrapped(self) -> int:
        """How many file keys the keyring holds."""
        with self.store.session() as session:
            n = session.scalar(select(func.count(func.distinct(WrappedKey.blob_id))))
        return int(n or 0)

    # -- signing keys and officers --------------------------------------------------

    def signing_key(self, purpose: str) -> Ed25519PrivateKey:
        """The barrier's Ed25519 key for ``manifest`` or ``checkpoint``."""
        self.require_unsealed()
        if purpose not in self._signing:
            raise InvalidInput(f"unknown signing purpose {purpose!r}",
                               remedy="use 'manifest' or 'checkpoint'")
        return self._signing[purpose]

    def officers(self) -> dict[str, Ed25519PublicKey]:
        """Officers' public keys pinned at init, by DSSE key id."""
        self.require_unsealed()
        return dict(self._officers)

    @property
    def officer_threshold(self) -> int:
        """How many officers must sign directory statements (the access issue's root of trust)."""
        self.require_unsealed()
        return self._officer_threshold

    def public_keys(self) -> dict[str, bytes]:
        """Raw Ed25519 public keys: ``manifest``, ``checkpoint`` and ``officer:<key id>``."""
        self.require_unsealed()
        out = {p: k.public_key().public_bytes_raw() for p, k in self._signing.items()}
        for kid, pub in self._officers.items():
            out[f"officer:{kid}"] = pub.public_bytes_raw()
        return out


