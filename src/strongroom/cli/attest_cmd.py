"""``strongroom attest``: verify confidential-computing evidence offline.

``attest verify REPORT --vcek VCEK.pem`` checks an AMD SEV-SNP report against
AMD's roots shipped with strongroom (``--platform tdx QUOTE --collateral
collateral.json``: an Intel TDX quote, through dcap-qvl) and prints the facts an attestation policy
judges (platform, measurement, report data, TCB, chip id). Any failed check
exits non-zero (6) and names the check; with ``--json`` the refusal is also
printed as ``{"verified": false, "check": ..., "error": ...}``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from strongroom.attest.evidence import Collateral, platform_named
from strongroom.cli.render import print_json
from strongroom.errors import AttestationRefused, InvalidInput

attest_app = typer.Typer(help="Confidential-computing evidence: verify it offline.",
                         no_args_is_help=True)
_out = Console(highlight=False, soft_wrap=True)

#: Evidence files larger than this are not evidence (a report is 1184 bytes, a TDX quote ~5 KiB).
MAX_EVIDENCE = 1 << 20


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_EVIDENCE:
            raise InvalidInput(f"{path} is larger than {MAX_EVIDENCE} bytes", obj=what,
                               remedy="give the raw report or quote file")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path} ({exc.strerror})", obj=what,
                           remedy="check the path") from exc


@attest_app.command("verify")
def verify(
    evidence: Annotated[Path, typer.Argument(help="the raw evidence (an SEV-SNP report, a TDX quote)")],
    vcek: Annotated[Path | None, typer.Option(
        "--vcek", help="the VCEK/VLEK certificate (PEM or DER) the report was signed with")] = None,
    collateral: Annotated[list[Path] | None, typer.Option(
        "--collateral", help="PEM file of further certificates (ASK/ASVK, KDS cert_chain) "
                             "and CRLs, or TDX collateral JSON; repeatable")] = None,
    platform: Annotated[str, typer.Option("--platform", help="sev-snp or tdx")] = "sev-snp",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False,
) -> None:
    """Verify EVIDENCE against the vendor's roots; print what it proves, or the check that failed."""
    verifier = platform_named(platform)
    blobs = [_read(p, "collateral") for p in ([vcek] if vcek else []) + list(collateral or [])]
    given = Collateral.from_pem(*blobs)
    try:
        ev = verifier.verify(_read(evidence, "evidence"), given, now=datetime.now(UTC))
    except AttestationRefused as exc:
        if as_json:
            print_json({"verified": False, "platform": platform, "check": exc.check,
                        "error": exc.message})
        raise
    if as_json:
        print_json(ev.as_json())
        return
    _out.print(f"verified {ev.platform} evidence ({ev.details.get('product', '')})")
    _out.print(f"  measurement  {ev.measurement}")
    _out.print(f"  report data  {ev.report_data.hex()}")
    _out.print("  tcb          " + ", ".join(f"{k} {v}" for k, v in ev.tcb.items()))
    _out.print(f"  chip id      {ev.chip_id or '(masked)'}")


def register(app: typer.Typer) -> None:
    """Add ``attest`` to the root app."""
    app.add_typer(attest_app, name="attest")
