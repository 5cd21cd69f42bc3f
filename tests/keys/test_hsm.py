"""PKCS#11 KEK against a real SoftHSM2 token: wrapping, key protection, errors, age stanzas.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when python-pkcs11 loads it, and the
library stays loaded for the life of the process. So one session-scoped token
directory holds every token these tests use, all created before the first load;
each test makes its own uniquely labelled keys in it.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11 import exceptions as p11err

from strongroom.crypto.age import AgeIdentity, Recipient, Stanza
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
from strongroom.keys import hsm
from strongroom.keys.hsm import STANZA_TYPE, HsmIdentity, HsmKek, HsmRecipient

from testsupport import need_tool

LIBRARY = os.environ.get("STRONGROOM_TEST_SOFTHSM_LIB", "/usr/lib/softhsm/libsofthsm2.so")
PIN = "1234"
WRONG_PIN = "wrong-pin-7391"
MAIN = "sr-main"  # shared by most tests, each with its own key labels
FRESH = "sr-fresh"  # only test_wrong_pin logs in here, so the token's own PIN check runs
SPARE = "sr-spare"  # for tests that need a token nobody else keeps logged in
TOKENS = (MAIN, FRESH, SPARE)


@dataclass(frozen=True)
class SoftHsm:
    library: str
    conf: Path


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """A SoftHSM2 token directory with the TOKENS initialised (PIN 1234)."""
    tool = need_tool("softhsm2-util")
    if not os.path.isfile(LIBRARY):
        message = f"SoftHSM2 library {LIBRARY} not found (apt-get install softhsm2)"
        if os.environ.get("STRONGROOM_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {root / 'tokens'}/\n"
        "objectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    init = [tool, "--init-token", "--free", "--so-pin", "0000", "--pin", PIN]
    try:
        for label in TOKENS:
            subprocess.run(
                [*init, "--label", label],
                check=True,
                capture_output=True,
            )
        yield SoftHsm(LIBRARY, conf)
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def _label(prefix: str = "kek") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def kek(softhsm: SoftHsm) -> Iterator[HsmKek]:
    """A freshly generated KEK on the MAIN token."""
    with HsmKek.generate(softhsm.library, MAIN, PIN, _label()) as key:
        yield key


def _raw_key(softhsm: SoftHsm, token_label: str, key_label: str) -> pkcs11.SecretKey:
    """The key as python-pkcs11 sees it, through a session of our own (token already logged in)."""
    lib = hsm._load_library(softhsm.library).lib  # python-pkcs11 must not load it twice
    session = lib.get_token(token_label=token_label).open()
    key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=key_label)
    assert isinstance(key, pkcs11.SecretKey)
    return key


# --- wrap / unwrap --------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32, 64])
def test_round_trip(kek: HsmKek, size: int) -> None:
    file_key = os.urandom(size)
    blob = kek.wrap(file_key, b"shard 17")
    assert len(blob) == 12 + size + 16
    assert file_key not in blob
    assert kek.unwrap(blob, b"shard 17") == file_key


def test_round_trip_empty_aad_and_fresh_nonces(kek: HsmKek) -> None:
    file_key = os.urandom(16)
    first, second = kek.wrap(file_key, b""), kek.wrap(file_key, b"")
    assert first[:12] != second[:12] and first != second
    assert kek.unwrap(first, b"") == kek.unwrap(second, b"") == file_key


def test_reopen_finds_the_same_key(softhsm: SoftHsm, kek: HsmKek) -> None:
    blob = kek.wrap(b"k" * 16, b"a")
    with HsmKek.open(softhsm.library, MAIN, PIN, kek.key_label) as again:
        assert again.unwrap(blob, b"a") == b"k" * 16
    # closing the second handle keeps the shared login for the first
    assert kek.unwrap(blob, b"a") == b"k" * 16


def test_wrap_rejects_wrong_sizes(kek: HsmKek) -> None:
    for size in (0, 15, 65):
        with pytest.raises(InvalidInput):
            kek.wrap(bytes(size), b"")


def test_tampered_blob_fails(kek: HsmKek) -> None:
    blob = kek.wrap(os.urandom(16), b"aad")
    for index in (0, 11, 12, 27, 28, len(blob) - 1):  # nonce, ciphertext, tag
        tampered = bytearray(blob)
        tampered[index] ^= 0x01
        with pytest.raises(IntegrityError, match="failed authentication"):
            kek.unwrap(bytes(tampered), b"aad")
    for bad in (blob[:-1], blob[:12], b"", blob + b"\x00" * 64):
        with pytest.raises(IntegrityError):
            kek.unwrap(bad, b"aad")
    # the session survives failed operations
    assert len(kek.unwrap(blob, b"aad")) == 16


def test_wrong_aad_fails(kek: HsmKek) -> None:
    blob = kek.wrap(os.urandom(16), b"shard 1")
    with pytest.raises(IntegrityError, match=kek.key_label):
        kek.unwrap(blob, b"shard 2")
    with pytest.raises(IntegrityError):
        kek.unwrap(blob, b"")


def test_other_kek_fails(softhsm: SoftHsm, kek: HsmKek) -> None:
    blob = kek.wrap(os.urandom(16), b"x")
    with (
        HsmKek.generate(softhsm.library, MAIN, PIN, _label()) as other,
        pytest.raises(IntegrityError),
    ):
        other.unwrap(blob, b"x")


def test_versions_are_distinct_keys(softhsm: SoftHsm, kek: HsmKek) -> None:
    with HsmKek.generate(softhsm.library, MAIN, PIN, kek.key_label, version=2) as v2:
        assert v2.version == 2 and v2.key_label == kek.key_label
        blob = v2.wrap(b"v" * 16, b"")
        assert v2.unwrap(blob, b"") == b"v" * 16
        with pytest.raises(IntegrityError):
            kek.unwrap(blob, b"")


def test_concurrent_unwraps(kek: HsmKek) -> None:
    cases = [(os.urandom(16), f"shard {i}".encode()) for i in range(64)]
    blobs = [kek.wrap(key, aad) for key, aad in cases]
    failures: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for round_ in range(50):
                i = (offset * 16 + round_) % len(cases)
                assert kek.unwrap(blobs[i], cases[i][1]) == cases[i][0]
                if round_ % 10 == 0:
                    fresh = kek.wrap(cases[i][0], b"t")
                    assert kek.unwrap(fresh, b"t") == cases[i][0]
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# --- the key never leaves the token --------------------------------------------


def test_key_is_sensitive_and_non_extractable(softhsm: SoftHsm, kek: HsmKek) -> None:
    with hsm._load_library(softhsm.library).lock:
        key = _raw_key(softhsm, MAIN, kek.key_label)
        with pytest.raises(p11err.AttributeSensitive):
            key[Attribute.VALUE]
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.ALWAYS_SENSITIVE] is True
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.MODIFIABLE] is False
        assert key[Attribute.WRAP] is False and key[Attribute.UNWRAP] is False
        assert key[Attribute.VALUE_LEN] == 32
        assert key.id == b"1"
        # nor can another key wrap it out of the token
        session = key.session
        wrapping: Any = session.generate_key(KeyType.AES, 256, store=False, capabilities=None)
        with pytest.raises(p11err.PKCS11Error):
            wrapping.wrap_key(key)
        with pytest.raises(p11err.PKCS11Error):
            key[Attribute.EXTRACTABLE] = True


def test_refuses_extractable_key(softhsm: SoftHsm) -> None:
    label = _label("weak")
    with HsmKek.generate(softhsm.library, SPARE, PIN, _label()):  # logs the token in
        with hsm._load_library(softhsm.library).lock:
            lib = hsm._load_library(softhsm.library).lib
            session = lib.get_token(token_label=SPARE).open(rw=True)
            session.generate_key(
                KeyType.AES,
                256,
                label=label,
                id=b"1",
                store=True,
                template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
            )
            session.close()
        with pytest.raises(ConfigError, match="refusing to use it"):
            HsmKek.open(softhsm.library, SPARE, PIN, label)


# --- errors ---------------------------------------------------------------------


def test_wrong_pin(softhsm: SoftHsm) -> None:
    # first login: the token itself checks the PIN
    with pytest.raises(AccessDenied) as first:
        HsmKek.generate(softhsm.library, FRESH, WRONG_PIN, _label())
    assert f"HSM login failed for token '{FRESH}': wrong PIN" in str(first.value)
    assert WRONG_PIN not in str(first.value)
    library = hsm._load_library(softhsm.library)
    assert library.lib.get_token(token_label=FRESH).serial not in library.logins
    # while logged in from this process, a wrong PIN is still refused
    with HsmKek.generate(softhsm.library, FRESH, PIN, _label()) as kek:
        with pytest.raises(AccessDenied, match="wrong PIN") as second:
            HsmKek.open(softhsm.library, FRESH, WRONG_PIN, kek.key_label)
        assert WRONG_PIN not in str(second.value)
        assert PIN not in str(second.value).replace(FRESH, "")
        assert kek.unwrap(kek.wrap(b"p" * 16, b""), b"") == b"p" * 16


def test_no_such_token(softhsm: SoftHsm) -> None:
    with pytest.raises(ConfigError) as caught:
        HsmKek.open(softhsm.library, "no-such-token", PIN, "kek")
    assert "'no-such-token'" in str(caught.value)
    assert "softhsm2-util --show-slots" in str(caught.value)


def test_missing_library(tmp_path: Path) -> None:
    missing = str(tmp_path / "libnothere.so")
    with pytest.raises(ConfigError, match=r"libnothere\.so not found"):
        HsmKek.open(missing, MAIN, PIN, "kek")


def test_not_a_library(tmp_path: Path) -> None:
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an ELF file")
    with pytest.raises(ConfigError, match="cannot load PKCS#11 library"):
        HsmKek.open(str(bogus), MAIN, PIN, "kek")


def test_missing_key_label(softhsm: SoftHsm) -> None:
    logins = hsm._load_library(softhsm.library).logins
    before = {serial: login.users for serial, login in logins.items()}
    with pytest.raises(NotFound, match="no HSM key 'absent-kek' version 1 on token"):
        HsmKek.open(softhsm.library, SPARE, PIN, "absent-kek")
    # the failed open released its share of the login
    assert {serial: login.users for serial, login in logins.items()} == before


def test_missing_version(kek: HsmKek, softhsm: SoftHsm) -> None:
    with pytest.raises(NotFound, match="version 7"):
        HsmKek.open(softhsm.library, MAIN, PIN, kek.key_label, version=7)


def test_generate_existing_refused(kek: HsmKek, softhsm: SoftHsm) -> None:
    with pytest.raises(AlreadyExists, match=kek.key_label):
        HsmKek.generate(softhsm.library, MAIN, PIN, kek.key_label)


@pytest.mark.parametrize(
    ("label", "version"), [("has space", 1), ("", 1), ("x" * 65, 1), ("kek", 0), ("kek", True)]
)
def test_bad_label_or_version(softhsm: SoftHsm, label: str, version: int) -> None:
    with pytest.raises(InvalidInput):
        HsmKek.open(softhsm.library, MAIN, PIN, label, version=version)


def test_closed_kek_refuses(softhsm: SoftHsm) -> None:
    kek = HsmKek.generate(softhsm.library, MAIN, PIN, _label())
    blob = kek.wrap(b"c" * 16, b"")
    kek.close()
    kek.close()  # idempotent
    assert "closed" in repr(kek)
    with pytest.raises(InvalidInput, match="closed"):
        kek.unwrap(blob, b"")
    with pytest.raises(InvalidInput, match="closed"):
        kek.wrap(b"c" * 16, b"")


def test_last_close_logs_out(softhsm: SoftHsm) -> None:
    library = hsm._load_library(softhsm.library)
    serial = library.lib.get_token(token_label=SPARE).serial
    label = _label()
    first = HsmKek.generate(softhsm.library, SPARE, PIN, label)
    second = HsmKek.open(softhsm.library, SPARE, PIN, label)
    assert library.logins[serial].users == 2
    first.close()
    assert library.logins[serial].users == 1
    assert second.unwrap(second.wrap(b"s" * 16, b""), b"") == b"s" * 16
    second.close()
    assert serial not in library.logins
    # logged out: the private key is no longer visible to a plain session
    with library.lock:
        session = library.lib.get_token(token_label=SPARE).open()
        try:
            with pytest.raises(p11err.NoSuchKey):
                session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
        finally:
            session.close()


def test_errors_are_strongroom_errors() -> None:
    assert issubclass(AccessDenied, StrongroomError) and issubclass(ConfigError, StrongroomError)


# --- age recipient / identity ---------------------------------------------------


def test_recipient_identity_round_trip(kek: HsmKek) -> None:
    recipient, identity = HsmRecipient(kek), HsmIdentity(kek)
    assert isinstance(recipient, Recipient) and isinstance(identity, AgeIdentity)
    file_key = os.urandom(16)
    stanzas = recipient.wrap(file_key)
    assert len(stanzas) == 1
    (stanza,) = stanzas
    assert stanza.type == STANZA_TYPE == "strongroom-hsm"
    assert stanza.args == (kek.key_label, "1")
    assert len(stanza.body) == 12 + 16 + 16
    other = Stanza("X25519", ("abc",), b"\x00" * 32)
    assert identity.unwrap([other, stanza]) == file_key


def test_identity_ignores_other_keys(softhsm: SoftHsm, kek: HsmKek) -> None:
    stanzas = HsmRecipient(kek).wrap(os.urandom(16))
    with HsmKek.generate(softhsm.library, MAIN, PIN, _label()) as other:
        assert HsmIdentity(other).unwrap(stanzas) is None
    assert HsmIdentity(kek).unwrap([]) is None
    assert HsmIdentity(kek).unwrap([Stanza("X25519", ("a",), b"")]) is None


def test_stanza_moved_to_another_label_fails(softhsm: SoftHsm, kek: HsmKek) -> None:
    (stanza,) = HsmRecipient(kek).wrap(os.urandom(16))
    with HsmKek.generate(softhsm.library, MAIN, PIN, _label()) as other:
        moved = Stanza(stanza.type, (other.key_label, "1"), stanza.body)
        with pytest.raises(IntegrityError):
            HsmIdentity(other).unwrap([moved])


def test_stanza_moved_to_another_version_fails(softhsm: SoftHsm, kek: HsmKek) -> None:
    (stanza,) = HsmRecipient(kek).wrap(os.urandom(16))
    with HsmKek.generate(softhsm.library, MAIN, PIN, kek.key_label, version=2) as v2:
        moved = Stanza(stanza.type, (kek.key_label, "2"), stanza.body)
        with pytest.raises(IntegrityError):
            HsmIdentity(v2).unwrap([moved])


def test_tampered_stanza_body_fails(kek: HsmKek) -> None:
    (stanza,) = HsmRecipient(kek).wrap(os.urandom(16))
    body = bytearray(stanza.body)
    body[-1] ^= 0x80
    with pytest.raises(IntegrityError):
        HsmIdentity(kek).unwrap([Stanza(stanza.type, stanza.args, bytes(body))])


def test_malformed_stanza_of_our_type(kek: HsmKek) -> None:
    (stanza,) = HsmRecipient(kek).wrap(os.urandom(16))
    with pytest.raises(HeaderError, match="1 arguments, expected 2"):
        HsmIdentity(kek).unwrap([Stanza(STANZA_TYPE, (kek.key_label,), stanza.body)])


def test_identity_refuses_non_file_key(kek: HsmKek) -> None:
    aad = f"{STANZA_TYPE} {kek.key_label} 1".encode()
    body = kek.wrap(os.urandom(32), aad)  # a correctly wrapped, but 32-byte, key
    with pytest.raises(IntegrityError, match="expected 16"):
        HsmIdentity(kek).unwrap([Stanza(STANZA_TYPE, (kek.key_label, "1"), body)])


def test_recipient_rejects_wrong_file_key_size(kek: HsmKek) -> None:
    with pytest.raises(InvalidInput):
        HsmRecipient(kek).wrap(os.urandom(32))
