"""``GET /metrics``: the deployment's Prometheus metrics, for auditors, officers and a scraper.

Metrics tell who is active and when (release rates, refusals, alerts), so the
path is not public, unlike Vault's ``unauthenticated_metrics_access``. It answers:

* a request signed (RFC 9421) by a security officer or a principal enrolled as
  ``auditors`` or ``security-officers`` (``strongroom`` clients, ``curl`` with a
  signing proxy), or
* a Prometheus scraper presenting ``Authorization: Bearer <token>`` where the
  token equals ``STRONGROOM_METRICS_TOKEN`` (at least 32 characters; compared in
  constant time; a wrong token is refused 401 and audited like a bad signature).

:class:`~strongroom.server.auth.SignedRequestMiddleware` checks the token or the
signature (``METRICS_PATH``); the route checks the role. What is exposed is
listed in ``docs/operations.md`` (Metrics) and built by :mod:`strongroom.runtime.metrics`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from strongroom.server.auth import METRICS_PATH, PrincipalKeys, require_role
from strongroom.server.context import ServerContext

__all__ = ["MetricsSettings", "build_router"]

#: Roles whose signed requests may read the metrics (officers always may).
READERS = ("auditors", "security-officers")


class MetricsSettings(BaseSettings):
    """``STRONGROOM_METRICS_TOKEN``: the bearer token a Prometheus scraper presents (optional)."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_METRICS_", extra="ignore")

    token: SecretStr | None = Field(default=None, min_length=32,
                                    description="bearer token for Prometheus scrapers")


def build_router(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    """The ``/metrics`` route over ``ctx`` (not in the OpenAPI schema: it is not JSON)."""
    r = APIRouter(tags=["sys"])

    @r.get(METRICS_PATH, include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus text format: events of every process, state read now."""
        from strongroom.runtime.metrics import exposition, read_vitals

        if not getattr(request.state, "scraper", False):
            require_role(request, keys, *READERS)
        body, content_type = exposition(
            lambda: read_vitals(ctx.store, ctx.keys, ctx.settings.host_id))
        return Response(body, headers={"content-type": content_type,
                                       "cache-control": "no-store"})

    return r
