"""``posture assess`` over the API (issue 17 item 2), on SQLite and PostgreSQL.

The server scores its own deployment from live evidence, as the vault host's
``strongroom posture assess`` does; auditors and officers may ask, nobody else; a
declaration is sent as YAML text and validated like a file.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_kit import ServerWorld, build_world, server_db  # noqa: F401

from strongroom.errors import AccessDenied, InvalidInput
from strongroom.posture.assess import assess
from strongroom.posture.declaration import load_declaration
from strongroom.posture.facts import collect
from strongroom.server.client import Client

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "posture-declaration.example.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("posture"), db_url=server_db)


def _client(world: ServerWorld, who: str) -> Client:
    ident = world.officer if who == "officer" else world.people[who]
    key = base64.b64encode(world.ctx.keys.public_keys()["manifest"]).decode()
    return Client("http://testserver", ident, http=world.http, manifest_key=key)


def _scores(report: dict[str, Any]) -> list[tuple[str, int, list[tuple[str, str]]]]:
    """Each family's level and each control's status (the time-free part of a report)."""
    return [(f["key"], f["level"], [(c["id"], c["status"]) for c in f["controls"]])
            for f in report["families"]]


def test_an_auditor_gets_the_report_the_vault_host_would_print(world: ServerWorld) -> None:
    def local() -> dict[str, Any]:
        ctx = world.ctx
        return assess(collect(ctx.settings.resolved_home, ctx.store, ctx.keys)).to_json()

    # The deployment signs checkpoints in the background, so AU-2 may change between the two
    # reports: compare only a server report bracketed by two equal local ones.
    for _ in range(5):
        before = local()
        out = _client(world, "eve").posture()
        if _scores(local()) == _scores(before):
            break
    assert _scores(out["report"]) == _scores(before)
    assert out["report"]["overall"] == before["overall"]
    assert out["html"].lstrip().lower().startswith("<!doctype html")


def test_a_declaration_is_scored_and_a_bad_one_is_refused(world: ServerWorld) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    out = _client(world, "officer").posture(text)
    local = assess(collect(world.ctx.settings.resolved_home, world.ctx.store, world.ctx.keys),
                   load_declaration(EXAMPLE))
    assert _scores(out["report"]) == _scores(local.to_json())
    with pytest.raises(InvalidInput, match="the declaration sent"):
        _client(world, "officer").posture("key: [unclosed")


def test_only_auditors_and_officers_may_ask(world: ServerWorld) -> None:
    with pytest.raises(AccessDenied, match="roles"):
        _client(world, "alice").posture()
