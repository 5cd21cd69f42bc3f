"""``strongroom audit export --follow`` with ``STRONGROOM_URL`` set: the real CLI, a real server.

A uvicorn server on a loopback port (checkpoints signed every 0.5 s) and the
installed ``strongroom`` script as an auditor, from an empty home: every line
is an entry a signed checkpoint covers, verified by the exporter against the
log key it pinned on first use, in order and once; entries appended while it
follows arrive within seconds. A row edited in the server's database stops
the export (exit 4) naming the entries.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from server_kit import ServerWorld, UvicornThread, build_world, run_cli

from ocsf_validation import validate_ocsf
from strongroom.audit.merkle import leaf_hash

from cli_fixtures import json_line_reader, strongroom_exe


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerWorld]:
    server = UvicornThread()
    saved = os.environ.get("STRONGROOM_CHECKPOINT_INTERVAL_S")
    os.environ["STRONGROOM_CHECKPOINT_INTERVAL_S"] = "0.5"  # read by the publisher at unseal
    try:
        yield from build_world(tmp_path_factory.mktemp("export-remote"), http_factory=server)
    finally:
        server.stop()
        if saved is None:
            os.environ.pop("STRONGROOM_CHECKPOINT_INTERVAL_S", None)
        else:
            os.environ["STRONGROOM_CHECKPOINT_INTERVAL_S"] = saved


def _env(world: ServerWorld, who: str) -> dict[str, str]:
    path = world.tmp / f"{who}.identity"
    if not path.exists():
        world.people[who].save(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_URL=str(world.http.base_url), STRONGROOM_IDENTITY=str(path),
               STRONGROOM_HOME=str(world.tmp / "client-home"),
               STRONGROOM_KNOWN_SERVERS=str(world.tmp / "known_servers"))
    return env


def _signed_size(world: ServerWorld, at_least: int) -> int:
    """Wait for the publisher to sign a checkpoint covering ``at_least`` entries."""
    deadline = time.monotonic() + 10
    while True:
        size = world.ctx.audit().head()[2]
        if size >= at_least:
            return size
        assert time.monotonic() < deadline, "no checkpoint was signed"
        time.sleep(0.05)


def test_follow_through_the_api_exports_every_signed_entry_once(world: ServerWorld) -> None:
    """The one test of a remote --follow: lines read, entries appended, lines read, SIGTERM."""
    log = world.ctx.audit()
    first_size = _signed_size(world, log.size())
    cursor = world.tmp / "cursor.json"
    proc = subprocess.Popen([strongroom_exe(), "audit", "export", "--follow", "--interval",
                             "0.1", "--cursor", str(cursor)], env=_env(world, "eve"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    read = json_line_reader(proc)

    try:
        first = read(first_size)
        log.append_many([dict(actor="alice", action="weights.read", obj=f"m@{i}",
                              decision="allow") for i in range(3)])
        started = time.monotonic()
        later = read(log.size() - first_size)
        picked_up = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    assert rc == 0, stderr
    assert "pinned" in stderr and "audit log key" in stderr  # on first use, said so
    events = log.events(0, first_size + len(later))
    lines = first + later
    assert [e["metadata"]["sequence"] for e in lines] == list(range(len(events)))  # type: ignore[index]
    for line, entry in zip(lines, events, strict=True):
        validate_ocsf(line)
        assert line["raw_data"].encode() == entry.body  # type: ignore[union-attr]
        mark = line["unmapped"]["strongroom"]  # type: ignore[index]
        assert mark["leaf_hash"] == leaf_hash(entry.body).hex()
        assert mark["checkpoint"]["size"] > entry.index
    assert picked_up < 5, f"appended entries took {picked_up:.1f} s to arrive"
    assert json.loads(cursor.read_text())["next_index"] == len(events)


def test_an_edited_row_stops_the_remote_export(world: ServerWorld) -> None:
    log = world.ctx.audit()
    size = _signed_size(world, log.size())
    index = size - 2
    original = log.event(index).body
    forged = original.replace(b'"actor":"', b'"actor":"x', 1)
    with world.ctx.store.engine.begin() as conn:
        conn.execute(text("UPDATE audit_entries SET body = :b, leaf_hash = :h WHERE idx = :i"),
                     {"b": forged, "h": leaf_hash(forged), "i": index})
    try:
        out = subprocess.run([strongroom_exe(), "audit", "export", "--format", "jsonl"],
                             env=_env(world, "eve"), capture_output=True, text=True, timeout=120)
    finally:
        with world.ctx.store.engine.begin() as conn:
            conn.execute(text("UPDATE audit_entries SET body = :b, leaf_hash = :h "
                              "WHERE idx = :i"), {"b": original, "h": leaf_hash(original),
                                                  "i": index})
    assert out.returncode == 4, out.stderr
    assert "altered, dropped or reordered" in out.stderr and "Traceback" not in out.stderr
    refused = run_cli(world, "alice", "audit", "export", ok=False)
    assert refused.returncode != 0 and "needs one of the roles" in refused.stderr
