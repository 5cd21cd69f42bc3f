"""With STRONGROOM_URL set, a command goes to the server, runs here without a vault, or is refused."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import typer.main

from strongroom.cli import placement
from strongroom.cli.main import app, command_path

from cli_fixtures import strongroom_exe


def _commands(cmd: object, path: list[str]) -> list[str]:
    subs = getattr(cmd, "commands", None)
    if not subs:
        return [" ".join(path)]
    return [c for name, sub in sorted(subs.items()) for c in _commands(sub, [*path, name])]


ALL = _commands(typer.main.get_command(app), [])


def test_every_command_has_exactly_one_place() -> None:
    places = (placement.REMOTE, placement.ANYWHERE, placement.VAULT_HOST)
    for command in ALL:
        assert sum(command in p for p in places) == 1, f"{command!r}: classify it in cli/placement.py"
    assert set().union(*places) == set(ALL), "cli/placement.py names a command that does not exist"


def test_command_path_resolves_nested_groups() -> None:
    assert command_path(["access", "policy", "show", "--json"]) == "access policy show"
    assert command_path(["weights", "ls"]) == "weights ls"
    assert command_path(["--help"]) == ""


@pytest.mark.parametrize("argv", [["rekey"], ["weights", "export", "m", "--to", "x",
                                              "--reason", "r"], ["access", "policy", "show"],
                                  ["monitor", "budget", "lab", "*", "1"]])
def test_vault_host_commands_are_refused_remotely_and_touch_nothing(
        tmp_path: Path, argv: list[str]) -> None:
    env = {**os.environ, "STRONGROOM_URL": "http://127.0.0.1:9", "HOME": str(tmp_path)}
    env.pop("STRONGROOM_HOME", None)
    proc = subprocess.run([strongroom_exe(), *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "runs only on the vault host" in proc.stderr and "STRONGROOM_URL" in proc.stderr
    assert list(tmp_path.iterdir()) == [], "a refused command created files"


def test_commands_without_a_vault_still_run_with_a_server_named(tmp_path: Path) -> None:
    env = {**os.environ, "STRONGROOM_URL": "http://127.0.0.1:9"}
    proc = subprocess.run([strongroom_exe(), "keygen"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "AGE-SECRET-KEY-1" in proc.stdout


def test_version_and_environment_in_help(tmp_path: Path) -> None:
    from strongroom import __version__

    out = subprocess.run([strongroom_exe(), "--version"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"strongroom {__version__}"
    helped = subprocess.run([strongroom_exe(), "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    for name in ("STRONGROOM_URL", "STRONGROOM_IDENTITY", "STRONGROOM_HOME"):
        assert name in helped.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["weights", "export", "--help"], ["weights", "--help"],
                                  ["people"], ["backup", "create", "--help"]])
def test_help_and_bare_groups_are_never_refused_with_a_server_named(
        tmp_path: Path, args: list[str]) -> None:
    """Help runs nothing, so naming a server does not refuse it (a vault-host command's help
    included); a group named alone prints its commands."""
    env = {**os.environ, "STRONGROOM_URL": "http://127.0.0.1:9"}
    out = subprocess.run([strongroom_exe(), *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert "runs only on the vault host" not in out.stdout + out.stderr
    assert "Usage" in out.stdout + out.stderr
    assert list(tmp_path.iterdir()) == []


def test_docs_cli_md_lists_every_command_where_it_runs() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    for command in ALL:
        where = ("server (API)" if command in placement.REMOTE else "here, no vault needed"
                 if command in placement.ANYWHERE else "vault host only")
        assert f"| `strongroom {command}` | {where} |" in docs, f"docs/cli.md: {command}"


def test_remote_table_is_what_the_remote_service_performs() -> None:
    from strongroom.service.embedded import EmbeddedService
    from strongroom.service.protocol import COMMANDS, Service, offered
    from strongroom.service.remote import RemoteService

    operations = {name for name in vars(Service) if not name.startswith("_")} - {"close"}
    assert {op for ops in COMMANDS.values() for op in ops} == operations
    for impl in (EmbeddedService, RemoteService):
        assert all(callable(getattr(impl, op, None)) for op in operations), impl
    assert offered(EmbeddedService) == operations
    performed = offered(RemoteService)
    for command, ops in COMMANDS.items():
        assert (command in placement.REMOTE) == set(ops).issubset(performed), command
        assert (command in placement.VAULT_HOST) == (command not in placement.REMOTE), command


def test_a_refused_remote_operation_says_where_it_runs() -> None:
    from strongroom.errors import InvalidInput
    from strongroom.server.client import Client
    from strongroom.service.protocol import COMMANDS
    from strongroom.service.remote import RemoteService

    svc = RemoteService(Client("http://127.0.0.1:9", None))
    try:
        refused = [c for c in COMMANDS if c in placement.VAULT_HOST]
        assert refused, "every operation is offered remotely: drop this test's premise"
        command = refused[0]
        with pytest.raises(InvalidInput) as err:
            getattr(svc, COMMANDS[command][0])()
        assert err.value.exit_code == 2
        assert f"`strongroom {command}` runs only on the vault host" in err.value.message
        assert "http://127.0.0.1:9" in err.value.message
    finally:
        svc.close()
