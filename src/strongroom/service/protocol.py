"""The operations every face asks of a vault: :class:`Service`, and which CLI command uses which.

An operation takes plain values and returns plain values — dicts and lists
whose keys are the ``--json`` keys docs/cli.md lists ("JSON output") and the
API's response models send — so one renderer serves both implementations and
local and remote output cannot differ. Sizes are byte counts, durations
seconds, times what the store or the API holds (the CLI's renderer stamps
them as UTC). Nothing here prints.

Implementations: :class:`strongroom.service.embedded.EmbeddedService` (the data
directory and its key agent) and :class:`strongroom.service.remote.RemoteService`
(the signed HTTP API). An operation the server does not offer yet is marked
with :func:`vault_host_only` in the remote implementation: it refuses with
:func:`refusal`, and :func:`offered` reads the marks, so the CLI's placement
table is derived from them and cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from strongroom.errors import InvalidInput

if TYPE_CHECKING:
    from strongroom.audit.export import EntrySource

__all__ = ["COMMANDS", "Progress", "Service", "offered", "refusal", "vault_host_only"]

#: Called with the bytes done since the last call (a progress bar's ``advance``).
Progress = Callable[[int], None]
Row = dict[str, Any]

#: Each CLI command that runs through the service, and the operations it calls.
COMMANDS: Mapping[str, tuple[str, ...]] = {
    "status": ("status",), "unseal": ("unseal",), "seal": ("seal",),
    "keys public": ("public_keys",), "keys rotate": ("keys_rotate",),
    "keys rewrap": ("keys_rewrap",),
    "weights ls": ("weights_ls",), "weights show": ("weights_show",),
    "weights verify": ("weights_verify",), "weights import": ("weights_import",),
    "weights export": ("weights_export",),
    "access request": ("access_request",), "access approve": ("access_approve",),
    "access deny": ("access_deny",), "access grants": ("access_grants", "access_requests"),
    "access show": ("access_show",),
    "access caps": ("access_caps",), "access revoke": ("access_revoke",),
    "access break-glass": ("break_glass", "break_glass_review", "break_glass_pending"),
    "audit tail": ("audit_tail",), "audit show": ("audit_show",),
    "audit prove": ("audit_prove",), "audit verify": ("audit_verify",),
    "audit checkpoint": ("audit_checkpoint",),
    "audit export": ("audit_source",), "alerts export": ("audit_source",),
    "alerts ls": ("alerts_ls",), "alerts ack": ("alerts_ack",),
    "monitor egress": ("egress_report",),
    "people ls": ("people_ls",), "compartments ls": ("compartments_ls",),
    "people enroll": ("people_enroll",), "people cosign": ("people_cosign",),
    "people revoke": ("people_revoke",), "compartments label": ("compartments_label",),
    "docs ls": ("docs_ls",), "posture assess": ("posture",),
}

F = TypeVar("F", bound=Callable[..., Any])


def refusal(command: str, url: str) -> InvalidInput:
    """The error for ``strongroom <command>`` asked of the server at ``url`` (exit 2)."""
    return InvalidInput(
        f"`strongroom {command}` runs only on the vault host: it is not offered over the API, "
        f"and STRONGROOM_URL is set ({url}), so it was not run against a local directory instead",
        obj=command,
        remedy="run it on the vault host, where STRONGROOM_HOME names the data directory, "
               "or unset STRONGROOM_URL to work on a local vault",
    )


def vault_host_only(command: str) -> Callable[[F], F]:
    """Mark a remote operation the server does not offer: calling it raises :func:`refusal`."""
    def mark(fn: F) -> F:
        def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise refusal(command, str(getattr(self, "url", "")))

        refuse.__name__, refuse.__doc__ = fn.__name__, f"Refused: `strongroom {command}` " \
            "runs only on the vault host."
        refuse.vault_host_only = command  # type: ignore[attr-defined]
        return refuse  # type: ignore[return-value]
    return mark


def offered(implementation: type) -> frozenset[str]:
    """The operations of :class:`Service` that ``implementation`` performs (not refuses)."""
    ops = {op for ops in COMMANDS.values() for op in ops}
    return frozenset(op for op in ops
                     if not hasattr(getattr(implementation, op), "vault_host_only"))


class Service(Protocol):
    """What the CLI (and any other face) asks of a vault, wherever it is.

    ``location`` names it in messages ("the vault in /srv/.strongroom", "the
    server at https://…"). Rows are the ``--json`` rows of docs/cli.md.
    """

    location: str

    def close(self) -> None:
        """Release connections (idempotent)."""

    # -- keys -------------------------------------------------------------------------------

    def status(self) -> Row:
        """``KeyringStatus.to_dict()`` plus ``server_version`` (the strongroom that answered)."""

    def unseal(self, share: Path | None, identity: Path | None, *, reset: bool = False,
               hsm_pin: Callable[[], str] | None = None) -> Row:
        """Submit one share: ``{"status": KeyringStatus dict, "already_unsealed": bool}``."""

    def seal(self, *, all_hosts: bool = False) -> Row:
        """Seal: ``{"sealed": True, "notes": [line, ...]}`` (what happened, in words)."""

    def public_keys(self) -> dict[str, str]:
        """``{"manifest": base64, "checkpoint": base64}`` (raw Ed25519)."""

    def keys_rotate(self) -> Row:
        """A new KEK version: ``{"kek_version": int}``."""

    def keys_rewrap(self) -> Row:
        """Every file key under the newest KEK: ``{"rewrapped": int}``."""

    # -- weights ----------------------------------------------------------------------------

    def weights_ls(self) -> list[Row]:
        """Artifact versions: name, version, kind, files, total_size, created."""

    def weights_show(self, name: str, version: int | None) -> Row:
        """The verified manifest (``Manifest.to_json()``)."""

    def weights_verify(self, name: str, version: int | None, *,
                       progress: Progress | None = None) -> Row:
        """Every hash checked: ``{"ref", "files", "bytes"}``."""

    def weights_import(self, path: Path, name: str, *, compartments: list[str],
                       new_version: bool, escrow: list[str], publisher_key: Path | None,
                       signature: Path | None, convert: bool,
                       progress: Progress | None = None, cipher: str | None = None) -> Row:
        """Scan and encrypt: ``{"ref", "files", "tensors", "bytes"}`` (``cipher``: payload mode)."""

    def weights_export(self, name: str, to: Path, *, reason: str, version: int | None,
                       progress: Progress | None = None) -> Row:
        """A plaintext copy: ``{"ref", "dest", "signature", "public_key"}`` (paths)."""

    # -- access -----------------------------------------------------------------------------

    def access_request(self, resource: str, *, purpose: str, action: str, duration_s: int,
                       byte_budget: int, attested: str = "") -> Row:
        """File a signed request: digest, requester, action, resource, duration_s,
        byte_budget, rule, attested (the policy the Grant will require, if any)."""

    def access_approve(self, request_id: str, *, ttl_s: int) -> Row:
        """Sign an approval: ``{"approver", "request", "grant": GrantOut | None, "not_yet"}``."""

    def access_deny(self, request_id: str, *, reason: str) -> Row:
        """Sign a denial: ``{"denier", "request", "reason"}``."""

    def access_show(self, request_id: str) -> Row:
        """One request as an approver compares it: request (digest), code (its short code),
        requester, action, resource, purpose, duration_s, byte_budget, created, statement."""

    def access_grants(self) -> list[Row]:
        """Grants that verify now (``GrantOut`` rows)."""

    def access_requests(self) -> list[Row]:
        """Open requests (``RequestOut`` rows: digest, requester, …, approvals, rule)."""

    def access_caps(self) -> list[Row]:
        """Per artifact: ``{"artifact", "holders": {action: n}, "caps": {action: n}}``."""

    def access_revoke(self, grant_id: str, *, reason: str) -> Row:
        """Revoke a Grant: ``{"grant", "by", "envelope"}`` (the signed revocation)."""

    def break_glass(self, resource: str, *, reason: str, action: str, window_s: int) -> Row:
        """Emergency access: ``{"break_glass", "principal", "resource", "action",
        "window_s", "reason"}``."""

    def break_glass_review(self, break_glass_id: str, *, verdict: str) -> Row:
        """Review one: ``{"break_glass", "reviewer", "verdict"}``."""

    def break_glass_pending(self) -> list[Row]:
        """Every break-glass: break_glass, principal, resource, reason, reviewed_by, reviewed."""

    # -- audit, alerts, egress --------------------------------------------------------------

    def audit_tail(self, n: int) -> list[Row]:
        """The newest ``n`` entries, each as recorded (its canonical fields)."""

    def audit_show(self, index: int) -> Row:
        """One entry as recorded."""

    def audit_prove(self, index: int) -> str:
        """An inclusion proof's text (``audit verify-proof`` checks it offline)."""

    def audit_verify(self, checkpoints: list[str]) -> Row:
        """Replay the log: ``{"summary", "kept_outside", "latest_checkpoint"}``."""

    def audit_checkpoint(self) -> str:
        """A freshly signed checkpoint (signed-note text)."""

    def audit_source(self) -> AbstractContextManager[EntrySource]:
        """Where ``audit export`` reads entries, checked (remotely: against the pinned log key)."""

    def alerts_ls(self, *, include_acked: bool, limit: int) -> list[Row]:
        """Alerts newest first (``AlertOut`` rows)."""

    def alerts_ack(self, alert_id: int, *, by: str, note: str) -> Row:
        """Acknowledge one; the stored alert (``AlertOut``)."""

    def egress_report(self, compression: float) -> Row:
        """``{"budgets": [...], "artifacts": [time-to-exfiltrate rows]}``."""

    # -- directory, documents, posture ------------------------------------------------------

    def people_ls(self) -> list[Row]:
        """name, kind, key_id, roles, clearance, compartments, vetting, current."""

    def compartments_ls(self) -> list[Row]:
        """compartment, people, resources."""

    def people_enroll(self, name: str, key: Path, *, vetting_expires: int, clearance: str,
                      roles: list[str], compartments: list[str], vetting: str,
                      flags: list[str], employment: str, kind: str) -> Row:
        """An enrollment signed as this officer (``key``: their .pub file): ``{"statement",
        "name", "key_id", "serial", "signer", "signatures", "threshold"}``."""

    def people_cosign(self, statement_id: str) -> Row:
        """This officer's signature added to a stored officer statement (8+ characters of its
        id): ``{"statement", "kind", "signer", "signatures", "threshold", "envelope"}`` (this
        officer's signature alone)."""

    def people_revoke(self, who: str, *, reason: str) -> Row:
        """A key revocation signed as this officer (``who``: a name or key id):
        ``{"statement", "key_id", "signer", "signatures", "threshold", "envelope"}``."""

    def compartments_label(self, resource: str, *, classification: str,
                           compartments: list[str], rules: dict[str, str],
                           break_glass: list[str], window_s: int, attested: str = "") -> Row:
        """A resource label signed as this officer (``rules``: action -> rule text; ``attested``:
        the attestation policy its keys need, docs/attestation.md):
        ``{"statement", "resource", "serial", "signer", "signatures", "threshold"}``."""

    def docs_ls(self) -> list[Row]:
        """name, version, classification, compartments, bytes, created."""

    def posture(self, declaration: Path | None) -> Row:
        """``{"report": Assessment.to_json(), "html": the self-contained page}``."""
