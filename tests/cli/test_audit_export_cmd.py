"""``strongroom audit export``'s stop on SIGTERM/SIGINT: a flag a handler sets without a lock.

Python runs a signal handler on the main thread between two bytecodes, also
inside another handler. A handler that called ``threading.Event.set`` could be
interrupted while holding the event's lock by a second signal whose handler
then waited on that lock forever (the key agent hung that way, d660935).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit import AuditLog
from strongroom.cli.audit_export_cmd import SignalStop, _stop_on_signals
from strongroom.crypto.note import Ed25519Signer
from strongroom.store.db import Store

from cli_fixtures import json_line_reader, strongroom_exe


def test_a_handler_run_inside_another_handler_returns() -> None:
    """Whatever lock the stop object holds is held (as an interrupted handler would), then
    the handler runs: it must return. With an Event's set() as the handler it hangs."""
    with _stop_on_signals() as stop:
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        locks = [v for v in vars(stop).values() if hasattr(v, "acquire")]
        returned = threading.Event()

        def interrupted_inside_a_handler() -> None:
            for lock in locks:
                lock.acquire()
            handler(signal.SIGTERM, None)
            returned.set()

        threading.Thread(target=interrupted_inside_a_handler, daemon=True).start()
        assert returned.wait(2), "the signal handler waited on a lock"
        assert stop.is_set()
    assert signal.getsignal(signal.SIGTERM) is not handler  # the previous handler is back


def test_wait_returns_at_its_timeout_or_soon_after_the_signal() -> None:
    stop = SignalStop()
    started = time.monotonic()
    assert stop.wait(0.12) is False
    assert 0.1 <= time.monotonic() - started < 1.0
    threading.Timer(0.1, stop.handler, args=(signal.SIGINT, None)).start()
    started = time.monotonic()
    assert stop.wait(30) is True
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_burst_of_signals_stops_a_following_export(db_url: str, tmp_path: Path) -> None:
    store = Store.open(db_url)
    log = AuditLog(store, Ed25519Signer("strongroom.test/export", Ed25519PrivateKey.generate()),
                   "strongroom.test/export")
    try:
        log.append(actor="alice", action="weights.read", obj="m@1", decision="allow")
    finally:
        log.close()
        store.close()
    env = dict(os.environ, STRONGROOM_HOME=str(tmp_path / "home"), STRONGROOM_DATABASE_URL=db_url)
    env.pop("STRONGROOM_URL", None)
    proc = subprocess.Popen([strongroom_exe(), "audit", "export", "--follow", "--interval", "5"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        json_line_reader(proc)(1)  # following, in its wait
        for _ in range(300):
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # 0: stopped between batches; -SIGTERM: a signal of the burst came after the handlers
    # were put back. Either way it ended, within seconds.
    assert rc in (0, -signal.SIGTERM), proc.stderr.read()  # type: ignore[union-attr]
