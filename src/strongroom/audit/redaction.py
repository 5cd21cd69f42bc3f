"""Redaction: secret-bearing audit fields are stored as salted HMACs, as Vault does.

The log must record *that* a token or passphrase was used without exposing
it. A value wrapped in :class:`Secret`, or any string under a key named in
:data:`SECRET_FIELDS`, is replaced by ``hmac-sha256:<hex>`` keyed with the
log's salt. Someone who knows a candidate value can check it against an entry
(``strongroom audit check-value``), but the database alone does not reveal it::

    log.append(..., details={"token": Secret(token)})
    log.redactor.matches(event.details["token"], candidate)   # True / False

The salt lives in the ``audit_head`` row unless the caller passes its own
(keep it in the keyring to stop a database reader from guessing low-entropy
values offline).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["HMAC_PREFIX", "SECRET_FIELDS", "Redactor", "Secret"]

HMAC_PREFIX = "hmac-sha256:"
#: Detail keys whose string values are always redacted.
SECRET_FIELDS = frozenset(
    {"password", "passphrase", "secret", "token", "api_key", "private_key", "share", "key_material"}
)


def _secret_key(key: object) -> bool:
    """Whether values under ``key`` are secrets (a non-string key is left to the entry's check)."""
    return isinstance(key, str) and key.lower() in SECRET_FIELDS


@dataclass(frozen=True)
class Secret:
    """Marks a detail value that must be stored only as an HMAC."""

    value: str

    def __repr__(self) -> str:
        return "Secret(***)"


class Redactor:
    """Salted HMAC-SHA256 of secret values."""

    def __init__(self, salt: bytes) -> None:
        if len(salt) < 16:
            raise ValueError("redaction salt must be at least 16 bytes")
        self._salt = bytes(salt)

    def hmac(self, value: str) -> str:
        """``hmac-sha256:<hex>`` of ``value`` under the salt."""
        mac = hmac.new(self._salt, value.encode(), hashlib.sha256).hexdigest()
        return HMAC_PREFIX + mac

    def matches(self, stored: str, value: str) -> bool:
        """True when ``stored`` is the HMAC of ``value`` (constant-time compare)."""
        return hmac.compare_digest(stored.encode(), self.hmac(value).encode())

    def redact(self, details: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``details`` with every secret replaced by its HMAC."""
        return {k: self._value(k, v) for k, v in details.items()}

    def _value(self, key: str, value: Any) -> Any:
        kind = type(value)  # exact types first: most values are plain ints, None or strings
        if kind is int or kind is bool or value is None:
            return value
        if kind is str:
            return self.hmac(value) if _secret_key(key) else value
        if isinstance(value, Secret):
            return self.hmac(value.value)
        if isinstance(value, str) and _secret_key(key):
            return self.hmac(value)
        if isinstance(value, Mapping):
            return self.redact(value)
        if isinstance(value, list | tuple):
            return [self._value(key, v) for v in value]
        return value
