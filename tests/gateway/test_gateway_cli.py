"""``strongroom gateway sign-release`` / ``verify-release`` through the Typer sub-app."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from strongroom.cli.gateway_cmd import register
from strongroom.errors import IntegrityError
from strongroom.keys.identity import Identity


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:
        """Test root."""

    return app


def test_two_owners_sign_one_after_the_other(tmp_path: Path) -> None:
    args: list[str] = []
    for name in ("alice", "bob"):
        ident = Identity.generate(name)
        ident.save(tmp_path / f"{name}.id")
        (tmp_path / f"{name}.pub").write_text(ident.public.to_text())
        args += ["--code-owner", str(tmp_path / f"{name}.pub")]
    app, runner, release = _app(), CliRunner(), str(tmp_path / "release.json")
    out = runner.invoke(app, ["gateway", "sign-release", "--identity", str(tmp_path / "alice.id"),
                              "--out", release])
    assert out.exit_code == 0 and "signed by alice" in out.output
    early = runner.invoke(app, ["gateway", "verify-release", release, *args])
    assert isinstance(early.exception, IntegrityError)
    runner.invoke(app, ["gateway", "sign-release", "--identity", str(tmp_path / "bob.id"),
                        "--out", release])
    ok = runner.invoke(app, ["gateway", "verify-release", release, *args])
    assert ok.exit_code == 0 and "signed by alice, bob" in ok.output
