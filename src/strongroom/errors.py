"""One error hierarchy for strongroom.

Every error says what failed, on which object, and what the user can do about
it. Messages never contain key material or plaintext: callers pass names,
paths, indices and sizes, never the secret bytes themselves.

The CLI prints ``str(error)`` (message, object and remedy) and exits non-zero;
it never shows a traceback for a ``StrongroomError``.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "ApprovalRequired",
    "AuditUnavailable",
    "BudgetExceeded",
    "ConfigError",
    "HeaderError",
    "HmacError",
    "IntegrityError",
    "InvalidInput",
    "NoIdentityMatched",
    "NotFound",
    "PayloadError",
    "Sealed",
    "StorageError",
    "StrongroomError",
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


class HmacError(IntegrityError):
    """An age header's MAC does not match: it was altered or the key is wrong."""


class PayloadError(IntegrityError):
    """An age payload chunk failed authentication, is truncated or misordered."""


class NoIdentityMatched(StrongroomError):
    """None of the given identities can unwrap the file key."""

    exit_code = 5
    default_remedy = "use the identity this file was encrypted to"


class AccessDenied(StrongroomError):
    """Policy refuses the action."""

    exit_code = 6


class ApprovalRequired(AccessDenied):
    """The action needs a Grant that carries enough approvals."""


class Sealed(StrongroomError):
    """The vault is sealed: no key operation is possible."""

    exit_code = 7
    default_remedy = "unseal the vault with a quorum of custodian shares (`strongroom unseal`)"


class BudgetExceeded(AccessDenied):
    """An egress budget would be exceeded."""


class AuditUnavailable(StrongroomError):
    """The audit log could not durably record the decision, so it was refused."""

    exit_code = 8
    default_remedy = "restore the audit store (database reachable and writable), then retry"


class StorageError(StrongroomError):
    """The database or blob store failed."""

    exit_code = 9
