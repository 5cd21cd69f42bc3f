"""The pinned commitments file: written with each key server's index after setup and after a
re-sharing (``keyserver pin``), used by the release; a list-only file warns and still works."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from strongroom.audit.config import AuditSettings
from strongroom.errors import InvalidInput
from strongroom.keys.config import KeysSettings
from strongroom.runtime import threshold_keys
from strongroom.runtime.keyserver import KeyServer
from strongroom.runtime.threshold_client import ThresholdClient
from strongroom.runtime.threshold_keys import (
    ThresholdKeyService,
    load_commitments,
    load_indices,
    pins_from_statuses,
    write_pins,
)
from strongroom.store.db import Store
from strongroom.supplychain.doctor import run_doctor
from strongroom.threshold.group import Element
from threshold_fixtures import InProcessKeyServer, inprocess_keyservers

from cli_fixtures import make_runner
from keyring_fixtures import init_shamir, submit
from vault_fixtures import make_model, unsealed_vault


def _statuses(servers: list[InProcessKeyServer]) -> dict[str, Any]:
    return {s.name: s.server.status() for s in servers}


def _settings(servers: list[InProcessKeyServer], path: Path) -> KeysSettings:
    spec = ",".join(
        f"{s.name}=http://127.0.0.1:9" for s in servers
    )  # from_settings connects to none
    return KeysSettings(file_keys="threshold", threshold_servers=spec, threshold_commitments=path)


def _pins_findings(settings: KeysSettings, home: Path) -> list[Any]:
    report = run_doctor(lock=None, status=None, keys_settings=settings,
                        audit_settings=AuditSettings(), home=home, environ={})  # fmt: skip
    return [f for f in report.findings if f.check == "threshold-pins"]


def _use(
    vault: Any, servers: list[InProcessKeyServer], path: Path, relay: bool = False
) -> ThresholdKeyService:
    """The vault's key service from the file at ``path``, each server asked in this process; with
    ``relay``, ks-1 answers with ks-2's genuine partial."""
    data = json.loads(path.read_text())
    links: list[tuple[str, Any]] = [(s.name, s.ask) for s in servers]
    if relay:  # ks-2 answers each request once; ks-1 hands on that same partial
        lock, seen = threading.Lock(), {}

        def once(body: Any) -> Any:
            with lock:
                if repr(body) not in seen:
                    seen[repr(body)] = servers[1].ask(body)
                return seen[repr(body)]

        links[0], links[1] = (servers[0].name, once), (servers[1].name, once)
    vault_id = (
        vault.keys.inner.status().vault_id
        if isinstance(vault.keys, ThresholdKeyService)
        else vault.keys.status().vault_id
    )
    host = vault.keys.inner if isinstance(vault.keys, ThresholdKeyService) else vault.keys
    client = ThresholdClient(
        links,
        load_commitments(data, obj=str(path)),
        vault_id=vault_id,
        indices=load_indices(data, obj=str(path)),
    )
    keys = ThresholdKeyService(host, client, vault_id=vault_id)
    vault.keys = keys
    keys.attach(vault)
    return keys


def _fourth_server(tmp: Path, manifest_pub: bytes, principal: bytes) -> InProcessKeyServer:
    """A new key server (index 4), set up and unsealed, holding no share yet."""
    home = tmp / "ks-4"
    home.mkdir()
    store = Store.open(f"sqlite:///{home / 'strongroom.db'}")
    result, cust = init_shamir(store, home)
    ks = KeyServer(store, actor="ks-4")
    for c in (1, 2):
        submit(ks.svc, result, cust, c)
    assert result.officer_identity is not None
    from strongroom.keys.identity import Identity

    s = InProcessKeyServer("ks-4", 4, ks, Identity.load(result.officer_identity).private_key, store)
    s.admin(
        "setup",
        index=4,
        manifest_key=base64.b64encode(manifest_pub).decode(),
        principals=[base64.b64encode(principal).decode()],
    )
    return s


