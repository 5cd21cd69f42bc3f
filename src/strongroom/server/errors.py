"""How strongroom errors become HTTP responses: one status table, one JSON shape.

Every refusal the API makes is ``{"error": message, "object": obj, "remedy":
remedy, "type": class name}`` with a 4xx (or 5xx for the server's own
trouble) status chosen here, by the error's class, and nowhere else.
"""

from __future__ import annotations

from typing import Any

from strongroom import errors as E

__all__ = [
    "BodyTooLarge",
    "BodyUndecodable",
    "DigestMismatch",
    "RangeNotSatisfiable",
    "Unauthenticated",
    "error_body",
    "status_for",
]


class Unauthenticated(E.AccessDenied):
    """The request is not signed, the signature does not verify, is stale, replayed or revoked."""


class DigestMismatch(E.InvalidInput):
    """The body does not match the signed Content-Digest."""


class BodyTooLarge(E.InvalidInput):
    """The body exceeds the server's limit for this route."""


class BodyUndecodable(E.InvalidInput):
    """The body is not one UTF-8 JSON document within the API's limits (``server.bodies``)."""


class RangeNotSatisfiable(E.InvalidInput):
    """The Range header asks for bytes the blob does not have, or for several ranges."""


class PathRejected(E.InvalidInput):
    """The request path tries to leave its collection (``..``, encoded ``/``, NUL)."""


#: Most specific first: the first class an error is an instance of decides the status.
_STATUS: tuple[tuple[type[E.StrongroomError], int], ...] = (
    (Unauthenticated, 401),
    (BodyTooLarge, 413),
    (DigestMismatch, 400),
    (BodyUndecodable, 400),
    (PathRejected, 400),
    (RangeNotSatisfiable, 416),
    (E.ApprovalRequired, 403),
    (E.BudgetExceeded, 429),
    (E.AccessDenied, 403),
    (E.NotFound, 404),
    (E.AlreadyExists, 409),
    (E.Sealed, 503),
    (E.NoIdentityMatched, 422),
    (E.IntegrityError, 422),
    (E.InvalidInput, 400),
    (E.ConfigError, 500),
    (E.AuditUnavailable, 503),
    (E.StorageError, 503),
)


def status_for(exc: E.StrongroomError) -> int:
    """The HTTP status for a strongroom error."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: E.StrongroomError) -> dict[str, Any]:
    """The JSON body of a refusal (never contains key material: errors carry none)."""
    return {"error": exc.message, "object": exc.obj, "remedy": exc.remedy,
            "type": type(exc).__name__}
