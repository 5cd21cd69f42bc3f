"""Checkpoints (C2SP tlog-checkpoint) signed as C2SP signed notes.

A checkpoint commits to a tree: ``<origin>\\n<size>\\n<base64 root>\\n`` and
optional extension lines. The log signs it with an Ed25519 note key whose name
is the origin; witnesses add tlog-cosignature/v1 lines::

    note = sign_checkpoint(Checkpoint(origin, size, root), log_signer)
    cp = open_checkpoint(note, log_key=log_vkey, witness_keys=[w1_vkey], quorum=1)
    cp.checkpoint.size, cp.cosigners

:func:`open_checkpoint` is what an outsider runs offline: it needs only the
note and verifier key strings. Signatures from unknown keys are ignored (as the
signed-note spec requires) and never count towards the quorum.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from strongroom.crypto.note import (
    CosignatureVerifier,
    Ed25519Verifier,
    Note,
    NoteError,
    Signer,
    Verifier,
    new_verifier,
    open_note,
    parse_note,
    sign,
)
from strongroom.errors import IntegrityError, InvalidInput

__all__ = [
    "Checkpoint",
    "OpenedCheckpoint",
    "add_signature_lines",
    "open_checkpoint",
    "sign_checkpoint",
]

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, size and root hash (plus optional extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The checkpoint text (the signed note's text)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body; raises :class:`IntegrityError` when malformed."""
        if not text.endswith("\n"):
            raise IntegrityError("malformed checkpoint: does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise IntegrityError("malformed checkpoint: fewer than three lines")
        origin, size_text, root_text, *extensions = lines
        if not origin or any(not line for line in extensions):
            raise IntegrityError("malformed checkpoint: empty origin or extension line")
        if not _SIZE.fullmatch(size_text) or int(size_text) >= 1 << 64:
            raise IntegrityError(f"malformed checkpoint: bad tree size {size_text!r}")
        try:
            root = base64.b64decode(root_text, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise IntegrityError("malformed checkpoint: root hash is not base64") from exc
        if len(root) != 32:
            raise IntegrityError("malformed checkpoint: root hash is not 32 bytes")
        return cls(origin, int(size_text), root, tuple(extensions))


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint whose log signature (and some cosignatures) verified."""

    checkpoint: Checkpoint
    note: Note
    #: Names of the configured witnesses whose cosignatures verified.
    cosigners: tuple[str, ...]
    #: Signature lines from keys nobody configured (ignored).
    ignored: tuple[str, ...]


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The signed note of ``checkpoint``; the signer's key name must be the origin."""
    if signer.name != checkpoint.origin:
        raise InvalidInput(
            f"checkpoint signer is named {signer.name!r}, but the origin is {checkpoint.origin!r}",
            obj="checkpoint",
            remedy="sign with the log key whose name is the log origin",
        )
    return sign(checkpoint.body(), signer)


def _verifier(key: str | Verifier) -> Verifier:
    return new_verifier(key) if isinstance(key, str) else key


def open_checkpoint(
    note_text: str,
    *,
    log_key: str | Verifier,
    witness_keys: Iterable[str | Verifier] = (),
    quorum: int = 0,
    origin: str | None = None,
) -> OpenedCheckpoint:
    """Verify a signed checkpoint offline: log signature, then a quorum of cosignatures.

    The origin line must be ``origin``, by default the log key's name (the
    spec only recommends that they match: ``sum.golang.org`` signs checkpoints
    whose origin is ``go.sum database tree``).

    Raises :class:`~strongroom.crypto.note.NoteError` (an ``IntegrityError``)
    saying why when it does not verify.
    """
    log = _verifier(log_key)
    if not isinstance(log, Ed25519Verifier):
        raise InvalidInput("the log key must be an Ed25519 (type 0x01) verifier key")
    witnesses: list[Verifier] = [_verifier(k) for k in witness_keys]
    for w in witnesses:
        if not isinstance(w, CosignatureVerifier):
            raise InvalidInput(f"witness key {w.name} is not a cosignature (type 0x04) key")
    note = open_note(note_text, [log, *witnesses])
    if not any(s.name == log.name and s.key_id == log.key_id for s in note.sigs):
        raise NoteError(f"checkpoint is not signed by the log key {log.name}")
    checkpoint = Checkpoint.parse(note.text)
    expected = log.name if origin is None else origin
    if checkpoint.origin != expected:
        raise NoteError(
            f"checkpoint is for log {checkpoint.origin!r}, expected {expected!r}"
            + (" (the log key's name)" if origin is None else ""),
            remedy="check that this is the log you meant; if its origin line differs from its "
            "key name, as sum.golang.org's does, give that origin (verify-checkpoint --origin)",
        )
    witness_ids = {(w.name, w.key_id) for w in witnesses}
    cosigners = tuple(
        dict.fromkeys(s.name for s in note.sigs if (s.name, s.key_id) in witness_ids)
    )
    ignored = tuple(s.line.rstrip("\n") for s in note.unverified)
    if len(cosigners) < quorum:
        unknown = ", ".join(sorted({s.name for s in note.unverified})) or "none"
        raise NoteError(
            f"checkpoint of size {checkpoint.size} has {len(cosigners)} trusted witness "
            f"cosignature(s), quorum is {quorum} (ignored unknown signers: {unknown})",
            remedy="wait for more witnesses to cosign, or check the witness keys you trust",
        )
    return OpenedCheckpoint(checkpoint, note, cosigners, ignored)


def add_signature_lines(note_text: str, lines: Sequence[str]) -> str:
    """Append signature lines (e.g. cosignatures) to a signed note, skipping duplicates."""
    _, existing = parse_note(note_text)
    present = {s.line for s in existing}
    extra = [line if line.endswith("\n") else line + "\n" for line in lines]
    new = [line for line in dict.fromkeys(extra) if line not in present]
    return note_text + "".join(new)
