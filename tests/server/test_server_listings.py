"""The read-only listings and reports over the API (issue 17 item 2), on SQLite and PostgreSQL.

Each ``Client`` method answers with the rows the CLI prints with ``--json`` on the
vault host (the keys docs/cli.md lists), built from the server's own verified
directory, vault and log; auditor-only reports refuse everyone else.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from server_kit import ARTIFACT, ServerWorld, build_world, server_db  # noqa: F401

from strongroom.audit.log import InclusionProof
from strongroom.errors import AccessDenied, IntegrityError, NotFound
from strongroom.server.client import Client

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("listings"), db_url=server_db)


def client(world: ServerWorld, who: str) -> Client:
    ident = world.officer if who == "officer" else world.people[who]
    return Client("http://testserver", ident, http=world.http,
                  manifest_key=_manifest_key(world))


def _manifest_key(world: ServerWorld) -> str:
    import base64

    return base64.b64encode(world.ctx.keys.public_keys()["manifest"]).decode()


def test_people_are_the_rows_people_ls_prints(world: ServerWorld) -> None:
    from strongroom.runtime.listings import people_rows

    rows = client(world, "bob").people()
    assert [set(r) for r in rows] == [{"name", "kind", "key_id", "roles", "clearance",
                                       "compartments", "vetting", "vetting_expires",
                                       "employment", "current"}] * len(rows)
    by_name = {r["name"]: r for r in rows}
    assert {"alice", "bob", "carol", "eve"} <= set(by_name)
    assert by_name["bob"]["roles"] == ["approvers"] and by_name["bob"]["clearance"] == "secret"
    assert by_name["alice"]["current"] is True and STAMP.match(by_name["alice"]["vetting_expires"])
    assert rows == people_rows(world.ctx.directory(), now=time.time())


def test_compartments_name_people_and_resources(world: ServerWorld) -> None:
    rows = client(world, "alice").compartments()
    atlas = next(r for r in rows if r["compartment"] == "atlas")
    assert set(atlas) == {"compartment", "people", "resources"}
    assert {"alice", "bob", "carol", "eve"} <= set(atlas["people"])
    assert atlas["resources"] == [f"{ARTIFACT}@1"]


def test_docs_list_documents_without_content(world: ServerWorld) -> None:
    from strongroom.vault.documents import add_document

    path = world.tmp / "plan.txt"
    path.write_text("the secret plan")
    add_document(world.ctx.vault(identity=world.officer), path, name="plan",
                 classification="secret", compartments=["atlas"])
    path.unlink()
    rows = client(world, "alice").docs()
    assert len(rows) == 1 and rows[0]["name"] == "plan"
    assert set(rows[0]) == {"name", "version", "classification", "compartments", "bytes",
                            "created"}
    assert (rows[0]["classification"], rows[0]["bytes"]) == ("secret", len("the secret plan"))
    assert STAMP.match(rows[0]["created"]) and "secret plan" not in str(rows)


def test_weights_show_is_the_verified_manifest(world: ServerWorld) -> None:
    shown = client(world, "alice").weights_show(ARTIFACT, 1)
    assert shown == world.ctx.vault().manifest(ARTIFACT, 1).to_json()
    with pytest.raises(NotFound):
        client(world, "alice").weights_show("no-such-model")


def test_caps_count_holders_of_valid_grants(world: ServerWorld) -> None:
    before = {r["artifact"]: r for r in client(world, "bob").caps()}
    assert set(before[ARTIFACT]) == {"artifact", "holders", "caps"}
    assert set(before[ARTIFACT]["holders"]) == {"infer", "load", "read", "export"}
    world.grant_load()
    after = {r["artifact"]: r for r in client(world, "bob").caps()}
    assert after[ARTIFACT]["holders"]["load"] == before[ARTIFACT]["holders"]["load"] + 1
    assert after[ARTIFACT]["caps"]["load"] == 50


def test_egress_report_for_auditors_only(world: ServerWorld) -> None:
    report = client(world, "eve").egress(compression=2.0)
    assert set(report) == {"budgets", "artifacts"}
    assert {"scope", "subject", "window_s", "cap_bytes"} == set(report["budgets"][0])
    art = next(a for a in report["artifacts"] if a["artifact"] == f"{ARTIFACT}@1")
    assert art["compression"] == 2.0 and art["seconds"] > 0
    with pytest.raises(AccessDenied, match="needs one of the roles"):
        client(world, "alice").egress()


def test_audit_show_prove_verify(world: ServerWorld) -> None:
    eve = client(world, "eve")
    log = world.ctx.audit()
    index = log.size() - 1
    assert eve.audit_show(index) == log.event(index).to_dict()
    tail = eve.audit_tail(3)
    assert len(tail) == 3 and all(e == log.event(e["index"]).to_dict() for e in tail)
    log.checkpoint(require_quorum=False)
    proof = InclusionProof.parse(eve.audit_prove(index))
    assert proof.index == index and proof.entry == log.event(index).body
    checkpoint = log.latest_checkpoint()
    assert checkpoint is not None
    report = eve.audit_verify([checkpoint])
    assert set(report) == {"summary", "kept_outside", "latest_checkpoint"}
    assert "entries" in report["summary"]
    size = checkpoint.splitlines()[1]
    with pytest.raises(IntegrityError):  # a signed size the log never had
        eve.audit_verify([checkpoint.replace(f"\n{size}\n", f"\n{int(size) + 1}\n", 1)])
    with pytest.raises(NotFound):
        eve.audit_show(1 << 40)
    for refused in (lambda c: c.audit_show(0), lambda c: c.audit_prove(0),
                    lambda c: c.audit_verify()):
        with pytest.raises(AccessDenied, match="needs one of the roles"):
            refused(client(world, "bob"))
