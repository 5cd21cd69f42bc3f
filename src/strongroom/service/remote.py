"""The service against ``strongroom serve``: :class:`RemoteService`, over the signed HTTP API.

Every request and statement is signed with ``STRONGROOM_IDENTITY`` through
:class:`strongroom.server.client.Client`; answers come back as the rows
:class:`~strongroom.service.protocol.Service` documents — the same keys the
embedded service returns — so the CLI renders both once. Manifests are
verified here with the pinned manifest key before anything in them is used.
Key material never crosses the wire except a released file key, held in
memory and zeroed after use; shares are re-encrypted to the ceremony's
recipient before sending.

An operation the server does not offer is marked :func:`vault_host_only`: it
refuses ("runs only on the vault host", exit 2) and never falls back to a
local directory. Only ``weights_export`` is so marked: a plaintext copy is
written on the vault host, never sent over the wire. :func:`known_server_pins` and :func:`pin_server_key` manage
the pins of servers' manifest keys (``strongroom trust``).
"""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom.errors import AccessDenied, ApprovalRequired, IntegrityError, InvalidInput
from strongroom.service.protocol import Progress, vault_host_only

if TYPE_CHECKING:
    from strongroom.audit.pages import VerifiedPages
    from strongroom.keys.identity import Identity
    from strongroom.server.client import Client

__all__ = ["RemoteService", "known_server_pins", "pin_server_key"]

Row = dict[str, Any]


