"""Audit entries as OCSF events (schema version pinned in :data:`OCSF_VERSION`).

A SIEM ingests the Open Cybersecurity Schema Framework; this module maps one
audit entry to one OCSF event of the class that honestly describes it (the
table is in ``docs/operations.md``, "SIEM export")::

    event = to_ocsf(ExportedEntry(event, leaf_hash, None), origin=log.origin,
                    product_version=strongroom.__version__)
    event["class_uid"], event["metadata"]["sequence"], event["raw_data"]

Every event carries what a SIEM needs to check the entry's inclusion in the
log: ``metadata.sequence`` is the entry's index, ``raw_data`` the entry's
exact bytes (its RFC 9162 leaf hash is ``SHA-256(0x00 || raw_data)``), and
``unmapped.strongroom`` the leaf hash and the signed checkpoint (size, root)
that covers it, when one exists. Alerts are audit entries too
(``alert.raise``, ``alert.ack``): they become Detection Findings whose
``finding_info.uid`` is the alert's de-duplication key, so the acknowledgement
updates the finding the raise created.

The mapping uses only the base schema and the ``security_control`` profile
(``action_id``/``disposition_id`` say whether strongroom allowed or denied);
the tests validate every event against OCSF's own schema for this version.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from strongroom.audit.entry import AuditEvent
from strongroom.timefmt import parse_utc

__all__ = ["OCSF_PROFILES", "OCSF_VERSION", "ExportedEntry", "ocsf_class", "to_ocsf"]

#: The OCSF schema version every event declares (``metadata.version``).
OCSF_VERSION = "1.5.0"
#: Profiles the events use (``metadata.profiles``).
OCSF_PROFILES = ("security_control",)
_PRODUCT = "strongroom"

# category_uid -> category name
_CATEGORIES = {2: "Findings", 3: "Identity & Access Management", 6: "Application Activity"}
# class_uid -> (class name, category_uid)
_CLASSES = {
    2004: ("Detection Finding", 2),
    3001: ("Account Change", 3),
    3002: ("Authentication", 3),
    3004: ("Entity Management", 3),
    6003: ("API Activity", 6),
}
# The activities named here, per class: (activity_id, activity name).
_API_READ = (2, "Read")
_HTTP_ACTIVITY = {"GET": _API_READ, "HEAD": _API_READ, "POST": (1, "Create"),
                  "PUT": (3, "Update"), "PATCH": (3, "Update"), "DELETE": (4, "Delete")}
#: Actions with a class of their own: action -> (class_uid, (activity_id, activity name)).
_ACTIONS: dict[str, tuple[int, tuple[int, str]]] = {
    "key.release": (6003, _API_READ),
    "console.sign-in": (3002, (1, "Logon")),
    "people.enroll": (3001, (1, "Create")),
    "people.revoke": (3001, (5, "Disable")),
    "alert.raise": (2004, (1, "Create")),
    "alert.ack": (2004, (2, "Update")),
}
#: Entity Management activities by the action's verb (its last dotted part).
_ENTITY_VERBS: dict[str, tuple[int, str]] = {
    **dict.fromkeys(("import", "request", "grant", "label", "create", "register-key", "receive"),
                    (1, "Create")),
    **dict.fromkeys(("read", "export", "show", "verify", "check", "infer", "publisher-verify"),
                    (2, "Read")),
    **dict.fromkeys(("approve", "deny", "cosign", "policy", "rotate", "rewrap", "rekey",
                     "owners", "budget", "restriction"), (3, "Update")),
    **dict.fromkeys(("revoke", "revoke-grant", "retire"), (4, "Delete")),
    "unseal": (10, "Activate"),
    **dict.fromkeys(("seal", "seal-all", "seal-request"), (11, "Deactivate")),
}
_OTHER = (99, "Other")
#: Alert severities (strongroom's) as OCSF severity ids.
_ALERT_SEVERITY = {"info": (1, "Informational"), "warning": (3, "Medium"),
                   "high": (4, "High"), "critical": (5, "Critical")}
_ATTACK_ID = re.compile(r"T[0-9]{4}(\.[0-9]{3})?")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


@dataclass(frozen=True)
class ExportedEntry:
    """One audit entry as exported: the event, its leaf hash and the checkpoint covering it."""

    event: AuditEvent
    leaf_hash: bytes
    #: ``(size, root)`` of the latest signed checkpoint that covers the entry, if any.
    checkpoint: tuple[int, bytes] | None

    @property
    def index(self) -> int:
        """The entry's index in the log."""
        return self.event.index

    def integrity(self) -> dict[str, Any]:
        """What a SIEM checks inclusion with: index, leaf hash, covering checkpoint."""
        out: dict[str, Any] = {"index": self.index, "leaf_hash": self.leaf_hash.hex(),
                               "checkpoint": None}
        if self.checkpoint is not None:
            size, root = self.checkpoint
            out["checkpoint"] = {"size": size, "root": base64.b64encode(root).decode()}
        return out


def ocsf_class(action: str) -> tuple[int, int, str]:
    """``(class_uid, activity_id, activity name)`` an audit action maps to."""
    if action in _ACTIONS:
        class_uid, (activity, name) = _ACTIONS[action]
        return class_uid, activity, name
    activity, name = _ENTITY_VERBS.get(action.rpartition(".")[2], _OTHER)
    return 3004, activity, name


def _endpoint(host: object) -> dict[str, str]:
    """A network endpoint for a recorded host (an IP address, else a host name)."""
    text = str(host)[:255]
    try:
        return {"ip": str(ipaddress.ip_address(text))}
    except ValueError:
        return {"hostname": text} if _HOSTNAME.fullmatch(text) else {"name": text}


