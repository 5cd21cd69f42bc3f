"""``strongroom ARGS`` in a fresh process without paying the CLI's imports each time.

Starting the console script costs about 1.6 s of CPU, nearly all of it imports
(Typer, Rich, pydantic, SQLAlchemy, the command groups): most of the time of the
CLI tests, which run hundreds of commands. :func:`run` hands each command line
to a *zygote*, one Python process per test session that imported those modules
once and forks a child per command. The child is a new process as the console
script's is: it gets the caller's stdin and two new pipes as stdout and stderr
(passed over a Unix socket), the command's environment, working directory and umask,
runs ``strongroom.cli.entry.main`` as the script does and shuts down as the
interpreter would (non-daemon threads joined, ``atexit`` handlers run, streams
flushed). Nothing a command does reaches the zygote or the next command. The zygote
also builds Typer's command tree once (:func:`_build_the_command_tree_once`), which each
child gets untouched instead of building it again.

What the zygote cannot reproduce is a setting read at import time, so a command
whose environment differs from the zygote's other than in the ``STRONGROOM_*``
settings (read when a command runs; the one read at import is listed in
``_READ_AT_IMPORT``) runs the console script as a plain subprocess. ``STRONGROOM_TEST_CLI_ZYGOTE=0`` runs every command that way.
The fast-path, output-path and age tests start the console script themselves.
:func:`shim` puts a ``strongroom`` on a script's ``PATH`` that runs commands the same way.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Modules the zygote imports before forking: what nearly every vault command loads.
PRELOAD = ("strongroom.cli.entry", "strongroom.cli.main", "strongroom.keys.keyring",
           "strongroom.store.db", "strongroom.vault.vault")

_lock = threading.Lock()
_zygote: tuple[subprocess.Popen[bytes], str, dict[str, str]] | None = None
#: Commands run forked and as plain subprocesses, and the forked ones' CPU seconds.
STATS = {"forked": 0, "spawned": 0, "forked_cpu_s": 0.0}


#: The one STRONGROOM_* variable a module reads when imported (strongroom.redteam.hsm).
_READ_AT_IMPORT = frozenset({"STRONGROOM_TEST_SOFTHSM_LIB"})


def _at_import(env: Mapping[str, str]) -> dict[str, str]:
    """What of ``env`` a process could read while importing: all but the settings (and the
    name of the test pytest is running, which a fixture's environment keeps from its own)."""
    return {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"
            and (not k.startswith("STRONGROOM_") or k in _READ_AT_IMPORT)}


def _start() -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    global _zygote
    if _zygote is not None and _zygote[0].poll() is None:
        return _zygote
    _zygote = _spawn(_at_import(os.environ))
    return _zygote


def _spawn(base: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
    """A zygote started with the environment ``base``, stopped when the session ends."""
    where = tempfile.mkdtemp(prefix="sr-zygote-")
    path, log = os.path.join(where, "sock"), os.path.join(where, "zygote.log")
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, __file__, path], env=base,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the CLI zygote did not start: {Path(log).read_text()}")
        time.sleep(0.02)

    def stop() -> None:
        proc.kill()
        proc.wait()
        shutil.rmtree(where, ignore_errors=True)

    atexit.register(stop)
    return proc, path, base


#: What a shell puts in its commands' environment; no strongroom module reads it.
_SHELL = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})


def shim(directory: Path, env: Mapping[str, str]) -> Path | None:
    """Write ``directory/strongroom``: a command that runs ``strongroom ARGS`` in a process
    forked from a zygote started with ``env`` (whose ``PATH`` names ``directory`` first),
    for scripts that call the command by name (README.md's blocks, tests/test_readme.py).

    The shim hands the zygote its own stdin, stdout and stderr and exits with the command's
    status. It runs the console script itself (``exec``) for ``serve``, which a script may
    start in the background and stop by its process group, and for an environment that
    differs from ``env`` other than in the ``STRONGROOM_*`` settings or what a shell sets.
    None, and no shim, with ``STRONGROOM_TEST_CLI_ZYGOTE=0``.
    """
    if not _enabled():
        return None
    base = {k: v for k, v in _at_import(env).items() if k not in _SHELL}
    _, path, _ = _spawn(base)
    exe = shutil.which("strongroom", path=str(Path(sys.executable).parent))
    assert exe, "the strongroom console script is not installed"
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "strongroom"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"import cli_zygote\nsys.exit(cli_zygote.client({path!r}, {json.dumps(base)!r}, "
        f"{exe!r}))\n"
    )
    script.chmod(0o755)
    return script


