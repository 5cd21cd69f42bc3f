"""``strongroom serve`` releases keys into attested enclaves: its gate, through its key agent.

A real ``serve`` subprocess (two workers, so the gate runs in the key agent and
the attested release crosses the agent's socket) on a CLI-initialised vault,
started with ``STRONGROOM_ATTEST_TEST_ROOTS`` naming a test vendor's ARK (test
only: docs/attestation.md). The officer labels the model ``attested: inference``
and pins a policy for ``sev-snp-test``; the enclave gets a nonce from the server,
binds it, and receives only an age stanza its ephemeral key opens. This is the one test of serve's wiring (~40 s on 2 cores);
the HTTP refusals are tested in-process in tests/server/test_server_attested_release.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from test_serve_lifecycle import _port, _start_serve, _unseal

from strongroom.access import statements
from strongroom.attest.admission import binding
from strongroom.attest.forge import ForgedVendor
from strongroom.attest.policy import AttestationPolicy, sign_policy
from strongroom.crypto.age import X25519Identity
from strongroom.crypto.age_pq import HybridIdentity
from strongroom.errors import AccessDenied
from strongroom.keys.identity import Identity
from strongroom.server.client import Client, KnownServers
from strongroom.settings import Settings
from strongroom.store.db import Store

from cli_fixtures import grant_cli, unseal_home
from vault_fixtures import make_model

GOOD = b"\x77" * 48


def test_serve_releases_a_labelled_model_only_into_an_attested_enclave(tmp_path: Path) -> None:
    vendor = ForgedVendor.create("Turin")
    roots = tmp_path / "test-roots.pem"
    roots.write_bytes(vendor.ark.public_bytes(Encoding.PEM))
    home = tmp_path / "home"
    run, env = unseal_home(home, None, {"STRONGROOM_ATTEST_TEST_ROOTS": str(roots)})
    run("seal")
    port = _port()
    proc = _start_serve(env, port, 2)
    try:
        _unseal(run, home)
        model = tmp_path / "m.safetensors"
        make_model(model)
        run("weights", "import", model, "--name", "tiny")
        officer = Identity.load(Path(env["STRONGROOM_IDENTITY"]))
        policy = AttestationPolicy(name="inference", serial=1, platforms=("sev-snp-test",),
                                   measurements=frozenset({GOOD.hex()}))
        store = Store.open(Settings(home=home).resolved_database_url)
        try:  # `attest policy set` refuses test platforms: the officers' statement, stored
            statements.put(store, "attest-policy", sign_policy(policy, officer.private_key),
                           subject="inference")
        finally:
            store.close()
        run("compartments", "label", "tiny", "--classification", "secret",
            "--rule", "load=2 of approvers", "--attested", "inference")
        grant_cli(env, "tiny")
        client = Client(f"http://127.0.0.1:{port}", officer,
                        known_servers=KnownServers(tmp_path / "known_servers"))
        try:
            m = client.verified_manifest("tiny")
            f = m.files[0]
            try:
                client.release(m.ref, f.path, f.blob, "load")
            except AccessDenied as exc:
                assert "attested" in exc.message
            else:
                raise AssertionError("a labelled model's key was released in clear")
            chip = vendor.chip()
            enclave = HybridIdentity.generate()  # post-quantum: what an enclave should use
            nonce = client.attest_nonce()
            report = chip.report(measurement=GOOD,
                                 report_data=binding(enclave.recipient.public_bytes, nonce))
            stanza = client.release_attested(
                m.ref, f.path, f.blob, "load", recipient=str(enclave.recipient),
                platform="sev-snp-test", report=report, nonce=nonce,
                collateral=[chip.vcek_pem(), chip.ask.public_bytes(Encoding.PEM)])
            assert stanza.type == "mlkem768x25519"
            file_key = enclave.unwrap([stanza])
            assert file_key is not None and len(file_key) == 16
            # the same evidence again (its nonce spent) for another key: refused, named
            thief = X25519Identity.generate()
            try:
                client.release_attested(
                    m.ref, f.path, f.blob, "load", recipient=str(thief.recipient),
                    platform="sev-snp-test", report=report, nonce=nonce,
                    collateral=[chip.vcek_pem(), chip.ask.public_bytes(Encoding.PEM)])
            except AccessDenied as exc:
                assert "nonce" in exc.message
            else:
                raise AssertionError("a replayed report was admitted")
            tail = run("audit", "tail", "-n", "20").stdout
            assert "attest.admit" in tail and nonce.hex() in tail
        finally:
            client.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