def _decision(decision: str) -> dict[str, Any]:
    """Status, action and disposition of an allow/deny decision (others: Other)."""
    if decision == "allow":
        return {"status_id": 1, "status": "Success", "action_id": 1, "action": "Allowed",
                "disposition_id": 1, "disposition": "Allowed"}
    if decision == "deny":
        return {"status_id": 2, "status": "Failure", "action_id": 2, "action": "Denied",
                "disposition_id": 2, "disposition": "Blocked"}
    return {"status_id": 99, "status": decision}


def _finding(ev: AuditEvent, activity: int) -> dict[str, Any]:
    """Detection Finding fields of an ``alert.raise`` / ``alert.ack`` entry."""
    d = ev.details
    rule = str(d.get("rule") or "alert")
    info: dict[str, Any] = {"uid": str(d.get("dedup_key") or f"{rule}:{ev.object}"),
                            "title": rule, "analytic": {"name": rule, "type_id": 1, "type": "Rule"}}
    techniques = [t for t in d.get("techniques") or [] if isinstance(t, str)]
    attacks = [{"technique": {"uid": t}} for t in techniques if _ATTACK_ID.fullmatch(t)]
    if attacks:
        info["attacks"] = attacks
    out: dict[str, Any] = {"finding_info": info, "resources": [{"name": ev.object}],
                           "is_alert": True}
    if activity == 1:  # raised: the entry's decision is the alert's severity
        info["desc"] = ev.reason
        sev_id, sev = _ALERT_SEVERITY.get(ev.decision, (99, ev.decision))
        out.update(severity_id=sev_id, severity=sev, status_id=1, status="New")
        if isinstance(d.get("subject"), str):
            out["resources"].append({"name": d["subject"], "type": "subject"})
    else:  # acknowledged by a person: in progress (the ack's note is the status detail)
        out.update(severity_id=1, severity="Informational", status_id=2, status="In Progress")
        if ev.reason:
            out["status_detail"] = ev.reason
    return out


def _class_fields(class_uid: int, ev: AuditEvent) -> dict[str, Any]:
    """The fields particular to ``class_uid`` for entry ``ev``."""
    d = ev.details
    actor = {"user": {"name": ev.actor}}
    if class_uid == 6003:
        out: dict[str, Any] = {
            "actor": actor,
            "api": {"operation": ev.action, "service": {"name": _PRODUCT}},
            # Releases made in-process on the vault host record no client host.
            "src_endpoint": _endpoint(d["host"]) if d.get("host") else {"name": "unrecorded"},
            "resources": [{"name": ev.object, **({"uid": ev.shard} if ev.shard else {}),
                           "type": "artifact shard" if ev.shard else "artifact"}],
        }
        if d.get("server"):
            out["dst_endpoint"] = _endpoint(d["server"])
        return out
    if class_uid == 3002:
        return {"user": {"name": ev.actor}, "service": {"name": f"{_PRODUCT} console"},
                **({"src_endpoint": _endpoint(d["host"])} if d.get("host") else {})}
    if class_uid == 3001:
        return {"actor": actor, "user": {"name": ev.object}}
    if class_uid == 2004:
        return {}
    return {"actor": actor,
            "entity": {"name": ev.object, "type": ev.action.partition(".")[0]}}


def to_ocsf(entry: ExportedEntry, *, origin: str, product_version: str) -> dict[str, Any]:
    """The OCSF event for one exported audit entry (``product_version``: strongroom's)."""
    ev = entry.event
    class_uid, activity, activity_name = ocsf_class(ev.action)
    if ev.action == "api.request":  # a refused request: its object is "METHOD /path"
        class_uid = 6003
        activity, activity_name = _HTTP_ACTIVITY.get(ev.object.partition(" ")[0], _OTHER)
    class_name, category = _CLASSES[class_uid]
    event: dict[str, Any] = {
        "activity_id": activity,
        "activity_name": activity_name,
        "category_uid": category,
        "category_name": _CATEGORIES[category],
        "class_uid": class_uid,
        "class_name": class_name,
        "type_uid": class_uid * 100 + activity,
        "type_name": f"{class_name}: {activity_name}",
        "time": int(parse_utc(ev.time, obj=f"audit entry {ev.index}") * 1000),
        "severity_id": 1,
        "severity": "Informational",
        "message": ev.reason or f"{ev.action} {ev.object}: {ev.decision}",
        "metadata": _metadata(entry, origin, product_version),
        "raw_data": ev.body.decode("utf-8"),
        "unmapped": {"strongroom": {**entry.integrity(), "action": ev.action,
                                    "decision": ev.decision}},
    }
    if class_uid == 2004:
        event.update(_finding(ev, activity))
    else:
        event.update(_decision(ev.decision))
        if ev.reason:
            event["status_detail"] = ev.reason
        if ev.decision == "deny":
            event.update(severity_id=2, severity="Low")
    event.update(_class_fields(class_uid, ev))
    return event


def _metadata(entry: ExportedEntry, origin: str, product_version: str) -> dict[str, Any]:
    ev = entry.event
    meta: dict[str, Any] = {
        "version": OCSF_VERSION,
        "profiles": list(OCSF_PROFILES),
        "product": {"name": _PRODUCT, "vendor_name": _PRODUCT, "version": product_version},
        "uid": f"{origin}/{ev.index}",
        "sequence": ev.index,
        "log_name": "audit",
        "log_provider": origin,
        "original_time": ev.time,
    }
    if ev.request_id:
        meta["correlation_uid"] = ev.request_id
    return meta
