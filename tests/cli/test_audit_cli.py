"""``strongroom audit`` and ``strongroom witness`` end to end, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.crypto.note import SIG_COSIGNATURE_V1, generate_key, new_signer, sign

from cli_fixtures import strongroom_exe, unseal_home

CLI = strongroom_exe()


ENV: dict[str, dict[str, str]] = {}


def run(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = ENV.get(str(home)) or {**os.environ, "STRONGROOM_HOME": str(home)}
    env.pop("STRONGROOM_DATABASE_URL", None)
    proc = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """An unsealed vault (init 2-of-3, two unseals) whose log then gets five events."""
    h = tmp_path / "home"
    _, env = unseal_home(h, None, {"STRONGROOM_LOG_ORIGIN": "cli.test/log"})
    ENV[str(h)] = env
    # Appending needs no signing key: any process on the store may add events.
    script = (
        "from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey\n"
        "from strongroom.audit.config import AuditSettings\n"
        "from strongroom.store.db import Store\n"
        f"s = Store.open('sqlite:///{h}/strongroom.db')\n"
        "log = AuditSettings(log_origin='cli.test/log').open_log(s, Ed25519PrivateKey.generate())\n"
        "for i in range(5):\n"
        "    log.append(actor='alice', action='weights.read', obj=f'm@{i}', decision='allow',"
        " details={'token': 'tok-%d' % i})\n"
        "print(log.size())\n"
        "log.close()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], check=True, timeout=60, env=env,
                         capture_output=True, text=True)
    SIZES[str(h)] = int(out.stdout)
    try:
        yield h
    finally:
        run(h, "seal", ok=False)
        ENV.pop(str(h), None)


SIZES: dict[str, int] = {}


def test_audit_commands(home: Path, tmp_path: Path) -> None:
    vkey = run(home, "audit", "key").stdout.strip()
    assert vkey.startswith("cli.test/log+")
    assert len(run(home, "audit", "tail", "-n", "3").stdout.strip().splitlines()) == 3
    size = SIZES[str(home)]
    assert '"actor": "alice"' in run(home, "audit", "show", str(size - 3)).stdout
    cp = run(home, "audit", "checkpoint").stdout
    assert cp.startswith(f"cli.test/log\n{size}\n")
    (tmp_path / "cp").write_text(cp)
    assert "ok" in run(home, "audit", "verify-checkpoint", str(tmp_path / "cp"), "--log-key", vkey).stdout
    proof = run(home, "audit", "prove", str(size - 2)).stdout
    (tmp_path / "proof").write_text(proof)
    out = run(home, "audit", "verify-proof", str(tmp_path / "proof"), "--log-key", vkey).stdout
    assert f"entry {size - 2} is in the log" in out
    assert "ok" in run(home, "audit", "verify").stdout
    first = size - 5
    assert "match" in run(home, "audit", "check-value", str(first + 1), "token", "tok-1").stdout
    nope = run(home, "audit", "check-value", str(first + 1), "token", "nope", ok=False)
    assert nope.returncode == 3


def test_verify_checkpoint_failures(home: Path, tmp_path: Path) -> None:
    vkey = run(home, "audit", "key").stdout.strip()
    cp = run(home, "audit", "checkpoint").stdout
    tampered = tmp_path / "bad"
    size = SIZES[str(home)]
    tampered.write_text(cp.replace(f"\n{size}\n", f"\n{size + 1}\n"))
    bad = run(home, "audit", "verify-checkpoint", str(tampered), "--log-key", vkey, ok=False)
    assert bad.returncode == 4 and "invalid signature" in bad.stderr
    assert "Traceback" not in bad.stderr
    w_skey, w_vkey = generate_key("cli.test/w1", SIG_COSIGNATURE_V1)
    good = tmp_path / "cp"
    good.write_text(cp)
    short = run(home, "audit", "verify-checkpoint", str(good), "--log-key", vkey,
                "--witness-key", w_vkey, "--quorum", "1", ok=False)
    assert short.returncode == 4 and "quorum is 1" in short.stderr
    text = cp.split("\n\n")[0] + "\n"
    cosigned = tmp_path / "cosigned"
    cosigned.write_text(cp + sign(text, new_signer(w_skey)).split("\n\n")[1])
    assert "cosigned by cli.test/w1" in run(
        home, "audit", "verify-checkpoint", str(cosigned), "--log-key", vkey,
        "--witness-key", w_vkey, "--quorum", "1").stdout


def test_witness_keygen(tmp_path: Path) -> None:
    vkey = run(tmp_path, "witness", "keygen", "--name", "cli.test/w2", "--out",
               str(tmp_path / "w.key")).stdout.strip()
    assert vkey.startswith("cli.test/w2+")
    assert run(tmp_path, "witness", "key", "--key", str(tmp_path / "w.key")).stdout.strip() == vkey
    assert (tmp_path / "w.key").stat().st_mode & 0o777 == 0o600
