"""A console on a real access world for HTTP tests: four enrolled people with software keys.

``env`` (SQLite) and ``env_any`` (each database) in conftest.py yield an :class:`Env`;
``Env.sign_in(name)`` signs in through the WebAuthn endpoints and returns the CSRF token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from access_kit import World, access_world
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fido_softkey import SoftKey, add_keys

from strongroom.access import fido
from strongroom.server.console import ConsoleConfig, build_router
from strongroom.server.context import ServerContext
from strongroom.settings import Settings

from vault_fixtures import make_model

ORIGIN = "https://testserver"


@dataclass
class Env:
    w: World
    client: TestClient
    keys: dict[str, SoftKey]
    ctx: ServerContext

    def sign_in(self, name: str, key: SoftKey | None = None) -> str:
        """Sign in as ``name`` with a fresh client session; returns the page's CSRF token."""
        self.client.cookies.clear()
        csrf = self.csrf("/console/sign-in")
        begin = self.client.post("/webauthn/login/begin", json={"name": name},
                                 headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
        assert begin.status_code == 200, begin.text
        k = key or self.keys[name]
        challenge = fido.unb64url(begin.json()["options"]["challenge"])
        done = self.client.post("/webauthn/login/finish",
                                json={"credential": k.browser_json(k.assertion(challenge))},
                                headers={"X-CSRF-Token": csrf, "Origin": ORIGIN})
        assert done.status_code == 200, done.text
        return self.csrf("/console/inbox")

    def csrf(self, path: str) -> str:
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        marker = '<meta name="csrf-token" content="'
        return page.text.split(marker, 1)[1].split('"', 1)[0]


def make_env(db_url: str, tmp_path: Path) -> Iterator[Env]:
    """The console over ``db_url``: alice requests; bob, carol approve; dave is an officer."""
    with access_world(db_url, tmp_path) as w:
        make_model(tmp_path / "m.safetensors")
        w.vault.import_weights(tmp_path / "m.safetensors", "minilm", compartments=["atlas"])
        w.enroll("alice", roles=("requesters",))
        for name in ("bob", "carol"):
            w.enroll(name)
        w.enroll("dave", roles=("approvers", "security-officers"))
        keys: dict[str, SoftKey] = {}
        directory = w.rule.reader.view()
        for name in ("alice", "bob", "carol", "dave"):
            keys[name] = SoftKey(rp_id="testserver", origin=ORIGIN)
            current = directory.by_name(name)
            assert current is not None
            add_keys(w.store, current, [keys[name].security_key()], w.officers)
        ctx = ServerContext(Settings(home=tmp_path / "home", database_url=w.store.url), w.store,
                            w.keys.svc, w.vault.blobs, owns_store=False)
        app = FastAPI()
        app.include_router(build_router(ctx, ConsoleConfig.for_origin(ORIGIN)))
        with TestClient(app, base_url=ORIGIN) as client:
            yield Env(w, client, keys, ctx)
