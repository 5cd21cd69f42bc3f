"""A real ``strongroom serve --workers 2 --log-format json``: metrics summed over the agent and
the workers (multiprocess mode under ``<home>/metrics``), and JSON log lines with no secret."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from strongroom.keys.identity import Identity
from strongroom.server.client import Client, KnownServers

from cli_fixtures import grant_cli, serve_process, unseal_home
from vault_fixtures import make_model

TOKEN = "metrics-token-" + "t" * 32


def _allowed(text: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "strongroom_releases_total" and s.labels.get("decision") == "allow")


@pytest.mark.slow  # a real serve --workers 2 (~40 s): `make test-slow`; test_server_metrics covers /metrics in make test
def test_serve_sums_every_process_and_logs_json(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run, env = unseal_home(home, None, {"STRONGROOM_HOST_ID": "metrics-host"})
    run("seal")  # serve starts its own agent
    env = dict(env, STRONGROOM_METRICS_TOKEN=TOKEN)
    log = tmp_path / "serve.log"
    with serve_process(env, log, "--workers", "2", "--log-format", "json") as base:
        shares = sorted((home.parent / "shares").glob("share-*.age"))
        for i in (1, 2):
            run("unseal", "--share", shares[i - 1], "--identity",
                home.parent / "custodians" / f"c{i}.key")
        model = tmp_path / "m.safetensors"
        make_model(model)
        run("weights", "import", model, "--name", "tiny")
        grant_cli(env, "tiny")
        me = Identity.load(Path(env["STRONGROOM_IDENTITY"]))
        with Client(base, me, known_servers=KnownServers(tmp_path / "known_servers")) as client:
            client.verify("tiny", purpose="load")  # a release by the agent's gate
        # each scrape reaches one worker; each sums the agent's counters from the shared files
        for _ in range(4):
            r = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {TOKEN}",
                                                       "x-request-id": "scrape-1"})
            assert r.status_code == 200, r.text
            assert _allowed(r.text) >= 1, r.text
            assert r.headers["x-request-id"] == "scrape-1"
        assert httpx.get(f"{base}/metrics").status_code == 401
        metrics_dir = home / "metrics"
        assert stat.S_IMODE(os.stat(metrics_dir).st_mode) == 0o700
        assert list(metrics_dir.glob("*.db"))
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "serve logged nothing"
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert {"time", "level", "logger", "message"} <= set(entry), entry
    assert any(json.loads(line)["logger"].startswith("uvicorn") for line in lines)
    agent_lines = [line for line in (home / "agent.log").read_text().splitlines()
                   if line.startswith("{")]
    assert agent_lines and all("message" in json.loads(line) for line in agent_lines)
    secret_key = me.to_text().splitlines()[-1]  # the identity's secret key line
    for secret in (TOKEN, secret_key):
        assert secret not in text and secret not in (home / "agent.log").read_text()
