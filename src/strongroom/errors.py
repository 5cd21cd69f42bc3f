"""One error hierarchy for strongroom.

Every error says what failed, on which object, and what the user can do about
it. Messages never contain key material or plaintext: callers pass names,
paths, indices and sizes, never the secret bytes themselves.

The CLI prints ``str(error)`` (message, object and remedy) and exits non-zero;
it never shows a traceback for a ``StrongroomError``. Errors that cross a wire
(the key agent's socket, the server's JSON) are rebuilt by class name with
:func:`from_wire`, so every class a process may raise on purpose lives here.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AgentUnavailable",
    "AlreadyExists",
    "ApprovalRequired",
    "ArmorError",
    "AttestationRefused",
    "AuditUnavailable",
    "BudgetExceeded",
    "ConfigError",
    "GrantBudgetSpent",
    "HeaderError",
    "HmacError",
    "IntegrityError",
    "InvalidInput",
    "InvalidProof",
    "NoIdentityMatched",
    "NotFound",
    "NoteError",
    "PayloadError",
    "Sealed",
    "ServerError",
    "ServerKeyChanged",
    "StorageError",
    "StrongroomError",
    "Throttled",
    "WeakPublicKey",
    "WitnessConflict",
    "WitnessError",
    "WitnessProofRejected",
    "from_wire",
]


class StrongroomError(Exception):
    """Base of every error strongroom raises on purpose."""

    #: Process exit status the CLI uses for this kind of error.
    exit_code: int = 1
    #: Default remedy when the raiser does not give a more specific one.
    default_remedy: str = ""

    def __init__(self, message: str, *, obj: str | None = None, remedy: str | None = None) -> None:
        self.message = message
        self.obj = obj
        self.remedy = remedy if remedy is not None else self.default_remedy
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = self.message
        if self.obj:
            text = f"{self.obj}: {text}"
        if self.remedy:
            text = f"{text} ({self.remedy})"
        return text


class InvalidInput(StrongroomError):
    """The caller gave something malformed: a bad argument, file or name."""

    exit_code = 2


class WeakPublicKey(InvalidInput, ValueError):
    """An Ed25519 public key no honest key generation produces: refused wherever a key enters.

    A non-canonical encoding, a point off the curve, one of the 8 small-order
    points or a point with a small-order component: under a small-order key a
    forged signature (``R`` = identity, ``S`` = 0) verifies for any message in
    OpenSSL. A ValueError too, as ``Ed25519PublicKey.from_public_bytes``'s errors.
    """

    default_remedy = ("have its holder make a new one (`strongroom keys new-identity --out "
                      "FILE`) and use that .pub; key generation never makes such a key, so "
                      "find out where this one came from")


class ConfigError(StrongroomError):
    """strongroom is configured in a way it cannot work with."""

    exit_code = 2


class NotFound(StrongroomError):
    """The named object does not exist."""

    exit_code = 3


class AlreadyExists(StrongroomError):
    """An object with that name already exists."""

    exit_code = 3


class IntegrityError(StrongroomError):
    """Data failed an authenticity or integrity check: tampering or corruption."""

    exit_code = 4
    default_remedy = "treat the object as tampered with; restore it from a trusted copy"


class HeaderError(IntegrityError):
    """An age header is malformed."""


class ArmorError(IntegrityError):
    """The ASCII armor around an age file is malformed (not strict PEM-like base64)."""


class HmacError(IntegrityError):
    """An age header's MAC does not match: it was altered or the key is wrong."""


class PayloadError(IntegrityError):
    """An age payload chunk failed authentication, is truncated or misordered."""


class InvalidProof(IntegrityError):
    """A Merkle proof does not verify against the given root(s)."""

    default_remedy = "do not trust the entry or checkpoint; fetch a fresh proof from the log"


class NoteError(IntegrityError):
    """A signed note is malformed, or is not signed by a trusted key."""

    default_remedy = "do not trust this note; obtain it again from its origin"


class ServerKeyChanged(IntegrityError):
    """The server presents a manifest key other than the one pinned for it."""

    exit_code = 10


class NoIdentityMatched(StrongroomError):
    """None of the given identities can unwrap the file key."""

    exit_code = 5
    default_remedy = "use the identity this file was encrypted to"


