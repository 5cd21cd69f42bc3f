"""File keys wrapped to a threshold group key, partial decryptions, and their verified combination.

A file key is wrapped to the group key ``Y`` (hashed ElGamal / ECIES over
ristretto255): a fresh ``r``, ``U = r·G``, the shared point ``S = r·Y``, a key
``HKDF-SHA256(S, salt = U ‖ Y, info = label ‖ binding)``, and the file key sealed
with ChaCha20-Poly1305 under associated data ``binding`` (vault, artifact, shard
and blob: the same names the keyring binds today). Nobody holds ``y``: key
server ``i`` holds a share ``yᵢ`` and answers a release with the partial
``Dᵢ = yᵢ·U`` and a DLEQ proof that ``Dᵢ`` and its public share
``Xᵢ = yᵢ·G`` share one discrete log (plain Chaum–Pedersen for one blob, RFC
9497's batched proof for several). The proof's context string carries the
release request's digest and the server's index, so a partial made for one
request (or one server) does not verify for another. Any k verified partials
give ``S = Σ λᵢ·Dᵢ``; fewer give nothing.

Use it like this::

    wrapped = wrap_file_key(group_key, file_key, binding(vault, artifact, shard, blob))
    # each key server, after its own checks:
    partial = partial_decrypt(my_share, digest, [wrapped.u])
    # the requester:
    combiner = Combiner(commitments, digest, [wrapped.u])
    for p in answers: combiner.add(p)          # IntegrityError names a bad server
    key = unwrap(wrapped, combiner.shared_points()[0], group_key, binding(...),
                 what="minilm@1/model.safetensors")             # caller zeroes it
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.errors import AccessDenied, IntegrityError, InvalidInput
from strongroom.threshold.dleq import (
    PROOF_LEN,
    Proof,
    generate_proof,
    prove_single,
    verify_proof,
    verify_single,
)
from strongroom.threshold.group import (
    ELEMENT_LEN,
    GENERATOR,
    IDENTITY,
    Element,
    base_mult,
    random_scalar,
)
from strongroom.threshold.shares import KeyShare, lagrange_at_zero, public_share

__all__ = [
    "DIGEST_LEN",
    "FILE_KEY_LENS",
    "WRAPPED_LENS",
    "Combiner",
    "Partial",
    "Wrapped",
    "binding",
    "partial_decrypt",
    "proof_context",
    "unwrap",
    "verify_partial",
    "wrap_file_key",
]

#: File key lengths wrapped: age's 16-byte file key, or a 32-byte key.
FILE_KEY_LENS = (16, 32)
DIGEST_LEN = 32
_TAG_LEN = 16
#: Lengths of ``U ‖ sealed file key ‖ tag``, the body of a threshold-wrapped file key.
WRAPPED_LENS = tuple(ELEMENT_LEN + n + _TAG_LEN for n in FILE_KEY_LENS)
_KDF_LABEL = b"strongroom threshold file key v1\x00"
_PROOF_LABEL = b"STRONGROOM-THRESHOLD-V1-"
# Each derived key seals exactly one file key, so a fixed nonce never repeats under a key.
_NONCE = bytes(12)
#: Largest batch of blobs one partial covers (a request's shards).
MAX_BLOBS = 4096


def binding(vault_id: str, artifact: str, shard: str, blob_id: str) -> bytes:
    """The associated data a wrapped file key is bound to: vault, artifact, shard and blob."""
    parts = [vault_id, artifact, shard, blob_id]
    if any("\n" in p or not p for p in parts):
        raise InvalidInput("vault, artifact, shard and blob must be non-empty single-line names",
                           obj=f"{artifact}/{shard}", remedy="use the names the signed manifest lists")
    return ("strongroom-threshold\n" + "\n".join(parts)).encode()


@dataclass(frozen=True)
class Wrapped:
    """A file key wrapped to the group key: the ephemeral ``U`` and the sealed key."""

    u: Element
    sealed: bytes

    def encode(self) -> bytes:
        """``U ‖ sealed`` (one of :data:`WRAPPED_LENS` bytes)."""
        return self.u.raw + self.sealed

    @classmethod
    def decode(cls, raw: bytes, *, what: str = "threshold-wrapped file key") -> Wrapped:
        """Parse and check ``U ‖ sealed``; InvalidInput when malformed."""
        raw = bytes(raw)
        known = _DECODED.get(raw)
        if known is not None:  # a blob's header is released again and again: U checked once
            return known
        if len(raw) not in WRAPPED_LENS:
            raise InvalidInput(f"a threshold-wrapped file key is {' or '.join(map(str, WRAPPED_LENS))} bytes, "
                               f"got {len(raw)}", obj=what,
                               remedy="the header is corrupt; restore the blob from a trusted copy")
        wrapped = cls(Element.decode(raw[:ELEMENT_LEN], what=what), raw[ELEMENT_LEN:])
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[raw] = wrapped
        return wrapped


#: Wrapped keys already decoded and checked, by their exact bytes (a pure function of them: the
#: check that ``U`` is a canonical non-identity element gives the same answer every time).
_DECODED: dict[bytes, Wrapped] = {}
_DECODED_MAX = 4096


def _kek(shared: Element, u: Element, group_key: Element, bound: bytes) -> ChaCha20Poly1305:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=u.raw + group_key.raw,
               info=_KDF_LABEL + bound).derive(shared.raw)
    return ChaCha20Poly1305(key)


def wrap_file_key(group_key: Element, file_key: bytes, bound: bytes) -> Wrapped:
    """Wrap a 16- or 32-byte file key to ``group_key``, bound to ``bound`` (:func:`binding`)."""
    if len(file_key) not in FILE_KEY_LENS:
        raise InvalidInput(f"a file key is 16 or 32 bytes, got {len(file_key)}", obj="threshold wrap",
                           remedy="wrap the blob's age file key")
    if group_key.is_identity:
        raise InvalidInput("the group key is the identity", obj="threshold wrap",
                           remedy="the key servers' commitments are broken; re-run key generation")
    r = random_scalar()
    u = base_mult(r)
    sealed = _kek(group_key.mult(r), u, group_key, bound).encrypt(_NONCE, bytes(file_key), bound)
    return Wrapped(u, sealed)


def unwrap(wrapped: Wrapped, shared: Element, group_key: Element, bound: bytes, *, what: str) -> bytearray:
    """Open a wrapped file key with the combined ``S = y·U``; IntegrityError when anything differs.

    The caller zeroes the returned key.
    """
    try:
        key = _kek(shared, wrapped.u, group_key, bound).decrypt(_NONCE, wrapped.sealed, bound)
    except InvalidTag:
        raise IntegrityError(
            "the threshold-wrapped file key does not open with the combined partials",
            obj=what,
            remedy="its header or binding was altered, or the partials are for another key; "
            "restore the blob from a trusted copy",
        ) from None
    return bytearray(key)


def proof_context(request_digest: bytes, index: int) -> bytes:
    """The RFC 9497 context string of server ``index``'s proof for one request."""
    if len(request_digest) != DIGEST_LEN:
        raise InvalidInput(f"a release request digest is {DIGEST_LEN} bytes, got {len(request_digest)}",
                           obj="threshold release", remedy="send the SHA-256 digest of the release request")
    return _PROOF_LABEL + request_digest + index.to_bytes(1, "big")


