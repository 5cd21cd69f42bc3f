"""The step registry and the moves every step shares: attempt something, ask the gate.

Register a step with :func:`step`; it lands in :data:`STEPS` under its name.
:func:`attempt` runs one try and records a refusal instead of raising;
:func:`ask_gate` builds a release request as a person would (signed evidence,
read from the manifest) and sends it to the target's gate, recording what
happened. Steps never decide an outcome: the grader does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from strongroom.errors import StrongroomError
from strongroom.redteam.context import RunContext
from strongroom.redteam.target import ARTIFACT

if TYPE_CHECKING:
    from strongroom.release import ReleaseRequest

__all__ = ["SHARD", "STEPS", "Step", "ask_gate", "attempt", "release_request", "send_request",
           "shard_of", "step"]

Step = Callable[..., None]
STEPS: dict[str, Step] = {}
SHARD = "model.safetensors"


def step(name: str) -> Callable[[Step], Step]:
    """Register a step under ``name``."""
    def register(fn: Step) -> Step:
        STEPS[name] = fn
        return fn
    return register


def attempt(ctx: RunContext, label: str, fn: Callable[[], Any]) -> Any:
    """Run one attempt; a refusal (StrongroomError) is recorded, not raised."""
    try:
        result = fn()
    except StrongroomError as exc:
        ctx.saw(label, exc)
        return None
    ctx.saw(f"{label}: went through")
    return result


def ask_gate(ctx: RunContext, who: str, *, resource: str = ARTIFACT, purpose: str = "load",
             grant: str | None = None, break_glass: str | None = None,
             blob_of: str | None = None, evidence: str | None = None,
             nbytes: int | None = None) -> str | None:
    """Ask the target's gate for a shard's file key as ``who``; the evidence sent (or None)."""
    request = release_request(ctx, who, resource=resource, purpose=purpose, grant=grant,
                               break_glass=break_glass, blob_of=blob_of, evidence=evidence,
                               nbytes=nbytes)
    send_request(ctx, who, request)
    return request.evidence


def release_request(ctx: RunContext, who: str, *, resource: str = ARTIFACT,
                     purpose: str = "load", grant: str | None = None,
                     break_glass: str | None = None, blob_of: str | None = None,
                     evidence: str | None = None, nbytes: int | None = None,
                     shard: str | None = None) -> ReleaseRequest:
    """The release request ``who`` would send (signed evidence, read from the manifest), for
    ``shard`` (default: :func:`shard_of` the manifest)."""
    from strongroom.access.evidence import make_evidence
    from strongroom.release import ReleaseRequest

    t = ctx.target
    ident = ctx.person(who)
    manifest = t.vault.manifest(resource)
    source = t.vault.manifest(blob_of) if blob_of else manifest
    shard = shard or shard_of(manifest)
    entry = next(f for f in source.files if f.path == shard)
    if evidence is None:
        evidence = make_evidence(ident.private_key, artifact=manifest.ref, shard=shard,
                                 blob_id=entry.blob, purpose=purpose, grant=grant,
                                 break_glass=break_glass)
    return ReleaseRequest(principal=ident.public.principal,
                          principal_key=ident.public.public_bytes, artifact=manifest.ref,
                          shard=shard, blob_id=entry.blob,
                          nbytes=entry.size if nbytes is None else nbytes,
                          purpose=purpose, evidence=evidence)


def shard_of(manifest: Any) -> str:
    """The shard a scenario asks for: ``model.safetensors``, else the manifest's first file
    (a document's, or a live deployment's model stored under another name)."""
    paths = [f.path for f in manifest.files]
    return SHARD if manifest.kind != "document" and SHARD in paths else paths[0]


def send_request(ctx: RunContext, who: str, request: ReleaseRequest) -> None:
    """Send ``request`` to the target's gate as ``who``; what happened is recorded."""
    t = ctx.target

    def go() -> bool:
        key = t.keys.release(request)
        key[:] = bytes(len(key))
        return True

    ctx.vars[f"last_evidence:{who}"] = request.evidence
    released = attempt(ctx, f"{ctx.actor(who)} asks the gate for {request.obj} ({request.purpose})",
                    go)
    ctx.vars.setdefault("released", []).append(bool(released))
