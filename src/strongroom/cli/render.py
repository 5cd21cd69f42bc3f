"""How the CLI shows results: units, times, and one renderer per result type.

A command gets its result as plain values from the service
(:mod:`strongroom.service`: the same rows whether it read the local vault or
the server's API) and hands it to one function here,
so ``strongroom weights ls`` prints the same table, units and JSON keys
embedded and with ``STRONGROOM_URL`` set; the two paths cannot drift::

    render.artifacts(service.weights_ls(), as_json)   # embedded or remote: the same rows

Units: :func:`human_bytes` (``1.5 GiB``) and :func:`duration` (``4 h``), the
console's own formatters from :mod:`strongroom.units`; times:
:func:`stamp` (``2026-05-01T10:00:00Z``, UTC). ``--json`` output is indented,
key-sorted JSON whose keys docs/cli.md lists per command; sizes there are
plain byte counts and times the same UTC stamps.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from strongroom import units
from strongroom.timefmt import parse_utc, utc_stamp
from strongroom.units import human_bytes

__all__ = [
    "alerts", "artifacts", "audit_entries", "compartments", "documents", "duration",
    "egress", "human_bytes", "imported", "keyring_status", "manifest", "manifest_size",
    "people", "print_json", "public_keys", "stamp", "verified",
]

_out = Console(highlight=False, soft_wrap=True)


# -- units and times -------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """A span as people say it (:func:`strongroom.units.duration`); an infinite one is a
    zero cap's time to exfiltrate: ``never (cap 0)``."""
    return "never (cap 0)" if seconds == float("inf") else units.duration(seconds)


def stamp(when: str | datetime | float | None) -> str:
    """A time as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), from ISO text, a datetime or epoch seconds."""
    if when is None or when == "":
        return "-"
    if isinstance(when, datetime):
        when = when.isoformat()
    return utc_stamp(when if isinstance(when, (int, float)) else parse_utc(when))


def print_json(value: Any) -> None:
    """``--json`` output: indented, keys sorted (stable for scripts)."""
    typer.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def _table(*columns: str) -> Table:
    return Table(*columns)


# -- weights ----------------------------------------------------------------------------------


def artifacts(rows: Iterable[Mapping[str, Any]], as_json: bool) -> None:
    """``weights ls``: rows with name, version, kind, files, total_size, created."""
    listed = [{"name": r["name"], "version": r["version"], "kind": r["kind"],
               "files": r["files"], "bytes": r["total_size"], "created": stamp(r["created"])}
              for r in rows]
    if as_json:
        print_json(listed)
        return
    table = _table("name", "version", "files", "size", "created")
    for r in listed:
        table.add_row(r["name"], str(r["version"]), str(r["files"]), human_bytes(r["bytes"]),
                      r["created"])
    _out.print(table)


def manifest_size(m: Mapping[str, Any]) -> int:
    """Plaintext bytes of every file of a manifest (``Manifest.to_json()`` form)."""
    return sum(int(f["size"]) for f in m["files"])


def manifest(m: Mapping[str, Any], as_json: bool) -> None:
    """``weights show``: the verified manifest (``--json``: exactly as signed)."""
    if as_json:
        print_json(dict(m))
        return
    _out.print(f"[bold]{m['name']}@{m['version']}[/] ({m['kind']}), created {stamp(m['created'])}")
    _out.print(f"compartments: {', '.join(m['compartments']) or '(none)'}")
    table = _table("file", "kind", "size", "sha256")
    for f in m["files"]:
        table.add_row(f["path"], f["kind"], human_bytes(f["size"]), f["sha256"][:16] + "…")
    _out.print(table)
    _out.print(f"{len(m['tensors'])} tensors, {human_bytes(manifest_size(m))} in all; "
               "signature verified")


def imported(ref: str, files: int, tensors: int, nbytes: int) -> None:
    """``weights import``'s closing line."""
    _out.print(f"imported [bold]{ref}[/]: {files} file(s), {tensors} tensors, "
               f"{human_bytes(nbytes)} encrypted")


def verified(ref: str, files: int, nbytes: int) -> None:
    """``weights verify``'s closing line."""
    _out.print(f"[green]ok[/] {ref}: {files} file(s), {human_bytes(nbytes)} verified")


# -- keys ----------------------------------------------------------------------------------------


def keyring_status(status: Mapping[str, Any], as_json: bool) -> None:
    """``status`` (and ``unseal``): the keyring's state, from ``KeyringStatus.to_dict()``."""
    from dataclasses import fields

    from strongroom.keys.keyring import KeyringStatus

    if as_json:
        print_json(dict(status))
        return
    known = {f.name for f in fields(KeyringStatus)}
    st = KeyringStatus.from_dict({k: v for k, v in status.items() if k in known})
    if not st.initialized:
        _out.print("initialized: no  (run `strongroom init`)")
        return
    _out.print(f"initialized: yes  vault {st.vault_id} (generation {st.generation}, "
               f"backend {st.backend})")
    _out.print(f"sealed:      {'yes' if st.sealed else 'no'}")
    if st.backend == "shamir":
        _out.print(f"threshold:   {st.threshold} of {st.shares}")
    if st.ceremony:
        _out.print(f"{st.ceremony + ':':<12} {st.progress} of {st.threshold} shares "
                   f"(ceremony {st.nonce})")
    versions = ", ".join(map(str, st.kek_versions)) or "-"
    retired = ", ".join(map(str, st.retired_versions))
    _out.print(f"KEK versions: {versions}" + (f"  (retired: {retired})" if retired else ""))


