"""A key-encryption key that never leaves a PKCS#11 token (an HSM, or SoftHSM2 in tests).

How to use it::

    kek = HsmKek.generate(library, token_label, pin, key_label="vault-kek")  # once
    kek = HsmKek.open(library, token_label, pin, key_label="vault-kek")      # thereafter
    blob = kek.wrap(file_key, aad=b"shard 17")    # AES-256-GCM inside the token
    file_key = kek.unwrap(blob, aad=b"shard 17")  # IntegrityError if blob or aad differ
    kek.close()                                   # or use ``with HsmKek.open(...) as kek:``

For age files, ``HsmRecipient(kek)`` wraps a file key into one
``strongroom-hsm`` stanza (args: key label, KEK version; body: the wrapped
blob) and ``HsmIdentity(kek)`` unwraps it. The stanza's type and args are the
GCM associated data, so a stanza relabelled to another key or version fails.

The key is generated inside the token as a sensitive, non-extractable,
non-modifiable AES-256 token object usable only to encrypt and decrypt; this
module never asks for its value. A blob is ``nonce (12) ‖ ciphertext ‖ tag (16)``
with a random nonce. ``version`` tells KEKs with the same label apart (it is
stored as the key's CKA_ID), so rotation is: generate version n+1, rewrap, retire n.

What not to do:

- Do not call the same PKCS#11 library from other code in this process.
  python-pkcs11 initialises the library without locking callbacks, which tells
  it the application is single-threaded: SoftHSM2 corrupts its heap when two
  threads call it at once. This module serialises every call into a library
  behind one process-wide lock per library, and keeps one login per token
  shared by all ``HsmKek`` objects on it; code that bypasses it breaks both.
- Do not wrap more than about 2**32 keys under one KEK version: the nonces are
  random 96-bit values (NIST SP 800-38D). Rotate long before that.
- Do not reuse a key label for different keys on different tokens that one
  process opens: ``HsmIdentity`` treats a stanza naming its label and version
  as its own, and reports a failed unwrap as tampering, not as "not mine".
- Do not forget ``close()``: the login lasts until the last ``HsmKek`` on the
  token is closed. The loaded library stays loaded for the life of the process.

The PIN is checked by the token on the first login; later ``open`` calls on a
token already logged in from this process are checked against a keyed hash of
the PIN that logged in. No message ever contains the PIN.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11err
from pkcs11.mechanisms import GCMParams

from strongroom.errors import (
    AccessDenied,
    AlreadyExists,
    ConfigError,
    HeaderError,
    IntegrityError,
    InvalidInput,
    NotFound,
    StrongroomError,
)

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Pkcs11Library

    from strongroom.crypto.age import Stanza

__all__ = [
    "FILE_KEY_LEN",
    "STANZA_TYPE",
    "HsmIdentity",
    "HsmKek",
    "HsmRecipient",
]

#: age stanza type for a file key wrapped by an HSM KEK.
STANZA_TYPE = "strongroom-hsm"
#: Length of an age file key.
FILE_KEY_LEN = 16

_NONCE_LEN = 12
_TAG_BITS = 128
_TAG_LEN = _TAG_BITS // 8
_MIN_KEY_LEN = 16
_MAX_KEY_LEN = 64
_AES_256_LEN = 32
# A key label becomes an age stanza argument: printable ASCII, no spaces.
_KEY_LABEL = re.compile(r"[\x21-\x7e]{1,64}")
_SHOW_SLOTS = "list the tokens with `softhsm2-util --show-slots` (or your HSM's tool)"

_PIN_ERRORS = (p11err.PinIncorrect, p11err.PinInvalid, p11err.PinLenRange)
# What a failed GCM decryption looks like: SoftHSM2 answers CKR_GENERAL_ERROR
# for a bad tag, other tokens CKR_ENCRYPTED_DATA_INVALID or CKR_FUNCTION_FAILED.
_AUTH_FAILURES = (
    p11err.EncryptedDataInvalid,
    p11err.EncryptedDataLenRange,
    p11err.GeneralError,
    p11err.FunctionFailed,
    p11err.DataInvalid,
)


class _TokenKey(Protocol):
    """The part of a python-pkcs11 secret key this module uses (its stubs omit the mixins)."""

    def encrypt(self, data: bytes, *, mechanism: Mechanism, mechanism_param: GCMParams) -> bytes:
        """Encrypt inside the token."""

    def decrypt(self, data: bytes, *, mechanism: Mechanism, mechanism_param: GCMParams) -> bytes:
        """Decrypt inside the token."""


@dataclass
class _Login:
    """The one logged-in session of a token; every other session shares its login."""

    session: pkcs11.Session
    pin_mac: bytes
    mac_key: bytes
    users: int


class _Library:
    """One loaded PKCS#11 module. Every call into it happens under ``lock``."""

    def __init__(self, path: str, lib: Pkcs11Library) -> None:
        self.path = path
        self.lib = lib
        self.lock = threading.RLock()
        self.logins: dict[bytes, _Login] = {}


