"""Red-team results: the signed scorecard each run appends to the audit log, and reading them back.

The red team (:mod:`strongroom.redteam.runner`) runs the suite and, when an
operator-issued red-team identity signs the run, appends one ``redteam.result``
audit entry per run. Its details are the run's *scorecard* (run id, target,
start, duration in ms, counts per outcome, missed ids, every scenario's group and
outcome) and ``dsse``: a DSSE envelope over the same scorecard signed by the
red-team identity. The identity is an enrolled principal, so a verifier checks
the envelope later against the officer-signed directory, independently of the
vault (whose own key already signs the log's checkpoints: a vault signature
would add nothing the Merkle log does not say, while the red team's says *who*
graded)::

    card = scorecard(report.to_record())
    log.append(actor=..., action=RESULT_ACTION, obj=card["run_id"], decision="allow",
               details=result_details(card, identity.private_key))
    runs = runs_from_log(log, directory.principal)    # newest first, each checked

The posture report scores the newest run read from the log; only when the log
holds none does it fall back to the file a local run leaves
(``<home>/redteam/latest.json``, :func:`load_results`). It lives here, below the
server, so that the server can score posture without importing the red team's
harness.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import StrongroomError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from strongroom.access.directory import Enrollment
    from strongroom.audit.entry import AuditEvent

__all__ = ["OUTCOMES", "PAYLOAD_TYPE", "RESULT_ACTION", "TREND_DAYS", "TREND_RUNS",
           "load_results", "result_details", "results_path", "run_from_event", "runs_from_log",
           "scorecard", "trend_since"]

#: The audit action of a run's signed scorecard.
RESULT_ACTION = "redteam.result"
#: The DSSE payload type of a scorecard.
PAYLOAD_TYPE = "application/vnd.strongroom.redteam-result.v1+json"
#: Outcomes a scorecard counts (``not-run``: the target lacked what the scenario needs).
OUTCOMES = ("blocked", "detected", "missed", "not-run", "unsupported")
#: How far back the posture report looks for runs in the log, and how many it shows.
TREND_DAYS = 30
TREND_RUNS = 10


def load_results(path: Path) -> dict[str, Any] | None:
    """The stored run, or None when there is none (or it does not parse)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("results"), list) else None


def results_path(home: Path) -> Path:
    """Where a data directory keeps its latest red-team results."""
    return home / "redteam" / "latest.json"


def scorecard(record: Mapping[str, Any]) -> dict[str, Any]:
    """The signed summary of one run, from the runner's stored record."""
    results = list(record.get("results", []))
    counts = {o: sum(1 for r in results if r.get("outcome") == o) for o in OUTCOMES}
    return {"run_id": str(record["run_id"]), "target": str(record.get("target", "")),
            "started": str(record["started"]),
            "duration_ms": round(float(record.get("duration_s", 0.0)) * 1000),  # no floats in DSSE
            "counts": {o: n for o, n in counts.items() if n},
            "missed_ids": [str(r["id"]) for r in results if r.get("outcome") == "missed"],
            "results": [[str(r["id"]), str(r.get("group", "")), str(r.get("outcome", ""))]
                        for r in results]}


def result_details(card: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """The audit details of a run: the scorecard and its DSSE envelope signed by ``key``."""
    from strongroom.crypto.dsse import sign_statement

    return {**card, "dsse": sign_statement(card, PAYLOAD_TYPE, key)}


def run_from_event(ev: AuditEvent,
                   principal: Callable[[str], Enrollment | None] | None) -> dict[str, Any]:
    """One ``redteam.result`` entry as the run record posture scores, its signature checked.

    ``principal`` looks a key id up in the verified directory; the run says
    ``"verified": True`` only when an enrolled, unrevoked principal signed
    exactly the scorecard the entry carries (``verify_detail`` says why not).
    """
    from strongroom.crypto.dsse import verify_statement

    d = ev.details
    card = {k: v for k, v in d.items() if k != "dsse"}
    run: dict[str, Any] = {
        "run_id": d.get("run_id"), "target": d.get("target"), "started": d.get("started"),
        "duration_s": int(d.get("duration_ms", 0)) / 1000, "counts": d.get("counts", {}),
        "missed": len(d.get("missed_ids", [])), "missed_ids": d.get("missed_ids", []),
        "results": [{"id": r[0], "group": r[1], "outcome": r[2]} for r in d.get("results", [])
                    if isinstance(r, list) and len(r) == 3],
        "source": f"audit entry {ev.index}", "audit_index": ev.index, "signed_by": ev.actor,
        "verified": False, "verify_detail": ""}
    try:
        env = json.loads(str(d.get("dsse", "")))
        kids = [str(s["keyid"]) for s in env["signatures"]]
    except (ValueError, KeyError, TypeError):
        run["verify_detail"] = "no DSSE envelope in the entry"
        return run
    if principal is None:
        run["verify_detail"] = "the directory could not be read (sealed?)"
        return run
    enrolled = {k: p for k in kids if (p := principal(k)) is not None}
    if not enrolled:
        run["verify_detail"] = f"signed by key(s) {', '.join(kids)}: none enrolled"
        return run
    try:
        signed = verify_statement(str(d["dsse"]), PAYLOAD_TYPE,
                                  {k: p.public_key for k, p in enrolled.items()},
                                  obj=f"red-team result {run['run_id']}")
    except StrongroomError as exc:
        run["verify_detail"] = exc.message
        return run
    if json.dumps(signed, sort_keys=True) != json.dumps(card, sort_keys=True):
        run["verify_detail"] = "the signed scorecard differs from the entry's"
        return run
    run["signed_by"] = ", ".join(sorted(p.name for p in enrolled.values()))
    run["verified"] = True
    return run


def runs_from_log(events: Iterable[AuditEvent],
                  principal: Callable[[str], Enrollment | None] | None, *,
                  limit: int = TREND_RUNS) -> list[dict[str, Any]]:
    """The newest ``limit`` runs among ``events`` (newest first), e.g. ``log.recent(since)``."""
    runs = []
    for ev in events:
        if ev.action == RESULT_ACTION:
            runs.append(run_from_event(ev, principal))
            if len(runs) >= limit:
                break
    return sorted(runs, key=lambda r: int(r["audit_index"]), reverse=True)


def trend_since(now: float | None = None) -> float:
    """The epoch second posture reads the log back to for the trend."""
    return (now if now is not None else time.time()) - TREND_DAYS * 86400