def public_keys(keys: Mapping[str, str], only: list[str], as_json: bool) -> None:
    """``keys public``: base64 raw Ed25519 keys by name (``manifest``, ``checkpoint``)."""
    chosen = {k: keys[k] for k in ("manifest", "checkpoint") if not only or k in only}
    if as_json:
        print_json(chosen)
    elif only:
        for v in chosen.values():
            typer.echo(v)
    else:
        for k, v in chosen.items():
            typer.echo(f"{k} {v}")


# -- audit and alerts ------------------------------------------------------------------------------


def audit_entries(entries: Iterable[Mapping[str, Any]], as_json: bool) -> None:
    """``audit tail``: one canonical JSON line per entry, or (``--json``) one JSON array."""
    from strongroom.audit.entry import canonical_json

    rows = [dict(e) for e in entries]
    if as_json:
        print_json(rows)
        return
    for e in rows:
        _out.print(canonical_json(e).decode(), markup=False)


def alerts(rows: Iterable[Mapping[str, Any]], as_json: bool) -> None:
    """``alerts ls``: newest first."""
    listed = [{**r, "first_seen": stamp(r["first_seen"]), "last_seen": stamp(r["last_seen"]),
               "acked_at": stamp(r["acked_at"]) if r.get("acked_at") else None} for r in rows]
    if as_json:
        print_json(listed)
        return
    if not listed:
        _out.print("no alerts")
    for a in listed:
        state = f"acked by {a['acked_by']}" if a["acked_by"] else "open"
        _out.print(f"#{a['id']} {a['severity'].upper():8} {a['rule']:15} {a['subject']:12} "
                   f"{a['object']} x{a['count']} [{state}] {a['message']}", markup=False)


def egress(budgets: list[dict[str, Any]], estimates: list[dict[str, Any]], compression: float,
           as_json: bool) -> None:
    """``monitor egress``: budgets (scope, subject, window_s, cap_bytes) and time-to-exfiltrate."""
    if as_json:
        print_json({"budgets": budgets, "artifacts": estimates})
        return
    _out.print("budgets:")
    for b in budgets:
        _out.print(f"  {b['scope']:9} {b['subject']:20} {human_bytes(b['cap_bytes'])} per "
                   f"{duration(b['window_s'])}", markup=False)
    _out.print(f"time to exfiltrate (one principal, compression {compression}):")
    if not estimates:
        _out.print("  no artifacts")
    for e in estimates:
        _out.print(f"  {e['artifact']:30} {human_bytes(e['size']):>12}  "
                   f"{duration(e['seconds']):>14} at the sustained rate; at least "
                   f"{duration(e['min_seconds'])}", markup=False)


# -- directory and documents ------------------------------------------------------------------------


def people(rows: list[dict[str, Any]], as_json: bool) -> None:
    """``people ls``: name, kind, key_id, roles, clearance, compartments, vetting, current."""
    rows = [{**p, "vetting_expires": stamp(p["vetting_expires"])} for p in rows]
    if as_json:
        print_json(rows)
        return
    table = _table("name", "kind", "key", "roles", "clearance", "compartments", "vetting")
    for p in rows:
        state = "current" if p["current"] else f"NOT CURRENT ({p['vetting']})"
        table.add_row(p["name"], p["kind"], p["key_id"], ", ".join(p["roles"]), p["clearance"],
                      ", ".join(p["compartments"]), state)
    _out.print(table)


def compartments(rows: list[dict[str, Any]], as_json: bool) -> None:
    """``compartments ls``: compartment, people, resources."""
    if as_json:
        print_json(rows)
        return
    table = _table("compartment", "people", "resources")
    for c in rows:
        table.add_row(c["compartment"], ", ".join(c["people"]), ", ".join(c["resources"]))
    _out.print(table)


def documents(rows: list[dict[str, Any]], as_json: bool) -> None:
    """``docs ls``: name, version, classification, compartments, bytes, created."""
    listed = [{**d, "created": stamp(d["created"])} for d in rows]
    if as_json:
        print_json(listed)
        return
    table = _table("document", "classification", "compartments", "size", "created")
    for d in listed:
        table.add_row(f"{d['name']}@{d['version']}", d["classification"],
                      ", ".join(d["compartments"]), human_bytes(d["bytes"]), d["created"])
    _out.print(table)
