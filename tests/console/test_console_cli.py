"""``strongroom console register-token|pending|endorse`` against a real unsealed agent (SQLite)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from fido_softkey import SoftKey
from typer.testing import CliRunner

from strongroom.access.registration import RegisterToken, store_pending
from strongroom.cli import console_cmd, people_cmd
from strongroom.errors import StrongroomError
from strongroom.keys.identity import Identity
from strongroom.settings import Settings
from strongroom.store.db import Store

from cli_fixtures import Run, unseal_home


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    run: Run
    run, env = unseal_home(tmp_path / "home", None)
    for k in ("STRONGROOM_HOME", "STRONGROOM_IDENTITY"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("STRONGROOM_DATABASE_URL", raising=False)
    try:
        yield env
    finally:
        run("seal", ok=False)


def _invoke(monkeypatch: pytest.MonkeyPatch, who: str, *args: str, ok: bool = True) -> str:
    app = typer.Typer()
    for m in (people_cmd, console_cmd):
        m.register(app)
    monkeypatch.setenv("STRONGROOM_IDENTITY", who)
    result = CliRunner().invoke(app, list(args), catch_exceptions=True)
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
        return result.output
    assert isinstance(result.exception, StrongroomError), result.output
    return str(result.exception)


def test_an_officer_endorses_a_registered_key(cli: dict[str, str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    officer = cli["STRONGROOM_IDENTITY"]
    bob = Identity.generate("bob")
    bob.save(tmp_path / "bob.id")
    (tmp_path / "bob.pub").write_text(bob.public.to_text())
    _invoke(monkeypatch, officer, "people", "enroll", "bob", "--key", str(tmp_path / "bob.pub"),
            "--vetting-expires", "2099-01-01", "--role", "approvers")
    key = SoftKey()
    store = Store.open(Settings(home=Path(cli["STRONGROOM_HOME"])).resolved_database_url)
    try:
        store_pending(store, RegisterToken("bob", bob.public.key_id, "n1", int(time.time()) + 60),
                      key.security_key(), 0, now=time.time())
    finally:
        store.close()
    listed = _invoke(monkeypatch, officer, "console", "pending")
    assert "bob" in listed and "pending" in listed
    # bob is no officer: his signature on his own enrollment is refused
    refused = _invoke(monkeypatch, str(tmp_path / "bob.id"), "console", "endorse", "bob",
                      "--credential", key.security_key().id[:16], ok=False)
    assert "not a security officer" in refused
    out = _invoke(monkeypatch, officer, "console", "endorse", "bob",
                  "--credential", key.security_key().id[:16])
    assert "1 security key(s)" in out
    assert "yes" in _invoke(monkeypatch, officer, "console", "pending")
    assert "0 keys registered by bob match" in _invoke(
        monkeypatch, officer, "console", "endorse", "bob", "--credential", "AAAAAAAAAAAA",
        ok=False)
