"""The console script's fast path (cli/entry.py) does what the Typer app does, and stays light.

``strongroom --version|encrypt|decrypt|keygen`` skip loading Typer, Rich and
pydantic. These tests hold the two paths to the same behaviour: the same
functions called with the same arguments for any command line (in process,
against Click's own parser), the same exit codes and output bytes from both
processes, and start-up imports that cannot silently grow back.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.cli import age_files, entry, placement
from strongroom.cli.main import app
from strongroom.crypto import age

from cli_fixtures import strongroom_exe

# -- the same call for the same command line ----------------------------------------


def _typer_call(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]] | str:
    """What the Typer app calls in age_files for ``argv`` (name, arguments), or its error."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for name in entry.COMMANDS:
        original = getattr(age_files, name)

        def record(*args: Any, _name: str = name, _fn: Callable[..., None] = original,
                   **kwargs: Any) -> None:
            calls.append((_name, dict(inspect.signature(_fn).bind(*args, **kwargs).arguments)))

        monkeypatch.setattr(age_files, name, record)
    try:
        code = app(args=argv, standalone_mode=False)
    except Exception as exc:  # a usage error: the fast path must have left it to Click
        return type(exc).__name__
    finally:
        monkeypatch.undo()
    assert code in (None, 0)
    assert len(calls) == 1
    return calls[0]


def _fast(argv: list[str]) -> tuple[str, dict[str, Any]] | None:
    call = entry.fast_call(argv)
    if call is None:
        return None
    fn, kwargs = call
    assert fn is getattr(age_files, fn.__name__)
    return fn.__name__, kwargs


RECIPIENT = "age1rrxlm4t9dc66vjac0lu5k4nrt7ccrm09c4axndky9mv3tt935veqs4c28z"

TAKEN = [  # command lines the fast path must take (the common ones)
    ["encrypt"],
    ["encrypt", "-r", RECIPIENT, "plain.bin"],
    ["encrypt", "plain.bin", "--recipient", RECIPIENT, "-o", "out.age"],
    ["encrypt", f"-r{RECIPIENT}", f"--recipient={RECIPIENT}", "--output=o.age", "-"],
    ["encrypt", "-r", "a", "-r", "b", "-o", "x", "-o", "y"],
    ["encrypt", "-o", "-"],
    ["encrypt", "-o=odd", "-r=odd"],
    ["encrypt", "-output"],
    ["decrypt", "-i", "k1", "--identity", "k2", "in.age"],
    ["decrypt", "--identity=k", "-o", "/dev/null", "-"],
    ["decrypt", "in\udcff.age", "-ik"],
    ["keygen"],
    ["keygen", "-o", "key.txt"],
    ["keygen", "--output", "a", "--output=b"],
    ["keygen", "--pq"],
    ["keygen", "--pq", "-o", "k", "--pq"],
    ["encrypt", "-p", "-a", "plain.bin"],
    ["encrypt", "--armor", "-r", RECIPIENT, "--passphrase"],
]

LEFT = [  # command lines the fast path must leave to Typer
    ["--help"], ["encrypt", "--help"], ["encrypt", "-h"], ["encrypt", "--"],
    ["encrypt", "--", "-x"], ["encrypt", "-r"], ["encrypt", "--recipient"],
    ["encrypt", "-r", "--help"], ["encrypt", "-o", "-x"], ["encrypt", "--recipient="],
    ["encrypt", "a", "b"], ["encrypt", "--recip", "x"], ["encrypt", "-i", "k"],
    ["decrypt", "-r", "x"], ["keygen", "x"], ["keygen", "-r", "x"], ["--version", "encrypt"],
    ["encrypt", "--version"], ["weights", "ls"], [], ["Encrypt"],
    ["encrypt", "-pa"], ["encrypt", "--armor=yes"], ["keygen", "--pq=1"], ["decrypt", "-p"],
]


