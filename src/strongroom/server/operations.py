"""The :class:`~strongroom.server.client.Client`'s operations beyond loading weights.

:class:`Operations` is mixed into ``Client``: listings and reports that answer
with the rows the CLI prints with ``--json`` on the vault host (the server
builds them with :mod:`strongroom.runtime.listings`, as the embedded path
does), and state changes made as statements that *this* client signs with its
identity (``STRONGROOM_IDENTITY``) and the server verifies as the embedded
path does — the HTTP signature alone authorises none of them::

    client.people()                                   # people ls --json rows
    client.weights_show("minilm")                     # the manifest, verified with the pin
    client.revoke_grant("3f2a9c01", reason="done")    # a revocation signed here
    client.enroll("dave", dave_pub, vetting_expires=t, roles=["approvers"])  # officers

Each method returns plain values (dicts and lists with the keys docs/cli.md
lists); refusals come back as the :mod:`strongroom.errors` class the server
raised, with its message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from strongroom.errors import AccessDenied, InvalidInput, NotFound

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.mldsa import MLDSA65PrivateKey

    from strongroom.keys.identity import Identity, PublicIdentity
    from strongroom.vault.manifest import Manifest

__all__ = ["Operations", "as_recorded"]

Row = dict[str, Any]


def as_recorded(entry: dict[str, Any]) -> Row:
    """An audit entry from the API (``AuditEntryOut``) with the fields it was recorded with
    (``bytes``, not ``nbytes``; ``shard`` and ``bytes`` only when set), as ``audit show`` prints."""
    d = dict(entry)
    shard, nbytes = d.pop("shard", None), d.pop("nbytes", None)
    d.setdefault("request_id", None)
    if shard is not None:
        d["shard"] = shard
    if nbytes is not None:
        d["bytes"] = nbytes
    return d


def _pushed(out: Any) -> Row:
    """``{"key_servers": ...}`` when the server pushed a revocation to its key servers itself
    (each one's answer by name, for the CLI to print), else nothing."""
    pushed = out.get("key_servers") if isinstance(out, dict) else None
    return {"key_servers": pushed} if isinstance(pushed, dict) else {}


class Operations:
    """Listings, reports and signed statements over the API (mixed into ``Client``)."""

    identity: Identity | None

    if TYPE_CHECKING:  # the transport, which Client provides
        def get(self, path: str, **kw: Any) -> Any: ...

        def post(self, path: str, body: Any = None, **kw: Any) -> Any: ...

        def verified_manifest(self, name: str, version: int | None = None) -> Manifest: ...

    # -- the signer ------------------------------------------------------------------------

    def _signer(self) -> tuple[Ed25519PrivateKey, str, str]:
        """(private key, name the server knows me by, key id): who signs statements."""
        if self.identity is None:
            raise AccessDenied("no identity to sign the statement with",
                               obj="STRONGROOM_IDENTITY",
                               remedy="set STRONGROOM_IDENTITY to your identity file "
                               "(`strongroom keys new-identity`)")
        who = self.get("/v1/whoami")
        return self.identity.private_key, str(who["name"]), str(who["key_id"])

    def _pq(self) -> MLDSA65PrivateKey | None:
        """The signer's ML-DSA-65 key (a hybrid identity): its statements carry both signatures;
        a server pinning it refuses one without, naming the missing signature."""
        return self.identity.mldsa_key if self.identity is not None else None

    def statement(self, prefix: str, *kinds: str) -> Row:
        """The stored statement whose id starts with ``prefix`` (8+ hex characters)."""
        if len(prefix) < 8:
            raise InvalidInput("give at least 8 characters of the id", obj=prefix)
        return dict(self.get(f"/v1/statements/{prefix}",
                             params={"kind": list(kinds)} if kinds else None))

    def statements(self, kind: str, subject: str) -> list[Row]:
        """Stored statements of ``kind`` about ``subject`` (a key id, a resource name)."""
        return list(self.get("/v1/statements", params={"kind": kind, "subject": subject}))

    # -- read-only listings and reports ----------------------------------------------------

    def people(self) -> list[Row]:
        """``people ls``: enrolled, unrevoked principals (name, kind, key_id, roles, ...)."""
        return list(self.get("/v1/people"))

    def compartments(self) -> list[Row]:
        """``compartments ls``: compartment, people, resources."""
        return list(self.get("/v1/compartments"))

    def docs(self) -> list[Row]:
        """``docs ls``: name, version, classification, compartments, bytes, created."""
        return list(self.get("/v1/documents"))

    def weights_show(self, name: str, version: int | None = None) -> Row:
        """``weights show --json``: the manifest, its signature verified with the pinned key."""
        return self.verified_manifest(name, version).to_json()

    def caps(self) -> list[Row]:
        """``access caps``: artifact, holders and caps per action."""
        return list(self.get("/v1/access/caps"))

    def egress(self, compression: float = 1.0) -> Row:
        """``monitor egress``: ``{"budgets", "artifacts"}`` (auditors, security officers)."""
        return dict(self.get("/v1/monitor/egress", params={"compression": compression}))

    def break_glass_pending(self) -> list[Row]:
        """``access break-glass --pending``: every break-glass and who reviewed it."""
        return list(self.get("/v1/access/break-glass"))

    def audit_tail(self, n: int = 20) -> list[Row]:
        """``audit tail``: the newest ``n`` entries as recorded (auditors, officers)."""
        return [as_recorded(e) for e in self.get("/v1/audit/tail", params={"n": min(n, 1000)})]

    def audit_show(self, index: int) -> Row:
        """``audit show``: one entry as recorded (auditors, security officers)."""
        return as_recorded(self.get(f"/v1/audit/entries/{int(index)}"))

    def audit_prove(self, index: int) -> str:
        """``audit prove``: an inclusion proof's text, checkable offline (``verify-proof``)."""
        return str(self.get(f"/v1/audit/entries/{int(index)}/proof")["proof"])

    def audit_entries(self, start: int, limit: int = 500) -> Row:
        """A page of entries ``start..`` as stored (auditors, officers): ``{"origin", "size",
        "checkpoint", "entries": [{"index", "body"}], "proof"}``, unverified: read it
        through :class:`strongroom.audit.pages.VerifiedPages` with the pinned log key."""
        return dict(self.get("/v1/audit/entries", params={"from": start, "limit": limit}))

    def audit_verify(self, checkpoints: Sequence[str] = ()) -> Row:
        """``audit verify``: the server replays its log against ``checkpoints`` (kept by you),
        its high-water file and the witnesses: ``{"summary", "kept_outside",
        "latest_checkpoint"}``, or the IntegrityError naming the first divergence."""
        return dict(self.post("/v1/audit/verify", {"checkpoints": list(checkpoints)}))

    def keys_rotate(self) -> Row:
        """``keys rotate`` (security officers): ``{"kek_version", "order"}``, by a signed order."""
        return self._key_order("rotate")

    def keys_rewrap(self) -> Row:
        """``keys rewrap`` (security officers): ``{"rewrapped", "order"}``, by a signed order."""
        return self._key_order("rewrap")

    def _key_order(self, order: str) -> Row:
        from strongroom.access import statements
        from strongroom.access.key_orders import key_order

        signing_key, name, _ = self._signer()
        env = statements.sign("key-order", key_order(order, name, now=time.time()), signing_key,
                              pq=self._pq())
        return dict(self.post(f"/v1/sys/keys/{order}", {"envelope": env}))

    def posture(self, declaration: str | None = None) -> Row:
        """``posture assess``: ``{"report", "html"}`` scored by the server on its own evidence
        (auditors, security officers); ``declaration`` is a declaration file's YAML text."""
        return dict(self.post("/v1/posture", {"declaration": declaration}))

    # -- access statements -------------------------------------------------------------------

    def revoke_grant(self, grant_id: str, *, reason: str) -> Row:
        """``access revoke``: a revocation signed here; the gate refuses the grant from then on."""
        from strongroom.access import statements
        from strongroom.access.grants import revocation_statement

        key, name, kid = self._signer()
        full = self.statement(grant_id, "grant")["digest"]
        env = statements.sign("grant-revocation",
                              revocation_statement(full, name, kid, reason, now=time.time()), key,
                              pq=self._pq())
        out = self.post(f"/v1/access/grants/{full}/revocations", {"envelope": env})
        return {"grant": full, "by": name, "envelope": env, **_pushed(out)}

    def break_glass(self, resource: str, *, reason: str, action: str = "load",
                    window_s: int = 1800) -> Row:
        """``access break-glass RESOURCE``: emergency access alone (a critical alert at once).

        The window is cut to what the resource's label allows; the server refuses a
        break-glass that would not hold at the gate (not listed, policy, window).
        """
        from strongroom.access.breakglass import take
        from strongroom.artifacts import ArtifactRef, base_name

        key, name, _ = self._signer()
        target = base_name(ArtifactRef.parse(resource, obj="resource").name)
        labels = self.statements("label", target)
        if labels:
            from strongroom.access import statements

            newest = max((statements.unverified_payload(lab["envelope"]) for lab in labels),
                         key=lambda st: int(st.get("serial", 0)))
            limit = int(newest.get("break_glass_window_s", 0) or 0)
            window_s = min(window_s, limit) if limit else window_s
        env = take(key, name, target, action, reason, now=time.time(), window_s=window_s)
        out = self.post("/v1/access/break-glass", {"envelope": env})
        return {"break_glass": out["digest"], "principal": name, "resource": target,
                "action": action, "window_s": window_s, "reason": reason}

    def break_glass_review(self, break_glass_id: str, *, verdict: str) -> Row:
        """``access break-glass --review ID``: a signed review (justified or unjustified)."""
        from strongroom.access.breakglass import review

        key, name, _ = self._signer()
        taken = self.statement(break_glass_id, "break-glass")
        env = review(key, name, taken["envelope"], verdict, now=time.time())
        self.post(f"/v1/access/break-glass/{taken['digest']}/reviews", {"envelope": env})
        return {"break_glass": taken["digest"], "reviewer": name, "verdict": verdict}

    # -- officer statements --------------------------------------------------------------

    def _publish(self, kind: str, env: str) -> Row:
        return dict(self.post("/v1/statements", {"kind": kind, "envelope": env}))

    def _next_serial(self, kind: str, subject: str) -> int:
        from strongroom.access import statements

        return 1 + max((int(statements.unverified_payload(s["envelope"]).get("serial", 0))
                        for s in self.statements(kind, subject)), default=0)

    def enroll(self, name: str, key: PublicIdentity, *, vetting_expires: int,
               clearance: str = "internal", roles: Sequence[str] = (),
               compartments: Sequence[str] = (), vetting: str = "active",
               flags: Sequence[str] = (), employment: str = "active",
               kind: str = "person") -> Row:
        """``people enroll`` (officers): an enrollment signed here; a new serial supersedes.

        ``{"statement", "name", "key_id", "serial", "signatures", "threshold"}``: it counts
        once ``threshold`` officers signed it (the others run :meth:`cosign`).
        """
        from strongroom.access.directory import Enrollment, Vetting, level

        signing_key, _, _ = self._signer()
        now = int(time.time())
        e = Enrollment(name=name, key=key.public_bytes, roles=tuple(roles),
                       clearance=level(clearance), compartments=tuple(compartments),
                       vetting=Vetting(vetting, now, int(vetting_expires), tuple(flags)),
                       employment=employment, kind=kind,
                       serial=self._next_serial("enrollment", key.key_id), issued=now,
                       mldsa_key=key.mldsa_bytes)  # a hybrid .pub pins its ML-DSA-65 key
        out = self._publish("enrollment", e.sign(signing_key, pq=self._pq()))
        return {"statement": out["digest"], "name": name, "key_id": key.key_id,
                "serial": e.serial, "signatures": out["signatures"],
                "threshold": self._officer_threshold()}

    def revoke_key(self, who: str, *, reason: str) -> Row:
        """``people revoke`` (officers): a key revocation signed here; ``who`` is a principal's
        name or key id. ``{"statement", "key_id", "signatures", "threshold"}``."""
        from strongroom.access.directory import KeyRevocation, revocation_subject

        signing_key, _, _ = self._signer()
        kid = revocation_subject(who, ((p["name"], p["key_id"]) for p in self.people()))
        env = KeyRevocation(kid, reason, int(time.time())).sign(signing_key, pq=self._pq())
        out = self._publish("revocation", env)
        return {"statement": out["digest"], "key_id": kid, "signatures": out["signatures"],
                "threshold": self._officer_threshold(), "envelope": env, **_pushed(out)}

    def label(self, resource: str, *, classification: str, compartments: Sequence[str] = (),
              rules: dict[str, str] | None = None, break_glass: Sequence[str] = (),
              window_s: int = 1800, attested: str = "") -> Row:
        """``compartments label`` (officers): a resource label signed here (``rules``: action ->
        rule text, e.g. ``{"load": "2 of approvers"}``). ``{"statement", "resource",
        "serial", "signatures", "threshold"}``."""
        from strongroom.access.directory import ResourceLabel, Rule, level

        signing_key, _, _ = self._signer()
        parsed = {a: Rule.parse(text) for a, text in (rules or {}).items()}
        lab = ResourceLabel(resource, level(classification), tuple(compartments), parsed,
                            tuple(break_glass), window_s, self._next_serial("label", resource),
                            int(time.time()), attested=attested)
        out = self._publish("label", lab.sign(signing_key, pq=self._pq()))
        return {"statement": out["digest"], "resource": resource, "serial": lab.serial,
                "signatures": out["signatures"], "threshold": self._officer_threshold()}

    def cosign(self, statement_id: str) -> Row:
        """``people cosign`` (officers): add this identity's signature to a stored enrollment,
        revocation or label. ``{"statement", "kind", "signatures", "threshold"}``."""
        from strongroom.access import statements
        from strongroom.crypto.dsse import sign_statement
        from strongroom.crypto.hybrid_sig import add_mldsa_signature

        signing_key, _, _ = self._signer()
        try:
            found = self.statement(statement_id, "enrollment", "revocation", "label")
        except NotFound:
            raise NotFound("no officer statement matches", obj=statement_id,
                           remedy="give at least 8 characters of the id the first officer "
                           "printed") from None
        kind = str(found["kind"])
        body = statements.unverified_payload(found["envelope"])
        mine = sign_statement(body, statements.payload_type(kind), signing_key)
        pq = self._pq()
        if pq is not None:  # a hybrid officer cosigns with both keys
            mine = add_mldsa_signature(mine, statements.payload_type(kind), pq)
        out = self._publish(kind, mine)
        return {"statement": out["digest"], "kind": kind, "signatures": out["signatures"],
                "threshold": self._officer_threshold(), "envelope": mine, **_pushed(out)}

    def _officer_threshold(self) -> int:
        return int(self.get("/v1/sys/seal-status", signed=False).get("officer_threshold", 0))
