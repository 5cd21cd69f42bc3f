"""Targets the red-team suite attacks: an embedded deployment built in a temporary directory.

:class:`EmbeddedTarget` builds a real deployment with public APIs only: a
2-of-3 Shamir key ceremony with two pinned security officers (2 of 2), an
unsealed keyring, the audit log signed with the barrier's checkpoint key, the
release gate with the deployment's evidence rule (Grants checked from
signatures, :func:`strongroom.runtime.services.grant_evidence`), the monitor's
durable egress meter, alert store and canary registry, a small generated
safetensors model imported encrypted and labelled by the officers, and people
enrolled by the officers. Legitimate actors hold Grants collected as
``demo/access.py`` does.

It is a *target*: scenarios attack it through the same objects an insider or
an attacker who stole something would use, and the grader reads the audit log
and the alert store afterwards. ``weaken`` replaces a control to prove that
grading comes from evidence (a test uses ``{"evidence": "noop"}``, and
``{"guard": "off"}`` for a gate that does not re-derive restrictive state from
the audit log, ``{"publisher": "off"}`` for a key service whose checkpoint
publisher never runs, ``{"lock_bound": "off"}`` for an audit log that waits as
long as the database stays locked)::

    with EmbeddedTarget.build(Path(tmp)) as target:
        ...

A live server (``--target URL``) is :class:`strongroom.redteam.live.LiveTarget`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from strongroom.crypto.age import X25519Identity
from strongroom.errors import InvalidInput
from strongroom.keys.identity import Identity

if TYPE_CHECKING:
    from strongroom.attest.forge import ForgedVendor
    from strongroom.audit.log import AuditLog
    from strongroom.monitor.alerts import AlertManager
    from strongroom.monitor.canaries import CanaryRegistry
    from strongroom.release import EvidenceVerifier, ReleaseRequest
    from strongroom.runtime.services import LocalKeyService
    from strongroom.store.db import Store
    from strongroom.vault.vault import Vault

__all__ = ["ARTIFACT", "COMPARTMENT", "DECOY", "EmbeddedTarget", "Target"]

#: The labelled model every scenario attacks.
ARTIFACT = "atlas-ckpt"
#: A second artifact (blob-swap scenarios).
OTHER = "orion-ckpt"
#: A canary (decoy) artifact.
DECOY = "atlas-ckpt-final-v2"
#: The compartment of the model.
COMPARTMENT = "atlas"
YEAR = 365 * 24 * 3600
#: The console's default origin (``STRONGROOM_CONSOLE_ORIGIN`` overrides it).
CONSOLE_ORIGIN = "http://localhost:8420"


def console_origin() -> str:
    """The origin the deployment's console is configured for."""
    import os

    return os.environ.get("STRONGROOM_CONSOLE_ORIGIN", CONSOLE_ORIGIN).rstrip("/")


#: The file (under the target's root) holding the throw-away enclave vendor's ARK.
ENCLAVE_ROOTS = "enclave-test-roots.pem"
#: Bytes one principal may have released per window in the target (small, to reach caps fast).
CAP_FACTOR = 6
#: The target's STRONGROOM_DB_LOCK_TIMEOUT_S (short, so that a lock stall is refused fast).
LOCK_BOUND_S = 0.5
#: STRONGROOM_CHECKPOINT_INTERVAL_S of a scenario's own target (the shared one signs at unseal
#: only: its publisher would catch a tampering scenario and refuse every later one).
OWN_CHECKPOINT_INTERVAL_S = 0.5
#: The weakenings ``build`` accepts, and the value each takes.
WEAKENINGS = {"evidence": "noop", "guard": "off", "publisher": "off", "lock_bound": "off"}


class Target(Protocol):
    """What the runner needs from a deployment under attack."""

    kind: str
    description: str

    def unsupported(self, needs: tuple[str, ...]) -> str | None:
        """Why a scenario needing ``needs`` cannot run here (``None`` when it can)."""
        ...

    def plays(self, who: str, marker: str) -> str:
        """The principal name that plays role ``who`` in the scenario marked ``marker``."""
        ...

    def close(self) -> None:
        """Stop whatever the target started and delete what it wrote."""
        ...


class _NoopEvidence:
    """A deliberately broken evidence rule: accepts every request (weakened targets only)."""

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        return {"evidence": "noop"}


