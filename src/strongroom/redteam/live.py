"""The live target: a running ``strongroom serve`` attacked through its HTTP API.

::

    target = LiveTarget.connect("https://strongroom.lab.example", Identity.load(path),
                                database_url=None)
    report = run_suite(target, load_builtin())
    target.close()                  # acknowledges what the run raised, as red-team

A scenario runs here only when the target supplies every one of its
``needs`` (:data:`strongroom.redteam.schema.NEEDS`): ``network`` always,
``insider`` with the red-team identity the operator issued (enrolled with the
``auditors`` role, to read the evidence, and ``red-team``, to acknowledge the
alerts it raised itself), ``dba`` with ``--database-url``, ``blob-bucket``
with ``--blob-bucket`` (the blob store's directory, or ``s3`` for the bucket
the ``STRONGROOM_S3_*`` variables name, read as a thief would: every blob
copied, nothing written), ``approvers`` with ``--approver-identity`` (each an
enrolled approver the operator lends: they approve the insider's requests,
sign the Grants and revoke them; every Grant the run issued is revoked when it
closes), ``gateway`` with ``--gateway URL`` (a running ``strongroom gateway serve``)
and ``--gateway-caller`` (enrolled callers the operator lends, each holding an
``infer`` Grant on the gateway's model: each gateway scenario is given the next
unused one, because it spends that caller's daily query budget or has it
suspended; the gateway's audit entries and ``gateway.alert`` entries, in the
deployment's log, are the evidence). Every other scenario is reported
``unsupported`` ("not run: needs ...").

The red-team identity plays every role a scenario names (the "engineer"
whose key was stolen, the "victim" whose request is replayed): its enrolled
name is what the deployment's audit log records, so the grader reads that
name, within the scenario's window of entries, as the run's mark. The model
every scenario attacks (``atlas-ckpt`` in the embedded target) is, here, the
artifact named by ``--artifact`` (default: the first the server lists).
Evidence is read back over the API: ``GET /v1/audit/tail`` and
``GET /v1/alerts``; the deployment's own monitor loop raises the alerts.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from strongroom.errors import InvalidInput, StrongroomError
from strongroom.monitor.alerts import StoredAlert
from strongroom.redteam.lent import HostShell, LentOfficers
from strongroom.redteam.schema import NEEDS
from strongroom.redteam.target import ARTIFACT
from strongroom.server.models import AlertOut, AuditEntryOut

if TYPE_CHECKING:
    from strongroom.keys.identity import Identity
    from strongroom.redteam.context import RunContext
    from strongroom.release import ReleaseRequest
    from strongroom.server.client import Client
    from strongroom.store.db import Store
    from strongroom.vault.blobs import BlobStore
    from strongroom.vault.manifest import Manifest

__all__ = ["REDTEAM_ROLE", "LiveTarget"]

#: The role that lets an enrolled red-team identity acknowledge the alerts about itself.
REDTEAM_ROLE = "red-team"
#: The most entries one scenario's window may span (``GET /v1/audit/tail``'s limit).
MAX_WINDOW = 1000


class _RemoteAudit:
    """The deployment's audit log, read over the API (auditors' role)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def size(self) -> int:
        return int(self.client.get("/v1/audit/checkpoint")["size"])

    def checkpoint(self, require_quorum: bool = False) -> str:
        """A checkpoint the deployment signs now over what its log holds (kept by the caller)."""
        return str(self.client.post("/v1/audit/checkpoint")["checkpoint"])

    def verify(self, checkpoints: list[str]) -> dict[str, Any]:
        """``audit verify`` run by the deployment against ``checkpoints`` (IntegrityError: the
        first divergence it names)."""
        return dict(self.client.post("/v1/audit/verify", {"checkpoints": checkpoints}))

    def events(self, start: int, end: int) -> list[AuditEntryOut]:
        if end <= start:
            return []
        size = self.size()
        if size - start > MAX_WINDOW:
            raise InvalidInput(f"{size - start} entries were appended since entry {start}; the "
                               f"API reads back at most {MAX_WINDOW}", obj="audit window",
                               remedy="run the red team when the deployment is quieter")
        rows = self.client.get("/v1/audit/tail", params={"n": max(1, size - start)})
        out = [AuditEntryOut.model_validate(r) for r in rows if start <= int(r["index"]) < end]
        return sorted(out, key=lambda e: e.index)


