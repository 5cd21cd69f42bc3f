"""Steps against key custody: operations on a sealed keyring, replayed unseal shares, HSM PINs."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from strongroom.redteam.context import RunContext
from strongroom.redteam.steps.registry import SHARD, attempt, step
from strongroom.redteam.target import ARTIFACT

if TYPE_CHECKING:
    from strongroom.redteam.lent import HostShell
    from strongroom.redteam.live import LiveTarget


def _host(ctx: RunContext) -> HostShell:
    """The shell on the serving host a live target was given (``host-shell``)."""
    host = cast("LiveTarget", ctx.target).host
    assert host is not None  # the runner runs a host-shell scenario only with one
    return host


@step("sealed_key_operations")
def sealed_key_operations(ctx: RunContext) -> None:
    """On a server process whose keyring is sealed, try release, wrap and sign.

    Live (``host-shell``): the attacker starts that process on the serving host, over the
    database the host's settings name; the deployment's own agent stays unsealed beside it.
    """
    from strongroom.keys.config import KeysSettings
    from strongroom.keys.identity import Identity
    from strongroom.runtime.services import LocalKeyService

    t = ctx.target
    store = _host(ctx).store() if t.kind == "live" else t.store
    sealed = LocalKeyService(store, KeysSettings(key_backend="shamir"),
                             actor=ctx.actor("attacker"))
    ctx.vars["sealed_service"] = sealed
    blob = ctx.target.vault.manifest(ARTIFACT).file(SHARD).blob
    from strongroom.release import ReleaseRequest

    ident = Identity.generate(f"attacker-{ctx.marker}")  # the attacker's own key
    req = ReleaseRequest(principal=ctx.actor("attacker"), principal_key=ident.public.public_bytes,
                         artifact=f"{ARTIFACT}@1", shard=SHARD, blob_id=blob, nbytes=1,
                         purpose="load", evidence="{}")
    attempt(ctx, "release on a sealed keyring", lambda: sealed.release(req))
    attempt(ctx, "wrap on a sealed keyring", lambda: sealed.wrap_file_key("x" * 16, bytes(16)))
    attempt(ctx, "sign a manifest on a sealed keyring", lambda: sealed.sign("manifest", b"forged"))


@step("replay_share")
def replay_share(ctx: RunContext) -> None:
    """A share submission captured in one unseal ceremony is replayed into the next."""
    from strongroom.keys import ceremony
    from strongroom.keys.config import KeysSettings
    from strongroom.runtime.services import LocalKeyService

    t = ctx.target
    svc = LocalKeyService(t.store, KeysSettings(key_backend="shamir"),
                          actor=ctx.actor("attacker"))
    ctx.vars["sealed_service"] = svc
    content = ceremony.read_share_file(t.share_files[0], [t.custodians[0]])
    captured = ceremony.build_submission(svc.status(), content)
    svc.reset()  # a new ceremony starts (the next unseal)
    ctx.vars["progress_before"] = svc.status().progress
    attempt(ctx, "replayed share submitted to the next ceremony",
         lambda: svc.submit_share(captured))


@step("close_sealed_service")
def close_sealed_service(ctx: RunContext) -> None:
    """Cleanup: forget the extra keyring service."""
    svc = ctx.vars.pop("sealed_service", None)
    if svc is not None:
        svc.seal()


@step("guess_hsm_pin")
def guess_hsm_pin(ctx: RunContext, guesses: int = 8) -> None:
    """In a separate process with its own SoftHSM token, guess the user PIN."""
    from strongroom.redteam.hsm import run_pin_guessing

    result = run_pin_guessing(ctx.target.root / f"hsm-{ctx.marker}", guesses=guesses,
                              actor=ctx.actor("attacker"))
    ctx.vars["hsm"] = result
    ctx.saw(f"{guesses} PIN guesses in a separate process: {result.get('summary', '')}")