class _TargetKeys:
    """The KeyService the target's vaults use: the keyring service, with the target's gate."""

    def __init__(self, svc: LocalKeyService) -> None:
        from strongroom.release import ReleaseGate

        self.svc = svc
        self.gate: ReleaseGate | None = None

    def status(self) -> Any:
        return self.svc.status()

    def wrap_file_key(self, blob_id: str, file_key: bytes) -> Any:
        return self.svc.wrap_file_key(blob_id, file_key)

    def release(self, request: ReleaseRequest) -> bytearray:
        if self.gate is None:
            return self.svc.release(request)  # sealed: the service raises Sealed
        return self.gate.release(request)

    def sign(self, purpose: Any, message: bytes) -> bytes:
        return self.svc.sign(purpose, message)

    def public_keys(self) -> dict[str, bytes]:
        return self.svc.public_keys()


@dataclass
class EmbeddedTarget:
    """A complete deployment in a temporary directory (see the module docstring)."""

    root: Path
    store: Store
    svc: LocalKeyService
    keys: _TargetKeys
    audit: AuditLog
    alerts: AlertManager
    canaries: CanaryRegistry
    vault: Vault
    officers: list[Identity]
    custodians: list[X25519Identity]
    share_files: list[Path]
    cap_bytes: int
    weakened: tuple[str, ...] = ()
    people: dict[str, Identity] = field(default_factory=dict)
    kind: str = "embedded"
    description: str = ""
    #: The model every scenario attacks.
    artifact: str = ARTIFACT
    _label_serial: dict[str, int] = field(default_factory=dict)
    _owned_root: bool = False
    _server: Any = None
    checkpoint_interval: float = 3600.0
    #: The throw-away SEV-SNP vendor whose ARK this target's gate trusts as ``sev-snp-test``
    #: (the attestation scenarios sign enclave reports with its chips).
    enclave_vendor: ForgedVendor | None = None

    # -- building ----------------------------------------------------------------

    @classmethod
    def build(cls, root: Path | None = None, *, weaken: Mapping[str, str] | None = None,
              checkpoint_interval: float = 3600.0) -> EmbeddedTarget:
        """Run the ceremony, unseal, import and label the model, enroll the standing cast.

        ``checkpoint_interval``: the key service's checkpoint publisher signs new entries
        on it; the default (an hour) checks the log at unseal only.
        """
        from strongroom.audit.config import AuditSettings
        from strongroom.keys import ceremony
        from strongroom.keys.config import KeysSettings
        from strongroom.monitor.alerts import AlertManager
        from strongroom.monitor.canaries import CanaryRegistry
        from strongroom.monitor.egress import DEFAULT_BUDGETS, Budget, EgressMeter
        from strongroom.release import ReleaseGate
        from strongroom.runtime.attestation import AttestSettings, attestation_service
        from strongroom.runtime.services import LocalKeyService, grant_evidence
        from strongroom.runtime.state_guard import StateGuard
        from strongroom.settings import Settings
        from strongroom.store.db import Store
        from strongroom.vault.blobs import blob_store_from_settings
        from strongroom.vault.vault import Vault

        weaken = dict(weaken or {})
        if any(WEAKENINGS.get(k) != v for k, v in weaken.items()):
            raise InvalidInput(f"unknown weakening {weaken!r}", obj="target",
                               remedy=f"only these are supported: {WEAKENINGS!r}")
        owned = root is None
        root = Path(tempfile.mkdtemp(prefix="strongroom-redteam-")) if root is None else root
        root.mkdir(parents=True, exist_ok=True)
        home = root / "home"
        settings = Settings(home=home, database_url=None, blob_store="local")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = Store.open(settings.resolved_database_url)
        try:
            officers = [Identity.generate(f"officer{i}") for i in (1, 2)]
            people_dir = root / "people"
            people_dir.mkdir(mode=0o700, exist_ok=True)
            pubs = []
            for o in officers:
                p = people_dir / f"{o.name}.pub"
                p.write_text(o.public.to_text())
                pubs.append(p)
            custodians = [X25519Identity.generate() for _ in range(3)]
            cust_files = []
            for i, c in enumerate(custodians, 1):
                p = people_dir / f"custodian{i}.pub"
                p.write_text(f"{c.recipient}\n")
                cust_files.append(p)
            # The service's own guard only reconciles at unseal here: the target's gate runs
            # its guard (over the target's meter) before every release instead.
            keys_settings = KeysSettings(key_backend="shamir", state_check_interval_s=3600)
            result = ceremony.init_vault(store, custodians=cust_files, threshold=2,
                                         shares_dir=root / "shares", officers=pubs,
                                         officer_threshold=2, settings=keys_settings)

            # "lock_bound off": the longest bound the setting allows, i.e. none in practice.
            bound = 600.0 if weaken.get("lock_bound") == "off" else LOCK_BOUND_S

            def audit_factory(s: Store, key: Any) -> AuditLog:
                return AuditSettings(witnesses="", witness_quorum=0,
                                     db_lock_timeout_s=bound).open_log(
                    s, key, witnesses=[], quorum=0)

            evidence_factory = grant_evidence
            if weaken.get("evidence") == "noop":
                def evidence_factory(*_: Any) -> EvidenceVerifier:  # type: ignore[misc]
                    return _NoopEvidence()

            # On the shared target the checkpoint publisher checks the log at unseal only: on
            # its 2 s interval it would catch a tampering scenario mid-way and (rightly) refuse
            # every later one. A rollback scenario runs on its own target (``needs: own-target``).
            svc = LocalKeyService(store, keys_settings, audit_factory=audit_factory,
                                  actor="strongroom-redteam-target",
                                  evidence_factory=evidence_factory,
                                  checkpoint_interval=checkpoint_interval)
            for idx in (0, 1):
                content = ceremony.read_share_file(result.share_files[idx], [custodians[idx]])
                svc.submit_share(ceremony.build_submission(svc.status(), content))
            if weaken.get("publisher") == "off" and svc.publisher is not None:
                svc.publisher.stop()  # as before issue 15: nothing signs unless asked
            audit = svc.audit
            gate0 = svc.gate
            if audit is None or gate0 is None:
                raise InvalidInput("the keyring did not unseal", obj="target")
            alerts = AlertManager(store, audit=audit)
            canaries = CanaryRegistry(store, alerts)
            keys = _TargetKeys(svc)
            vault = Vault(settings, store, blob_store_from_settings(settings), keys, audit,
                          identity=officers[0])
            model_dir = root / "model"
            from strongroom.redteam.toymodel import make_model_dir, register

            register()
            make_model_dir(model_dir)
            manifest = vault.import_weights(model_dir, ARTIFACT, compartments=[COMPARTMENT])
            other_dir = root / "model-other"
            make_model_dir(other_dir, seed=12)
            vault.import_weights(other_dir, OTHER, compartments=[COMPARTMENT])
            shutil.rmtree(model_dir)
            shutil.rmtree(other_dir)
            canaries.plant_weights(vault, DECOY, seed=5, layers=1, width=32,
                                   compartments=[COMPARTMENT])
            cap = max(1, manifest.total_size) * CAP_FACTOR
            budgets = [Budget("principal", "*", 24 * 3600, cap), *DEFAULT_BUDGETS[1:]]
            meter = EgressMeter(store, budgets=budgets, alerts=alerts)
            guard = None
            if weaken.get("guard") != "off":
                guard = StateGuard(store, audit, meter, alerts, actor="strongroom-redteam-target")
                guard.reconcile()
            if hasattr(gate0.evidence, "on_change"):  # the rule restores through this guard only
                gate0.evidence.on_change = guard.journal.changed if guard is not None else None
            vendor = _enclave_vendor(root)
            keys.gate = ReleaseGate(svc.keyring, audit, evidence=gate0.evidence, egress=meter,
                                    canaries=canaries, sizes=gate0.sizes, guard=guard,
                                    attestation=attestation_service(
                                        svc.keyring, store, audit,
                                        AttestSettings(test_roots=root / ENCLAVE_ROOTS)))
            target = cls(root, store, svc, keys, audit, alerts, canaries, vault, officers,
                         custodians, list(result.share_files), cap,
                         weakened=tuple(sorted(weaken)), _owned_root=owned,
                         checkpoint_interval=checkpoint_interval, enclave_vendor=vendor)
            target.description = ("embedded deployment: 2-of-3 Shamir keyring, 2-of-2 officers, "
                                  "Grant evidence at the gate" + (
                                      f", WEAKENED ({', '.join(weaken)})" if weaken else ""))
            target._standing_cast()
            return target
        except BaseException:
            store.close()
            if owned:
                shutil.rmtree(root, ignore_errors=True)
            raise

    def _standing_cast(self) -> None:
        """Approvers, a security officer (as a person), the gateway's service principal."""
        self.enroll("bob", roles=("approvers",))
        self.enroll("carol", roles=("approvers", "security-officers"))
        self.enroll("gateway-svc", roles=("services",), kind="service")
        for name in (ARTIFACT, OTHER, DECOY):
            self.relabel(name)
        self.grant("gateway-svc", ARTIFACT, "load", approvers=("bob", "carol"))

    # -- the directory and grants (as the officers and approvers do it) ------------

    def enroll(self, name: str, *, roles: tuple[str, ...] = ("requesters",),
               clearance: str = "secret", compartments: tuple[str, ...] = (COMPARTMENT,),
               vetting: str = "active", vetting_expires: int | None = None,
               flags: tuple[str, ...] = (), kind: str = "person", serial: int = 1,
               signers: int = 2, security_key: bool = False) -> Identity:
        """Enroll (or re-enroll with a higher ``serial``) a principal, signed by the officers.

        ``security_key`` also enrolls a (software) WebAuthn credential for the console.
        """
        from strongroom.access.directory import Enrollment, Vetting, level, publish

        ident = self.people.get(name) or Identity.generate(name)
        self.people[name] = ident
        now = int(time.time())
        keys = (_software_security_key(name),) if security_key else ()
        e = Enrollment(name=name, key=ident.public.public_bytes, roles=roles,
                       clearance=level(clearance), compartments=compartments,
                       vetting=Vetting(vetting, now - 60, vetting_expires or now + YEAR, flags),
                       kind=kind, serial=serial, issued=now, security_keys=keys)
        publish(self.store, "enrollment",
                e.sign(*[o.private_key for o in self.officers[:signers]]))
        return ident

    def relabel(self, resource: str, *, classification: str = "secret",
                compartments: tuple[str, ...] = (COMPARTMENT,),
                break_glass: tuple[str, ...] = (), attested: str = "") -> None:
        """Officers (re)label ``resource``: load needs 2 approvers, export adds an officer."""
        from strongroom.access.directory import ResourceLabel, Rule, level, publish

        serial = self._label_serial.get(resource, 0) + 1
        self._label_serial[resource] = serial
        rules = {"load": Rule.parse("2 of approvers"),
                 "infer": Rule.parse("1 of approvers"),
                 "read": Rule.parse("1 of approvers"),
                 "export": Rule.parse("1 of approvers AND 1 of security-officers")}
        label = ResourceLabel(resource, level(classification), compartments, rules,
                              break_glass, 600, serial, int(time.time()), attested=attested)
        publish(self.store, "label", label.sign(*[o.private_key for o in self.officers]))

    def request(self, name: str, resource: str, action: str, *, budget: int = 1 << 30,
                duration: int = 3600) -> tuple[str, str]:
        """``name`` signs and submits an access request; (envelope, digest)."""
        from strongroom.access.approvals import AccessRequest, submit_request

        ident = self.people[name]
        req = AccessRequest.new(name, ident.public.key_id, resource, action,
                                f"red-team {name}", duration, budget, time.time())
        env = req.sign(ident.private_key)
        return env, submit_request(self.store, env)

    def approve(self, approver: str, request_env: str) -> str:
        """``approver`` signs an approval of the request with their own key and submits it."""
        from strongroom.access.approvals import approve, submit_approval

        env = approve(self.people[approver].private_key, approver, request_env, now=time.time())
        submit_approval(self.store, env, directory=self.reader().view())
        return env

    def resource(self, name: str) -> Any:
        """The resource as the gate sees it (signed manifest + officers' label)."""
        from strongroom.access.evidence import describe_resource

        m = self.vault.manifest(name)
        directory = self.reader().view()
        return describe_resource(m.ref, m.kind, m.compartments, m.metadata).labelled(
            directory.label(m.name))

    def reader(self) -> Any:
        """A directory reader trusting the officers pinned in the keyring."""
        from strongroom.access.directory import DirectoryReader

        ring = self.svc.keyring
        return DirectoryReader(self.store, ring.officers, ring.officer_threshold,
                               mldsa=ring.officer_mldsa)

    def grant(self, who: str, resource: str, action: str, *,
              approvers: tuple[str, ...] = ("bob", "carol"), budget: int = 1 << 30,
              duration: int = 3600) -> str:
        """Request, approvals by ``approvers``, Grant issued by the first approver; the Grant."""
        from strongroom.access.grants import issue_grant
        from strongroom.access.policy import PolicyEngine

        env, digest = self.request(who, resource, action, budget=budget, duration=duration)
        for a in approvers:
            self.approve(a, env)
        grant, _ = issue_grant(self.store, self.people[approvers[0]].private_key, digest,
                               self.reader().view(), PolicyEngine(), self.resource(resource),
                               now=time.time())
        return grant

    # -- acting ---------------------------------------------------------------------

    def vault_as(self, ident: Identity) -> Vault:
        """The target's vault acting as ``ident`` (shares store and log; do not close it)."""
        from strongroom.vault.vault import Vault

        return Vault(self.vault.settings, self.store, self.vault.blobs, self.keys, self.audit,
                     identity=ident)

    def scan_monitor(self) -> None:
        """Run the deployment's monitor over new audit events (as its periodic loop does)."""
        from strongroom.monitor.detectors import AuditScanner, RiskEngine
        from strongroom.monitor.peers import SignedDirectoryPeers

        engine = RiskEngine(canaries=self.canaries.names,
                            principal_cap=(self.cap_bytes, 24 * 3600),
                            directory=SignedDirectoryPeers(self.reader()))
        AuditScanner(self.audit, engine, self.alerts).scan()

    def server(self) -> Any:
        """An in-process HTTP client of the deployment's API server (``create_app``), cached.

        The server runs over the target's store and keyring service, so its key
        releases go through the same gate and its audit entries into the same log.
        """
        if self._server is None:
            import warnings

            with warnings.catch_warnings():  # starlette suggests httpx2; httpx is what we ship
                warnings.filterwarnings("ignore", message=".*httpx.*", category=Warning)
                from starlette.testclient import TestClient

            from strongroom.server.app import create_app
            from strongroom.server.context import ServerContext

            ctx = ServerContext(self.vault.settings, self.store, self.svc, self.vault.blobs,
                                owns_store=False)
            client = TestClient(create_app(ctx), base_url=console_origin())
            self._server = (client, ctx)
        return self._server[0]

    def officer_public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The officers pinned in the barrier."""
        return dict(self.svc.keyring.officers())

    # -- the Target protocol ---------------------------------------------------------

    def plays(self, who: str, marker: str) -> str:
        """A marked principal per role (``mallory.rt1a2b-07``), enrolled by the scenario."""
        return f"{who}.{marker}"

    @property
    def own_names(self) -> frozenset[str]:
        """None: every principal the run creates carries its marker."""
        return frozenset()

    def unsupported(self, needs: tuple[str, ...]) -> str | None:
        """The embedded target supports every capability; ``softhsm`` needs the tools,
        ``sqlite`` an SQLite store (``own-target``: see :meth:`own`)."""
        if "sqlite" in needs and not self.store.url.startswith("sqlite"):
            return (f"the scenario holds SQLite's write lock; this target's store is "
                    f"{self.store.url.split(':', 1)[0]}")
        if "softhsm" in needs:
            from strongroom.redteam.hsm import softhsm_missing

            return softhsm_missing()
        return None

    def own(self) -> EmbeddedTarget:
        """A fresh deployment built the same way (same weakenings) for one scenario that
        leaves a deployment unusable, e.g. with its audit log found rolled back; its
        checkpoint publisher runs on a short interval, as a deployed one does. Close it."""
        return EmbeddedTarget.build(weaken={k: WEAKENINGS[k] for k in self.weakened},
                                    checkpoint_interval=OWN_CHECKPOINT_INTERVAL_S)

    def close(self) -> None:
        """Seal, close the store, delete the directory when the target made it."""
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server[0].close()
            with contextlib.suppress(Exception):
                self._server[1].close()
        with contextlib.suppress(Exception):
            self.svc.seal()
        with contextlib.suppress(Exception):
            self.store.close()
        if self._owned_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _enclave_vendor(root: Path) -> ForgedVendor:
    """A throw-away SEV-SNP vendor; its ARK written where the target's gate reads test roots."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from strongroom.attest.forge import ForgedVendor

    vendor = ForgedVendor.create("Milan")
    (root / ENCLAVE_ROOTS).write_bytes(vendor.ark.public_bytes(Encoding.PEM))
    return vendor


def _software_security_key(name: str) -> Any:
    """A WebAuthn credential (Ed25519 COSE key) for the console's origin; its private key is
    discarded: the red team never signs with it, it only makes the person console-capable."""
    import os
    from urllib.parse import urlsplit

    import cbor2
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from strongroom.access.fido import SecurityKey

    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    cose = cbor2.dumps({1: 1, 3: -8, -1: 6, -2: raw})
    origin = console_origin()
    rp_id = os.environ.get("STRONGROOM_CONSOLE_RP_ID") or urlsplit(origin).hostname or "localhost"
    return SecurityKey(os.urandom(16), cose, -8, rp_id, (origin,), f"{name} key")


@contextlib.contextmanager
def embedded(root: Path | None = None, **kw: Any) -> Iterator[EmbeddedTarget]:
    """An embedded target, closed afterwards."""
    target = EmbeddedTarget.build(root, **kw)
    try:
        yield target
    finally:
        target.close()
