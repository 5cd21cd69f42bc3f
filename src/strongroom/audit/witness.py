"""Witnesses per C2SP tlog-witness: the server (``add-checkpoint``) and the client.

A witness keeps, for each log it knows (origin -> log verifier keys), the
latest checkpoint it cosigned, and cosigns a new one only when given a valid
consistency proof from that one. That is what makes a fork visible: two
different trees can never both be cosigned by the same honest witness.

Run one::

    skey, vkey = generate_key("witness.example/w1", SIG_COSIGNATURE_V1)
    witness = Witness(new_signer(skey), logs=[log_vkey], state_path=Path("w1.json"))
    app = create_app(witness)            # Starlette app; `strongroom witness serve`

Talk to one (the log does this on every checkpoint)::

    client = WitnessClient("http://127.0.0.1:7380", vkey)
    lines = client.add_checkpoint(old_size, proof, signed_note)   # cosignature lines
    view = client.latest(origin)     # what it last cosigned for the log (None: nothing)

Protocol answers: 200 with ``— <name> <base64(key ID || timestamp || sig)>``
lines; 409 (``text/x.tlog.size``, body ``<size>\\n``) when ``old`` is not the
size the witness last cosigned, or the same size with another root (a fork);
422 when the consistency proof fails; 404 for an unknown origin; 403 when no
trusted log key signed the checkpoint; 400 for a malformed request.
Its view is persisted atomically (temp file, fsync, rename) before it answers.

``GET /latest-checkpoint?origin=<origin>`` (a strongroom extension; tlog-witness
has no read endpoint) answers the latest checkpoint the witness cosigned for that
log, as the log signed it plus a fresh cosignature, or 404 when it has none: a
log asks at unseal, and ``strongroom audit verify`` asks, so that a database
rolled back behind what a witness saw is caught.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from strongroom.audit.checkpoint import Checkpoint, add_signature_lines
from strongroom.audit.merkle import HASH_SIZE, InvalidProof, verify_consistency
from strongroom.crypto.note import (
    CosignatureSigner,
    CosignatureVerifier,
    Ed25519Verifier,
    NoteError,
    new_verifier,
    open_note,
    parse_note,
    signature_line,
)
from strongroom.errors import (
    ConfigError,
    IntegrityError,
    WitnessConflict,
    WitnessError,
    WitnessProofRejected,
)

__all__ = [
    "SIZE_CONTENT_TYPE",
    "Witness",
    "WitnessClient",
    "WitnessConflict",
    "WitnessError",
    "WitnessProofRejected",
    "WitnessView",
    "create_app",
    "parse_add_checkpoint",
]

log = logging.getLogger(__name__)

SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_PROOF_LINES = 63
MAX_BODY = 1 << 20
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")


class _Reject(Exception):
    def __init__(self, status: int, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.size = size


@dataclass(frozen=True)
class WitnessView:
    """The latest checkpoint one witness cosigned for a log (its cosignature checked)."""

    witness: str
    checkpoint: Checkpoint
    note: str


@dataclass(frozen=True)
class AddCheckpointRequest:
    """A parsed ``add-checkpoint`` body."""

    old_size: int
    proof: list[bytes]
    checkpoint: str


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Parse ``old <size>``, proof lines, a blank line, then the signed checkpoint."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(400, "request is not UTF-8") from exc
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise _Reject(400, "missing blank line before the checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old ") or not _SIZE.fullmatch(lines[0][4:]):
        raise _Reject(400, "first line must be 'old <size>'")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise _Reject(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise _Reject(400, "consistency proof line is not base64") from exc
        if len(h) != HASH_SIZE:
            raise _Reject(400, "consistency proof hash is not 32 bytes")
        proof.append(h)
    return AddCheckpointRequest(int(lines[0][4:]), proof, note)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600): temp file, fsync, rename, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Witness:
    """A tlog-witness: verifies consistency, remembers the latest head, cosigns."""

    def __init__(
        self,
        signer: CosignatureSigner,
        logs: Iterable[str | Ed25519Verifier],
        state_path: Path | None = None,
    ) -> None:
        if not isinstance(signer, CosignatureSigner):
            raise ConfigError("a witness key must be a cosignature (type 0x04) key")
        self.signer = signer
        self.logs: dict[str, list[Ed25519Verifier]] = {}
        for key in logs:
            v = new_verifier(key) if isinstance(key, str) else key
            if not isinstance(v, Ed25519Verifier):
                raise ConfigError(f"log key {v.name} is not an Ed25519 (type 0x01) key")
            self.logs.setdefault(v.name, []).append(v)
        self.state_path = state_path
        self._lock = threading.Lock()
        self._state: dict[str, dict[str, Any]] = {}
        if state_path is not None and state_path.exists():
            try:
                self._state = json.loads(state_path.read_text())
            except (OSError, ValueError) as exc:
                raise ConfigError("cannot read the witness state", obj=str(state_path)) from exc

    @property
    def name(self) -> str:
        """The witness's key name."""
        return self.signer.name

    @property
    def vkey(self) -> str:
        """The witness's verifier key string (type 0x04)."""
        return self.signer.vkey

    def latest(self, origin: str) -> tuple[int, bytes | None]:
        """``(size, root)`` of the latest checkpoint cosigned for ``origin``."""
        entry = self._state.get(origin)
        if entry is None:
            return 0, None
        return int(entry["size"]), base64.b64decode(entry["root"])

    def add_checkpoint(self, body: bytes) -> tuple[int, str, str]:
        """Handle one request body: ``(status, content type, response body)``."""
        try:
            return 200, "text/plain; charset=utf-8", self._add(body)
        except _Reject as r:
            if r.status == 409 and r.size is not None:
                return 409, SIZE_CONTENT_TYPE, f"{r.size}\n"
            return r.status, "text/plain; charset=utf-8", f"{r}\n"

    def _add(self, body: bytes) -> str:
        req = parse_add_checkpoint(body)
        try:
            text, _ = parse_note(req.checkpoint)
            cp = Checkpoint.parse(text)
        except IntegrityError as exc:
            raise _Reject(400, f"malformed checkpoint: {exc.message}") from exc
        verifiers = self.logs.get(cp.origin)
        if not verifiers:
            raise _Reject(404, f"unknown log origin {cp.origin!r}")
        try:
            open_note(req.checkpoint, verifiers)
        except NoteError as exc:
            raise _Reject(403, f"checkpoint not signed by a trusted log key: {exc.message}") from exc
        if req.old_size > cp.size:
            raise _Reject(400, f"old size {req.old_size} is larger than the checkpoint size")
        with self._lock:
            size, root = self.latest(cp.origin)
            if req.old_size != size:
                raise _Reject(409, "old size is stale", size)
            if req.old_size == cp.size:
                if root is not None and root != cp.root:
                    log.warning("fork: %s size %d has two roots", cp.origin, cp.size)
                    raise _Reject(409, "same size, different root", size)
            elif req.old_size == 0:
                if req.proof:
                    raise _Reject(400, "the consistency proof from size 0 must be empty")
            else:
                assert root is not None
                try:
                    verify_consistency(req.old_size, cp.size, req.proof, root, cp.root)
                except InvalidProof as exc:
                    log.warning("bad consistency proof from %s: %s", cp.origin, exc)
                    raise _Reject(422, f"consistency proof does not verify: {exc.message}") from exc
            if (size, root) != (cp.size, cp.root):
                self._state[cp.origin] = {
                    "size": cp.size,
                    "root": base64.b64encode(cp.root).decode(),
                    "checkpoint": text,
                    "note": req.checkpoint,
                }
                if self.state_path is not None:
                    write_atomically(self.state_path, json.dumps(self._state, indent=1).encode())
            sig = self.signer.sign(text)
        return signature_line(self.signer.name, self.signer.key_id, sig)

    def latest_checkpoint(self, origin: str) -> tuple[int, str, str]:
        """``GET /latest-checkpoint``: ``(status, content type, body)``; 404 when none."""
        plain = "text/plain; charset=utf-8"
        if origin not in self.logs:
            return 404, plain, f"unknown log origin {origin!r}\n"
        with self._lock:
            entry = self._state.get(origin)
            if entry is None:
                return 404, plain, f"nothing cosigned yet for {origin!r}\n"
            text = str(entry["checkpoint"])
            note = str(entry.get("note") or text + "\n")
            line = signature_line(self.signer.name, self.signer.key_id, self.signer.sign(text))
        return 200, plain, add_signature_lines(note, [line])