_LIBRARIES: dict[str, _Library] = {}
_LIBRARIES_LOCK = threading.Lock()


def _load_library(path: str) -> _Library:
    real = os.path.realpath(path)
    with _LIBRARIES_LOCK:
        loaded = _LIBRARIES.get(real)
        if loaded is not None:
            return loaded
        if not os.path.isfile(real):
            raise ConfigError(
                f"PKCS#11 library {path} not found",
                remedy="install the HSM's PKCS#11 module (for SoftHSM2: apt-get install softhsm2, "
                "library /usr/lib/softhsm/libsofthsm2.so) and configure its path",
            )
        try:
            lib = pkcs11.lib(real)
        except p11err.PKCS11Error as exc:
            raise ConfigError(
                f"cannot load PKCS#11 library {path}: {type(exc).__name__} {exc}".rstrip(),
                remedy="check that the file is a PKCS#11 module for this platform",
            ) from exc
        loaded = _LIBRARIES[real] = _Library(path, lib)
        return loaded


def _pin_mac(key: bytes, pin: str) -> bytes:
    return hmac.new(key, pin.encode("utf-8"), hashlib.sha256).digest()


def _key_id(version: int) -> bytes:
    return str(version).encode("ascii")


def _lost(token_label: str, exc: p11err.PKCS11Error) -> StrongroomError:
    return StrongroomError(
        f"HSM operation failed: {type(exc).__name__}",
        obj=f"token {token_label!r}",
        remedy="check that the token is present and reachable, then reopen the HSM KEK",
    )