@dataclass(frozen=True)
class Partial:
    """One key server's answer: its index, the request it answers, ``Dᵢ`` per blob, and the proof."""

    index: int
    request_digest: bytes
    points: tuple[Element, ...]
    proof: Proof

    def encode(self) -> dict[str, object]:
        """JSON-ready form (hex)."""
        return {"index": self.index, "request": self.request_digest.hex(),
                "points": [p.hex() for p in self.points], "proof": self.proof.encode().hex()}

    @classmethod
    def decode(cls, data: object, *, what: str = "partial decryption") -> Partial:
        """Parse the JSON form; InvalidInput naming ``what`` when malformed."""
        try:
            if not isinstance(data, dict):
                raise TypeError
            index = data["index"]
            if not isinstance(index, int) or not 1 <= index <= 255:
                raise ValueError
            points = tuple(Element.decode(bytes.fromhex(p), what=what) for p in data["points"])
            digest = bytes.fromhex(data["request"])
            proof_raw = bytes.fromhex(data["proof"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidInput("malformed partial decryption", obj=what,
                               remedy="the key server is broken or hostile; ask the next one") from None
        if len(digest) != DIGEST_LEN or len(proof_raw) != PROOF_LEN or not 1 <= len(points) <= MAX_BLOBS:
            raise InvalidInput("malformed partial decryption", obj=what,
                               remedy="the key server is broken or hostile; ask the next one")
        return cls(index, digest, points, Proof.decode(proof_raw, what=what))


def partial_decrypt(
    share: KeyShare, request_digest: bytes, us: Sequence[Element], *, points: Sequence[Element] | None = None
) -> Partial:
    """Key server side: ``Dᵢ = yᵢ·U`` for each blob, with one DLEQ proof bound to the request
    (:func:`~strongroom.threshold.dleq.prove_single` for one blob, RFC 9497's batched proof
    for more).

    ``points`` are the ``Dᵢ`` when the caller already computed them (the key
    server's gate does, as its last step).
    """
    if not 1 <= len(us) <= MAX_BLOBS:
        raise InvalidInput(f"a release covers 1 to {MAX_BLOBS} blobs, got {len(us)}", obj="partial decryption",
                           remedy="split the request")
    points = tuple(u.mult(share.value) for u in us) if points is None else tuple(points)
    context = proof_context(request_digest, share.index)
    if len(us) == 1:  # the common case: plain Chaum–Pedersen, two fewer multiplications
        proof = prove_single(share.value, share.own_public_share, us[0], points[0], context)
    else:
        proof = generate_proof(share.value, GENERATOR, share.own_public_share, us, points, context)
    return Partial(share.index, request_digest, points, proof)


def _second(what: str) -> IntegrityError:
    return IntegrityError("a second partial from the same key server", obj=what,
                          remedy="each key server counts once; ask another")


def verify_partial(
    partial: Partial, server_share: Element, request_digest: bytes, us: Sequence[Element], *, what: str
) -> None:
    """Check one partial against the server's public share and this request; IntegrityError names ``what``."""
    if partial.request_digest != request_digest:
        raise IntegrityError("the partial answers a different release request", obj=what,
                             remedy="discard it (a replay) and ask the key server again; alert its operators")
    if len(partial.points) != len(us):
        raise IntegrityError(f"the partial covers {len(partial.points)} blobs, the request {len(us)}", obj=what,
                             remedy="discard it and ask the next key server")
    context = proof_context(request_digest, partial.index)
    if len(us) == 1:  # one blob: only the single-pair form is accepted (its own hash domain)
        verify_single(server_share, us[0], partial.points[0], partial.proof, context, what=what)
    else:
        verify_proof(GENERATOR, server_share, us, partial.points, partial.proof, context, what=what)


@functools.lru_cache(maxsize=256)
def _lagrange_weights(chosen: tuple[int, ...]) -> tuple[int, ...]:
    # public: the same k servers answer most releases, and each weight costs a modular inverse
    return tuple(lagrange_at_zero(chosen, i) for i in chosen)


class Combiner:
    """The requester's side: collects verified partials until k, then yields ``S = y·U`` per blob.

    :meth:`add` may be called from several threads at once (one per key server
    asked): each partial is verified once, outside the lock, and kept under it.
    """

    def __init__(self, commitments: Sequence[Element], request_digest: bytes, us: Sequence[Element]) -> None:
        self._commitments = tuple(commitments)
        self._digest = request_digest
        self._us = tuple(us)
        self._verified: dict[int, Partial] = {}
        self._lock = threading.Lock()

    @property
    def threshold(self) -> int:
        """k: partials needed."""
        return len(self._commitments)

    @property
    def count(self) -> int:
        """Verified partials so far."""
        return len(self._verified)

    @property
    def ready(self) -> bool:
        """Whether k verified partials from distinct servers are in."""
        return len(self._verified) >= self.threshold

    def add(self, partial: Partial, *, server: str | None = None) -> None:
        """Verify and keep one partial; IntegrityError naming the server when it does not verify."""
        what = server or f"key server {partial.index}"
        if partial.index in self._verified:
            raise _second(what)
        verify_partial(partial, public_share(partial.index, self._commitments), self._digest, self._us, what=what)
        with self._lock:  # two answers under one index (a server relaying another's) count once
            if partial.index in self._verified:
                raise _second(what)
            self._verified[partial.index] = partial

    def shared_points(self) -> list[Element]:
        """``S = Σ λᵢ·Dᵢ`` per blob from exactly k verified partials; AccessDenied below k."""
        if not self.ready:
            raise AccessDenied(
                f"{len(self._verified)} of the {self.threshold} key servers needed released their partial",
                obj="threshold release",
                remedy="no file key without k independent key servers; ask the remaining key servers, "
                "and see their audit logs for why they refused",
            )
        chosen = tuple(sorted(self._verified)[: self.threshold])
        weights = dict(zip(chosen, _lagrange_weights(chosen), strict=True))
        out = []
        for b in range(len(self._us)):
            total = IDENTITY
            for i in chosen:
                total = total + self._verified[i].points[b].mult(weights[i])
            out.append(total)
        return out
