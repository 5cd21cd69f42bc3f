"""The posture report over the API (``POST /v1/posture``), tag ``posture``.

``build_router(ctx, keys)`` returns the router :func:`strongroom.server.app.create_app`
includes. The server scores *its own* deployment from live evidence — its store,
its key service, its data directory — exactly as ``strongroom posture assess`` does
on the vault host, so a remote auditor gets the same report (``report``: the
``--json`` object; ``html``: the rendered page). A declaration (the facts software
cannot observe) may be sent as YAML text; it is validated like a file.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from strongroom.server.auth import PrincipalKeys, require_role
from strongroom.server.context import ServerContext

__all__ = ["build_router"]

#: Largest declaration accepted (the example declaration is ~3 KiB).
MAX_DECLARATION = 64 * 1024


class PostureIn(BaseModel):
    """A posture declaration as the YAML text of a declaration file, or null for none.

    Required (null allowed) and nothing else accepted: a body of another shape is a 4xx,
    as for every POST route.
    """

    model_config = ConfigDict(extra="forbid")

    declaration: str | None = Field(max_length=MAX_DECLARATION)


def build_router(ctx: ServerContext, keys: PrincipalKeys) -> APIRouter:
    """``POST /v1/posture``: this deployment scored (auditors and security officers)."""
    r = APIRouter(prefix="/v1", tags=["posture"])

    @r.post("/posture")
    def posture(request: Request, body: PostureIn) -> dict[str, Any]:
        """The posture assessment of this deployment (``posture assess --json``) and its HTML."""
        from strongroom.posture.assess import assess
        from strongroom.posture.declaration import declaration_from_text
        from strongroom.posture.facts import collect
        from strongroom.posture.report import render_html

        require_role(request, keys, "auditors", "security-officers")
        declared = None
        if body.declaration is not None:
            declared = declaration_from_text(body.declaration, "the declaration sent")
        result = assess(collect(ctx.settings.resolved_home, ctx.store, ctx.keys), declared)
        return {"report": result.to_json(), "html": render_html(result)}

    return r
