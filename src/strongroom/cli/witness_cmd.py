"""``strongroom witness``: run a C2SP tlog-witness and manage its key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.errors import ConfigError, InvalidInput
from strongroom.outputs import write_output

if TYPE_CHECKING:
    from strongroom.crypto.note import CosignatureSigner

witness_app = typer.Typer(help="A transparency-log witness (C2SP tlog-witness).",
                          no_args_is_help=True)


def _load_signer(path: Path) -> CosignatureSigner:
    from strongroom.crypto.note import CosignatureSigner, new_signer

    try:
        signer = new_signer(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise ConfigError(f"cannot read the witness key ({exc.strerror})", obj=str(path)) from exc
    if not isinstance(signer, CosignatureSigner):
        raise InvalidInput("not a witness (cosignature) key", obj=str(path))
    return signer


@witness_app.command()
def keygen(
    name: Annotated[str, typer.Option("--name", help="witness name, e.g. witness.example/w1")],
    out: Annotated[Path, typer.Option("--out", "-o", help="file for the private key (0600)")],
) -> None:
    """Create a witness key; print its verifier key."""
    from strongroom.crypto.note import SIG_COSIGNATURE_V1, generate_key

    skey, vkey = generate_key(name, SIG_COSIGNATURE_V1)
    write_output(out, (skey + "\n").encode("utf-8"), overwrite=False)
    typer.echo(vkey)


@witness_app.command("key")
def show_key(key: Annotated[Path, typer.Option("--key", help="witness private key file")]) -> None:
    """Print the verifier key of a witness key file."""
    typer.echo(_load_signer(key).vkey)


@witness_app.command()
def serve(
    key: Annotated[Path, typer.Option("--key", help="witness private key file")],
    log: Annotated[list[str], typer.Option("--log", help="trusted log verifier key (repeatable)")],
    state: Annotated[Path, typer.Option("--state", help="where the witness keeps its view")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 7380,
) -> None:
    """Serve POST /add-checkpoint for the given logs."""
    import uvicorn

    from strongroom.audit.witness import Witness, create_app

    witness = Witness(_load_signer(key), log, state_path=state)
    typer.echo(f"witness {witness.vkey} on http://{host}:{port}", err=True)
    uvicorn.run(create_app(witness), host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(witness_app, name="witness")