def client(path: str, base_json: str, exe: str) -> int:
    """The shim's ``main``: the command forked by the zygote at ``path`` (its stdio this
    process's), or the console script ``exe`` in place of this process."""
    import signal

    argv = [exe, *sys.argv[1:]]
    env = {k: v for k, v in os.environ.items() if k not in _SHELL}
    if argv[1:2] == ["serve"] or _at_import(env) != json.loads(base_json):
        os.execv(exe, argv)
    request = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd(),
                          "umask": _umask()}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        socket.send_fds(conn, [request], [0, 1, 2])
        reader = conn.makefile("rb")
        pid = int(reader.readline())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # passed on to the command
            signal.signal(sig, lambda s, _f: os.kill(pid, s))
        status = reader.readline().split()
    code = int(status[0]) if status else 1
    return 128 - code if code < 0 else code


def _text(data: bytes) -> str:
    """``data`` as ``subprocess.run(..., text=True)`` decodes it (universal newlines)."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def _enabled() -> bool:
    return os.environ.get("STRONGROOM_TEST_CLI_ZYGOTE", "1") != "0"


def run(argv: Sequence[str], env: Mapping[str, str], timeout: float,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Like ``subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True,
    timeout=...)`` for the console script ``argv[0]`` (``cwd`` None: the caller's)."""
    args = [str(a) for a in argv]
    where = str(cwd) if cwd is not None else os.getcwd()
    path, base = "", None
    if _enabled():
        with _lock:
            _, path, base = _start()
    if base is None or _at_import(env) != base:
        STATS["spawned"] += 1
        return subprocess.run(args, capture_output=True, text=True, env=dict(env), cwd=where,
                              timeout=timeout)
    STATS["forked"] += 1
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    request = json.dumps({"argv": args, "env": dict(env), "cwd": where,
                          "umask": _umask()}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        try:
            socket.send_fds(conn, [request], [0, out_w, err_w])
        finally:
            os.close(out_w)
            os.close(err_w)
        reader = conn.makefile("rb")
        pid = int(reader.readline())
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        deadline = time.monotonic() + timeout
        timed_out = False
        with selectors.DefaultSelector() as sel:
            for fd in chunks:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for key, _ in sel.select(left):
                    data = os.read(key.fd, 1 << 16)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        sel.unregister(key.fd)
        if timed_out:
            os.kill(pid, 9)
        status = reader.readline()
    os.close(out_r)
    os.close(err_r)
    stdout, stderr = _text(b"".join(chunks[out_r])), _text(b"".join(chunks[err_r]))
    if timed_out:
        raise subprocess.TimeoutExpired(args, timeout, stdout, stderr)
    code, cpu = status.split()
    STATS["forked_cpu_s"] += float(cpu)
    return subprocess.CompletedProcess(args, int(code), stdout, stderr)


def _umask() -> int:
    """This process's umask (the caller's, which the command's process takes)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


# ---- the zygote -------------------------------------------------------------------------


def _child(request: dict[str, object], fds: list[int]) -> None:
    """The command's process: its streams, environment and directory; then the script's main."""
    import atexit as _atexit
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(str(request["cwd"]))
    umask = request["umask"]
    assert isinstance(umask, int)
    os.umask(umask)
    argv = request["argv"]
    assert isinstance(argv, list)
    sys.argv = [str(a) for a in argv]
    code: object = 0
    try:
        from strongroom.cli.entry import main

        code = main()
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # as the interpreter does
        _atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status & 0xFF)


def _handle(conn: socket.socket) -> None:
    """In a fork of the zygote: start the command's process, report its pid and its status."""
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            break
        data += more
    request = json.loads(data)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _child(request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"{pid}\n".encode())
    _, wait_status, usage = os.wait4(pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    conn.sendall(f"{os.waitstatus_to_exitcode(wait_status)} {cpu:.3f}\n".encode())
    conn.close()


def _build_the_command_tree_once() -> None:
    """Build Typer's Click command tree for the CLI's app here, once, and have every child
    use it: building it is half a forked command's CPU (~0.13 s on a 2-core VM; twice for a
    remote command, whose placement check walks the tree too).

    Each child runs on a copy of this process's memory, so it gets the tree as freshly built
    and untouched by any earlier command, exactly what the console script would build: the
    tree depends only on the app's code (Click reads options' environment variables when a
    command is parsed, not when the tree is built). Any other Typer app is built as before.
    """
    import typer.main

    from strongroom.cli.main import app

    build = typer.main.get_command
    built = build(app)

    def get_command(typer_instance: typer.Typer) -> Any:
        return built if typer_instance is app else build(typer_instance)

    typer.main.get_command = get_command


def _serve(path: str) -> None:
    import importlib
    import signal

    for name in PRELOAD:
        importlib.import_module(name)
    _build_the_command_tree_once()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped without waiting
    parent = os.getppid()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path + ".tmp")
        server.listen(16)
        os.rename(path + ".tmp", path)
        server.settimeout(1.0)
        while os.getppid() == parent:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            if os.fork() == 0:
                server.close()
                conn.settimeout(None)
                try:
                    _handle(conn)
                finally:
                    os._exit(0)
            conn.close()
    Path(path).unlink(missing_ok=True)


if __name__ == "__main__":
    _serve(sys.argv[1])