class AccessDenied(StrongroomError):
    """Policy refuses the action."""

    exit_code = 6
    default_remedy = (
        "ask for a Grant that covers this action (`strongroom access request`), "
        "or a security officer why it is refused"
    )


class ApprovalRequired(AccessDenied):
    """The action needs a Grant that carries enough approvals."""


class AttestationRefused(AccessDenied):
    """Confidential-computing evidence failed one named check (``check``): no key is released."""

    default_remedy = (
        "produce fresh evidence from an attested workload whose measurement, TCB and policy "
        "the attestation policy allows (docs/attestation.md)"
    )
    #: The check that failed ("signature", "chain", "debug", ...); empty when rebuilt from a wire.
    check: str = ""

    def __init__(self, check: str, message: str, *, obj: str | None = None,
                 remedy: str | None = None) -> None:
        self.check = check
        super().__init__(f"{check}: {message}", obj=obj, remedy=remedy)


class Sealed(StrongroomError):
    """The vault is sealed: no key operation is possible."""

    exit_code = 7
    default_remedy = "unseal the vault with a quorum of custodian shares (`strongroom unseal`)"


class BudgetExceeded(AccessDenied):
    """An egress budget would be exceeded."""

    default_remedy = "wait for the budget's window to pass, or ask an officer for a larger budget"


class GrantBudgetSpent(AccessDenied):
    """A charge would take a Grant's (or break-glass) lifetime byte budget past its cap.

    ``used`` is what the ledger held under ``budget_id`` when the charge was
    decided, so a gate can warm its in-memory hint with it.
    """

    def __init__(self, budget_id: str, used: int, cap: int, *, obj: str) -> None:
        super().__init__(f"the grant's byte budget is spent ({used} of {cap} bytes used)",
                         obj=obj, remedy="request access again with a larger budget")
        self.budget_id = budget_id
        self.used = used
        self.cap = cap


class Throttled(BudgetExceeded):
    """A rate limit, query budget or suspension refuses the request for now."""

    def __init__(self, message: str, *, obj: str, retry_after: float, remedy: str = "") -> None:
        super().__init__(message, obj=obj, remedy=remedy or "slow down and retry later")
        self.retry_after = max(1.0, retry_after)


class AuditUnavailable(StrongroomError):
    """The audit log could not durably record the decision, so it was refused."""

    exit_code = 8
    default_remedy = "restore the audit store (database reachable and writable), then retry"


class StorageError(StrongroomError):
    """The database or blob store failed."""

    exit_code = 9


class ServerError(StrongroomError):
    """The server failed in a way it did not describe (5xx without a strongroom error)."""

    exit_code = 9


class AgentUnavailable(StrongroomError):
    """No key agent answers on the data directory's socket."""


class WitnessError(StrongroomError):
    """A witness did not cosign: unreachable, or it refused the checkpoint."""

    default_remedy = "check the witness URL and that it trusts this log's key"


class WitnessConflict(WitnessError):
    """409: the witness's latest cosigned size is not the ``old`` size sent."""

    def __init__(self, size: int, witness: str) -> None:
        super().__init__(f"witness last cosigned size {size}", obj=witness)
        self.size = size


class WitnessProofRejected(WitnessError):
    """422: the witness found the consistency proof invalid (evidence of a fork)."""

    def __init__(self, old_size: int, witness: str, detail: str) -> None:
        super().__init__(f"rejected the consistency proof from size {old_size}: {detail}",
                         obj=witness)
        self.old_size = old_size


def from_wire(type_name: str, message: str, *, obj: str | None, remedy: str | None,
              default: type[StrongroomError] = StrongroomError) -> StrongroomError:
    """Rebuild an error another process sent as ``{type, message, obj, remedy}``.

    The class is looked up by name here (``default`` when the name is not a
    strongroom error). A class whose constructor takes other arguments (its
    extra fields stay with the raiser) is rebuilt through the base constructor,
    so the caller still gets the right class, exit code and text.
    """
    cls = globals().get(type_name)
    if not (isinstance(cls, type) and issubclass(cls, StrongroomError)):
        cls = default
    if cls.__init__ is StrongroomError.__init__:
        return cls(message, obj=obj, remedy=remedy)
    exc = cls.__new__(cls)
    StrongroomError.__init__(exc, message, obj=obj, remedy=remedy)
    return exc
