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

:class:`Keyring` is a small face over three parts: the barrier and what it
authenticates (:mod:`strongroom.keys.barrier`), the unseal and rekey ceremonies
(:mod:`strongroom.keys.unseal`) and the KEK ring (:mod:`strongroom.keys.kek`).
It holds the root key, the lock and the signing keys, and re-exports the names
other modules import from here.

Use it through :mod:`strongroom.runtime.services` (and the release gate), not
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

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PublicKey
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from strongroom.crypto import age, shamir
from strongroom.errors import (
    AlreadyExists,
    ConfigError,
    InvalidInput,
    NotFound,
    Sealed,
    StorageError,
    StrongroomError,
)
from strongroom.keys.barrier import (
    EXT_PREFIX,
    ROOT_KEY_LEN,
    SIGNING_PURPOSES,
    Barrier,
    CeremonyConfig,
    derive_barrier_key,
    initial_entries,
)
from strongroom.keys.config import KeysSettings
from strongroom.keys.kek import STANZA_TYPE, KekRing, Located
from strongroom.keys.officers import OFFICER_MLDSA_PREFIX, OFFICER_PREFIX
from strongroom.keys.unseal import HSM_HINT, UNSEAL_HINT, Ceremonies
from strongroom.store.db import Store
from strongroom.store.tables.keys import KeyringState

