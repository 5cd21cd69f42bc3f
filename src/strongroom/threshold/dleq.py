"""Chaum–Pedersen proofs that two group elements share one discrete log (RFC 9497 §2.2).

A key server proves that its partial decryption ``D = x·U`` uses the same secret
``x`` as its public share ``X = x·G``, without revealing ``x``. The proof is
exactly RFC 9497's ``GenerateProof`` / ``VerifyProof`` (batched through
composites, challenge from ``HashToScalar``), with the context string chosen by
the caller: RFC 9497 uses ``"OPRFV1-" || mode || "-" || suite``; threshold
release puts the release request's digest into it, so a proof made for one
request does not verify for any other (:mod:`strongroom.threshold.wrap`).

Use it like this::

    ctx = context_string(b"...")             # or the RFC 9497 context for the vectors
    proof = generate_proof(x, G, X, [U], [D], ctx)
    verify_proof(G, X, [U], [D], proof, ctx)  # raises InvalidInput / IntegrityError
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

__all__ = ["PROOF_LEN", "Proof", "composites", "generate_proof", "oprf_context", "verify_proof"]

PROOF_LEN = 2 * SCALAR_LEN
#: Longest batch one proof may cover (RFC 9497 encodes the index in two bytes).
MAX_BATCH = 65535


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
        raise IntegrityError(
            "the zero-knowledge proof of correct decryption does not verify",
            obj=what,
            remedy="discard this partial and ask the next key server; alert its operators",
        )
