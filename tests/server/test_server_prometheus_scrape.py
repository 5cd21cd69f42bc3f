"""One scrape by a real Prometheus server (Debian ``prometheus``) on loopback (issue 18 item 4).

A strongroom API on a real uvicorn port, a release through its gate, and a
Prometheus whose scrape config is the one docs/operations.md gives (bearer
token from a file): the target is up, and a PromQL query over what Prometheus
stored sees the release counter. A wrong token leaves the target down — the
scrape config is what authorises Prometheus, nothing else.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_kit import ServerWorld, UvicornThread, _free_port, build_world

TOKEN = "scrape-token-" + "s" * 32


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerWorld]:
    monkeypatch.setenv("STRONGROOM_METRICS_TOKEN", TOKEN)
    uv = UvicornThread()
    try:
        yield from build_world(tmp_path, http_factory=uv)
    finally:
        uv.stop()


def _config(tmp: Path, target: str, token: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    creds = tmp / "token"
    creds.write_text(token)
    creds.chmod(0o600)
    cfg = tmp / "prometheus.yml"
    cfg.write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: strongroom
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: {creds}
    static_configs:
      - targets: ["{target}"]
""")
    return cfg


@contextlib.contextmanager
def _prometheus(tmp: Path, target: str, token: str) -> Iterator[str]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("prometheus is not installed (Debian package prometheus; "
                    "scripts/system-deps.sh installs it)")
    port = _free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen([exe, f"--config.file={_config(tmp, target, token)}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    return list(r.json()["data"]["result"])


def _wait(base: str, promql: str, want: Any, seconds: float = 45) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = _query(base, promql)
            if want(last):
                return last
        time.sleep(0.5)
    raise AssertionError(f"{promql}: {last}")


def test_a_real_prometheus_scrapes_the_release_counter(world: ServerWorld, tmp_path: Path) -> None:
    world.grant_load()
    r = world.client("alice").post("/v1/keys/release", world.release_body())
    assert r.status_code == 200, r.text
    target = world.http.base_url.netloc.decode()
    with _prometheus(tmp_path / "good", target, TOKEN) as prom:
        _wait(prom, 'up{job="strongroom"}', lambda res: res and res[0]["value"][1] == "1")
        got = _wait(prom, 'sum(strongroom_releases_total{decision="allow"})',
                    lambda res: res and float(res[0]["value"][1]) >= 1)
        assert float(got[0]["value"][1]) >= 1
        seal = _wait(prom, "strongroom_sealed", lambda res: bool(res))
        assert seal[0]["value"][1] == "0"


def test_a_prometheus_with_the_wrong_token_sees_the_target_down(world: ServerWorld,
                                                                 tmp_path: Path) -> None:
    target = world.http.base_url.netloc.decode()
    with _prometheus(tmp_path / "bad", target, "not-the-token-" + "x" * 32) as prom:
        res = _wait(prom, 'up{job="strongroom"}', lambda res: bool(res))
        assert res[0]["value"][1] == "0"
