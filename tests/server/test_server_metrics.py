"""GET /metrics: who may scrape it, the counters a release and a refusal move, promtool's verdict."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_kit import ServerWorld, build_world

TOKEN = "s" * 40


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerWorld]:
    monkeypatch.setenv("STRONGROOM_METRICS_TOKEN", TOKEN)
    yield from build_world(tmp_path)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(world: ServerWorld) -> str:
    r = world.http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.text


def test_metrics_need_an_auditor_an_officer_or_the_scrape_token(world: ServerWorld) -> None:
    assert world.http.get("/metrics").status_code == 401
    wrong = world.http.get("/metrics", headers={"authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401 and "metrics token" in wrong.json()["error"]
    assert world.client("alice").get("/metrics").status_code == 403  # a requester
    assert world.client("eve").get("/metrics").status_code == 200  # an auditor
    assert world.client("officer").get("/metrics").status_code == 200
    # the missing signature and the wrong token were audited like any refused request
    refused = [e for e in world.ctx.audit().tail(10)
               if (e.action, e.decision, e.object) == ("api.request", "deny", "GET /metrics")]
    assert [e.details["error"] for e in refused] == ["Unauthenticated"] * 2
    assert not any("x" * 40 in e.body.decode() or TOKEN in e.body.decode() for e in refused)


def test_a_release_and_a_refusal_move_the_counters(world: ServerWorld) -> None:
    world.grant_load()
    before = samples(scrape(world))
    ok = world.client("alice").post("/v1/keys/release", world.release_body("alice"))
    assert ok.status_code == 200, ok.text
    denied = world.client("bob").post("/v1/keys/release", world.release_body("bob"))
    assert denied.status_code == 403, denied.text
    assert world.http.get("/v1/weights").status_code == 401  # unsigned: an API refusal
    text = scrape(world)
    after = samples(text)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("strongroom_releases_total", decision="allow", reason="granted") == 1
    # bob has no grant: refused as "approval_required"
    assert moved("strongroom_releases_total", decision="deny", reason="approval_required") == 1
    assert moved("strongroom_release_duration_seconds_count", decision="allow") == 1
    assert moved("strongroom_release_duration_seconds_count", decision="deny") == 1
    shard = world.client("alice").get("/v1/weights/tiny/manifest").json()["manifest"]["files"][0]
    assert moved("strongroom_egress_bytes_total") == shard["size"]  # as signed
    assert moved("strongroom_api_refusals_total", error="Unauthenticated") >= 1
    assert moved("strongroom_audit_batch_entries_sum") >= 2  # the allow and the deny entries
    assert moved("strongroom_audit_commit_duration_seconds_count") >= 1
    assert value(after, "strongroom_sealed") == 0 and value(after, "strongroom_initialized") == 1
    assert moved("strongroom_audit_entries") >= 2
    assert value(after, "strongroom_alerts_open", severity="critical") >= 0
    assert ("strongroom_monitor_running", ()) in after
    # labels are fixed classes: no principal, artifact or message appears in a scrape
    for secretish in ("alice", "bob", "tiny", "evidence"):
        assert secretish not in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; "
                    "scripts/system-deps.sh installs it): the format check did not run")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_release_batch_counts_each_release(world: ServerWorld) -> None:
    """The gate's batch (the key agent's path) counts its releases at once: each still counted,
    its time observed, its bytes added; a refusal inside the batch counted as its own."""
    from cryptography.hazmat.primitives import serialization

    from strongroom.release.request import Shard, build_request

    world.grant_load()
    m = world.client("alice").get("/v1/weights/tiny/manifest").json()["manifest"]
    f = m["files"][0]
    shard = Shard(f"{m['name']}@{m['version']}", f["path"], f["blob"], f["size"])

    def request(who: str) -> object:
        body = world.release_body(who)
        raw = world.people[who].private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return build_request(shard, principal=who, principal_key=raw, purpose="load",
                             evidence=body["evidence"])

    before = samples(scrape(world))
    out = world.ctx.keys.release_many([request("alice"), request("bob"), request("alice")])
    assert [isinstance(o, bytearray) for o in out] == [True, False, True], out
    after = samples(scrape(world))

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("strongroom_releases_total", decision="allow", reason="granted") == 2
    assert moved("strongroom_release_duration_seconds_count", decision="allow") == 2
    assert moved("strongroom_release_duration_seconds_sum", decision="allow") > 0
    assert moved("strongroom_egress_bytes_total") == 2 * f["size"]
    assert moved("strongroom_releases_total", decision="deny", reason="approval_required") == 1
    assert moved("strongroom_release_duration_seconds_count", decision="deny") == 1


def test_seal_shows_in_the_metrics(world: ServerWorld) -> None:
    world.ctx.keys.seal()
    after = samples(scrape(world))
    assert value(after, "strongroom_sealed") == 1



_RACE = """
import threading, time
import prometheus_client
real = prometheus_client.Counter.__init__
def slow(self, *a, **k):
    time.sleep(0.05)  # widen the window in which two first uses overlap
    real(self, *a, **k)
prometheus_client.Counter.__init__ = slow
from strongroom.runtime import metrics
start, got, errors = threading.Barrier(8), [], []
def first_use():
    start.wait()
    try:
        got.append(id(metrics._instruments()))
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=first_use) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not errors, errors
assert len(set(got)) == 1, got
"""


def test_the_instruments_are_created_once_under_concurrent_first_use() -> None:
    """Eight threads using the process's instruments for the first time at once: one
    registration (prometheus-client refuses a duplicate name, which was a 500)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _RACE], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
