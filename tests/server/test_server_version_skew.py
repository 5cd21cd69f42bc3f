"""A client refuses a server of another API major version and warns on a minor skew.

The server here is a fake one on a loopback port that answers ``/v1/sys/version``
with whatever version the test sets, and records every other request; the
client is the real CLI (``strongroom status``, ``strongroom weights ls``).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from strongroom import __version__
from strongroom.errors import ServerError
from strongroom.keys.identity import Identity
from strongroom.keys.keyring import KeyringStatus
from strongroom.server.api_version import API_MINOR, API_VERSION, check_server_version

from cli_fixtures import strongroom_exe


class FakeServer:
    """Answers the version it is told, a sealed seal status and an empty weights list."""

    def __init__(self) -> None:
        self.version: dict[str, Any] = {}
        self.seen: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.seen.append(self.path)
                body: Any = {
                    "/v1/sys/version": fake.version,
                    "/v1/sys/seal-status": KeyringStatus(initialized=True, sealed=True,
                                                         backend="shamir").to_dict(),
                    "/v1/weights": [],
                }.get(self.path.partition("?")[0])
                data = json.dumps(body).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def _cli(fake: FakeServer, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    ident = tmp / "me.identity"
    if not ident.exists():
        Identity.generate("me").save(ident)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_URL=fake.url, STRONGROOM_IDENTITY=str(ident),
               STRONGROOM_HOME=str(tmp / "home"), STRONGROOM_KNOWN_SERVERS=str(tmp / "known"))
    out = subprocess.run([strongroom_exe(), *args], capture_output=True, text=True, env=env,
                         timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def test_another_major_version_is_refused_before_anything_is_sent(fake: FakeServer,
                                                                  tmp_path: Path) -> None:
    fake.version = {"version": "9.0.0", "api": API_VERSION + 1, "api_minor": 0}
    for args in (("status",), ("weights", "ls")):
        out = _cli(fake, tmp_path, *args)
        assert out.returncode != 0
        assert f"reports API version {API_VERSION + 1} (strongroom 9.0.0)" in out.stderr
        assert f"(strongroom {__version__}) speaks API version {API_VERSION}" in out.stderr
        assert "install the strongroom release the server runs (9.0.0)" in out.stderr
    assert set(fake.seen) == {"/v1/sys/version"}  # nothing else was asked, nothing signed
    assert not (tmp_path / "home").exists()


def test_a_minor_skew_warns_and_works(fake: FakeServer, tmp_path: Path) -> None:
    fake.version = {"version": "0.9.0", "api": API_VERSION, "api_minor": API_MINOR + 1}
    out = _cli(fake, tmp_path, "weights", "ls", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    assert f"runs strongroom 0.9.0 (API {API_VERSION}.{API_MINOR + 1})" in out.stderr
    assert "offers routes this client does not know" in out.stderr
    assert out.stderr.count("warning:") == 1  # once per command, not per request
    fake.version = {"version": __version__, "api": API_VERSION, "api_minor": API_MINOR}
    same = _cli(fake, tmp_path, "status", "--json")
    assert same.returncode == 0 and "warning" not in same.stderr


def test_version_answers_are_judged_strictly() -> None:
    assert check_server_version({"version": "x", "api": API_VERSION,
                                 "api_minor": API_MINOR}, "u") is None
    older = check_server_version({"version": "0.0.1", "api": API_VERSION}, "u")
    assert older is not None and "lacks routes" in older  # no api_minor: minor 0
    for reported in ({}, {"api": "1"}, {"api": True}, {"api": 0}):
        with pytest.raises(ServerError, match="speaks API version"):
            check_server_version(reported, "http://h")
