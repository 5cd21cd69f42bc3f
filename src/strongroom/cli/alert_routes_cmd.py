"""``strongroom alerts outbox|test``: the alert routes of ``alerts.yaml`` seen from a vault host.

Both read this host's ``alerts.yaml`` (``STRONGROOM_ALERTS_CONFIG`` names
another) and database, so they run on a host of the deployment, never over
``STRONGROOM_URL``. ``outbox`` lists the deliveries still pending or failed
(``--requeue-failed ROUTE`` sends a route's failed ones again); ``test`` sends a
synthetic alert (rule ``SR-TEST``) to one route at once and exits 1 when the
receiver did not take it. Route targets are shown without their secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from strongroom.cli import render

if TYPE_CHECKING:
    from strongroom.monitor.alert_outbox import RouteOutbox

__all__ = ["add_commands"]

_out = Console(highlight=False, soft_wrap=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _routes_outbox() -> RouteOutbox:
    """The outbox of this host's alerts.yaml over this host's database."""
    from strongroom.datadir import require_vault
    from strongroom.monitor.alert_config import alerts_config_path, load_alerts_config
    from strongroom.monitor.alert_outbox import RouteOutbox
    from strongroom.settings import Settings
    from strongroom.store.db import Store

    settings = Settings()
    config = load_alerts_config(alerts_config_path(settings.resolved_home))
    require_vault(settings.resolved_home, settings.database_url)  # creates nothing
    store = Store.open(settings.resolved_database_url, schema="current")
    return RouteOutbox(store, config)


def alerts_outbox(
    all_: Annotated[bool, typer.Option("--all", help="include delivered and skipped")] = False,
    requeue: Annotated[str | None, typer.Option(
        "--requeue-failed", metavar="ROUTE", help="send ROUTE's failed deliveries again")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="how many")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Alert deliveries to the routes of alerts.yaml still pending or failed (oldest first)."""
    outbox = _routes_outbox()
    try:
        if requeue is not None:
            _out.print(f"{outbox.requeue_failed(requeue)} failed deliveries to {requeue} queued "
                       "again", markup=False)
            return
        states = ("pending", "failed", "delivered", "skipped") if all_ else ("pending", "failed")
        entries = [e.to_dict() for e in outbox.entries(states=states, limit=limit)]
    finally:
        outbox.store.close()
    if as_json:
        render.print_json({"routes": [{"name": r.name, "type": r.type, "target": r.target()}
                                      for r in outbox.config.routes], "deliveries": entries})
        return
    for r in outbox.config.routes:
        _out.print(f"route {r.name}: {r.type} -> {r.target()}", markup=False)
    if not outbox.config.routes:
        _out.print("no alert routes configured (alerts are stored and listed by `alerts ls`)")
    if not entries:
        _out.print("outbox empty: every alert was delivered to every route it passes")
    for e in entries:
        nxt = f", next try {render.stamp(e['next_attempt_at'])}" if e["next_attempt_at"] else ""
        gone = "" if e["configured"] else " (route no longer in alerts.yaml)"
        error = f": {e['last_error']}" if e["last_error"] else ""
        _out.print(f"#{e['id']} alert {e['alert_id']} {e['severity']} {e['rule']} -> "
                   f"{e['route']}{gone} {e['state']} after {e['attempts']} attempts{nxt}{error}",
                   markup=False)


def alerts_test(
    route: Annotated[str, typer.Argument(help="a route name from alerts.yaml")],
    as_json: JsonOpt = False,
) -> None:
    """Send a test alert (rule SR-TEST) to ROUTE now and report whether the receiver took it."""
    outbox = _routes_outbox()
    outbox.store.close()
    target = outbox.config.route(route)
    key, outcome = outbox.send_test(route)
    if as_json:
        render.print_json({"route": route, "target": target.target(), "idempotency_key": key,
                           "state": outcome.state, "error": outcome.error})
    elif outcome.state == "delivered":
        _out.print(f"route {route} ({target.target()}): test alert {key} delivered",
                   markup=False)
    else:
        _out.print(f"route {route} ({target.target()}): test alert NOT delivered: "
                   f"{outcome.error}", markup=False)
    if outcome.state != "delivered":
        raise typer.Exit(1)


def add_commands(alerts: typer.Typer) -> None:
    """Add ``outbox`` and ``test`` to the ``alerts`` group."""
    alerts.command("outbox")(alerts_outbox)
    alerts.command("test")(alerts_test)
