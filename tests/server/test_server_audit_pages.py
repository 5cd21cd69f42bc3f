"""``GET /v1/audit/entries`` and the remote export source that believes none of it unchecked.

The server answers pages of entries' exact bytes, its latest signed checkpoint
and the hashes binding the page to it; :class:`VerifiedPages` (through
``RemoteService.audit_source``) recomputes every leaf hash, checks the note
with the pinned log key and the page's inclusion. A server that alters a byte,
drops, moves or withholds an entry, or signs with another key is caught.
SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from server_kit import ServerWorld, build_world, server_db  # noqa: F401
from sqlalchemy import text

from strongroom.audit.export import ExportCursor, run_export
from strongroom.audit.merkle import leaf_hash
from strongroom.audit.ocsf import ExportedEntry
from strongroom.audit.pages import VerifiedPages
from strongroom.crypto.note import Ed25519Signer, Ed25519Verifier
from strongroom.errors import AccessDenied, IntegrityError
from strongroom.server.client import Client, KnownServers, ServerKeyChanged
from strongroom.service.remote import RemoteService


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, server_db: str | None  # noqa: F811
          ) -> Iterator[ServerWorld]:
    yield from build_world(tmp_path_factory.mktemp("pages"), db_url=server_db)


class LyingClient(Client):
    """A client of a compromised server: ``lie`` rewrites each page before it is read."""

    lie: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def audit_entries(self, start: int, limit: int = 500) -> dict[str, Any]:
        page = super().audit_entries(start, limit)
        return self.lie(page) if self.lie is not None else page


def _client(world: ServerWorld, who: str, tmp: Path, cls: type[Client] = Client) -> Any:
    return cls(str(world.http.base_url), world.people[who], http=world.http,
               known_servers=KnownServers(tmp / "known_servers"))


def _log_key(world: ServerWorld) -> Ed25519Verifier:
    log = world.ctx.audit()
    return Ed25519Verifier(log.origin, log.signer.verifier.public)


def _signed(world: ServerWorld) -> int:
    """Sign a checkpoint at the current size; that size."""
    log = world.ctx.audit()
    log.checkpoint(require_quorum=False)
    return log.size()


def _export(source: VerifiedPages) -> list[ExportedEntry]:
    got: list[ExportedEntry] = []
    run_export(source, source.cursor_at(0), got.extend)
    return got


def test_remote_export_yields_every_signed_entry_exactly(world: ServerWorld,
                                                          tmp_path: Path) -> None:
    signed = _signed(world)
    world.ctx.audit().append(actor="eve", action="weights.read", obj="past-the-checkpoint",
                             decision="allow")
    client = _client(world, "eve", tmp_path)
    with RemoteService(client).audit_source() as source:
        got = _export(source)
    events = world.ctx.audit().events(0, signed)
    assert [e.index for e in got] == list(range(signed))  # only what a checkpoint covers
    assert [e.event.body for e in got] == [e.body for e in events]
    assert [e.leaf_hash for e in got] == [leaf_hash(e.body) for e in events]
    assert {e.checkpoint[0] for e in got if e.checkpoint} == {signed}
    # the log key was pinned on first use, under the log's origin
    pin = KnownServers(tmp_path / "known_servers").get(client.url, "log-key")
    assert pin == _log_key(world).vkey
    # every page size and start (left hashes of every shape, proofs to the signed size)
    for batch in (1, 3, 7):
        small = VerifiedPages(client.audit_entries, _log_key(world), where="test", batch=batch)
        assert [e.event.body for e in _export(small)] == [e.body for e in events]
    # a cursor resumes after the last exported entry and checks it first
    source = VerifiedPages(client.audit_entries, _log_key(world), where="test")
    cursor = source.cursor_at(signed - 2)
    source.check_resume(cursor)
    assert cursor == ExportCursor(source.origin, signed - 2, leaf_hash(events[-3].body))
    assert [e.index for e in source.read_batch(cursor.next_index)] == [signed - 2, signed - 1]


def test_only_auditors_and_officers_read_pages(world: ServerWorld, tmp_path: Path) -> None:
    with pytest.raises(AccessDenied, match="needs one of the roles"):
        _client(world, "alice", tmp_path).audit_entries(0)
    r = world.client(None).get("/v1/audit/entries?from=0&limit=1")
    assert r.status_code == 401
    r = world.client("eve").get("/v1/audit/entries?from=0&limit=5000")
    assert r.status_code == 422


def _body(page: dict[str, Any], i: int, edit: Callable[[bytes], bytes]) -> None:
    e = page["entries"][i]
    e["body"] = base64.b64encode(edit(base64.b64decode(e["body"]))).decode()


def _drop(page: dict[str, Any], i: int, *, reindex: bool) -> None:
    entries = page["entries"]
    first = entries[0]["index"]
    del entries[i]
    if reindex:
        for n, e in enumerate(entries):
            e["index"] = first + n


def _forged_note(world: ServerWorld, page: dict[str, Any]) -> dict[str, Any]:
    """The same checkpoint text, signed by a key with the log's name but not the log's key."""
    from strongroom.crypto.note import parse_note, sign

    body, _ = parse_note(page["checkpoint"])
    page["checkpoint"] = sign(body, Ed25519Signer(world.ctx.audit().origin,
                                                  Ed25519PrivateKey.generate()))
    return page


LIES: dict[str, tuple[Callable[[ServerWorld, dict[str, Any]], Any], str]] = {
    "altered byte": (lambda w, p: _body(p, 2, lambda b: b.replace(b'"allow"', b'"deny!"', 1)
                                        if b'"allow"' in b else b[:-2] + b" }"),
                     "altered, dropped or reordered"),
    "dropped entry, renumbered": (lambda w, p: _drop(p, 3, reindex=True),
                                  "missing below the signed size"),
    "dropped entry, gap": (lambda w, p: _drop(p, 3, reindex=False), "missing or moved"),
    "swapped entries": (lambda w, p: p["entries"].__setitem__(
        slice(1, 3), [{**p["entries"][2], "index": p["entries"][1]["index"]},
                      {**p["entries"][1], "index": p["entries"][2]["index"]}]),
        "altered, dropped or reordered"),
    "withheld tail": (lambda w, p: p["entries"].pop(), "missing below the signed size"),
    "forged left hash": (lambda w, p: p["proof"]["left"].__setitem__(
        0, base64.b64encode(bytes(32)).decode()), "altered, dropped or reordered"),
    "checkpoint under another key": (_forged_note, "does not verify with the pinned log key"),
}


@pytest.mark.parametrize("lie", list(LIES))
def test_a_lying_server_is_caught(world: ServerWorld, tmp_path: Path, lie: str) -> None:
    signed = _signed(world)
    assert signed > 8
    forge, message = LIES[lie]
    client = _client(world, "eve", tmp_path, LyingClient)

    def lying(page: dict[str, Any]) -> dict[str, Any]:
        forge(world, page)  # edits the page in place
        return page

    client.lie = lying
    source = VerifiedPages(client.audit_entries, _log_key(world), where="the server", batch=6)
    with pytest.raises(IntegrityError, match=message) as caught:
        source.read_batch(3)  # left hashes of [0, 3): two subtrees
    assert "audit entries 3.. from the server" in str(caught.value.obj)


def test_an_entry_rewritten_in_the_database_is_caught_through_the_api(
        world: ServerWorld, tmp_path: Path) -> None:
    """Not a simulated lie: the row is edited in the server's own database."""
    signed = _signed(world)
    index = signed - 4
    original = world.ctx.audit().event(index).body
    forged = original.replace(b'"allow"', b'"deny"') if b'"allow"' in original \
        else original.replace(b"}", b' }', 1)
    with world.ctx.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE idx = :i"),
                     {"b": forged, "h": leaf_hash(forged), "i": index})
    try:
        with RemoteService(_client(world, "eve", tmp_path)).audit_source() as source, \
                pytest.raises(IntegrityError, match="altered, dropped or reordered"):
            _export(source)
    finally:
        with world.ctx.store.engine.begin() as conn:
            conn.execute(text("UPDATE audit_entries SET body = :b, leaf_hash = :h "
                              "WHERE idx = :i"),
                         {"b": original, "h": leaf_hash(original), "i": index})


def test_a_server_with_another_log_key_is_refused(world: ServerWorld, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    other = Ed25519Verifier(world.ctx.audit().origin, Ed25519PrivateKey.generate().public_key())
    monkeypatch.setenv("STRONGROOM_LOG_KEY", other.vkey)
    with pytest.raises(ServerKeyChanged, match="not the pinned log key"), \
            RemoteService(_client(world, "eve", tmp_path)).audit_source():
        pass
    monkeypatch.setenv("STRONGROOM_LOG_KEY", _log_key(world).vkey)
    with RemoteService(_client(world, "eve", tmp_path)).audit_source() as source:
        assert source.read_batch(0)
    assert not (tmp_path / "known_servers").exists()  # an explicit pin is not recorded
