"""``strongroom trust``: list, replace and forget pinned server keys; a pin on first use is announced."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto.dsse import key_id
from strongroom.server.client import Client, KnownServers

import cli_zygote
from cli_fixtures import strongroom_exe

URL = "https://vault.example:8420"


def _key() -> tuple[str, str]:
    pub = Ed25519PrivateKey.generate().public_key()
    return base64.b64encode(pub.public_bytes_raw()).decode(), key_id(pub)


def _trust(pins: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STRONGROOM_KNOWN_SERVERS": str(pins)}
    out = cli_zygote.run([strongroom_exe(), "trust", *args], env, timeout=60)  # forked
    assert "Traceback" not in out.stderr, out.stderr
    return out


def test_trust_lists_replaces_and_forgets(tmp_path: Path) -> None:
    pins = tmp_path / "known_servers"
    assert json.loads(_trust(pins, "ls", "--json").stdout) == []
    first, first_id = _key()
    KnownServers(pins).add(URL, first)
    listed = json.loads(_trust(pins, "ls", "--json").stdout)
    assert listed == [{"url": URL, "key": first, "key_id": first_id}]

    second, _ = _key()
    assert _trust(pins, "set", URL + "/", second).returncode == 0
    assert KnownServers(pins).get(URL) == second and len(KnownServers(pins).pins()) == 1
    assert oct(pins.stat().st_mode & 0o777) == "0o600"

    bad = _trust(pins, "set", URL, "not-a-key")
    assert bad.returncode == 2 and KnownServers(pins).get(URL) == second

    assert _trust(pins, "rm", URL).returncode == 0 and KnownServers(pins).get(URL) is None
    again = _trust(pins, "rm", URL)
    assert again.returncode == 2 and "trust ls" in again.stderr


def test_first_use_pin_is_announced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, kid = _key()
    client = Client(URL, None, known_servers=KnownServers(tmp_path / "pins"))
    client.manifest_key(key)
    err = capsys.readouterr().err
    assert "pinned" in err and kid in err and URL in err
    client.manifest_key(key)
    assert "pinned" not in capsys.readouterr().err