@contextlib.contextmanager
def _group(tmp: Path) -> Iterator[tuple[Any, list[InProcessKeyServer], list[Element]]]:
    """An unsealed vault and three in-process key servers (2 of 3) that pin it; closed after."""
    with unsealed_vault(f"sqlite:///{tmp / 'vault.db'}", tmp) as vault:
        manifest_pub = vault.keys.public_keys()["manifest"]
        servers, commitments = inprocess_keyservers(
            tmp, 3, 2, manifest_pub, [vault.identity.public.public_bytes]
        )
        try:
            yield vault, servers, commitments
        finally:
            for s in servers:
                s.close()


def test_pin_after_setup_and_reshare_writes_indices_the_release_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = tmp_path / "commitments.json"
    with _group(tmp_path) as (vault, servers, commitments):
        host = vault.keys
        manifest_pub = host.public_keys()["manifest"]
        principal = vault.identity.public.public_bytes
        assert write_pins(pinned, pins_from_statuses(_statuses(servers))) is None
        data = json.loads(pinned.read_text())
        assert data == {
            "commitments": [c.hex() for c in commitments],
            "indices": {"ks-1": 1, "ks-2": 2, "ks-3": 3},
        }
        capsys.readouterr()
        from_file = ThresholdKeyService.from_settings(host, _settings(servers, pinned))
        assert from_file.client.indices == {"ks-1": 1, "ks-2": 2, "ks-3": 3}
        from_file.close()
        assert "pins no share indices" not in capsys.readouterr().err

        tensors = make_model(tmp_path / "m.safetensors")
        _use(vault, servers, pinned)
        vault.import_weights(tmp_path / "m.safetensors", name="m")
        # ks-1 relays ks-2's partial: the pinned index refuses it by ks-1's name
        _use(vault, servers, pinned, relay=True)
        with vault.open_weights("m") as weights:
            np.testing.assert_array_equal(weights["ids"], tensors["ids"])
        entry = next(e for e in vault.audit.recent(0.0) if e.action == "key.release")
        assert entry.details["misbehaved"] == ["ks-1"]

        # re-sharing to a fourth server: mid-way, pin refuses, naming the server without a share
        servers.append(_fourth_server(tmp_path, manifest_pub, principal))
        recipients = {str(s.index): s.server.status()["transport"] for s in servers}
        old = [c.hex() for c in commitments]
        dealings = [
            s.admin("deal", mode="reshare", threshold=2, recipients=recipients) for s in servers[:2]
        ]
        before = pinned.read_bytes()
        with pytest.raises(InvalidInput, match="holds no share yet") as mid:
            pins_from_statuses(_statuses(servers))
        assert mid.value.obj == "ks-4"
        servers[0].admin("accept", mode="reshare", dealings=dealings, old_commitments=old, epoch=2)
        with pytest.raises(InvalidInput, match="other commitments than 'ks-1'") as mixed:
            pins_from_statuses(_statuses(servers))
        assert mixed.value.obj == "ks-2"
        assert pinned.read_bytes() == before  # nothing written
        for s in servers[1:]:
            s.admin("accept", mode="reshare", dealings=dealings, old_commitments=old, epoch=2)
        assert write_pins(pinned, pins_from_statuses(_statuses(servers))) is None  # same group key
        data = json.loads(pinned.read_text())
        assert data["indices"] == {"ks-1": 1, "ks-2": 2, "ks-3": 3, "ks-4": 4}
        assert data["commitments"][0] == old[0] and data["commitments"] != old
        # the new pins are in effect: ks-4 is pinned, ks-1 relaying is still caught
        keys = _use(vault, [servers[3], *servers[:3]], pinned)
        assert keys.client.indices["ks-4"] == 4
        with vault.open_weights("m") as weights:
            np.testing.assert_array_equal(weights["ids"], tensors["ids"])
        entry = next(e for e in vault.audit.recent(0.0) if e.action == "key.release")
        assert entry.decision == "allow" and sorted(entry.details["key_servers"]) == [
            "ks-1",
            "ks-4",
        ]

        # a server claiming another's index is refused before anything is written
        lying = _statuses(servers)
        lying["ks-3"] = dict(lying["ks-3"], index=2)
        with pytest.raises(InvalidInput, match="public share is not the commitments'") as liar:
            pins_from_statuses(lying)
        assert liar.value.obj == "ks-3"


