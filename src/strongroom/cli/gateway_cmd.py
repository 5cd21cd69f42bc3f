"""``strongroom gateway``: serve a model's outputs (never its weights); sign and check code releases."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from strongroom.attest.enclave import Enclave

gateway_app = typer.Typer(help="The hardened inference gateway (output-only access).",
                          no_args_is_help=True)

OwnerOpt = Annotated[list[Path], typer.Option("--code-owner", help="a code owner's public key file (repeatable)")]
ThresholdOpt = Annotated[int, typer.Option("--threshold", help="code owners' signatures required")]


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"{what} not found", obj=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {what} ({type(exc).__name__})", obj=str(path)) from exc


@gateway_app.command("sign-release")
def sign_release_cmd(
    identity: Annotated[list[Path], typer.Option("--identity", help="a code owner's identity file (repeatable)")],
    out: Annotated[Path, typer.Option("--out", help="release file: created, or co-signed if it exists")],
) -> None:
    """Sign the installed strongroom code as a release (or add your signature to one)."""
    from strongroom.gateway.codesign import add_signature, sign_release
    from strongroom.keys.identity import Identity
    from strongroom.outputs import write_output

    identities = [Identity.load(p) for p in identity]
    if out.exists():
        envelope = _read(out, "release")
        for ident in identities:
            envelope = add_signature(envelope, ident)
        write_output(out, (envelope + "\n").encode("utf-8"))
        typer.echo(f"co-signed {out} as {', '.join(i.public.principal for i in identities)}")
        return
    envelope = sign_release(identities)
    write_output(out, (envelope + "\n").encode("utf-8"), overwrite=False)
    typer.echo(f"wrote {out}, signed by {', '.join(i.public.principal for i in identities)}")


@gateway_app.command("verify-release")
def verify_release_cmd(release: Path, code_owner: OwnerOpt, threshold: ThresholdOpt = 2) -> None:
    """Check the installed code against a release signed by THRESHOLD code owners."""
    from strongroom.gateway.codesign import verify_release
    from strongroom.keys.identity import PublicIdentity

    signed = verify_release(_read(release, "release").strip(),
                            [PublicIdentity.load(p) for p in code_owner], threshold)
    typer.echo(f"ok: {len(signed.files)} modules of strongroom {signed.version} match the release "
               f"signed by {', '.join(signed.signers)}")


@gateway_app.command("serve")
def serve(
    artifact: str,
    release: Annotated[Path, typer.Option("--release", help="signed code release file")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8700,
    precision: Annotated[int, typer.Option(help="decimal places returned")] = 4,
    max_dimensions: Annotated[int | None, typer.Option(help="most components returned")] = None,
    attest: Annotated[str | None, typer.Option(
        "--attest", metavar="sev-snp|tdx",
        help="load the weights as an attested workload: keys are released wrapped to this "
             "process's ephemeral key, on this confidential VM's evidence")] = None,
    attest_collateral: Annotated[list[Path] | None, typer.Option(
        "--attest-collateral", metavar="FILE",
        help="collateral the guest cannot supply itself (a VCEK from AMD's KDS, TDX TCB "
             "info and QE identity), sent with the evidence (repeatable)")] = None,
    query_budget: Annotated[int | None, typer.Option(
        help="texts one caller may send per day (default 20000); past it requests are "
             "refused and a query-budget alert is raised")] = None,
) -> None:
    """Load ARTIFACT through key release and serve POST /v1/embeddings (only).

    The gateway acts as STRONGROOM_IDENTITY, a service principal that must hold
    a load Grant on ARTIFACT. Callers are the principals the security officers
    enrolled; each needs an infer Grant on ARTIFACT (and Cedar's infer). The code
    release must be signed by the code owners the officers pinned
    (`strongroom gateway owners set`). With --attest, each file key is released
    wrapped to this process's ephemeral key on the confidential VM's evidence.
    """
    import uvicorn

    from strongroom.gateway import (
        AuditAlertSink,
        GatewayConfig,
        OutputPolicy,
        create_app,
        start_gateway,
    )
    from strongroom.gateway.access import DirectoryCallers, GrantAuthorizer, directory_reader
    from strongroom.gateway.defence import LimitsConfig
    from strongroom.gateway.owners import require_owners
    from strongroom.runtime.services import open_vault

    enclave = _enclave(attest, attest_collateral or [])
    if query_budget is not None and query_budget < 1:
        raise InvalidInput("the query budget must be at least 1 text", obj="--query-budget",
                           remedy="e.g. --query-budget 20000")
    limits = LimitsConfig() if query_budget is None else LimitsConfig(
        principal_budget=query_budget)
    config = GatewayConfig(output=OutputPolicy(precision=precision, max_dimensions=max_dimensions),
                           limits=limits)
    with open_vault() as vault:
        vault.enclave = enclave
        threshold_officers = vault.keys.status().officer_threshold
        reader = directory_reader(vault.store, vault.keys.public_keys(), threshold_officers)
        manifest = vault.manifest(artifact)
        owners, threshold = require_owners(reader)
        gw = start_gateway(
            vault, artifact, release=_read(release, "release").strip(),
            code_owners=owners, threshold=threshold,
            auth=DirectoryCallers(reader), authorizer=GrantAuthorizer(vault.store, reader, manifest),
            alerts=AuditAlertSink(vault.audit), config=config, version=manifest.version,
        )
        try:
            assert gw.memory is not None
            typer.echo(f"serving {gw.model_ref} on http://{host}:{port}/v1/embeddings to enrolled "
                       f"principals holding an infer grant; loaded as {vault.actor}")
            typer.echo(gw.memory.describe())
            if enclave is not None:
                typer.echo(f"weights loaded as an attested workload ({enclave.platform}): "
                           "each file key was released wrapped to this process's ephemeral key")
            uvicorn.run(create_app(gw), host=host, port=port, log_level="warning",
                        access_log=False, lifespan="off")
        finally:
            gw.close()


def _enclave(attest: str | None, collateral: list[Path]) -> Enclave | None:
    """This process as an enclave on ``attest`` (None without --attest), or a named error."""
    from strongroom.attest.enclave import Enclave, evidence_source

    if attest is None:
        if collateral:
            raise InvalidInput("--attest-collateral needs --attest", obj="--attest-collateral",
                               remedy="add --attest sev-snp or --attest tdx")
        return None
    if attest not in ("sev-snp", "tdx"):
        raise InvalidInput(f"cannot attest as {attest!r}", obj="--attest",
                           remedy="use --attest sev-snp or --attest tdx")
    blobs = [_read_bytes(p, "attestation collateral") for p in collateral]
    return Enclave(evidence_source(attest, blobs))


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{what} not found", obj=str(path)) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} ({exc.strerror})", obj=str(path)) from exc


owners_app = typer.Typer(help="Code owners pinned by the security officers.",
                         no_args_is_help=True)
gateway_app.add_typer(owners_app, name="owners")


@owners_app.command("set")
def owners_set(code_owner: OwnerOpt, threshold: ThresholdOpt = 2) -> None:
    """Sign (as an officer) the gateway's code owners; counts once k officers signed."""
    import time

    from strongroom.access import statements
    from strongroom.cli.access_cmd import open_context
    from strongroom.gateway.owners import KIND, SUBJECT, CodeOwners, publish_owners
    from strongroom.keys.identity import PublicIdentity

    owners = tuple(PublicIdentity.load(p) for p in code_owner)
    vault, ctx = open_context()
    with vault:
        keys = ctx.officer_keys()
        previous = [int(statements.unverified_payload(e).get("serial", 0))
                    for e in statements.envelopes(vault.store, KIND, subject=SUBJECT)]
        pinned = CodeOwners(owners, threshold, serial=max(previous, default=0) + 1,
                            issued=int(time.time()))
        digest = publish_owners(vault.store, pinned.sign(*keys, pq=ctx.officer_pq()))  # type: ignore[arg-type]
        vault.record("gateway.owners", SUBJECT, "allow", statement=digest,
                     owners=[o.principal for o in owners], threshold=threshold,
                     serial=pinned.serial)
        typer.echo(f"code owners {digest[:16]} (serial {pinned.serial}): "
                   f"{threshold} of {', '.join(o.principal for o in owners)}; signed by "
                   f"{ctx.name}, counts once {ctx.reader.threshold} officer(s) signed "
                   "(`strongroom people cosign`)")


@owners_app.command("show")
def owners_show() -> None:
    """The code owners in force (signed by k officers)."""
    from strongroom.cli.access_cmd import open_context
    from strongroom.gateway.owners import pinned_owners

    vault, ctx = open_context()
    with vault:
        found = pinned_owners(ctx.reader)
    if found is None:
        typer.echo("no code owners pinned: `strongroom gateway owners set`")
        return
    typer.echo(f"serial {found.serial}: {found.threshold} of "
               + ", ".join(f"{o.principal} ({o.key_id})" for o in found.owners))


def register(app: typer.Typer) -> None:
    """Add ``strongroom gateway`` to the main app."""
    app.add_typer(gateway_app, name="gateway")
