"""Chaum–Pedersen proofs that two group elements share one discrete log (RFC 9497 §2.2).

A key server proves that its partial decryption ``D = x·U`` uses the same secret
``x`` as its public share ``X = x·G``, without revealing ``x``. The proof is
exactly RFC 9497's ``GenerateProof`` / ``VerifyProof`` (batched through
composites, challenge from ``HashToScalar``), with the context string chosen by
the caller: RFC 9497 uses ``"OPRFV1-" || mode || "-" || suite``; threshold
release puts the release request's digest into it, so a proof made for one
request does not verify for any other (:mod:`strongroom.threshold.wrap`).

For one ``(U, D)`` pair (a release of one blob, the common case) the plain
Chaum–Pedersen proof (:func:`prove_single` / :func:`verify_single`) does the
same job without the composite: the prover's commitments are ``r·G`` and
``r·U`` directly, so it costs one base and one variable-base multiplication
instead of three variable-base multiplications and one base multiplication
(the verifier saves two of its five). Its challenge hashes the whole transcript
``(G, X, U, D, r·G, r·U)`` under its own domain-separation tag, so a proof of
one form never verifies as the other (docs/threshold.md gives the argument).

Use it like this::

    ctx = context_string(b"...")             # or the RFC 9497 context for the vectors
    proof = generate_proof(x, G, X, [U], [D], ctx)
    verify_proof(G, X, [U], [D], proof, ctx)  # raises InvalidInput / IntegrityError
    proof = prove_single(x, X, U, D, ctx)     # one pair, generator G
    verify_single(X, U, D, proof, ctx)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from strongroom.errors import IntegrityError, InvalidInput
from strongroom.threshold.group import (
    GENERATOR,
    IDENTITY,
    ORDER,
    SCALAR_LEN,
    Element,
    Scalar,
    base_mult,
    decode_scalar,
    encode_scalar,
    hash_to_scalar,
    random_scalar,
)

__all__ = [
    "PROOF_LEN",
    "Proof",
    "composites",
    "generate_proof",
    "oprf_context",
    "prove_single",
    "verify_proof",
    "verify_single",
]

PROOF_LEN = 2 * SCALAR_LEN
#: Longest batch one proof may cover (RFC 9497 encodes the index in two bytes).
MAX_BATCH = 65535
#: Domain-separation prefix of the single-pair proof's challenge; the RFC 9497 proof hashes
#: under ``"HashToScalar-" || context``, so no challenge of one form is a challenge of the other.
_SINGLE_DST = b"STRONGROOM-CHAUM-PEDERSEN-V1-"


def oprf_context(mode: int, identifier: bytes = b"ristretto255-SHA512") -> bytes:
    """RFC 9497's ``CreateContextString(mode, identifier)``."""
    return b"OPRFV1-" + bytes([mode]) + b"-" + identifier


@dataclass(frozen=True, slots=True)
class Proof:
    """A DLEQ proof: the challenge ``c`` and response ``s`` (RFC 9497 serialises ``c || s``)."""

    c: Scalar
    s: Scalar

    def encode(self) -> bytes:
        """``SerializeScalar(c) || SerializeScalar(s)``."""
        return encode_scalar(self.c) + encode_scalar(self.s)

    @classmethod
    def decode(cls, raw: bytes, *, what: str = "DLEQ proof") -> Proof:
        """Parse ``c || s``; InvalidInput unless both are canonical scalars."""
        if len(raw) != PROOF_LEN:
            raise InvalidInput(f"a proof is {PROOF_LEN} bytes, got {len(raw)}", obj=what,
                               remedy="send the proof exactly as the key server returned it")
        return cls(decode_scalar(raw[:SCALAR_LEN], what=what), decode_scalar(raw[SCALAR_LEN:], what=what))


def _does_not_verify(what: str) -> IntegrityError:
    return IntegrityError(
        "the zero-knowledge proof of correct decryption does not verify",
        obj=what,
        remedy="discard this partial and ask the next key server; alert its operators",
    )


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _seed(b: Element, context: bytes) -> bytes:
    return hashlib.sha512(_lp(b.raw) + _lp(b"Seed-" + context)).digest()


