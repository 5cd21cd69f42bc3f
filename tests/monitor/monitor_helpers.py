"""Helpers for the monitor tests: an audit log on a store, and a loopback webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit.log import AuditLog
from strongroom.crypto.note import Ed25519Signer
from strongroom.store.db import Store


def audit_log(store: Store) -> AuditLog:
    """A fresh audit log on ``store``."""
    return AuditLog(store, Ed25519Signer("monitor.test/log", Ed25519PrivateKey.generate()))


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POSTed JSON body it accepts.

    ``status`` is what it answers (204: accepted; set another to refuse);
    ``headers`` keeps each accepted request's headers.
    """

    def __init__(self, port: int = 0) -> None:
        received: list[dict[str, Any]] = []
        keys: list[str] = []
        headers: list[dict[str, str]] = []
        self.status = 204
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                status = owner.status
                if status < 300:
                    received.append(body)
                    keys.append(self.headers.get("Idempotency-Key", ""))
                    headers.append(dict(self.headers.items()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.received = received
        self.keys = keys
        self.headers = headers
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiver(port: int = 0) -> Iterator[Receiver]:
    """A running receiver, stopped afterwards."""
    r = Receiver(port).start()
    try:
        yield r
    finally:
        r.stop()