class _RemoteAlerts:
    """The deployment's alert store, read over the API."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def recent(self, limit: int = 100) -> list[StoredAlert]:
        rows = self.client.get("/v1/alerts", params={"limit": min(limit, 1000)})
        return [_stored(AlertOut.model_validate(a)) for a in rows]


def _gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """The unlabelled gauges ``names`` of a Prometheus text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def _stored(a: AlertOut) -> StoredAlert:
    """An alert the API listed, in the shape the grader reads."""
    return StoredAlert(a.id, a.rule, a.severity, a.subject, a.object, a.message, {}, "",
                       datetime.fromisoformat(a.first_seen), datetime.fromisoformat(a.last_seen),
                       a.count, datetime.fromisoformat(a.acked_at) if a.acked_at else None,
                       a.acked_by, None)


def _blob_bucket(where: str) -> BlobStore:
    """The blob store at ``where``: a local store's directory, or ``s3`` (the environment's
    ``STRONGROOM_S3_*`` settings name the bucket)."""
    from strongroom.settings import Settings
    from strongroom.vault.blobs import LocalBlobStore, blob_store_from_settings

    if where.strip().lower() == "s3":
        return blob_store_from_settings(Settings(blob_store="s3"))
    path = Path(where).expanduser()
    if not path.is_dir():
        raise InvalidInput("the blob bucket is not a directory", obj=str(path),
                           remedy="pass the local blob store's directory (the data "
                                  "directory's blobs/), or s3 with STRONGROOM_S3_* set")
    return LocalBlobStore(path)


class _LiveVault:
    """Manifests (verified with the pinned manifest key) and loads, as one identity."""

    def __init__(self, target: LiveTarget, client: Client) -> None:
        self.target, self.client = target, client
        #: The blob store as a thief with read access holds it (``--blob-bucket``), or None.
        self.blobs = target.blobs

    def manifest(self, name: str) -> Manifest:
        return self.client.verified_manifest(self.target.resource_name(name))

    def open_weights(self, name: str) -> Any:
        from strongroom.server.remote_vault import RemoteVault

        return RemoteVault(self.client).open_weights(self.target.resource_name(name))


