"""Access caps: how many people may hold each kind of access to one artifact at once.

Defaults are RAND SL3's figures: at most 100 people with ``infer``, 50 with
``load`` and 20 with ``export`` per artifact (``read`` of a secret document
shares the ``load`` figure). Configure with ``STRONGROOM_ACCESS_CAP_INFER``,
``..._LOAD``, ``..._READ``, ``..._EXPORT``. A holder is a distinct requester
with a grant that verifies now (signatures, rule, expiry, no revocation)::

    caps = AccessCaps()
    counts = holders(grants_now)                 # {(resource, action): {names}}
    caps.check("minilm", "load", counts.get(("minilm", "load"), set()), "alice")

Issuing a grant (:func:`strongroom.access.grants.check_cap`, run by every way
of storing one) and releasing a key both check the cap; a grant that would
take an artifact over it is refused with the count and the cap in the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from strongroom.access.directory import base_name
from strongroom.errors import AccessDenied

if TYPE_CHECKING:  # grants.py checks the cap when it stores a grant
    from strongroom.access.grants import VerifiedGrant

__all__ = ["AccessCaps", "holders"]


class AccessCaps(BaseSettings):
    """Per-artifact limits on distinct holders of each action."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_ACCESS_CAP_", extra="ignore")

    infer: int = Field(default=100, ge=0, description="people with inference access")
    load: int = Field(default=50, ge=0, description="people who may load weights in memory")
    read: int = Field(default=50, ge=0, description="people who may read a secret document")
    export: int = Field(default=20, ge=0, description="people who may take a copy")

    def cap(self, action: str) -> int | None:
        """The cap of ``action`` (None: uncapped)."""
        value = getattr(self, action, None) if action in ("infer", "load", "read",
                                                          "export") else None
        return int(value) if value is not None else None

    def check(self, resource: str, action: str, current: set[str], requester: str) -> None:
        """Refuse if adding ``requester`` to ``current`` holders would exceed the cap."""
        limit = self.cap(action)
        if limit is None or requester in current:
            return
        if len(current) + 1 > limit:
            raise AccessDenied(
                f"{len(current)} people already hold {action} access to {base_name(resource)}; "
                f"the cap is {limit}", obj=base_name(resource),
                remedy="revoke a grant that is no longer needed, or have the cap raised "
                f"(STRONGROOM_ACCESS_CAP_{action.upper()})")


def holders(grants: Iterable[VerifiedGrant]) -> dict[tuple[str, str], set[str]]:
    """Distinct requesters per (resource name, action) among verified grants."""
    out: dict[tuple[str, str], set[str]] = {}
    for g in grants:
        key = (base_name(g.request.resource), g.request.action)
        out.setdefault(key, set()).add(g.request.requester)
    return out
