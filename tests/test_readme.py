"""README.md's "Use" blocks run as written (issue 17 item 10).

The fenced blocks under "## Use" that an HTML comment ``<!-- readme-test: NAME -->``
marks are extracted from README.md and run in one empty temporary directory, in
a clean environment (``PATH`` with this venv's ``bin`` first, ``HOME`` the
directory, no ``STRONGROOM_*``): the ``embedded`` block with ``bash -euo
pipefail`` (a vault on this host, from key generation to a Grant, an export
and a key rotation; it stays unsealed), the ``python`` block as alice, then the
``server`` block, which seals that vault, starts ``strongroom serve`` itself on
a free loopback port in place of the README's 8420 (the only change made to
any block), unseals and uses it over the API and has an officer seal it. A
renamed command or option, a file the tool does not write, a refused step:
bash stops and the test fails, showing the block's output. It runs in
``make test``. The ``strongroom`` the blocks find first on their ``PATH`` is
a shim (:func:`cli_zygote.shim`) running each command in a process forked from
one that imported the CLI once, with the block's stdin, stdout and stderr, as
the CLI tests run theirs: the console script's start-up was most of the ~65 s
of CPU the test took. ``serve`` is the console script itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import cli_zygote

README = Path(__file__).resolve().parents[1] / "README.md"
_MARKED = re.compile(r"<!-- readme-test: (\w+) -->\n```(\w+)\n(.*?)\n```\n", re.S)
_PORT = "8420"


def use_blocks() -> dict[str, tuple[str, str]]:
    """The marked blocks of README.md's "## Use" section: name -> (language, text)."""
    text = README.read_text(encoding="utf-8")
    assert "\n## Use\n" in text, "README.md has no '## Use' section"
    section = text.split("\n## Use\n", 1)[1].split("\n## ", 1)[0]
    return {name: (lang, body) for name, lang, body in _MARKED.findall(section)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(work: Path, shims: Path) -> dict[str, str]:
    return {
        "PATH": f"{shims}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work),
        "LANG": "C.UTF-8",
        "TMPDIR": str(work),
    }


def _run(name: str, argv: list[str], work: Path, env: dict[str, str],
         groups: list[int] | None = None) -> None:
    """Run ``argv`` in ``work`` and require exit 0, showing its output otherwise.

    The output goes to a file: a background ``serve`` holding a pipe open would
    keep the test waiting. With ``groups``, the command runs in a new process
    group whose id is appended, for :func:`_stop_group`.
    """
    log = work / f"{name}.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=groups is not None)
        if groups is not None:
            groups.append(proc.pid)
        try:
            rc = proc.wait(240)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = -1
    if rc != 0:
        serve_log = work / "serve.log"
        extra = f"\n--- serve.log:\n{serve_log.read_text()[-3000:]}" if serve_log.exists() else ""
        raise AssertionError(f"README block {name!r} exited {rc}:\n"
                             f"{log.read_text()[-6000:]}{extra}")


def _stop_group(pgid: int) -> None:
    """Stop what a block left running in its process group (``serve`` and its workers)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def test_readme_use_blocks_run_as_written(tmp_path: Path,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    blocks = use_blocks()
    assert {"embedded", "python", "server"} <= blocks.keys(), sorted(blocks)
    assert blocks["embedded"][0] == blocks["server"][0] == "sh"
    assert blocks["python"][0] == "python"
    shims = tmp_path_factory.mktemp("readme-bin")
    env = _clean_env(tmp_path, shims)
    cli_zygote.shim(shims, env)
    bash = ["bash", "-euo", "pipefail"]

    def strongroom(*args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "strongroom"), *args]

    groups: list[int] = []
    try:
        (tmp_path / "embedded.sh").write_text(blocks["embedded"][1])
        _run("embedded", [*bash, "embedded.sh"], tmp_path, env)
        assert (tmp_path / "llama-export" / "model.sig").is_file()

        # the Python block, as alice with her load Grant, on the vault the block left unsealed
        (tmp_path / "block.py").write_text(blocks["python"][1])
        _run("python", [sys.executable, "block.py"], tmp_path,
             dict(env, STRONGROOM_IDENTITY="alice.identity"))

        # the server block seals that vault, starts `serve` in the background (in the
        # block's process group), unseals it over the API and has an officer seal it
        port = str(_free_port())
        server = blocks["server"][1]
        assert server.count(_PORT) >= 2, "the server block no longer names port 8420"
        (tmp_path / "server.sh").write_text(server.replace(_PORT, port))
        _run("server", [*bash, "server.sh"], tmp_path, env, groups)
        # its last step, an officer's `seal` over the API, sealed the server it started
        status = httpx.get(f"http://127.0.0.1:{port}/v1/sys/seal-status", timeout=5).json()
        assert status["sealed"] is True, status
    finally:
        for pgid in groups:
            _stop_group(pgid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(strongroom("seal"), cwd=tmp_path, env=env, timeout=60,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
