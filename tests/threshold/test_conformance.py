"""Conformance of the threshold group code against published vectors.

Sources, transcribed by hand (hex only, line breaks joined):

* RFC 9497 (OPRFs using prime-order groups), Appendix A.1.2, "ristretto255-SHA512,
  VOPRF Mode": key derivation, hash to group, blind evaluation, the DLEQ proofs
  (single and batched) and Finalize; also A.1.1 (OPRF mode) for DeriveKeyPair
  under another context string.
* RFC 9591 (FROST), Appendix E.3, "FROST(ristretto255, SHA-512)": the group key,
  the polynomial shares of participants 1..3, and interpolation from {1, 3}.
* RFC 9496 (ristretto255), Appendix A.1 (multiples of the generator) and A.2
  (non-canonical and negative encodings, which must be refused).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from strongroom.errors import IntegrityError, InvalidInput
from strongroom.threshold.dleq import Proof, generate_proof, oprf_context, verify_proof
from strongroom.threshold.group import (
    GENERATOR,
    IDENTITY,
    ORDER,
    Element,
    base_mult,
    decode_scalar,
    encode_scalar,
    hash_to_group,
    hash_to_scalar,
)
from strongroom.threshold.shares import (
    commit,
    deal,
    lagrange_at_zero,
    public_share,
    recover,
    verify_share,
)

# --- RFC 9496 ----------------------------------------------------------------

SMALL_MULTIPLES = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76",
    "6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919",
    "94741f5d5d52755ece4f23f044ee27d5d1ea1e2bd196b462166b16152a9d0259",
]

BAD_ENCODINGS = [
    # non-canonical field encodings
    "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "f3ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "0100000000000000000000000000000000000000000000000000000000000080",
    # negative field element
    "0100000000000000000000000000000000000000000000000000000000000000",
]


def test_generator_multiples() -> None:
    for k, hx in enumerate(SMALL_MULTIPLES):
        assert base_mult(k).hex() == hx
        assert GENERATOR.mult(k).hex() == hx
    assert base_mult(2) == GENERATOR + GENERATOR
    assert base_mult(3) - GENERATOR == base_mult(2)


@pytest.mark.parametrize("hx", BAD_ENCODINGS)
def test_non_canonical_encodings_refused(hx: str) -> None:
    with pytest.raises(InvalidInput, match="canonical"):
        Element.decode(bytes.fromhex(hx), what="public share of key server 2")


def test_identity_and_lengths_refused() -> None:
    with pytest.raises(InvalidInput, match="identity"):
        Element.decode(bytes(32))
    assert Element.decode(bytes(32), allow_identity=True) == IDENTITY
    with pytest.raises(InvalidInput, match="32 bytes"):
        Element.decode(bytes(31))
    with pytest.raises(InvalidInput, match="reduced"):
        decode_scalar(ORDER.to_bytes(32, "little"))
    assert decode_scalar(encode_scalar(ORDER - 1)) == ORDER - 1


# --- RFC 9497, ristretto255-SHA512 -----------------------------------------------

SEED = bytes.fromhex("a3" * 32)
KEY_INFO = bytes.fromhex("74657374206b6579")
OPRF_SK = "5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e"
VOPRF_SK = "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909"
VOPRF_PK = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e"
BLIND_1 = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706"
BLIND_2 = "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e"

VOPRF_VECTORS: list[dict[str, Any]] = [
    {  # Test Vector 1, Batch Size 1
        "inputs": ["00"],
        "blinds": [BLIND_1],
        "blinded": ["863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945"],
        "evaluated": ["aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e"],
        "proof": "ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd06"
        "6d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
        "r": "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        "outputs": ["b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d"
                    "a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c"],
    },
    {  # Test Vector 2, Batch Size 1
        "inputs": ["5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"],
        "blinds": [BLIND_1],
        "blinded": ["cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c"],
        "evaluated": ["60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468"],
        "proof": "401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a"
        "67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
        "r": "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        "outputs": ["8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60"
                    "356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6"],
    },
    {  # Test Vector 3, Batch Size 2
        "inputs": ["00", "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"],
        "blinds": [BLIND_1, BLIND_2],
        "blinded": ["863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
                    "90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654"],
        "evaluated": ["aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e",
                      "cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a"],
        "proof": "cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a"
        "5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08",
        "r": "419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c",
        "outputs": ["b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7d"
                    "a4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c",
                    "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60"
                    "356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6"],
    },
]


def _lp(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def _derive_key_pair(seed: bytes, info: bytes, context: bytes) -> int:
    """RFC 9497 §3.2.1 DeriveKeyPair (the vectors' key derivation)."""
    derive_input = seed + _lp(info)
    for counter in range(256):
        sk = hash_to_scalar(derive_input + bytes([counter]), b"DeriveKeyPair" + context)
        if sk:
            return sk
    raise AssertionError("DeriveKeyPair failed")


def test_derive_key_pair_oprf_and_voprf() -> None:
    assert encode_scalar(_derive_key_pair(SEED, KEY_INFO, oprf_context(0))).hex() == OPRF_SK
    sk = _derive_key_pair(SEED, KEY_INFO, oprf_context(1))
    assert encode_scalar(sk).hex() == VOPRF_SK
    assert base_mult(sk).hex() == VOPRF_PK


@pytest.mark.parametrize("vector", VOPRF_VECTORS, ids=["tv1", "tv2", "tv3-batch2"])
def test_voprf_vectors(vector: dict[str, Any]) -> None:
    ctx = oprf_context(1)
    sk = decode_scalar(bytes.fromhex(VOPRF_SK))
    pk = Element.decode(bytes.fromhex(VOPRF_PK))
    inputs = [bytes.fromhex(x) for x in vector["inputs"]]
    blinds = [decode_scalar(bytes.fromhex(x)) for x in vector["blinds"]]
    blinded = []
    for inp, blind, want in zip(inputs, blinds, vector["blinded"], strict=True):
        element = hash_to_group(inp, b"HashToGroup-" + ctx).mult(blind)
        assert element.hex() == want
        blinded.append(element)
    evaluated = [b.mult(sk) for b in blinded]
    assert [e.hex() for e in evaluated] == vector["evaluated"]
    r = decode_scalar(bytes.fromhex(vector["r"]))
    proof = generate_proof(sk, GENERATOR, pk, blinded, evaluated, ctx, r=r)
    assert proof.encode().hex() == vector["proof"]
    parsed = Proof.decode(bytes.fromhex(vector["proof"]))
    verify_proof(GENERATOR, pk, blinded, evaluated, parsed, ctx)
    for inp, blind, ev, want in zip(inputs, blinds, evaluated, vector["outputs"], strict=True):
        unblinded = ev.mult(pow(blind, -1, ORDER))
        out = hashlib.sha512(_lp(inp) + _lp(unblinded.raw) + b"Finalize").hexdigest()
        assert out == want


def test_voprf_proof_refused_when_anything_changes() -> None:
    ctx = oprf_context(1)
    v: dict[str, Any] = VOPRF_VECTORS[2]
    pk = Element.decode(bytes.fromhex(VOPRF_PK))
    blinded = [Element.decode(bytes.fromhex(x)) for x in v["blinded"]]
    evaluated = [Element.decode(bytes.fromhex(x)) for x in v["evaluated"]]
    proof = Proof.decode(bytes.fromhex(v["proof"]))
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_proof(GENERATOR, pk, blinded, evaluated[::-1], proof, ctx)
    with pytest.raises(IntegrityError):
        verify_proof(GENERATOR, pk, blinded, evaluated, proof, oprf_context(2))
    with pytest.raises(IntegrityError):
        verify_proof(GENERATOR, base_mult(7), blinded, evaluated, proof, ctx)
    with pytest.raises(IntegrityError):
        verify_proof(GENERATOR, pk, blinded, evaluated, Proof(proof.c, (proof.s + 1) % ORDER), ctx)


# --- RFC 9591, FROST(ristretto255, SHA-512) -------------------------------------

FROST_SECRET = "1b25a55e463cfd15cf14a5d3acc3d15053f08da49c8afcf3ab265f2ebc4f970b"
FROST_PUBLIC = "e2a62f39eede11269e3bd5a7d97554f5ca384f9f6d3dd9c3c0d05083c7254f57"
FROST_COEFF = "410f8b744b19325891d73736923525a4f596c805d060dfb9c98009d34e3fec02"
FROST_SHARES = {
    1: "5c3430d391552f6e60ecdc093ff9f6f4488756aa6cebdbad75a768010b8f830e",
    2: "b06fc5eac20b4f6e1b271d9df2343d843e1e1fb03c4cbb673f2872d459ce6f01",
    3: "f17e505f0e2581c6acfe54d3846a622834b5e7b50cad9a2109a97ba7a80d5c04",
}
# Round-one nonces and their commitments (nonce·G): more scalar-base-mult answers.
FROST_NONCES = {
    "214f2cabb86ed71427ea7ad4283b0fae26b6746c801ce824b83ceb2b99278c03":
        "965def4d0958398391fc06d8c2d72932608b1e6255226de4fb8d972dac15fd57",
    "c9b8f5e16770d15603f744f8694c44e335e8faef00dad182b8d7a34a62552f0c":
        "ec5170920660820007ae9e1d363936659ef622f99879898db86e5bf1d5bf2a14",
    "3f7927872b0f9051dd98dd73eb2b91494173bbe0feb65a3e7e58d3e2318fa40f":
        "480e06e3de182bf83489c45d7441879932fd7b434a26af41455756264fbd5d6e",
}


def _s(hx: str) -> int:
    return decode_scalar(bytes.fromhex(hx))


def test_frost_secret_sharing() -> None:
    secret, coeff = _s(FROST_SECRET), _s(FROST_COEFF)
    assert base_mult(secret).hex() == FROST_PUBLIC
    dealing = deal(secret, threshold=2, indices=[1, 2, 3], coefficients=[coeff])
    assert {i: encode_scalar(v).hex() for i, v in dealing.values.items()} == FROST_SHARES
    assert dealing.commitments == commit([secret, coeff])
    assert dealing.commitments[0].hex() == FROST_PUBLIC
    for i, hx in FROST_SHARES.items():
        verify_share(i, _s(hx), dealing.commitments)
        assert public_share(i, dealing.commitments) == base_mult(_s(hx))
    # participant_list 1,3 interpolates the group secret
    assert recover({1: _s(FROST_SHARES[1]), 3: _s(FROST_SHARES[3])}) == secret
    assert recover({2: _s(FROST_SHARES[2]), 3: _s(FROST_SHARES[3])}) == secret
    lam1, lam3 = lagrange_at_zero([1, 3], 1), lagrange_at_zero([1, 3], 3)
    assert (lam1 + lam3) % ORDER == 1  # interpolating the constant polynomial 1
    with pytest.raises(IntegrityError, match="index 2"):
        verify_share(2, _s(FROST_SHARES[1]), dealing.commitments)


def test_frost_nonce_commitments() -> None:
    for nonce, commitment in FROST_NONCES.items():
        assert base_mult(_s(nonce)).hex() == commitment