@pytest.mark.parametrize("argv", TAKEN, ids=" ".join)
def test_fast_path_calls_what_typer_calls(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _fast(argv)
    assert fast is not None, "the fast path should take this command line"
    assert fast == _typer_call(argv, monkeypatch)


@pytest.mark.parametrize("argv", LEFT, ids=lambda a: " ".join(a) or "(none)")
def test_fast_path_leaves_the_rest_to_typer(argv: list[str]) -> None:
    assert _fast(argv) is None


_TOKENS = st.sampled_from(["encrypt", "decrypt", "keygen", "-r", "--recipient", "-i",
                           "--identity", "-o", "--output", "--", "-", "-x", "--help", "a",
                           "b.age", "-ra", "-ob", "--output=c", "--recipient=", "-o=", "",
                           "-", "--identity=k", "-ik", "x y", "--version", "-p", "-a",
                           "--armor", "--pq", "-pa"])


@settings(max_examples=150, deadline=None)
@given(st.lists(_TOKENS, max_size=7))
def test_any_command_line_is_parsed_as_click_parses_it(argv: list[str]) -> None:
    if argv == ["--version"]:
        return  # printed by both (test_both_processes_answer_alike)
    fast = _fast(argv)
    if fast is None:
        return
    with pytest.MonkeyPatch.context() as mp:
        assert fast == _typer_call(argv, mp)


def test_the_fast_commands_run_anywhere() -> None:
    """The fast path skips the STRONGROOM_URL placement check: it must have nothing to refuse."""
    assert set(entry.COMMANDS) <= placement.ANYWHERE


# -- the same process behaviour ------------------------------------------------------

_TYPER_MAIN = ("import sys; sys.argv[0] = sys.argv.pop(1); "
               "from strongroom.cli.main import main; main()")
_FAST_MAIN = _TYPER_MAIN.replace("cli.main", "cli.entry")


def _both(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
          stdin: bytes = b"") -> tuple[subprocess.CompletedProcess[bytes], ...]:
    """``strongroom ARGV`` through the console script and through the Typer app's main()."""
    exe = strongroom_exe()
    cmds = [[exe, *argv], [sys.executable, "-c", _TYPER_MAIN, exe, *argv]]
    with ThreadPoolExecutor(2) as pool:
        return tuple(pool.map(lambda c: subprocess.run(c, input=stdin, capture_output=True,
                                                       cwd=cwd, env=env, timeout=120), cmds))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    identity = age.X25519Identity.generate()
    (tmp_path / "key.txt").write_text(f"# public key: {identity.recipient}\n{identity}\n")
    (tmp_path / "recipient").write_text(str(identity.recipient))
    (tmp_path / "plain.bin").write_bytes(os.urandom(200_000))
    (tmp_path / "in.age").write_bytes(
        age.encrypt((tmp_path / "plain.bin").read_bytes(), [identity.recipient]))
    (tmp_path / "bad.age").write_bytes(b"age-encryption.org/v1\n-> nonsense\n")
    (tmp_path / "other.txt").write_text(f"{age.X25519Identity.generate()}\n")
    return tmp_path


PROCESS_CASES = [
    ["--version"],
    ["decrypt", "-i", "key.txt", "in.age"],
    ["decrypt", "--identity=key.txt", "-o", "-", "-"],
    ["decrypt", "-i", "other.txt", "in.age"],
    ["decrypt", "-i", "key.txt", "bad.age"],
    ["decrypt", "-i", "missing.txt", "in.age"],
    ["decrypt", "in.age"],
    ["encrypt", "plain.bin"],
    ["encrypt", "-r", "not-a-recipient", "plain.bin"],
    ["encrypt", "-r", "@RECIPIENT", "missing.bin"],
    ["encrypt", "-r", "@RECIPIENT", "-o", "/", "plain.bin"],
    ["keygen", "-o", "key.txt"],
    ["encrypt", "--bogus"],
    ["keygen", "extra"],
]


def test_both_processes_answer_alike(files: Path) -> None:
    recipient = (files / "recipient").read_text()
    for case in PROCESS_CASES:
        argv = [recipient if a == "@RECIPIENT" else a for a in case]
        stdin = (files / "in.age").read_bytes() if argv[-1] == "-" else b""
        fast, full = _both(argv, files, stdin=stdin)
        assert b"Traceback" not in fast.stderr + full.stderr, (argv, fast.stderr, full.stderr)
        assert (fast.returncode, fast.stdout, fast.stderr) == (
            full.returncode, full.stdout, full.stderr), argv


def test_both_processes_encrypt_alike(files: Path) -> None:
    """Ciphertext is random: both decrypt to the input, the same size, and the same files appear."""
    recipient = (files / "recipient").read_text()
    identity = age.parse_identities((files / "key.txt").read_text())
    fast, full = _both(["encrypt", "-r", recipient, "plain.bin"], files)
    assert fast.returncode == full.returncode == 0 and fast.stderr == full.stderr == b""
    assert len(fast.stdout) == len(full.stdout)
    for out in (fast.stdout, full.stdout):
        assert age.decrypt(out, identity) == (files / "plain.bin").read_bytes()
    fast, full = _both(["keygen"], files)
    assert fast.returncode == full.returncode == 0 and fast.stderr == full.stderr == b""
    def shape(out: bytes) -> list[tuple[str, int]]:
        return [(line[:15], len(line)) for line in out.decode().splitlines()]

    assert shape(fast.stdout) == shape(full.stdout)


def test_a_reader_that_goes_away_ends_both_alike(files: Path) -> None:
    """decrypt | head -c 1 (the write fails with EPIPE): exit 1 without a message, both paths."""
    fail = ("from strongroom.cli import age_files\n"
            "def broken(*a, **k): raise BrokenPipeError(32, 'Broken pipe')\n"
            "age_files.decrypt = broken\n")
    exe = strongroom_exe()
    results = []
    for run_main in (_FAST_MAIN, _TYPER_MAIN):
        code = fail + run_main.replace("; ", "\n")
        proc = subprocess.run([sys.executable, "-c", code, exe, "decrypt", "-i", "key.txt",
                               "in.age"], cwd=files, capture_output=True, timeout=120)
        results.append((proc.returncode, proc.stderr))
    assert results[0] == results[1] == (1, b"")


def test_version_and_help_run_with_a_server_named(tmp_path: Path) -> None:
    env = {**os.environ, "STRONGROOM_URL": "http://127.0.0.1:9"}
    fast, full = _both(["--version"], tmp_path, env=env)
    assert fast.returncode == full.returncode == 0 and fast.stdout == full.stdout
    assert fast.stdout.startswith(b"strongroom ")
    fast, full = _both(["--help"], tmp_path, env=env)
    assert fast.returncode == full.returncode == 0 and b"Usage:" in fast.stdout
    assert fast.stdout == full.stdout


# -- start-up stays light ------------------------------------------------------------

_LOADED = ("import atexit, sys; sys.argv[0] = sys.argv.pop(1); "
           "atexit.register(lambda: sys.stderr.write('\\nMODULES ' + ' '.join(sys.modules)));"
           "from strongroom.cli.entry import main; main()")


def _modules_loaded(argv: list[str], cwd: Path) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", _LOADED, strongroom_exe(), *argv], cwd=cwd,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {m.split(".")[0] for m in proc.stderr.decode().rsplit("MODULES ", 1)[1].split()}


def test_fast_commands_load_neither_typer_nor_rich_nor_pydantic(files: Path) -> None:
    recipient = (files / "recipient").read_text()
    heavy = {"typer", "click", "rich", "pydantic", "pydantic_core", "pydantic_settings"}
    assert _modules_loaded(["--version"], files) & (heavy | {"cryptography", "typing"}) == set()
    assert _modules_loaded(["encrypt", "-r", recipient, "plain.bin"], files) & heavy == set()
    assert _modules_loaded(["decrypt", "-i", "key.txt", "in.age"], files) & heavy == set()


def test_the_typer_app_does_not_load_the_servers_dependencies() -> None:
    """Registering every command group imports none of what only some commands need."""
    code = "import sys, strongroom.cli.main; print(' '.join(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded = {m.split(".")[0] for m in proc.stdout.split()}
    lazy = {"sqlalchemy", "alembic", "psycopg", "fastapi", "starlette", "uvicorn", "jinja2",
            "numpy", "safetensors", "boto3", "botocore", "cedarpy", "pkcs11", "webauthn",
            "httpx", "yaml", "pydantic_settings", "multipart", "prometheus_client"}
    assert loaded & lazy == set()