class HsmKek:
    """An AES-256 key-encryption key held in a PKCS#11 token; wraps and unwraps small keys."""

    def __init__(
        self,
        library: _Library,
        token_label: str,
        serial: bytes,
        session: pkcs11.Session,
        key: _TokenKey,
        key_label: str,
        version: int,
    ) -> None:
        """Use ``HsmKek.open`` or ``HsmKek.generate``; this constructor takes open handles."""
        self._library = library
        self._token_label = token_label
        self._serial = serial
        self._session = session
        self._key = key
        self._key_label = key_label
        self._version = version
        self._closed = False

    # --- opening --------------------------------------------------------------

    @classmethod
    def open(
        cls, library: str, token_label: str, pin: str, key_label: str, *, version: int = 1
    ) -> HsmKek:
        """Log in to ``token_label`` and find the KEK ``key_label`` (at ``version``)."""
        return cls._connect(library, token_label, pin, key_label, version, create=False)

    @classmethod
    def generate(
        cls, library: str, token_label: str, pin: str, key_label: str, *, version: int = 1
    ) -> HsmKek:
        """Create the KEK inside the token (AlreadyExists if it is there) and open it."""
        return cls._connect(library, token_label, pin, key_label, version, create=True)

    @classmethod
    def _connect(
        cls, path: str, token_label: str, pin: str, key_label: str, version: int, create: bool
    ) -> HsmKek:
        if not isinstance(key_label, str) or not _KEY_LABEL.fullmatch(key_label):
            raise InvalidInput(
                f"HSM key label {key_label!r} is not 1..64 printable ASCII characters "
                "without spaces",
                remedy="choose a label like 'vault-kek'",
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidInput(f"KEK version must be a positive integer, got {version!r}")
        library = _load_library(path)
        with library.lock:
            try:
                token = library.lib.get_token(token_label=token_label)
            except p11err.NoSuchToken:
                raise ConfigError(
                    f"no HSM token labelled {token_label!r} in {path}", remedy=_SHOW_SLOTS
                ) from None
            except p11err.MultipleTokensReturned:
                raise ConfigError(
                    f"more than one HSM token is labelled {token_label!r} in {path}",
                    remedy=f"give each token a unique label; {_SHOW_SLOTS}",
                ) from None
            except p11err.PKCS11Error as exc:
                raise _lost(token_label, exc) from exc
            serial = token.serial
            cls._login(library, token, serial, token_label, pin)
            try:
                if create:
                    cls._create_key(token, token_label, key_label, version)
                try:
                    session = token.open()
                except p11err.PKCS11Error as exc:
                    raise _lost(token_label, exc) from exc
                try:
                    key = cls._find_key(session, token_label, key_label, version)
                except BaseException:
                    session.close()
                    raise
            except BaseException:
                cls._logout(library, serial)
                raise
            return cls(library, token_label, serial, session, key, key_label, version)

    @staticmethod
    def _login(library: _Library, token: pkcs11.Token, serial: bytes, label: str, pin: str) -> None:
        if not isinstance(pin, str):
            raise InvalidInput(f"HSM PIN for token {label!r} must be a string")
        login = library.logins.get(serial)
        if login is not None:
            if not hmac.compare_digest(_pin_mac(login.mac_key, pin), login.pin_mac):
                raise AccessDenied(
                    f"HSM login failed for token {label!r}: wrong PIN",
                    remedy="use the token's user PIN",
                )
            login.users += 1
            return
        try:
            session = token.open(user_pin=pin)
        except _PIN_ERRORS:
            raise AccessDenied(
                f"HSM login failed for token {label!r}: wrong PIN",
                remedy="use the token's user PIN; repeated failures may lock the token",
            ) from None
        except p11err.PinLocked:
            raise AccessDenied(
                f"HSM login failed for token {label!r}: the user PIN is locked",
                remedy="have the token's security officer reset the user PIN",
            ) from None
        except p11err.PinExpired:
            raise AccessDenied(
                f"HSM login failed for token {label!r}: the user PIN has expired",
                remedy="set a new user PIN with the token's tool",
            ) from None
        except p11err.UserAlreadyLoggedIn:
            raise ConfigError(
                f"token {label!r} is already logged in by other code in this process",
                remedy="open HSM keys only through strongroom.keys.hsm",
            ) from None
        except p11err.UserPinNotInitialized:
            raise ConfigError(
                f"token {label!r} has no user PIN set",
                remedy="initialise it (softhsm2-util --init-token ... --pin PIN)",
            ) from None
        except p11err.PKCS11Error as exc:
            raise _lost(label, exc) from exc
        mac_key = os.urandom(32)
        library.logins[serial] = _Login(session, _pin_mac(mac_key, pin), mac_key, users=1)

    @staticmethod
    def _logout(library: _Library, serial: bytes) -> None:
        login = library.logins[serial]
        login.users -= 1
        if login.users == 0:
            del library.logins[serial]
            login.session.close()  # logs the token out for every session

    @staticmethod
    def _find_key(
        session: pkcs11.Session, token_label: str, key_label: str, version: int
    ) -> _TokenKey:
        where = f"HSM key {key_label!r} version {version} on token {token_label!r}"
        try:
            key = session.get_key(
                object_class=ObjectClass.SECRET_KEY,
                key_type=KeyType.AES,
                label=key_label,
                id=_key_id(version),
            )
        except p11err.NoSuchKey:
            raise NotFound(
                f"no {where}",
                remedy="check the label and version, or create the key with HsmKek.generate",
            ) from None
        except p11err.MultipleObjectsReturned:
            raise ConfigError(
                f"more than one {where}", remedy="delete the duplicates with the token's tool"
            ) from None
        if not isinstance(key, pkcs11.SecretKey):
            raise ConfigError(f"{where} is not a secret key")
        if key.key_length != _AES_256_LEN * 8:
            raise ConfigError(f"{where} is {key.key_length}-bit; strongroom needs AES-256")
        checks: dict[Attribute, tuple[bool, str]] = {
            Attribute.SENSITIVE: (True, "not sensitive"),
            Attribute.EXTRACTABLE: (False, "extractable"),
            Attribute.ENCRYPT: (True, "not allowed to encrypt"),
            Attribute.DECRYPT: (True, "not allowed to decrypt"),
        }
        for attribute, (wanted, problem) in checks.items():
            if bool(key[attribute]) is not wanted:
                raise ConfigError(
                    f"{where} is {problem}; refusing to use it as a KEK",
                    remedy="generate a new KEK version with HsmKek.generate and rewrap",
                )
        return cast(_TokenKey, key)

    @staticmethod
    def _create_key(token: pkcs11.Token, token_label: str, key_label: str, version: int) -> None:
        session = token.open(rw=True)
        try:
            try:
                HsmKek._find_key(session, token_label, key_label, version)
            except NotFound:
                pass
            else:
                raise AlreadyExists(
                    f"HSM key {key_label!r} version {version} already exists on token "
                    f"{token_label!r}",
                    remedy="open it with HsmKek.open, or generate the next version",
                )
            template: dict[Attribute, Any] = {
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.MODIFIABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
                Attribute.SIGN: False,
                Attribute.VERIFY: False,
                Attribute.DERIVE: False,
            }
            session.generate_key(
                KeyType.AES,
                _AES_256_LEN * 8,
                label=key_label,
                id=_key_id(version),
                store=True,
                template=template,
            )
        except p11err.PKCS11Error as exc:
            raise _lost(token_label, exc) from exc
        finally:
            session.close()

    # --- use ------------------------------------------------------------------

    @property
    def key_label(self) -> str:
        """The key's CKA_LABEL."""
        return self._key_label

    @property
    def version(self) -> int:
        """The KEK version (the key's CKA_ID)."""
        return self._version

    @property
    def token_label(self) -> str:
        """The label of the token holding the key."""
        return self._token_label

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidInput(
                f"HSM key {self._key_label!r} on token {self._token_label!r} is closed",
                remedy="open it again with HsmKek.open",
            )

    def wrap(self, file_key: bytes, aad: bytes) -> bytes:
        """Encrypt a 16..64-byte key under the KEK: nonce ‖ ciphertext ‖ tag."""
        if not _MIN_KEY_LEN <= len(file_key) <= _MAX_KEY_LEN:
            raise InvalidInput(
                f"key to wrap is {len(file_key)} bytes; "
                f"HSM KEKs wrap {_MIN_KEY_LEN}..{_MAX_KEY_LEN}",
                remedy="wrap a key, not data",
            )
        nonce = os.urandom(_NONCE_LEN)
        params = GCMParams(nonce, bytes(aad), _TAG_BITS)
        with self._library.lock:
            self._check_open()
            try:
                sealed = self._key.encrypt(
                    bytes(file_key), mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            except p11err.PKCS11Error as exc:
                raise _lost(self._token_label, exc) from exc
        return nonce + sealed

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt what ``wrap`` returned for the same ``aad``; IntegrityError otherwise."""
        where = f"HSM key {self._key_label!r} version {self._version}"
        low = _NONCE_LEN + _MIN_KEY_LEN + _TAG_LEN
        high = _NONCE_LEN + _MAX_KEY_LEN + _TAG_LEN
        if not low <= len(blob) <= high:
            raise IntegrityError(
                f"wrapped key is {len(blob)} bytes, expected {low}..{high}", obj=where
            )
        params = GCMParams(bytes(blob[:_NONCE_LEN]), bytes(aad), _TAG_BITS)
        with self._library.lock:
            self._check_open()
            try:
                key = self._key.decrypt(
                    bytes(blob[_NONCE_LEN:]), mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            except _AUTH_FAILURES:
                raise IntegrityError(
                    "wrapped key failed authentication: it was altered, or the associated "
                    "data or KEK differ from those it was wrapped with",
                    obj=where,
                ) from None
            except p11err.PKCS11Error as exc:
                raise _lost(self._token_label, exc) from exc
        return key

    def close(self) -> None:
        """Close the session; the last KEK closed on a token logs the token out."""
        with self._library.lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._session.close()
            finally:
                self._logout(self._library, self._serial)

    def __enter__(self) -> HsmKek:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        where = f"{self._key_label!r} v{self._version} on token {self._token_label!r}"
        return f"<HsmKek {where} ({state})>"


# --- age recipient / identity ---------------------------------------------------


def _stanza_aad(args: Sequence[str]) -> bytes:
    return " ".join((STANZA_TYPE, *args)).encode("ascii")


class HsmRecipient:
    """age recipient: wraps a file key into one ``strongroom-hsm`` stanza under an HSM KEK."""

    def __init__(self, kek: HsmKek) -> None:
        self._kek = kek

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Return ``[Stanza("strongroom-hsm", (key_label, version), nonce ‖ ct ‖ tag)]``."""
        from strongroom.crypto.age import Stanza

        if len(file_key) != FILE_KEY_LEN:
            raise InvalidInput(f"age file keys are {FILE_KEY_LEN} bytes, got {len(file_key)}")
        args = (self._kek.key_label, str(self._kek.version))
        body = self._kek.wrap(file_key, _stanza_aad(args))
        return [Stanza(type=STANZA_TYPE, args=args, body=body)]


class HsmIdentity:
    """age identity: unwraps the ``strongroom-hsm`` stanza naming its KEK's label and version."""

    def __init__(self, kek: HsmKek) -> None:
        self._kek = kek

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """The file key, or None when no stanza names this KEK; IntegrityError if one fails."""
        mine = (self._kek.key_label, str(self._kek.version))
        for stanza in stanzas:
            if stanza.type != STANZA_TYPE:
                continue
            if len(stanza.args) != len(mine):
                raise HeaderError(
                    f"malformed {STANZA_TYPE} stanza: {len(stanza.args)} arguments, expected 2"
                )
            if tuple(stanza.args) != mine:
                continue
            file_key = self._kek.unwrap(stanza.body, _stanza_aad(mine))
            if len(file_key) != FILE_KEY_LEN:
                raise IntegrityError(
                    f"{STANZA_TYPE} stanza holds a {len(file_key)}-byte key, "
                    f"expected {FILE_KEY_LEN}",
                    obj=f"HSM key {mine[0]!r} version {mine[1]}",
                )
            return file_key
        return None
