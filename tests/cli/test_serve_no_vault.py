"""Only ``init`` creates a data directory: other commands in a directory without a vault refuse.

They name the directory they looked at and how to point elsewhere
(``STRONGROOM_HOME``, ``STRONGROOM_URL``), exit 2, create nothing and start no agent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cli_fixtures import strongroom_exe

COMMANDS = [
    ("weights", "ls"), ("weights", "show", "x"), ("audit", "verify"), ("audit", "tail"),
    ("keys", "rotate"), ("monitor", "egress"), ("docs", "ls"), ("serve",),
    ("unseal", "--share", "s.age", "--identity", "k.txt"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_commands_refuse_a_directory_without_a_vault(tmp_path: Path,
                                                     args: tuple[str, ...]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    out = subprocess.run([strongroom_exe(), *args], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, out.stdout + out.stderr
    text = " ".join(out.stderr.split())
    assert f"no vault in {tmp_path / '.strongroom'}" in text
    assert "STRONGROOM_HOME" in text and "STRONGROOM_URL" in text
    assert list(tmp_path.iterdir()) == []  # no data directory, no agent socket