def create_app(witness: Witness) -> Starlette:
    """The witness's HTTP app: ``POST /add-checkpoint``, ``GET /latest-checkpoint``."""

    async def add_checkpoint(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("request too large\n", status_code=413)
        status, content_type, text = witness.add_checkpoint(body)
        return Response(text, status_code=status, media_type=content_type)

    async def about(_: Request) -> Response:
        return PlainTextResponse(f"strongroom witness\n{witness.vkey}\n")

    async def latest_checkpoint(request: Request) -> Response:
        status, content_type, text = witness.latest_checkpoint(
            request.query_params.get("origin", ""))
        return Response(text, status_code=status, media_type=content_type)

    return Starlette(routes=[
        Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
        Route("/latest-checkpoint", latest_checkpoint, methods=["GET"]),
        Route("/", about, methods=["GET"]),
    ])


class WitnessClient:
    """Submits checkpoints to one witness and checks the cosignatures it returns."""

    def __init__(
        self,
        url: str,
        vkey: str | CosignatureVerifier,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        v = new_verifier(vkey) if isinstance(vkey, str) else vkey
        if not isinstance(v, CosignatureVerifier):
            raise ConfigError(f"witness key {v.name} is not a cosignature (type 0x04) key")
        self.url = url.rstrip("/")
        self.verifier = v
        self._client = client or httpx.Client(timeout=timeout)

    @property
    def name(self) -> str:
        """The witness's key name."""
        return self.verifier.name

    def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: str) -> list[str]:
        """POST ``add-checkpoint``; return this witness's verified cosignature lines."""
        body = f"old {old_size}\n" + "".join(
            base64.b64encode(h).decode() + "\n" for h in proof
        ) + "\n" + note
        try:
            resp = self._client.post(f"{self.url}/add-checkpoint", content=body.encode())
        except httpx.HTTPError as exc:
            raise WitnessError(f"witness unreachable: {type(exc).__name__}", obj=self.name) from exc
        if resp.status_code == 409 and resp.headers.get("content-type", "").startswith(
            SIZE_CONTENT_TYPE
        ):
            size_text = resp.text.strip()
            if not _SIZE.fullmatch(size_text):
                raise WitnessError("409 with a malformed size", obj=self.name)
            raise WitnessConflict(int(size_text), self.name)
        if resp.status_code == 422:
            raise WitnessProofRejected(old_size, self.name, resp.text.strip()[:200])
        if resp.status_code != 200:
            raise WitnessError(
                f"witness answered {resp.status_code}: {resp.text.strip()[:200]}", obj=self.name
            )
        text, _ = parse_note(note)
        mine = []
        for line in resp.text.splitlines():
            if not line:
                continue
            try:
                opened = open_note(text + "\n" + line + "\n", [self.verifier])
            except NoteError:
                continue  # another key's line (ignored), or not a valid cosignature
            mine += [s.line for s in opened.sigs]
        if not mine:
            raise WitnessError("response carries no valid cosignature from its key", obj=self.name)
        return mine

    def latest(self, origin: str, timeout: float | None = None) -> WitnessView | None:
        """The latest checkpoint this witness cosigned for ``origin``; None when it has none."""
        try:
            resp = self._client.get(f"{self.url}/latest-checkpoint", params={"origin": origin},
                                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise WitnessError(f"witness unreachable: {type(exc).__name__}", obj=self.name) from exc
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise WitnessError(
                f"witness answered {resp.status_code}: {resp.text.strip()[:200]}", obj=self.name
            )
        try:
            opened = open_note(resp.text, [self.verifier])
            cp = Checkpoint.parse(opened.text)
        except IntegrityError as exc:
            raise WitnessError(f"its latest checkpoint does not verify: {exc.message}",
                               obj=self.name) from exc
        if cp.origin != origin:
            raise WitnessError(f"asked for {origin!r}, it answered for {cp.origin!r}",
                               obj=self.name)
        return WitnessView(self.name, cp, resp.text)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()
