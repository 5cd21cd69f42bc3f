"""``strongroom keyserver``: run one threshold key server (its own home, database, keyring and log).

A key server is initialised like a vault (``STRONGROOM_HOME=/srv/ks-a strongroom init
--custodian ... --threshold K``: its own custodians and officers), then
``strongroom keyserver serve`` listens; its custodians unseal it over
``POST /v1/keyserver/unseal`` and its officers set it up and run key
generation with signed statements (docs/threshold.md).
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["register"]

keyserver_app = typer.Typer(help="A threshold key server (k of n release file keys).", no_args_is_help=True)


@keyserver_app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8430,
) -> None:
    """Serve this data directory's key server (status, unseal, admin, partial decryptions)."""
    import uvicorn

    from strongroom.datadir import require_vault
    from strongroom.runtime.keyserver import KeyServer
    from strongroom.runtime.keyserver_app import create_app
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    settings = Settings()
    require_vault(settings.resolved_home, settings.database_url)
    store = Store.open(settings.resolved_database_url)
    server = KeyServer(store)
    typer.echo(f"key server for {settings.resolved_home} on http://{host}:{port}", err=True)
    try:
        uvicorn.run(create_app(server), host=host, port=port, log_level="warning")
    finally:
        server.svc.close()
        store.close()


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(keyserver_app, name="keyserver")