def _weights(b: Element, c: Sequence[Element], d: Sequence[Element], context: bytes) -> list[Scalar]:
    if not c or len(c) != len(d) or len(c) > MAX_BATCH:
        raise InvalidInput(f"a proof covers 1 to {MAX_BATCH} equal-length lists, got {len(c)} and {len(d)}",
                           obj="DLEQ proof", remedy="pass one D for each C")
    seed = _seed(b, context)
    dst = b"HashToScalar-" + context
    return [
        hash_to_scalar(_lp(seed) + i.to_bytes(2, "big") + _lp(ci.raw) + _lp(di.raw) + b"Composite", dst)
        for i, (ci, di) in enumerate(zip(c, d, strict=True))
    ]


def composites(b: Element, c: Sequence[Element], d: Sequence[Element], context: bytes) -> tuple[Element, Element]:
    """RFC 9497 ``ComputeComposites``: ``M = Σ dᵢ·Cᵢ``, ``Z = Σ dᵢ·Dᵢ``."""
    m, z = IDENTITY, IDENTITY
    for w, ci, di in zip(_weights(b, c, d, context), c, d, strict=True):
        m = m + ci.mult(w)
        z = z + di.mult(w)
    return m, z


def _challenge(b: Element, m: Element, z: Element, t2: Element, t3: Element, context: bytes) -> Scalar:
    transcript = _lp(b.raw) + _lp(m.raw) + _lp(z.raw) + _lp(t2.raw) + _lp(t3.raw) + b"Challenge"
    return hash_to_scalar(transcript, b"HashToScalar-" + context)


def generate_proof(
    k: Scalar,
    a: Element,
    b: Element,
    c: Sequence[Element],
    d: Sequence[Element],
    context: bytes,
    *,
    r: Scalar | None = None,
) -> Proof:
    """Prove ``k·A == B`` and ``k·Cᵢ == Dᵢ`` for every i (RFC 9497 ``GenerateProof``).

    ``r`` is the proof's random scalar; leave it None (fresh randomness) except to
    reproduce the RFC's vectors.
    """
    m = IDENTITY
    for w, ci in zip(_weights(b, c, d, context), c, strict=True):
        m = m + ci.mult(w)
    z = m.mult(k)  # ComputeCompositesFast: the prover knows k
    r = random_scalar() if r is None else r
    t2 = base_mult(r) if a == GENERATOR else a.mult(r)
    t3 = m.mult(r)
    ch = _challenge(b, m, z, t2, t3, context)
    return Proof(ch, (r - ch * k) % ORDER)


def verify_proof(
    a: Element,
    b: Element,
    c: Sequence[Element],
    d: Sequence[Element],
    proof: Proof,
    context: bytes,
    *,
    what: str = "DLEQ proof",
) -> None:
    """RFC 9497 ``VerifyProof``; IntegrityError naming ``what`` when it does not verify."""
    m, z = composites(b, c, d, context)
    t2 = (base_mult(proof.s) if a == GENERATOR else a.mult(proof.s)) + b.mult(proof.c)
    t3 = m.mult(proof.s) + z.mult(proof.c)
    if _challenge(b, m, z, t2, t3, context) != proof.c:
        raise _does_not_verify(what)


def _single_challenge(
    x: Element, u: Element, d: Element, t2: Element, t3: Element, context: bytes
) -> Scalar:
    transcript = (
        _lp(GENERATOR.raw)
        + _lp(x.raw)
        + _lp(u.raw)
        + _lp(d.raw)
        + _lp(t2.raw)
        + _lp(t3.raw)
        + b"SingleChallenge"
    )
    return hash_to_scalar(transcript, _SINGLE_DST + context)


def prove_single(
    k: Scalar, x: Element, u: Element, d: Element, context: bytes, *, r: Scalar | None = None
) -> Proof:
    """Chaum–Pedersen: prove ``k·G == X`` and ``k·U == D`` for one pair (not RFC 9497's form).

    The caller vouches that ``X = k·G`` and ``D = k·U`` (it computed both); ``r``
    is for tests only.
    """
    r = random_scalar() if r is None else r
    t2 = base_mult(r)
    t3 = u.mult(r)
    ch = _single_challenge(x, u, d, t2, t3, context)
    return Proof(ch, (r - ch * k) % ORDER)


def verify_single(
    x: Element, u: Element, d: Element, proof: Proof, context: bytes, *, what: str = "DLEQ proof"
) -> None:
    """Check a :func:`prove_single` proof; IntegrityError naming ``what`` unless it verifies."""
    t2 = base_mult(proof.s) + x.mult(proof.c)
    t3 = u.mult(proof.s) + d.mult(proof.c)
    if _single_challenge(x, u, d, t2, t3, context) != proof.c:
        raise _does_not_verify(what)