class RemoteService:
    """The operations of one server (``STRONGROOM_URL``), signed as ``STRONGROOM_IDENTITY``."""

    def __init__(self, client: Client | None = None) -> None:
        from strongroom.server.client import Client

        self.client = client or Client.from_env()
        self.url = self.client.url
        self.location = f"the server at {self.url}"

    def close(self) -> None:
        """Close the connections."""
        self.client.close()

    def _me(self) -> Identity:
        if self.client.identity is None:
            raise AccessDenied("no identity to sign with", obj="STRONGROOM_IDENTITY",
                               remedy="set STRONGROOM_IDENTITY to your identity file")
        return self.client.identity

    # -- keys -------------------------------------------------------------------------------

    def status(self) -> Row:
        """The server's seal status and the strongroom version it runs."""
        return {**self.client.status(),
                "server_version": str(self.client.version().get("version", "?"))}

    def unseal(self, share: Path | None, identity: Path | None, *, reset: bool = False,
               hsm_pin: Callable[[], str] | None = None) -> Row:
        """Submit one share to the server's ceremony (decrypted here, re-encrypted to it)."""
        from strongroom.keys import ceremony
        from strongroom.keys.keyring import KeyringStatus
        from strongroom.service.embedded import read_age_identities

        if reset:
            raise InvalidInput("--reset is not offered over the API", obj="unseal",
                               remedy="reset the ceremony on the server host")
        status = KeyringStatus.from_dict(self.client.status())
        if not status.initialized:
            raise InvalidInput("the vault is not initialised", obj="keyring",
                               remedy="run `strongroom init` on the server host")
        if not status.sealed:
            return {"status": status.to_dict(), "already_unsealed": True}
        if share is None or identity is None:
            raise InvalidInput("give --share FILE and --identity IDENTITY_FILE", obj="unseal")
        content = ceremony.read_share_file(share, read_age_identities(identity))
        submission = ceremony.build_submission(status, content, obj=str(share))
        return {"status": self.client.unseal(submission), "already_unsealed": False}

    def seal(self, *, all_hosts: bool = False) -> Row:
        """A security officer's signed seal request; answered once the server's gate is sealed."""
        from strongroom.keys.keyring import KeyringStatus

        self._me()
        status = KeyringStatus.from_dict(self.client.seal(all_hosts=all_hosts))
        if not status.sealed:
            raise IntegrityError(f"the server at {self.url} answered but reports itself "
                                 "unsealed", obj="seal",
                                 remedy="seal it on the vault host, and find out why")
        notes = [f"sealed the server at {self.url}: it releases no keys until it is unsealed"]
        if all_hosts:
            notes.append("ordered every host sharing its database to seal (each within its "
                         "state check interval, STRONGROOM_STATE_CHECK_INTERVAL_S)")
        return {"sealed": True, "notes": notes}

    def public_keys(self) -> dict[str, str]:
        """The keys the server claims (pin them only once compared with the vault host's)."""
        claimed = self.client.public_keys()
        return {"manifest": claimed["manifest"], "checkpoint": claimed["checkpoint"]}

    def keys_rotate(self) -> Row:
        """A new KEK version, by a key order this identity signs (pinned officers)."""
        return {"kek_version": int(self.client.keys_rotate()["kek_version"])}

    def keys_rewrap(self) -> Row:
        """Every file key under the newest KEK, by a key order this identity signs."""
        return {"rewrapped": int(self.client.keys_rewrap()["rewrapped"])}

    # -- weights ----------------------------------------------------------------------------

    def weights_ls(self) -> list[Row]:
        """Every artifact version."""
        return self.client.weights()

    def weights_show(self, name: str, version: int | None) -> Row:
        """The manifest, verified here with the pinned manifest key."""
        return self.client.weights_show(name, version)

    def weights_verify(self, name: str, version: int | None, *,
                       progress: Progress | None = None) -> Row:
        """Fetch manifest and ciphertext, release each key, decrypt in memory, check every hash."""
        ref, files, nbytes = self.client.verify(name, version, purpose="verify")
        return {"ref": ref, "files": files, "bytes": nbytes}

    def weights_import(self, path: Path, name: str, *, compartments: list[str],
                       new_version: bool, escrow: list[str], publisher_key: Path | None,
                       signature: Path | None, convert: bool,
                       progress: Progress | None = None, cipher: str | None = None) -> Row:
        """Stream one .safetensors file to the server, which scans and encrypts it in RAM.

        The server's vault setting (``STRONGROOM_CIPHER``) picks the payload mode.

        The returned manifest is verified with the pinned manifest key before it is believed.
        """
        from strongroom.vault.manifest import Manifest

        local_only = {"--escrow": bool(escrow), "--publisher-key": publisher_key is not None,
                      "--signature": signature is not None, "--convert": convert,
                      "--cipher": cipher is not None}
        refused = sorted(opt for opt, given in local_only.items() if given)
        if refused:
            raise InvalidInput(f"{', '.join(refused)} is not offered over the API", obj="import",
                               remedy="run the import on the vault host, without STRONGROOM_URL")
        if path.is_dir() or path.suffix != ".safetensors" or not path.is_file():
            raise InvalidInput("over the API, import one .safetensors file", obj=str(path),
                               remedy="import each shard, or a directory on the vault host")
        out = self.client.import_weights(path, name, compartments=tuple(compartments),
                                         new_version=new_version)
        m = Manifest.verify(str(out["envelope"]),
                            self.client.manifest_key(str(out["manifest_key"])), obj=name)
        if m.name != name:
            raise IntegrityError(f"the server answered with the manifest of {m.ref}", obj=name)
        if progress is not None:
            progress(path.stat().st_size)
        return {"ref": m.ref, "files": len(m.files), "tensors": len(m.tensors),
                "bytes": m.total_size}

    @vault_host_only("weights export")
    def weights_export(self, name: str, to: Path, *, reason: str, version: int | None,
                       progress: Progress | None = None) -> Row:
        """Refused: a plaintext export is written on the vault host."""
        raise NotImplementedError  # replaced by the refusal

    # -- access -----------------------------------------------------------------------------

    def access_request(self, resource: str, *, purpose: str, action: str, duration_s: int,
                       byte_budget: int, attested: str = "") -> Row:
        """Sign a request and file it on the server (which applies the policy)."""
        from strongroom.access.approvals import AccessRequest

        me = self._me()
        who = self.client.get("/v1/whoami")
        req = AccessRequest.new(who["name"], who["key_id"], resource, action, purpose,
                                duration_s, byte_budget, time.time(), attested=attested)
        digest = self.client.post("/v1/access/requests",
                                  {"envelope": req.sign(me.private_key, pq=me.mldsa_key)})["digest"]
        filed = self.client.get(f"/v1/access/requests/{digest}")
        return {"digest": digest, "requester": who["name"], "action": action,
                "resource": resource, "duration_s": req.duration_s,
                "byte_budget": req.byte_budget, "rule": filed["rule"],
                "attested": req.attested}

    def _verdict(self, request_id: str) -> tuple[Identity, str, str, str]:
        me = self._me()
        who = self.client.get("/v1/whoami")["name"]
        req = self.client.get(f"/v1/access/requests/{request_id}")
        return me, str(who), str(req["digest"]), str(req["envelope"])

    def access_approve(self, request_id: str, *, ttl_s: int) -> Row:
        """Sign an approval, then try to issue the Grant.

        The server refuses (403 or 409) an approval that could not count — the
        requester's own, a repeat by the same person, one after a denial — and
        the refusal is raised here, as on the vault host.
        """
        from strongroom.access.approvals import approve
        from strongroom.access.grants import build_grant

        me, who, digest, env = self._verdict(request_id)
        self.client.post(f"/v1/access/requests/{digest}/approvals",
                         {"envelope": approve(me.private_key, who, env, now=time.time(),
                                              ttl_s=ttl_s, pq=me.mldsa_key)})
        bundle = self.client.get(f"/v1/access/requests/{digest}")
        grant_env = build_grant(me.private_key, bundle["envelope"],
                                bundle["approval_envelopes"], now=time.time(),
                                pq=me.mldsa_key)
        try:
            grant = self.client.post("/v1/access/grants", {"envelope": grant_env})
        except ApprovalRequired as exc:
            return {"approver": who, "request": digest, "grant": None, "not_yet": exc.message}
        return {"approver": who, "request": digest, "grant": grant, "not_yet": None}

    def access_deny(self, request_id: str, *, reason: str) -> Row:
        """Sign a denial of a request on the server."""
        from strongroom.access.approvals import deny

        me, who, digest, env = self._verdict(request_id)
        self.client.post(f"/v1/access/requests/{digest}/denials",
                         {"envelope": deny(me.private_key, who, env, now=time.time(),
                                           reason=reason, pq=me.mldsa_key)})
        return {"denier": who, "request": digest, "reason": reason}

    def access_grants(self) -> list[Row]:
        """Grants that verify now, as the server's gate checks them."""
        return list(self.client.get("/v1/access/grants"))

    def access_show(self, request_id: str) -> Row:
        """The request the server holds under ``request_id``; its digest and code are computed
        here from the signed envelope it sent (a server cannot print one code for another)."""
        from strongroom.errors import IntegrityError
        from strongroom.runtime.listings import request_shown

        prefix = request_id.strip().lower()
        if not 8 <= len(prefix) <= 64 or any(c not in "0123456789abcdef" for c in prefix):
            raise InvalidInput(f"not a request id: {request_id[:80]!r}", obj="access show",
                               remedy="give at least 8 hex digits of the request id")
        out = self.client.get(f"/v1/access/requests/{prefix}")
        row = request_shown(str(out["envelope"]))
        if not row["request"].startswith(prefix) or row["request"] != out["digest"]:
            raise IntegrityError("the server answered with a statement whose digest is not the "
                                 "request asked for", obj=prefix,
                                 remedy="do not approve; report the server to the officers")
        return row

    def access_requests(self) -> list[Row]:
        """Open requests: not denied and without a Grant."""
        granted = {(g["holder"], g["resource"], g["action"]) for g in self.access_grants()}
        return [r for r in self.client.get("/v1/access/requests") if not r["denied"]
                and (r["requester"], r["resource"], r["action"]) not in granted]

    def access_caps(self) -> list[Row]:
        """Holders of valid Grants per artifact and action, as the server's gate counts them."""
        return self.client.caps()

    def access_revoke(self, grant_id: str, *, reason: str) -> Row:
        """A revocation signed here; the server refuses one that would not count at the gate."""
        return self.client.revoke_grant(grant_id, reason=reason)

    def break_glass(self, resource: str, *, reason: str, action: str, window_s: int) -> Row:
        """Emergency access signed here (at most the label's window); a critical alert at once."""
        return self.client.break_glass(resource, reason=reason, action=action,
                                       window_s=window_s)

    def break_glass_review(self, break_glass_id: str, *, verdict: str) -> Row:
        """A review signed here (the server refuses the taker's own)."""
        return self.client.break_glass_review(break_glass_id, verdict=verdict)

    def break_glass_pending(self) -> list[Row]:
        """Every break-glass and who reviewed it."""
        return self.client.break_glass_pending()

    # -- audit, alerts, egress --------------------------------------------------------------

    def audit_tail(self, n: int) -> list[Row]:
        """The newest entries as recorded (the same fields as on the vault host)."""
        return self.client.audit_tail(n)

    def audit_show(self, index: int) -> Row:
        """One entry as recorded."""
        return self.client.audit_show(index)

    def audit_prove(self, index: int) -> str:
        """An inclusion proof against the server's latest signed checkpoint."""
        return self.client.audit_prove(index)

    def audit_verify(self, checkpoints: list[str]) -> Row:
        """The server replays its log against ``checkpoints`` (kept by you), its high-water
        file and the witnesses; a divergence comes back as the IntegrityError naming it."""
        return self.client.audit_verify(checkpoints)

    def audit_checkpoint(self) -> str:
        """The server signs a checkpoint at the current size."""
        return str(self.client.post("/v1/audit/checkpoint")["checkpoint"] or "")

    @contextlib.contextmanager
    def audit_source(self) -> Iterator[VerifiedPages]:
        """Pages of the server's log, each checked here against the pinned log key
        (``STRONGROOM_LOG_KEY``, else pinned on first use): only entries a verified
        checkpoint covers are exported, every leaf hash recomputed from the bytes."""
        from strongroom.audit.pages import VerifiedPages

        origin = str(self.client.audit_entries(0, 1)["origin"])
        yield VerifiedPages(self.client.audit_entries, self.client.log_key(origin),
                            where=self.location)

    def alerts_ls(self, *, include_acked: bool, limit: int) -> list[Row]:
        """Alerts from the server, newest first."""
        return list(self.client.get("/v1/alerts", params={
            "unacked": str(not include_acked).lower(), "limit": min(limit, 1000)}))

    def alerts_ack(self, alert_id: int, *, by: str, note: str) -> Row:
        """Acknowledge an alert as the signing identity (``by`` is the server's to record)."""
        return dict(self.client.post(f"/v1/alerts/{alert_id}/ack", {"note": note}))

    def egress_report(self, compression: float) -> Row:
        """Budgets in force and time-to-exfiltrate per artifact (auditors, officers)."""
        return self.client.egress(compression)

    # -- directory, documents, posture ------------------------------------------------------

    def people_ls(self) -> list[Row]:
        """Enrolled, unrevoked principals, verified by the server against the officers."""
        return self.client.people()

    def compartments_ls(self) -> list[Row]:
        """Compartments: who is read in, and which resources need them."""
        return self.client.compartments()

    def docs_ls(self) -> list[Row]:
        """Documents with classification and compartments (no content)."""
        return self.client.docs()

    def _signed(self, out: Row) -> Row:
        """``out`` (a statement the server stored) with the name it knows this signer by."""
        self._me()
        return {**out, "signer": str(self.client.get("/v1/whoami")["name"])}

    def people_enroll(self, name: str, key: Path, *, vetting_expires: int, clearance: str,
                      roles: list[str], compartments: list[str], vetting: str,
                      flags: list[str], employment: str, kind: str) -> Row:
        """An enrollment signed here; the server stores it only from a pinned officer."""
        from strongroom.keys.identity import PublicIdentity

        return self._signed(self.client.enroll(
            name, PublicIdentity.load(key), vetting_expires=vetting_expires,
            clearance=clearance, roles=roles, compartments=compartments, vetting=vetting,
            flags=flags, employment=employment, kind=kind))

    def people_cosign(self, statement_id: str) -> Row:
        """This officer's signature on a stored enrollment, revocation or label.

        Policies and gateway owners are set on the vault host only, and so are their
        cosignatures: the server does not find them among the statements offered here.
        """
        return self._signed(self.client.cosign(statement_id))

    def people_revoke(self, who: str, *, reason: str) -> Row:
        """A key revocation signed here; the server forgets the key's principal at once."""
        return self._signed(self.client.revoke_key(who, reason=reason))

    def compartments_label(self, resource: str, *, classification: str,
                           compartments: list[str], rules: dict[str, str],
                           break_glass: list[str], window_s: int, attested: str = "") -> Row:
        """A resource label signed here (the next serial after those the server holds)."""
        return self._signed(self.client.label(
            resource, classification=classification, compartments=compartments, rules=rules,
            break_glass=break_glass, window_s=window_s, attested=attested))

    def posture(self, declaration: Path | None) -> Row:
        """The server scores its own deployment; a declaration file is sent as its YAML text."""
        text = None
        if declaration is not None:
            from strongroom.posture.declaration import load_declaration

            load_declaration(declaration)  # refused here as on the vault host, naming the file
            text = declaration.read_text(encoding="utf-8")
        return self.client.posture(text)


# -- trust (pins of servers' manifest keys) -----------------------------------------------------


def known_server_pins() -> tuple[str, list[Row]]:
    """Where pins are kept, and each pinned server: ``{"url", "key", "key_id"}``."""
    from strongroom.crypto.dsse import key_id
    from strongroom.server.client import KnownServers, _decode_key

    known = KnownServers()
    return str(known.path), [{"url": url, "key": key, "key_id": key_id(_decode_key(key, url))}
                             for url, key in known.pins()]


def pin_server_key(url: str, key: str | None) -> tuple[str, bool]:
    """Pin ``key`` for ``url`` instead of what was pinned (None: forget it).

    Returns the pins file and whether ``url`` had a pin; forgetting a URL
    without one is refused.
    """
    from strongroom.server.client import KnownServers, _decode_key

    known = KnownServers()
    url = url.rstrip("/")
    if key is None:
        if not known.replace(url, None):
            raise InvalidInput(f"no key is pinned for {url}", obj=str(known.path),
                               remedy="`strongroom trust ls` lists the pinned servers")
        return str(known.path), True
    canonical = base64.b64encode(_decode_key(key, f"{url} manifest key").public_bytes_raw())
    return str(known.path), known.replace(url, canonical.decode())
