"""Hybrid security officers (issue 23 item 3): ML-DSA-65 beside Ed25519 on officer statements.

``init --officer`` takes a ``keys new-identity --pq`` public key and the keyring
pins both its keys; that officer's enrollments, labels, revocations and
cosignatures carry both signatures, on the vault host and through a running
``strongroom serve``, and count only when both verify: a statement whose
ML-DSA-65 signature was stripped or corrupted is refused, naming the missing
or failing signature. A classical officer beside it keeps working, and a
keyring written before hybrid officers (no ML-DSA entry) still opens.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.access import statements
from strongroom.access.directory import DirectoryReader, Enrollment, Vetting, level
from strongroom.crypto.age import X25519Identity
from strongroom.crypto.hybrid_sig import mldsa_key_id
from strongroom.errors import AccessDenied, IntegrityError
from strongroom.keys.identity import Identity
from strongroom.keys.officers import Officers
from strongroom.store.db import Store

from cli_fixtures import Run, make_runner, serve_process


def _vault(tmp: Path) -> tuple[Run, dict[str, str]]:
    """A 2-of-2 vault whose two officers are olivia (hybrid) and oscar (classical), unsealed."""
    home = tmp / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STRONGROOM_DATABASE_URL", "STRONGROOM_IDENTITY", "STRONGROOM_URL")
    }
    env["STRONGROOM_HOME"] = str(home)
    run = make_runner(env)
    run("keys", "new-identity", "--pq", "--name", "olivia", "-o", tmp / "olivia.identity")
    run("keys", "new-identity", "--name", "oscar", "-o", tmp / "oscar.identity")
    custodians = []
    for i in (1, 2):
        ident = X25519Identity.generate()
        (tmp / f"c{i}.key").write_text(f"{ident}\n")
        (tmp / f"c{i}.pub").write_text(f"{ident.recipient}\n")
        custodians += ["--custodian", str(tmp / f"c{i}.pub")]
    run(
        "init",
        *custodians,
        "--threshold",
        "2",
        "--shares-dir",
        tmp / "shares",
        "--officer",
        tmp / "olivia.identity.pub",
        "--officer",
        tmp / "oscar.identity.pub",
        "--officer-threshold",
        "2",
    )
    _unseal(run, tmp)
    # olivia's identity without its ML-DSA-65 key: what a stripped signature is made with
    olivia = Identity.load(tmp / "olivia.identity")
    Identity(olivia.private_key, olivia.name).save(tmp / "olivia-classical.identity")
    for name in ("alice", "bob", "carol"):
        (tmp / f"{name}.pub").write_text(Identity.generate(name).public.to_text())
    return run, env


def _unseal(run: Run, tmp: Path) -> None:
    shares = sorted((tmp / "shares").glob("share-*.age"))
    for i in (1, 2):
        run("unseal", "--share", shares[i - 1], "--identity", tmp / f"c{i}.key")


def _as(env: dict[str, str], tmp: Path, who: str, **extra: str) -> Run:
    return make_runner(dict(env, STRONGROOM_IDENTITY=str(tmp / f"{who}.identity"), **extra))


def _pins(tmp: Path) -> Officers:
    """The officers as the keyring pins them, from their .pub files."""
    olivia = Identity.load(tmp / "olivia.identity").public
    oscar = Identity.load(tmp / "oscar.identity").public
    pq = olivia.mldsa_key
    assert pq is not None
    return Officers(
        {olivia.key_id: olivia.public_key, oscar.key_id: oscar.public_key}, {olivia.key_id: pq}
    )


@contextlib.contextmanager
def _store(env: dict[str, str]) -> Iterator[Store]:
    store = Store.open(
        f"sqlite:///{Path(env['STRONGROOM_HOME']) / 'strongroom.db'}", schema="current"
    )
    try:
        yield store
    finally:
        store.close()


def _count(env: dict[str, str], kind: str) -> int:
    with _store(env) as store:
        return len(statements.envelopes(store, kind))


def _enrolled(run: Run) -> set[str]:
    return {p["name"] for p in json.loads(run("people", "ls", "--json").stdout)}


def _signed_by(env: str) -> set[str]:
    return set(statements.signer_ids(env))


def _enroll_cosign(olivia: Run, oscar: Run, tmp: Path, name: str) -> str:
    vetting = ("--vetting-expires", "2099-01-01", "--role", "approvers", "--json")
    out = json.loads(
        olivia("people", "enroll", name, "--key", tmp / f"{name}.pub", *vetting).stdout
    )
    assert out["signatures"] == 1 and out["threshold"] == 2, out  # one officer, both keys
    assert name not in _enrolled(olivia)  # one officer of two: not yet
    oscar("people", "cosign", str(out["statement"])[:16])
    return str(out["statement"])


def _label(officer: Run) -> dict[str, object]:
    """A secret label of ``tiny`` (compartment atlas) signed by ``officer``."""
    argv = ("compartments", "label", "tiny", "--classification", "secret", "--compartment")
    return dict(json.loads(officer(*argv, "atlas", "--json").stdout))


def _strip_mldsa(env: str) -> str:
    data = json.loads(env)
    data["signatures"] = [
        s for s in data["signatures"] if not str(s["keyid"]).startswith("mldsa65:")
    ]
    return json.dumps(data)


def _corrupt_mldsa(env: str) -> str:
    data = json.loads(env)
    for s in data["signatures"]:
        if str(s["keyid"]).startswith("mldsa65:"):
            sig = bytearray(base64.b64decode(s["sig"]))
            sig[10] ^= 1
            s["sig"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(data)


def _forged_enrollment(tmp: Path, name: str, *, corrupt: bool) -> str:
    """An enrollment of ``name`` both officers signed with Ed25519 but olivia's ML-DSA-65
    signature stripped (or corrupted): what a forger with Ed25519 alone could produce."""
    olivia, oscar = Identity.load(tmp / "olivia.identity"), Identity.load(tmp / "oscar.identity")
    now = int(time.time())
    e = Enrollment(
        name=name,
        key=Identity.generate(name).public.public_bytes,
        roles=("approvers",),
        clearance=level("secret"),
        compartments=(),
        vetting=Vetting("active", now, now + 86400, ()),
        employment="active",
        kind="person",
        serial=1,
        issued=now,
    )
    env = e.sign(olivia.private_key, oscar.private_key, pq=[olivia.mldsa_key, None])
    return _corrupt_mldsa(env) if corrupt else _strip_mldsa(env)


def test_hybrid_officer_enrolls_labels_revokes_on_the_vault_host(tmp_path: Path) -> None:
    run, env = _vault(tmp_path)
    try:
        olivia, oscar = _as(env, tmp_path, "olivia"), _as(env, tmp_path, "oscar")
        pins = _pins(tmp_path)
        olivia_kid = Identity.load(tmp_path / "olivia.identity").public.key_id
        mldsa_kid = mldsa_key_id(pins.mldsa[olivia_kid])

        digest = _enroll_cosign(olivia, oscar, tmp_path, "alice")
        assert "alice" in _enrolled(olivia)
        with _store(env) as store:
            stored = statements.by_digest(store, digest)
            assert stored is not None
            assert _signed_by(stored) == {olivia_kid, mldsa_kid, *pins.classical()}
            # the stored statement counts under the hybrid rule, and not without either half
            reader = DirectoryReader.for_officers(store, pins, 2)
            assert reader.verify_officer_statement(stored, "enrollment", "enrollment")
            with pytest.raises(IntegrityError, match=f"no signature by {mldsa_kid}"):
                reader.verify_officer_statement(_strip_mldsa(stored), "enrollment", "enrollment")
            with pytest.raises(
                IntegrityError, match=f"signature by key {mldsa_kid} does not verify"
            ):
                reader.verify_officer_statement(_corrupt_mldsa(stored), "enrollment", "enrollment")
            # a stripped or corrupted enrollment planted in the store grants nothing
            for name, corrupt in (("mallory", False), ("mona", True)):
                statements.put(
                    store,
                    "enrollment",
                    _forged_enrollment(tmp_path, name, corrupt=corrupt),
                    subject=name,
                )
        assert not {"mallory", "mona"} & _enrolled(olivia)

        # a label and its cosignature: an attested-free secret label counts once both signed
        lab = _label(olivia)
        assert lab["signatures"] == 1, lab
        cosigned = json.loads(
            oscar("people", "cosign", str(lab["statement"])[:16], "--json").stdout
        )
        assert cosigned["kind"] == "label" and cosigned["signatures"] == 2, cosigned
        with _store(env) as store:
            label = DirectoryReader.for_officers(store, pins, 2).view(resources=["tiny"])
            assert label.label("tiny") is not None
            stored = statements.by_digest(store, str(lab["statement"]))
            assert stored is not None and mldsa_kid in _signed_by(stored)
            stripped = _strip_mldsa(stored)
            with pytest.raises(IntegrityError, match=f"no signature by {mldsa_kid}"):
                DirectoryReader.for_officers(store, pins, 2).verify_officer_statement(
                    stripped, "label", "label"
                )

        # olivia's identity without its ML-DSA-65 key is refused before anything is signed
        before = _count(env, "enrollment")
        bad = _as(env, tmp_path, "olivia-classical")(
            "people",
            "enroll",
            "bob",
            "--key",
            tmp_path / "bob.pub",
            "--vetting-expires",
            "2099-01-01",
            ok=False,
        )
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
        assert "ML-DSA-65" in bad.stderr and "new-identity" in bad.stderr, bad.stderr
        assert _count(env, "enrollment") == before

        # doctor (through the running agent) names oscar, who signs with Ed25519 alone
        doctor = run("doctor", "--json", ok=False)
        (pq,) = [f for f in json.loads(doctor.stdout) if f["check"] == "post-quantum"]
        assert (
            f"1 of 2 security officers sign with Ed25519 alone (key ids {pins.classical()[0]})"
            in pq["message"]
            and olivia_kid not in pq["message"]
        ), pq

        # revocation: both officers, olivia with both keys
        rev = json.loads(olivia("people", "revoke", "alice", "--reason", "left", "--json").stdout)
        assert rev["signatures"] == 1, rev
        assert "alice" in _enrolled(olivia)
        oscar("people", "cosign", str(rev["statement"])[:16])
        assert "alice" not in _enrolled(olivia)
    finally:
        run("seal", ok=False)


def test_hybrid_officer_through_a_running_server(tmp_path: Path) -> None:
    run, env = _vault(tmp_path)
    run("seal")  # serve starts its own agent
    with serve_process(env, tmp_path / "serve.log") as base:
        _unseal(run, tmp_path)
        client = {k: v for k, v in env.items() if not k.startswith("STRONGROOM_")}
        client.update(
            STRONGROOM_URL=base,
            STRONGROOM_HOME=str(tmp_path / "client-home"),
            STRONGROOM_KNOWN_SERVERS=str(tmp_path / "known_servers"),
        )
        olivia, oscar = _as(client, tmp_path, "olivia"), _as(client, tmp_path, "oscar")

        _enroll_cosign(olivia, oscar, tmp_path, "bob")
        assert "bob" in _enrolled(oscar)
        lab = _label(olivia)
        assert lab["signatures"] == 1, lab
        oscar("people", "cosign", str(lab["statement"])[:16])

        # the server refuses olivia's statement without her ML-DSA-65 signature, naming it
        mldsa_kid = mldsa_key_id(
            _pins(tmp_path).mldsa[Identity.load(tmp_path / "olivia.identity").public.key_id]
        )
        bad = _as(client, tmp_path, "olivia-classical")(
            "people",
            "enroll",
            "carol",
            "--key",
            tmp_path / "carol.pub",
            "--vetting-expires",
            "2099-01-01",
            ok=False,
        )
        assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr
        assert f"no signature by {mldsa_kid}" in bad.stderr, bad.stderr
        assert "carol" not in _enrolled(oscar)

        # and a corrupted one (signed over the API by olivia's Ed25519 key)
        from strongroom.server.client import Client, KnownServers

        me = Identity.load(tmp_path / "olivia.identity")
        forged = _forged_enrollment(tmp_path, "mona", corrupt=True)
        with (
            Client(base, me, known_servers=KnownServers(tmp_path / "known_servers")) as api,
            pytest.raises(AccessDenied, match=f"signature by key {mldsa_kid} does not verify"),
        ):
            api.post("/v1/statements", {"kind": "enrollment", "envelope": forged})
        assert "mona" not in _enrolled(oscar)

        # the classical officer first, the hybrid one cosigns over the API with both keys
        rev = json.loads(oscar("people", "revoke", "bob", "--reason", "left", "--json").stdout)
        assert rev["signatures"] == 1, rev
        cosigned = json.loads(
            olivia("people", "cosign", str(rev["statement"])[:16], "--json").stdout
        )
        assert cosigned["signatures"] == 2, cosigned
        assert "bob" not in _enrolled(oscar)
    run("seal", ok=False)
