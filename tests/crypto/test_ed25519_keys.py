"""Ed25519 public keys no key generation makes are refused (strongroom.crypto.ed25519).

Under a small-order public key OpenSSL's Ed25519 verify (``cryptography``)
accepts a forged signature, ``R`` = identity and ``S`` = 0, for any message
whose hash is a multiple of the key's order; so whoever gets such a key enrolled
(or writes it into a key row) holds a key that "signs" everything, without a
secret. These tests show:

* the 8 small-order points (the 8-torsion, libsodium's blocklist; computed
  here to be 8 distinct points of order dividing 8) and their non-canonical
  encodings, keys with ``y >= p``, points off the curve and points with a
  small-order component are refused with :class:`WeakPublicKey`, naming the
  key's id and where it came from; libsodium and the pure-Python check agree;
* honestly generated keys (and every Wycheproof key) are accepted;
* the verify helpers that still use OpenSSL (DSSE statements, hybrid
  statements, signed notes) refuse a forgery under such a key even when the key
  is handed to them directly, as if read from a key row written by hand;
* the places where a key enters (``.pub`` files, enrollments, officer keys,
  witness verifier keys, security keys) refuse it.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.crypto import bech32, dsse, ed25519, note
from strongroom.crypto.ed25519 import check_public_key, weakness
from strongroom.errors import IntegrityError, InvalidInput, WeakPublicKey
from weak_keys import NONCANONICAL_SMALL, SMALL_ORDER

_P = 2**255 - 19
_IDENTITY = bytes.fromhex(SMALL_ORDER[0])
_FORGED = _IDENTITY + bytes(32)  # R = identity, S = 0


def _point(raw: bytes) -> tuple[int, int, int, int]:
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    point = ed25519._decode(y % _P, raw[31] >> 7)
    assert point is not None
    return point


def _openssl_accepts(raw: bytes, sig: bytes, msg: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, msg)
    except InvalidSignature:
        return False
    return True


def _honest() -> bytes:
    return Ed25519PrivateKey.generate().public_key().public_bytes_raw()


def test_the_list_is_the_whole_8_torsion() -> None:
    points = [_point(bytes.fromhex(h)) for h in SMALL_ORDER]
    affine = set()
    for x, y, z, _ in points:
        inv = pow(z, _P - 2, _P)
        affine.add((x * inv % _P, y * inv % _P))
    assert len(affine) == 8  # 8 distinct points ...
    assert all(ed25519._is_identity(ed25519._times(8, p)) for p in points)  # ... of order | 8
    for h in NONCANONICAL_SMALL:  # the same points, other encodings
        assert ed25519._small_order(_point(bytes.fromhex(h)))


@pytest.mark.parametrize("hexkey", SMALL_ORDER)
def test_small_order_keys_are_refused_though_openssl_accepts_forgeries(hexkey: str) -> None:
    raw = bytes.fromhex(hexkey)
    # the threat: some message "verifies" under OpenSSL with R = identity, S = 0 (1 in order)
    msgs = [b"release everything %d" % i for i in range(64)]
    assert any(_openssl_accepts(raw, _FORGED, m) for m in msgs)
    assert "small order" in str(weakness(raw))
    assert ed25519._reason(raw) == weakness(raw)  # the pure-Python check says the same
    with pytest.raises(WeakPublicKey, match=r"refused: it is a point of small order") as exc:
        check_public_key(raw, obj="mallory.pub")
    assert isinstance(exc.value, InvalidInput) and isinstance(exc.value, ValueError)
    assert exc.value.obj == "mallory.pub" and exc.value.exit_code == 2
    assert dsse.key_id(Ed25519PublicKey.from_public_bytes(raw)) in str(exc.value)
    assert "keys new-identity" in str(exc.value)
    with pytest.raises(WeakPublicKey):
        ed25519.public_key(raw)


@pytest.mark.parametrize("hexkey", [*NONCANONICAL_SMALL, "ff" * 32,
                                    (_P + 5).to_bytes(32, "little").hex()])
def test_noncanonical_encodings_are_refused(hexkey: str) -> None:
    raw = bytes.fromhex(hexkey)
    assert "non-canonical encoding" in str(weakness(raw))
    if hexkey in NONCANONICAL_SMALL:
        assert "of a small-order point" in str(weakness(raw))
    with pytest.raises(WeakPublicKey, match="non-canonical"):
        check_public_key(raw)


def test_points_off_the_curve_and_with_a_small_order_component_are_refused() -> None:
    off = (2).to_bytes(32, "little")
    assert weakness(off) == "is not a point on the Ed25519 curve"
    with pytest.raises(ValueError, match="not a point"):
        check_public_key(off)
    for wrong in (b"", bytes(31), bytes(33)):
        assert weakness(wrong) == f"is {len(wrong)} bytes, not 32"
    # an honest key plus a point of order 8: its holder could sign, but it is no honest key
    x, y, z, _ = ed25519._add(_point(_honest()), _point(bytes.fromhex(SMALL_ORDER[4])))
    inv = pow(z, _P - 2, _P)
    x, y = x * inv % _P, y * inv % _P
    mixed = (y | (x & 1) << 255).to_bytes(32, "little")
    assert "small-order component" in str(weakness(mixed))
    assert ed25519._reason(mixed) == weakness(mixed)


def test_honest_and_wycheproof_keys_are_accepted() -> None:
    for _ in range(50):
        raw = _honest()
        assert check_public_key(raw) == raw and ed25519._reason(raw) is None
    vectors = Path(__file__).parent / "vectors" / "ed25519" / "wycheproof_ed25519_test.json"
    for group in json.loads(vectors.read_text())["testGroups"]:
        assert weakness(bytes.fromhex(group["pk"])) is None


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(min_size=32, max_size=32))
def test_libsodium_and_the_python_check_agree(raw: bytes) -> None:
    """Random bytes: about half are off the curve, the rest almost all have a torsion part."""
    from nacl.bindings import crypto_core_ed25519_is_valid_point

    assert (ed25519._reason(raw) is None) == crypto_core_ed25519_is_valid_point(raw)


def test_without_pynacl_the_python_check_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nacl.bindings", None)
    assert ed25519._load_is_valid_point() is None
    monkeypatch.setattr(ed25519, "_IS_VALID_POINT", None)
    ed25519.weakness.cache_clear()
    try:
        raw = _honest()
        assert weakness(raw) is None
        assert "small order" in str(weakness(bytes.fromhex(SMALL_ORDER[5])))
    finally:
        ed25519.weakness.cache_clear()


# -- the verify helpers that use OpenSSL: a key handed to them as if read from the store -----

def _forged_envelope(raw: bytes, payload_type: str) -> str:
    """A DSSE envelope whose forged signature OpenSSL accepts under the small-order ``raw``."""
    for i in range(256):
        payload = json.dumps({"grant": "everything", "n": i}).encode()
        if _openssl_accepts(raw, _FORGED, dsse.pae(payload_type, payload)):
            kid = dsse.key_id(Ed25519PublicKey.from_public_bytes(raw))
            return json.dumps({"payload": base64.b64encode(payload).decode(),
                               "payloadType": payload_type,
                               "signatures": [{"keyid": kid,
                                               "sig": base64.b64encode(_FORGED).decode()}]})
    raise AssertionError("no forgery found")


@pytest.mark.parametrize("hexkey", SMALL_ORDER)
def test_statement_verify_refuses_a_forgery_under_a_key_row_written_by_hand(hexkey: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

    from strongroom.crypto.hybrid_sig import verify_pinned

    raw = bytes.fromhex(hexkey)
    key = Ed25519PublicKey.from_public_bytes(raw)  # what a hand-written row parses to
    kid = dsse.key_id(key)
    env = _forged_envelope(raw, "application/vnd.strongroom.approval+json")
    with pytest.raises(IntegrityError, match=f"trusted key {kid} is refused: it is a point of "
                                             "small order"):
        dsse.verify_statement(env, "application/vnd.strongroom.approval+json", {kid: key})
    with pytest.raises(IntegrityError, match="small order"):
        verify_pinned(env, "application/vnd.strongroom.approval+json", {kid: key},
                      pq={kid: MLDSA65PrivateKey.generate().public_key()})


def test_statement_verify_still_accepts_an_honest_key() -> None:
    sk = Ed25519PrivateKey.generate()
    env = dsse.sign_statement({"a": 1}, "t", sk)
    assert dsse.verify_statement(env, "t", {dsse.key_id(sk.public_key()): sk.public_key()}) \
        == {"a": 1}


def test_note_verifiers_refuse_small_order_keys() -> None:
    key = Ed25519PublicKey.from_public_bytes(_IDENTITY)
    text = "checkpoint\n1\nAAAA\n"
    assert _openssl_accepts(_IDENTITY, _FORGED, text.encode())  # OpenSSL alone would accept
    assert not note.Ed25519Verifier("witness", key).verify(text, _FORGED)
    kid = note.key_id("witness", note.SIG_ED25519, _IDENTITY)
    material = base64.b64encode(b"\x01" + _IDENTITY).decode()
    vkey = f"witness+{kid:08x}+{material}"
    with pytest.raises(WeakPublicKey, match="verifier key witness"):
        note.new_verifier(vkey)
    good = note.new_verifier(note.generate_key("witness")[1])
    assert isinstance(good, note.Ed25519Verifier)


# -- where keys enter --------------------------------------------------------------------

def test_public_key_files_and_identities_refuse_small_order_keys(tmp_path: Path) -> None:
    from strongroom.keys.identity import PUBLIC_HRP, Identity, PublicIdentity

    for hexkey in SMALL_ORDER:
        pub = tmp_path / "mallory.pub"
        pub.write_text(f"# name: mallory\n{bech32.encode(PUBLIC_HRP, bytes.fromhex(hexkey))}\n")
        with pytest.raises(WeakPublicKey, match="small order") as exc:
            PublicIdentity.load(pub)
        assert exc.value.obj == str(pub)
        with pytest.raises(WeakPublicKey):
            PublicIdentity(bytes.fromhex(hexkey), "mallory")
    ident = Identity.generate("alice")
    assert PublicIdentity.parse(ident.public.to_text()) == ident.public


def test_enrollments_officers_and_security_keys_refuse_small_order_keys() -> None:
    import cbor2

    from strongroom.access.directory import Enrollment, Vetting
    from strongroom.access.fido import _public_key
    from strongroom.keys.officers import OFFICER_PREFIX, Officers

    with pytest.raises(WeakPublicKey, match="small order") as exc:
        Enrollment(name="mallory", key=_IDENTITY, vetting=Vetting("active", 0, 2**40))
    assert exc.value.obj == "enrollment of mallory"
    good = Enrollment(name="alice", key=_honest(), vetting=Vetting("active", 0, 2**40))
    st = dict(good.to_statement(), key=_IDENTITY.hex())
    with pytest.raises(IntegrityError, match="small order"):
        Enrollment.from_statement(st)  # a stored row: grants nothing
    with pytest.raises(IntegrityError, match=r"malformed officer key.*small order"):
        Officers.from_public_keys({OFFICER_PREFIX + "x": _IDENTITY})
    assert Officers.from_public_keys({OFFICER_PREFIX + "x": _honest()}).ed25519
    cose = cbor2.dumps({1: 1, 3: -8, -1: 6, -2: _IDENTITY})
    with pytest.raises(InvalidInput, match="small order"):
        _public_key(cose, -8)
