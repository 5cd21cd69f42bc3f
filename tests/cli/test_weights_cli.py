"""``strongroom weights import|ls|show|verify|export`` as a user runs them, on both databases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_fixtures import grant_cli
from vault_fixtures import make_model


@pytest.fixture
def cli(unsealed_cli_env):  # type: ignore[no-untyped-def]
    run, env = unsealed_cli_env
    run.env = env
    return run


def test_import_ls_show_verify_export(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "m.safetensors"
    make_model(src)
    out = cli("weights", "import", src, "--name", "tiny", "--compartment", "atlas")
    assert "imported tiny@1" in out.stdout
    listed = json.loads(cli("weights", "ls", "--json").stdout)
    assert [{k: r[k] for k in ("name", "version", "files", "bytes", "kind")} for r in listed] == [
        {"name": "tiny", "version": 1, "files": 1, "bytes": src.stat().st_size, "kind": "weights"}]
    assert set(listed[0]) == {"name", "version", "kind", "files", "bytes", "created"}
    shown = json.loads(cli("weights", "show", "tiny", "--json").stdout)
    assert shown["compartments"] == ["atlas"] and shown["files"][0]["path"] == "m.safetensors"
    refused = cli("weights", "verify", "tiny", ok=False)
    assert refused.returncode != 0 and "not enrolled" in refused.stderr
    grant_cli(cli.env, "tiny", ("load", "export"), compartments=("atlas",))
    assert "ok tiny@1" in cli("weights", "verify", "tiny").stdout
    dest = tmp_path / "plain"
    cli("weights", "export", "tiny", "--to", dest, "--reason", "eval handover")
    assert (dest / "m.safetensors").read_bytes() == src.read_bytes()
    tail = cli("audit", "tail", "-n", "50").stdout
    assert '"action":"weights.export"' in tail and "eval handover" in tail


def test_errors_are_one_line_with_a_remedy_and_no_traceback(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    bad = cli("weights", "import", junk, "--name", "junk", ok=False)
    assert bad.returncode == 2
    assert "junk.safetensors" in bad.stderr and "not a valid safetensors file" in bad.stderr
    missing = cli("weights", "show", "nope", ok=False)
    assert missing.returncode == 3 and "weights ls" in missing.stderr
    src = tmp_path / "m.safetensors"
    make_model(src)
    cli("weights", "import", src, "--name", "tiny")
    again = cli("weights", "import", src, "--name", "tiny", ok=False)
    assert again.returncode == 3 and "--new-version" in again.stderr
    no_reason = cli("weights", "export", "tiny", "--to", tmp_path / "x", "--reason", " ", ok=False)
    assert no_reason.returncode == 2 and not (tmp_path / "x").exists()
    assert json.loads(cli("weights", "ls", "--json").stdout)[0]["version"] == 1