def test_list_only_file_warns_names_the_remedy_and_still_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with _group(tmp_path) as (vault, servers, commitments):
        listed, host = tmp_path / "list.json", vault.keys
        listed.write_text(json.dumps([c.hex() for c in commitments]))
        threshold_keys._WARNED.discard(str(listed))
        keys = ThresholdKeyService.from_settings(host, _settings(servers, listed))
        keys.close()
        err = capsys.readouterr().err
        assert f"commitments file {listed} pins no share indices" in err
        assert f"strongroom keyserver pin --out {listed}" in err
        assert keys.client.indices == {}

        home = tmp_path / "doctor-home"
        home.mkdir(mode=0o700)
        (finding,) = _pins_findings(_settings(servers, listed), home)
        assert finding.level == "warning" and str(listed) in finding.message
        assert f"strongroom keyserver pin --out {listed}" in finding.remedy

        # still works, unpinned: the release completes
        tensors = make_model(tmp_path / "m.safetensors")
        _use(vault, servers, listed)
        vault.import_weights(tmp_path / "m.safetensors", name="m")
        with vault.open_weights("m") as weights:
            np.testing.assert_array_equal(weights["ids"], tensors["ids"])

        # pinned: doctor is quiet about it, the vault says nothing
        write_pins(listed, pins_from_statuses(_statuses(servers)))
        assert _pins_findings(_settings(servers, listed), home) == []
        ThresholdKeyService.from_settings(host, _settings(servers, listed)).close()
        assert "pins no share indices" not in capsys.readouterr().err


def test_a_new_group_key_keeps_the_previous_file(tmp_path: Path) -> None:
    pinned = tmp_path / "commitments.json"
    with unsealed_vault(f"sqlite:///{tmp_path / 'vault.db'}", tmp_path) as vault:
        servers, commitments = inprocess_keyservers(
            tmp_path, 2, 2, vault.keys.public_keys()["manifest"], []
        )
        try:
            pinned.write_text(json.dumps([c.hex() for c in commitments]))
            old = pinned.read_bytes()
            recipients = {str(s.index): s.server.status()["transport"] for s in servers}
            dealings = [
                s.admin("deal", mode="dkg", threshold=2, recipients=recipients) for s in servers
            ]
            for s in servers:
                s.admin("accept", mode="dkg", dealings=dealings, epoch=2)
            previous = write_pins(pinned, pins_from_statuses(_statuses(servers)))
            assert (
                previous == tmp_path / "commitments.json.previous" and previous.read_bytes() == old
            )
            assert json.loads(pinned.read_text())["commitments"][0] != commitments[0].hex()
        finally:
            for s in servers:
                s.close()


def test_cli_pin_names_an_unreachable_server_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "commitments.json"
    env = dict(os.environ, STRONGROOM_HOME=str(tmp_path / "home"))
    env.pop("STRONGROOM_THRESHOLD_SERVERS", None)
    run = make_runner(env)
    down = run("keyserver", "pin", "--out", out, "--servers", "ks-a=http://127.0.0.1:9", ok=False)
    assert down.returncode != 0 and "ks-a" in down.stderr and "nothing was written" in down.stderr
    none = run("keyserver", "pin", "--out", out, ok=False)
    assert none.returncode != 0 and "no key servers to pin" in none.stderr
    assert not out.exists()
