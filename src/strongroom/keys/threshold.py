"""The ``threshold`` key backend's formats: the age stanza, the sealed share, the request digest.

A blob whose file key is wrapped to the key servers' group key carries an age
stanza ``-> strongroom-threshold <group key id>`` whose body is the
:class:`~strongroom.threshold.wrap.Wrapped` key (``U ‖ sealed``); the vault's
signed manifest pins the header (``header_sha256``), so a key server that
checks the header against the manifest knows the ``U`` it is asked about
belongs to the shard named (it is never a decryption oracle for another blob).
A key server keeps its :class:`~strongroom.threshold.shares.KeyShare` as a
barrier entry of its own keyring (:meth:`Keyring.seal_entry`), readable only
while its custodians have unsealed it.

Use it like this::

    recipient = ThresholdRecipient(group_key, vault_id="v1", artifact="minilm@1",
                                   shard="model.safetensors", blob_id=blob_id)
    header = age.build_header(file_key, [recipient])
    wrapped = find_wrapped(header.stanzas, group_key, obj="minilm@1/model.safetensors")
    digest = request_digest(request, [wrapped.u])   # what a key server's proof is bound to
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from strongroom.crypto.age import Stanza
from strongroom.errors import IntegrityError, InvalidInput, NotFound
from strongroom.release.request import ReleaseRequest
from strongroom.threshold.group import Element, decode_scalar, encode_scalar
from strongroom.threshold.shares import KeyShare, verify_share
from strongroom.threshold.wrap import Wrapped, binding, wrap_file_key

__all__ = [
    "SHARE_ENTRY",
    "STANZA_TYPE",
    "ThresholdRecipient",
    "find_wrapped",
    "group_key_id",
    "load_share",
    "request_digest",
    "share_entry",
]

#: age stanza type of a file key wrapped to a threshold group key; one argument, the key id.
STANZA_TYPE = "strongroom-threshold"
#: Barrier entry name (``ext/…``) of a key server's share.
SHARE_ENTRY = "threshold/share"


def group_key_id(group_key: Element) -> str:
    """A short public name of the group key: the first 16 hex digits of SHA-256 of its encoding."""
    return hashlib.sha256(group_key.raw).hexdigest()[:16]


class ThresholdRecipient:
    """An age recipient that wraps the file key to the key servers' group key (never to one host)."""

    def __init__(self, group_key: Element, *, vault_id: str, artifact: str, shard: str, blob_id: str) -> None:
        self.group_key = group_key
        self._bound = binding(vault_id, artifact, shard, blob_id)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """One ``strongroom-threshold`` stanza."""
        wrapped = wrap_file_key(self.group_key, file_key, self._bound)
        return [Stanza(STANZA_TYPE, (group_key_id(self.group_key),), wrapped.encode())]


def find_wrapped(stanzas: Sequence[Stanza], group_key: Element, *, obj: str) -> Wrapped:
    """The wrapped key for ``group_key`` among a header's stanzas; NotFound when there is none."""
    kid = group_key_id(group_key)
    for stanza in stanzas:
        if stanza.type == STANZA_TYPE and stanza.args == (kid,):
            return Wrapped.decode(stanza.body, what=obj)
    raise NotFound(f"the blob has no file key wrapped to threshold group key {kid}", obj=obj,
                   remedy="the blob was imported under another key backend or group key; "
                   "rewrap it to the current group key")


def request_digest(request: ReleaseRequest, us: Sequence[Element]) -> bytes:
    """SHA-256 of what a key server's partial answers: the request's signed fields and the ``U`` values.

    Every field but the client's host; the evidence (single use, signed by the
    principal) makes each request's digest distinct.
    """
    body = {
        "principal": request.principal,
        "principal_key": base64.b64encode(request.principal_key).decode(),
        "artifact": request.artifact,
        "shard": request.shard,
        "blob_id": request.blob_id,
        "nbytes": request.nbytes,
        "purpose": request.purpose,
        "evidence": request.evidence,
        "u": [u.hex() for u in us],
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(b"strongroom-threshold-request-v1\n" + text.encode()).digest()


def share_entry(share: KeyShare, *, epoch: int) -> dict[str, Any]:
    """The barrier entry form of a share (sealed by the keyring; never written elsewhere)."""
    return {"index": share.index, "value": base64.b64encode(encode_scalar(share.value)).decode(),
            "commitments": [c.hex() for c in share.commitments], "epoch": epoch}


def load_share(entry: Any, *, obj: str) -> tuple[KeyShare, int]:
    """Parse a sealed share entry back; IntegrityError when it is malformed or inconsistent."""
    try:
        index = int(entry["index"])
        value = decode_scalar(base64.b64decode(entry["value"], validate=True), what=obj)
        commitments = tuple(Element.decode(bytes.fromhex(c), what=obj) for c in entry["commitments"])
        epoch = int(entry["epoch"])
    except (KeyError, TypeError, ValueError, InvalidInput) as exc:
        raise IntegrityError("the sealed threshold share is malformed", obj=obj,
                             remedy="restore the key server's keyring from a trusted backup") from exc
    verify_share(index, value, commitments, what=obj)
    return KeyShare(index, value, commitments), epoch
