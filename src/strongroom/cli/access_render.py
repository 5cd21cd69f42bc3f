"""How the ``access`` commands show results, the same embedded and against a server.

Each command gets plain rows from the service (:mod:`strongroom.service`) —
the keys the API sends (``RequestOut``, ``GrantOut``) — whether it read the
local vault or the server, and hands them to one function here, so a table,
its units and the ``--json`` keys cannot differ between the two paths::

    access_render.grants(svc.access_grants(), as_json)

``--json`` keys are listed in docs/cli.md ("JSON output"); times there are UTC
stamps and sizes and durations plain numbers (bytes, seconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from strongroom.cli.render import duration, human_bytes, print_json, stamp

__all__ = ["approved", "break_glass", "caps", "grants", "request_filed", "request_shown",
           "requests"]

_out = Console(highlight=False, soft_wrap=True)


def request_filed(r: Mapping[str, Any]) -> None:
    """``access request``'s line: the id approvers sign, what was asked and the rule to meet."""
    _out.print(f"request {r['digest'][:16]} by {r['requester']}: {r['action']} {r['resource']} "
               f"for {duration(r['duration_s'])}, {human_bytes(r['byte_budget'])}; "
               f"needs {r['rule']}"
               + (f"; keys only into enclaves attested: {r['attested']}"
                  if r.get("attested") else ""), markup=False)


def request_shown(r: Mapping[str, Any], as_json: bool) -> None:
    """``access show``: the short code first (what the console shows), then what it names."""
    if as_json:
        print_json(dict(r))
        return
    _out.print(f"request {r['code']}", markup=False)
    for label, value in (
            ("digest", r["request"]), ("requester", r["requester"]),
            ("asks", f"{r['action']} {r['resource']} for {duration(r['duration_s'])}, "
                     f"{human_bytes(r['byte_budget'])}"),
            ("purpose", r["purpose"]), ("requested", r["created"]),
            *([("attested", f"{r['attested']} (keys only into enclaves this policy admits)")]
              if r.get("attested") else [])):
        _out.print(f"  {label:<10} {value}", markup=False)
    _out.print("Compare the code with the one the console shows for this request before you "
               "touch your security key; if they differ, do not approve.", markup=False)


def approved(a: Mapping[str, Any]) -> None:
    """``access approve``'s lines: the approval, then the Grant issued or what it still needs."""
    _out.print(f"{a['approver']} approved request {a['request'][:16]}", markup=False)
    g = a["grant"]
    if g is None:
        _out.print(f"not yet: {a['not_yet']}", markup=False)
        return
    _out.print(f"grant {g['grant_id'][:16]} issued: {g['holder']} may {g['action']} "
               f"{g['resource']} until {stamp(g['expires'])} "
               f"(approved by {', '.join(g['approvers'])})", markup=False)


def grants(rows: Iterable[Mapping[str, Any]], as_json: bool) -> None:
    """``access grants``: the Grants whose signatures verify, each with its state."""
    listed = [{"grant_id": r["grant_id"], "holder": r["holder"], "action": r["action"],
               "resource": r["resource"], "approvers": list(r["approvers"]),
               "issued": stamp(r["issued"]), "expires": stamp(r["expires"]),
               "byte_budget": r["byte_budget"], "issuer": r["issuer"], "state": r["state"],
               "revoked_by": r["revoked_by"], "spent": r["spent"]} for r in rows]
    if as_json:
        print_json(listed)
        return
    table = Table("grant", "holder", "action", "resource", "approvers", "expires", "budget",
                  "state")
    for g in listed:
        state = f"revoked by {g['revoked_by']}" if g["revoked_by"] else g["state"]
        table.add_row(g["grant_id"][:16], g["holder"], g["action"], g["resource"],
                      ", ".join(g["approvers"]), g["expires"], human_bytes(g["byte_budget"]),
                      state)
    _out.print(table)


def requests(rows: Iterable[Mapping[str, Any]], as_json: bool) -> None:
    """``access grants --pending``: open requests with who approved so far."""
    listed = [{"request": r["digest"], "requester": r["requester"], "action": r["action"],
               "resource": r["resource"], "purpose": r["purpose"],
               "approvals": list(r["approvals"]), "duration_s": r["duration_s"],
               "byte_budget": r["byte_budget"], "rule": r["rule"]} for r in rows]
    if as_json:
        print_json(listed)
        return
    table = Table("request", "requester", "action", "resource", "purpose", "for", "budget",
                  "needs", "approvals")
    for r in listed:
        table.add_row(r["request"][:16], r["requester"], r["action"], r["resource"],
                      r["purpose"], duration(r["duration_s"]), human_bytes(r["byte_budget"]),
                      r["rule"], ", ".join(r["approvals"]) or "-")
    _out.print(table)


def caps(rows: Iterable[Mapping[str, Any]], as_json: bool) -> None:
    """``access caps``: per artifact and action, holders of valid Grants against the cap."""
    listed = [dict(r) for r in rows]
    if as_json:
        print_json(listed)
        return
    table = Table("artifact", "infer", "load", "read", "export")
    for r in listed:
        table.add_row(r["artifact"], *(f"{r['holders'][a]}/{r['caps'][a]}"
                                       for a in ("infer", "load", "read", "export")))
    _out.print(table)


def break_glass(rows: Iterable[Mapping[str, Any]], as_json: bool) -> None:
    """``access break-glass --pending``: emergency accesses and their reviews."""
    listed = [dict(r) for r in rows]
    if as_json:
        print_json(listed)
        return
    table = Table("break-glass", "who", "resource", "reason", "reviewed by", "status")
    for b in listed:
        table.add_row(b["break_glass"][:16], b["principal"], b["resource"], b["reason"],
                      ", ".join(b["reviewed_by"]) or "-",
                      "reviewed" if b["reviewed"] else "PENDING REVIEW")
    _out.print(table)
