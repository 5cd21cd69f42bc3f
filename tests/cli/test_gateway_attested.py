"""``strongroom gateway serve --attest sev-snp``: the gateway loads its weights as an enclave.

A CLI-initialised vault whose key agent trusts a test vendor's roots (test
only); MiniLM is labelled ``attested: inference`` and the officers pin a policy
for ``sev-snp-test``. The gateway (the CLI identity, with a load Grant; a code
release two pinned owners signed over a copy of the package) refuses to start
without ``--attest`` (its keys go only into an attested enclave) and starts
with it, its evidence signed by a forged chip (``STRONGROOM_ATTEST_TEST_CHIP``,
test only) and its file keys released, through the agent's socket, wrapped to
its ephemeral key. ~2.5 min on 2 shared cores.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from strongroom.access import statements
from strongroom.attest.enclave import TEST_CHIP_ENV
from strongroom.attest.forge import ForgedVendor
from strongroom.attest.policy import AttestationPolicy, sign_policy
from strongroom.keys.identity import Identity
from strongroom.settings import Settings
from strongroom.store.db import Store

from cli_fixtures import grant_cli, make_runner, strongroom_exe, unseal_home
from live_gateway import sign_gateway_code

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "gateway"))
from gateway_helpers import minilm_dir

GOOD = b"\x3c" * 48


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gateway_serve_attest_loads_weights_only_into_its_enclave(tmp_path: Path) -> None:
    vendor = ForgedVendor.create("Milan")
    roots = tmp_path / "test-roots.pem"
    roots.write_bytes(vendor.ark.public_bytes(Encoding.PEM))
    home = tmp_path / "home"
    run, env = unseal_home(home, None, {"STRONGROOM_ATTEST_TEST_ROOTS": str(roots)})
    run("weights", "import", minilm_dir(), "--name", "minilm")
    officer = Identity.load(Path(env["STRONGROOM_IDENTITY"]))
    policy = AttestationPolicy(
        name="inference",
        serial=1,
        platforms=("sev-snp-test",),
        measurements=frozenset({GOOD.hex()}),
    )
    store = Store.open(Settings(home=home).resolved_database_url)
    try:  # `attest policy set` refuses test platforms: the officers' statement, stored
        statements.put(
            store, "attest-policy", sign_policy(policy, officer.private_key), subject="inference"
        )
    finally:
        store.close()
    run(
        "compartments",
        "label",
        "minilm",
        "--classification",
        "secret",
        "--rule",
        "load=2 of approvers",
        "--attested",
        "inference",
    )
    grant_cli(env, "minilm")
    release = tmp_path / "release.json"
    code = sign_gateway_code(run, env, tmp_path, release)
    gw_env = dict(env, PYTHONPATH=str(code), PYTHONUNBUFFERED="1")

    plain = make_runner(gw_env)(
        "gateway", "serve", "minilm", "--release", release, "--port", str(_port()), ok=False
    )
    assert plain.returncode != 0 and "attested" in plain.stderr, plain.stderr

    chip = tmp_path / "chip.json"
    vendor.chip().save(chip, GOOD)
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                strongroom_exe(),
                "gateway",
                "serve",
                "minilm",
                "--release",
                str(release),
                "--port",
                str(_port()),
                "--attest",
                "sev-snp",
            ],
            env={**gw_env, TEST_CHIP_ENV: str(chip)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while "attested workload" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert "(sev-snp-test)" in log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    tail = run("audit", "tail", "-n", "40").stdout
    assert "attest.admit" in tail and "gateway.start" in tail