__all__ = [
    "ROOT_KEY_LEN",
    "SIGNING_PURPOSES",
    "STANZA_TYPE",
    "CeremonyConfig",
    "Keyring",
    "KeyringStatus",
    "Located",
    "derive_barrier_key",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


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
        self._barrier: Barrier | None = None
        self._config: CeremonyConfig | None = None
        self._backend = ""
        self._signing: dict[str, Ed25519PrivateKey] = {}
        self._officers: dict[str, Ed25519PublicKey] = {}
        self._officer_mldsa: dict[str, MLDSA65PublicKey] = {}
        self._officer_threshold = 1
        self._ceremonies = Ceremonies()
        self._keks = KekRing(store, clock, self._lock, self.require_unsealed)

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
        officer_mldsa: dict[bytes, bytes] | None = None,
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
        now = clock()
        if not set(officer_mldsa or {}) <= set(officers):
            raise InvalidInput("an ML-DSA-65 key is given for no --officer", obj="--officer")
        check, entries = initial_entries(root_key, config, backend, tuple(officers),
                                         officer_threshold, now, officer_mldsa)
        state = KeyringState(
            id=1, vault_id=config.vault_id, backend=backend, generation=config.generation,
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
                active, retired = self._keks.versions()
            else:
                active, retired = self._keks.listed_versions(), ()
            ceremony = self._ceremonies.current(state, unsealed=self._root is not None)
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

    # -- unsealing ------------------------------------------------------------

    def reset(self) -> KeyringStatus:
        """Discard the current ceremony's shares; a new nonce starts a new one."""
        with self._lock:
            self._ceremonies.wipe()
            return self.status()

    def submit_share(self, submission: bytes) -> KeyringStatus:
        """Count one custodian's share (age-encrypted to the ceremony's recipient)."""
        with self._lock:
            state = self._require_state()
            if state.backend != "shamir":
                raise ConfigError("this vault is unsealed by its HSM, not by shares",
                                  obj="keyring", remedy=HSM_HINT)
            ceremony = self._ceremonies.current(state, unsealed=self._root is not None)
            if ceremony is None:
                return self.status()  # already unsealed and no rekey running
            if self._ceremonies.accept(state, ceremony, submission):
                root = self._ceremonies.complete(state, ceremony, self._root)
                if root is not None:
                    self._unseal_with(root, state)
            return self.status()

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
                                  obj="keyring", remedy=UNSEAL_HINT)
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
        try:
            barrier, contents = Barrier.open(root, state, self.store)
            self._root = root
            self._barrier = barrier
            self._config = contents.config
            self._backend = contents.backend
            self._keks.install(barrier, contents.keks)
            self._signing = contents.signing
            self._officers = contents.officers
            self._officer_mldsa = contents.officer_mldsa
            self._officer_threshold = contents.officer_threshold
        except BaseException:
            root[:] = bytes(len(root))
            self._drop_secrets()
            raise

    def _drop_secrets(self) -> None:
        if self._root is not None:
            self._root[:] = bytes(len(self._root))
        self._root = None
        self._barrier = None
        self._keks.drop()
        self._signing = {}
        self._officers = {}
        self._officer_mldsa = {}
        self._config = None

    def close(self) -> None:
        """Seal and release the reader connections."""
        self.seal()
        self._keks.close()

    def seal(self) -> KeyringStatus:
        """Wipe the root key, KEKs and signing keys from memory; end any ceremony."""
        with self._lock:
            self._drop_secrets()
            self._ceremonies.wipe()
            return self.status()

    def require_unsealed(self) -> None:
        """Raise Sealed (with how to unseal) unless the root key is in memory."""
        if self._root is None:
            state = self._require_state()
            remedy = HSM_HINT if state.backend == "hsm" else UNSEAL_HINT
            raise Sealed("the vault is sealed", obj=f"vault {state.vault_id}", remedy=remedy)

    # -- rekey ----------------------------------------------------------------

    def rekey_start(self, custodians: Sequence[str], threshold: int) -> KeyringStatus:
        """Begin a rekey to ``threshold``-of-``len(custodians)``; the current quorum must submit."""
        with self._lock:
            self.require_unsealed()
            state = self._require_state()
            if state.backend != "shamir":
                raise ConfigError("rekey applies to the shamir backend only", obj="keyring")
            self._ceremonies.start_rekey(custodians, threshold)
            return self.status()

    def rekey_result(self, nonce: str) -> tuple[CeremonyConfig, list[shamir.Share]]:
        """The new configuration and shares of the completed rekey ``nonce`` (not yet committed)."""
        with self._lock:
            return self._ceremonies.rekey_result(nonce)

    def rekey_commit(self, nonce: str) -> KeyringStatus:
        """Make the completed rekey the vault's ceremony (after its share files are written)."""
        with self._lock:
            self.require_unsealed()
            assert self._barrier is not None
            config, _ = self.rekey_result(nonce)
            with self.store.session() as session:
                state = session.get(KeyringState, 1)
                if state is None:
                    raise NotFound("the keyring vanished during rekey", obj="keyring")
                self._barrier.put_ceremony(session, config, state.backend, self.clock())
                state.generation = config.generation
                state.threshold = config.threshold
                state.shares = len(config.custodians)
                state.ceremony_json = config.to_json()
            self._config = config
            self._ceremonies.wipe()
            return self.status()

    # -- KEKs and file keys (the KEK ring) --------------------------------------------

    @property
    def vault_id(self) -> str:
        """The vault's id (unsealed only)."""
        return self._keks.vault_id

    def newest_version(self) -> int:
        """The newest KEK version that is not retired."""
        return self._keks.newest_version()

    def wrap_file_key(self, blob_id: str, file_key: bytes | bytearray) -> age.Stanza:
        """Wrap ``file_key`` under the newest KEK, record it for ``blob_id``, return its stanza."""
        return self._keks.wrap_file_key(blob_id, file_key)

    def locate(self, blob_id: str, stanzas: Sequence[age.Stanza] = ()) -> Located:
        """Find the newest usable wrapping of ``blob_id``'s file key (no decryption)."""
        return self._keks.locate(blob_id, stanzas)

    def locate_many(self, wanted: Sequence[tuple[str, Sequence[age.Stanza]]]
                    ) -> list[Located | StrongroomError]:
        """:meth:`locate` for each ``(blob_id, stanzas)`` of a release batch, one read for all."""
        return self._keks.locate_many(wanted)

    def unwrap(self, blob_id: str, located: Located) -> bytearray:
        """The file key (caller zeroes it). Only ``strongroom.release`` may call this."""
        return self._keks.unwrap(blob_id, located)

    def rotate(self) -> int:
        """Create the next KEK version; new file keys are wrapped under it."""
        return self._keks.rotate()

    def rewrap(self, progress: Callable[[int], None] | None = None) -> int:
        """Wrap every file key also under the newest KEK (payloads untouched); returns the count."""
        return self._keks.rewrap(progress)

    def usage(self) -> dict[int, tuple[int, int]]:
        """Per KEK version: (file keys wrapped by it, of which wrapped by no other usable version)."""
        return self._keks.usage()

    def retire(self, version: int) -> int:
        """Retire KEK ``version`` once no file key depends on it; returns the rows removed."""
        return self._keks.retire(version)

    def count_wrapped(self) -> int:
        """How many file keys the keyring holds."""
        return self._keks.count_wrapped()

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

    def officer_mldsa(self) -> dict[str, MLDSA65PublicKey]:
        """Hybrid officers' ML-DSA-65 keys, by the key id of their Ed25519 key.

        An officer listed here counts on a statement only when both signatures verify.
        """
        self.require_unsealed()
        return dict(self._officer_mldsa)

    @property
    def officer_threshold(self) -> int:
        """How many officers must sign directory statements (the access issue's root of trust)."""
        self.require_unsealed()
        return self._officer_threshold

    def sealed_entry(self, name: str) -> Any | None:
        """Open the barrier entry ``ext/<name>`` another package sealed here (None when absent)."""
        with self._lock:
            self.require_unsealed()
            assert self._barrier is not None
            with self.store.session() as session:
                return self._barrier.get(session, EXT_PREFIX + name)

    def seal_entry(self, name: str, value: Any) -> None:
        """Seal ``value`` (JSON) as the next version of barrier entry ``ext/<name>``.

        For secrets of other key backends (a threshold key server's share): they
        are as safe as the KEKs, and unreadable while sealed.
        """
        with self._lock:
            self.require_unsealed()
            assert self._barrier is not None
            with self.store.session() as session:
                self._barrier.put(session, EXT_PREFIX + name, value, self.clock())

    def public_keys(self) -> dict[str, bytes]:
        """Raw public keys: Ed25519 ``manifest``, ``checkpoint`` and ``officer:<key id>``, and
        ML-DSA-65 ``officer-mldsa65:<key id>`` of hybrid officers (:mod:`strongroom.keys.officers`)."""
        self.require_unsealed()
        out = {p: k.public_key().public_bytes_raw() for p, k in self._signing.items()}
        for kid, pub in self._officers.items():
            out[f"{OFFICER_PREFIX}{kid}"] = pub.public_bytes_raw()
        for kid, pq in self._officer_mldsa.items():
            out[f"{OFFICER_MLDSA_PREFIX}{kid}"] = pq.public_bytes_raw()
        return out
