"""``strongroom weights import --cipher``: the payload mode per import, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path


def test_import_with_cipher_records_the_mode_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    from cli_fixtures import unseal_home
    from vault_fixtures import make_model

    cli, _ = unseal_home(tmp_path / "home", None)
    try:
        src = tmp_path / "m.safetensors"
        make_model(src)
        cli("weights", "import", src, "--name", "fips", "--cipher", "aes-256-gcm")
        cli("weights", "import", src, "--name", "plain")
        shown = json.loads(cli("weights", "show", "fips", "--json").stdout)
        assert [f.get("cipher") for f in shown["files"]] == ["aes-256-gcm"]
        plain = json.loads(cli("weights", "show", "plain", "--json").stdout)
        assert [f.get("cipher") for f in plain["files"]] == [None]  # age's ChaCha20-Poly1305
        refused = cli("weights", "import", src, "--name", "x", "--cipher", "des", ok=False)
        assert refused.returncode != 0 and "unknown payload cipher 'des'" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        cli("seal", ok=False)