class _LiveKeys:
    """The gate, reached as ``POST /v1/keys/release`` signed by the insider."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def release(self, request: ReleaseRequest) -> bytearray:
        import base64

        out = self.client.post("/v1/keys/release", {
            "artifact": request.artifact, "shard": request.shard, "purpose": request.purpose,
            "evidence": request.evidence})
        return bytearray(base64.b64decode(out["file_key"]))


class LiveTarget:
    """A live deployment reached at ``url`` (see the module docstring)."""

    kind = "live"

    def __init__(self, url: str, identity: Identity | None, client: Client, root: Path, *,
                 name: str, artifact: str, store: Store | None,
                 blobs: BlobStore | None = None,
                 approvers: tuple[tuple[str, Identity, Client], ...] = (),
                 gateway: str | None = None,
                 callers: tuple[tuple[str, Identity], ...] = (),
                 officers: LentOfficers | None = None, host: HostShell | None = None) -> None:
        self.url, self.identity, self.client, self.root = url, identity, client, root
        self.insider_name, self.artifact, self.store, self.blobs = name, artifact, store, blobs
        self.supplies = {"network"} | ({"insider"} if identity is not None else set()) \
            | ({"dba"} if store is not None else set()) \
            | ({"blob-bucket"} if blobs is not None else set()) \
            | ({"approvers"} if approvers and identity is not None else set()) \
            | ({"gateway"} if gateway and callers and identity is not None else set()) \
            | ({"lent-officers"} if officers is not None and identity is not None else set()) \
            | ({"host-shell"} if host is not None and identity is not None else set())
        #: The officers the operator lent (directory changes undone after each scenario).
        self.officers = officers
        if officers is not None:
            officers.reviewers = approvers
        #: A shell on a serving host (``--host-home``).
        self.host = host
        #: The lent approvers: (enrolled name, identity, a client signing as them).
        self.approvers = approvers
        #: The gateway's URL and the lent callers (enrolled name, identity), unused first.
        self.gateway, self.callers = gateway, callers
        #: Which lent caller plays which role of which scenario: (marker, role) -> name.
        self.caller_roles: dict[tuple[str, str], str] = {}
        self._gateway_http: httpx.Client | None = None
        #: Grants this run issued (id, by then revoked or not), revoked at close.
        self.grants: dict[str, bool] = {}
        self.description = f"live server at {url}" + (f" as {name}" if identity else "") \
            + (" with a DBA's database credentials" if store is not None else "") \
            + (" and read access to the blob store" if blobs is not None else "") \
            + (f" with {len(approvers)} lent approvers" if approvers else "") \
            + (f", its gateway at {gateway} with {len(callers)} lent callers"
               if gateway and callers else "") \
            + (f", {len(officers.officers)} lent officers" if officers is not None else "") \
            + (f", a shell on the host of {host.home}" if host is not None else "")
        self.people: dict[str, Identity] = {name: identity} if identity is not None else {}
        self.audit = _RemoteAudit(client)
        self.alerts = _RemoteAlerts(client)
        self.vault = _LiveVault(self, client)
        self.keys = _LiveKeys(client)
        self.started = time.time()
        self.acknowledged: list[int] = []
        self._http: httpx.Client | None = None

    @classmethod
    def connect(cls, url: str, identity: Identity | None, *, database_url: str | None = None,
                artifact: str | None = None, blob_bucket: str | None = None,
                approvers: tuple[Identity, ...] = (), gateway: str | None = None,
                gateway_callers: tuple[Identity, ...] = (), officers: tuple[Identity, ...] = (),
                host_home: str | Path | None = None) -> LiveTarget:
        """Check the server answers and who the identity is there; open the DBA's store and
        the blob store a thief reads (``blob_bucket``: a directory, or ``s3``); sign in the
        ``approvers`` the operator lends; learn the enrolled names of the ``gateway_callers``;
        sign in the lent ``officers`` (each must be pinned in the keyring); take the host shell
        at ``host_home`` (the serving host's data directory)."""
        from strongroom.server.client import Client, KnownServers

        if not url.startswith(("http://", "https://")):
            raise InvalidInput("the target must be an http(s) URL", obj=url,
                               remedy="e.g. --target https://strongroom.lab.example")
        if gateway is not None and not gateway.startswith(("http://", "https://")):
            raise InvalidInput("the gateway must be an http(s) URL", obj=gateway,
                               remedy="e.g. --gateway http://gateway.lab.example:8700")
        if bool(gateway) != bool(gateway_callers):
            raise InvalidInput("--gateway and --gateway-caller go together", obj="red-team run",
                               remedy="lend at least one enrolled caller holding an infer "
                                      "Grant on the gateway's model")
        root = Path(tempfile.mkdtemp(prefix="sr-redteam-live-"))
        client = Client(url, identity, known_servers=KnownServers(root / "known_servers"))
        store = None
        lent: list[tuple[str, Identity, Client]] = []
        callers: list[tuple[str, Identity]] = []
        chiefs: list[tuple[str, Identity, Client]] = []
        try:
            host = HostShell.at(host_home) if host_home else None
            for o in officers:
                c = Client(url, o, known_servers=KnownServers(root / "known_servers"))
                me = c.get("/v1/whoami")
                chiefs.append((str(me["name"]), o, c))
                if not me.get("officer"):
                    raise InvalidInput(f"{me['name']} is not a security officer pinned in the "
                                       "keyring", obj=str(me["name"]),
                                       remedy="lend officers' identities (--officer-identity)")
            for a in approvers:
                c = Client(url, a, known_servers=KnownServers(root / "known_servers"))
                lent.append((str(c.get("/v1/whoami")["name"]), a, c))
            for g in gateway_callers:
                with Client(url, g, known_servers=KnownServers(root / "known_servers")) as c:
                    callers.append((str(c.get("/v1/whoami")["name"]), g))
            name = ""
            if identity is not None:
                name = str(client.get("/v1/whoami")["name"])
                if not artifact:
                    listed = client.weights()
                    if not listed:
                        raise InvalidInput("the server lists no weights to attack",
                                           obj=url, remedy="import a model, or name one "
                                                           "with --artifact")
                    artifact = str(listed[0]["name"])
            if database_url:
                from strongroom.store.db import Store

                store = Store.open(database_url)
            blobs = _blob_bucket(blob_bucket) if blob_bucket else None
            return cls(url, identity, client, root, name=name, artifact=artifact or ARTIFACT,
                       store=store, blobs=blobs, approvers=tuple(lent),
                       gateway=gateway.rstrip("/") if gateway else None, callers=tuple(callers),
                       officers=LentOfficers(tuple(chiefs)) if chiefs else None, host=host)
        except BaseException:
            client.close()
            for _, _, c in (*lent, *chiefs):
                c.close()
            if store is not None:
                store.close()
            shutil.rmtree(root, ignore_errors=True)
            raise

    # -- what the runner asks ------------------------------------------------------------

    def unsupported(self, needs: tuple[str, ...]) -> str | None:
        """``not run: needs X (what X is)`` for every need this target does not supply."""
        missing = [n for n in needs if n not in self.supplies]
        if not missing:
            if "gateway" in needs and len(self.caller_roles) >= len(self.callers):
                return (f"not run: needs gateway: each of the {len(self.callers)} lent "
                        "gateway callers played in an earlier scenario; lend one per gateway "
                        "scenario (--gateway-caller)")
            return None
        return "not run: needs " + "; ".join(f"{n} ({NEEDS[n]})" for n in missing)

    def plays(self, who: str, marker: str) -> str:
        """The lent gateway caller given this role of the scenario, else the insider."""
        return self.caller_roles.get((marker, who), self.insider_name)

    @property
    def own_names(self) -> frozenset[str]:
        """Actor names that mark the run's entries within a scenario's window."""
        names = {self.insider_name} if self.insider_name else set()
        return frozenset(names | set(self.caller_roles.values()))

    def gateway_caller(self, marker: str, role: str) -> Identity:
        """The next unused lent caller, from now on playing ``role`` in scenario ``marker``."""
        used = set(self.caller_roles.values())
        free = [(n, i) for n, i in self.callers if n not in used]
        if not self.gateway or not free:
            raise InvalidInput("no unused gateway caller is left for this scenario",
                               obj=f"{marker} {role}",
                               remedy="lend one caller per gateway scenario (--gateway-caller)")
        name, ident = free[0]
        self.caller_roles[(marker, role)] = name
        return ident

    def gateway_post(self, ident: Identity, path: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` to the gateway, signed as ``ident``; (status, body)."""
        from strongroom.gateway.auth import sign_request

        if self.gateway is None:
            raise InvalidInput("no gateway was given", obj="red-team run",
                               remedy="pass --gateway URL")
        if self._gateway_http is None:
            self._gateway_http = httpx.Client(base_url=self.gateway, timeout=60)
        headers = {**sign_request(ident, "POST", path, body),
                   "Content-Type": "application/json"}
        reply = self._gateway_http.post(path, content=body, headers=headers)
        return reply.status_code, reply.content

    def scan_monitor(self, wait_s: float = 10.0) -> None:
        """Wait (at most ``wait_s``) for the deployment's own monitor loop to have scanned every
        entry the scenario appended (``strongroom_monitor_lag_entries`` of ``GET /metrics``);
        the grader then reads the alerts it raised. No loop running: nothing to wait for."""
        size = self.audit.size()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                text = self.client.request("GET", "/metrics").text
            except StrongroomError:
                return  # no metrics for this identity: grade from what is there now
            gauges = _gauges(text, ("strongroom_audit_entries", "strongroom_monitor_lag_entries",
                                    "strongroom_monitor_running"))
            if not gauges.get("strongroom_monitor_running"):
                return
            entries = gauges.get("strongroom_audit_entries", 0.0)
            if entries - gauges.get("strongroom_monitor_lag_entries", entries) >= size:
                return
            time.sleep(0.2)

    def acknowledge(self, ctx: RunContext, scenario: str) -> list[int]:
        """After each scenario: revoke the Grants it was issued (none outlives its scenario);
        acknowledge, as red-team, the unacknowledged alerts about the run since ``ctx`` started."""
        self._revoke_outstanding(f"red-team run {ctx.marker} ({scenario}) cleanup")
        if self.officers is not None:
            for what in self.officers.restore():
                ctx.saw(f"cleanup: {what}")
        since = ctx.started - 1
        done: list[int] = []
        for a in self.alerts.recent(limit=1000):
            if a.acked_by is None and a.last_seen.timestamp() >= since \
                    and ctx.ours(a.subject, a.obj) and a.id not in self.acknowledged:
                self.client.post(f"/v1/alerts/{a.id}/ack",
                                 {"note": f"red-team run {ctx.marker} ({scenario})"})
                done.append(a.id)
        self.acknowledged += done
        return done

    # -- what the steps use ------------------------------------------------------------

    def resource_name(self, name: str) -> str:
        """The embedded target's model name stands for the attacked artifact."""
        return self.artifact if name == ARTIFACT else name

    def server(self) -> httpx.Client:
        """A plain HTTP client of the server (steps sign their own requests)."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=30)
        return self._http

    def enroll(self, name: str, **_: Any) -> Identity:
        """The operator enrolled the insider: its own roles stand for the ones asked."""
        if name not in self.people:
            raise InvalidInput(f"{name} is not the red-team identity of this run",
                               obj=name, remedy="pass --identity")
        return self.people[name]

    def vault_as(self, ident: Identity) -> _LiveVault:
        """Loading as ``ident`` (the insider)."""
        if ident is not self.identity:
            raise InvalidInput("a live target acts only as the red-team identity",
                               obj=ident.name or ident.public.key_id)
        return self.vault

    def request(self, name: str, resource: str, action: str, *, budget: int = 1 << 30,
                duration: int = 3600) -> tuple[str, str]:
        """The insider signs and submits an access request over the API; (envelope, digest)."""
        from strongroom.access.approvals import AccessRequest

        ident = self.people[name]
        req = AccessRequest.new(name, ident.public.key_id, self.resource_name(resource), action,
                                f"red-team {name}", duration, budget, time.time())
        env = req.sign(ident.private_key)
        out = self.client.post("/v1/access/requests", {"envelope": env})
        return env, str(out["digest"])

    def grant(self, who: str, resource: str, action: str, *, approvers: tuple[str, ...] = (),
              budget: int = 1 << 30, duration: int = 3600) -> str:
        """``who`` (the insider) requests; every lent approver approves (the names a scenario
        gives stand for them); the first signs the Grant and posts it. The Grant."""
        from strongroom.access import statements
        from strongroom.access.approvals import approve
        from strongroom.access.grants import build_grant

        if not self.approvers:
            raise InvalidInput("no approvers were lent to this run", obj="red-team grant",
                               remedy="pass --approver-identity (repeatable)")
        env, digest = self.request(who, resource, action, budget=budget, duration=duration)
        for name, ident, client in self.approvers:
            client.post(f"/v1/access/requests/{digest}/approvals", {
                "envelope": approve(ident.private_key, name, env, now=time.time(),
                                    pq=ident.mldsa_key)})
        _, first, client = self.approvers[0]
        bundle = client.get(f"/v1/access/requests/{digest}")
        grant = build_grant(first.private_key, bundle["envelope"], bundle["approval_envelopes"],
                            now=time.time(), pq=first.mldsa_key)
        client.post("/v1/access/grants", {"envelope": grant})
        self.grants[statements.payload_digest(grant)] = False
        return grant

    def revoke(self, grant_id: str, reason: str) -> str:
        """The first lent approver revokes ``grant_id`` over the API (the server journals it)."""
        from strongroom.access import statements
        from strongroom.access.grants import revocation_statement

        name, ident, client = self.approvers[0]
        env = statements.sign("grant-revocation", revocation_statement(
            grant_id, name, ident.public.key_id, reason, now=time.time()), ident.private_key,
            pq=ident.mldsa_key)
        client.post(f"/v1/access/grants/{grant_id}/revocations", {"envelope": env})
        self.grants[grant_id] = True
        return env

    def relabel(self, resource: str, *, break_glass: tuple[str, ...] = (), **_: Any) -> None:
        """The lent officers list ``break_glass`` on ``resource``'s label; with none, put the
        label back as it was (it is also put back after the scenario, whatever happened)."""
        if self.officers is None:
            raise InvalidInput("no officers were lent to this run", obj="red-team relabel",
                               remedy="pass --officer-identity (repeatable)")
        if not break_glass:
            self.officers.restore()
            return
        for name in break_glass:
            self.officers.list_break_glass(self.resource_name(resource), name)

    def lapse_vetting(self, name: str) -> None:
        """The lent officers re-issue ``name``'s (the insider's) enrollment with lapsed vetting
        (restored after the scenario)."""
        if self.officers is None or name not in self.people:
            raise InvalidInput("no officers were lent to this run", obj="red-team vetting",
                               remedy="pass --officer-identity (repeatable)")
        self.officers.reenroll(self.people[name].public.key_id, vetting="lapsed")

    def take_break_glass(self, env: str) -> None:
        """The insider posts the break-glass statement it signed (reviewed after the
        scenario by the lent officers)."""
        self.client.post("/v1/access/break-glass", {"envelope": env})
        if self.officers is not None:
            self.officers.taken.append(env)

    def _revoke_outstanding(self, reason: str) -> None:
        for gid, revoked in list(self.grants.items()):
            if not revoked:
                self.revoke(gid, reason)

    def close(self) -> None:
        """Revoke the run's Grants; acknowledge what it raised since it started (as red-team);
        close connections."""
        with contextlib.suppress(StrongroomError, httpx.HTTPError):
            self._revoke_outstanding("red-team run cleanup")
        if self.officers is not None:
            with contextlib.suppress(StrongroomError, httpx.HTTPError):
                self.officers.restore()
            self.officers.close()
        if self.host is not None:
            self.host.close()
        for _, _, c in self.approvers:
            c.close()
        with contextlib.suppress(StrongroomError, httpx.HTTPError):
            for a in self.alerts.recent(limit=1000):
                if a.acked_by is None and a.last_seen.timestamp() >= self.started - 1 \
                        and {a.subject, a.obj} & self.own_names:
                    self.client.post(f"/v1/alerts/{a.id}/ack",
                                     {"note": "red-team run (raised after its scenario)"})
                    self.acknowledged.append(a.id)
        if self._http is not None:
            self._http.close()
        if self._gateway_http is not None:
            self._gateway_http.close()
        self.client.close()
        if self.store is not None:
            self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)
