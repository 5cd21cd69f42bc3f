"""``strongroom audit`` and ``strongroom witness`` end to end, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.crypto.note import SIG_COSIGNATURE_V1, generate_key, new_signer, sign

import cli_zygote
from cli_fixtures import strongroom_exe, unseal_home

CLI = strongroom_exe()


ENV: dict[str, dict[str, str]] = {}


def run(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = ENV.get(str(home)) or {**os.environ, "STRONGROOM_HOME": str(home)}
    env.pop("STRONGROOM_DATABASE_URL", None)
    proc = cli_zygote.run([CLI, *args], env, timeout=60)  # a forked process
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


# Published signed notes of other logs, verified offline (issue 15 item 8).
# c2sp.org/signed-note, "Verifier keys": the spec's example key and the note it verifies.
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n— example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# c2sp.org/signed-note, opening example: its text has a blank line; the spec gives no key for it.
C2SP_POEM = (
    "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n"
    "— quasimodo.example/salvatore "
    "NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)
# golang.org/x/mod/sumdb/note package example: the note doubly signed by PeterNeumann and EnochRoot.
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_DOUBLE = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n\n"
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)
# A real signed tree head of sum.golang.org (as quoted in transparency-dev/trillian-tessera,
# internal/parse/parse_test.go); the key is the one built into the go command.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_ORIGIN = "go.sum database tree"
SUMDB_CHECKPOINT = (
    f"{SUMDB_ORIGIN}\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n— sum.golang.org "
    "Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn/C3YI8oW9/C8DJ87F61QqspBYwM=\n"
)


def _note_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_verify_note_accepts_published_notes(tmp_path: Path) -> None:
    spec = run(tmp_path, "audit", "verify-note", _note_file(tmp_path, "spec", C2SP_NOTE),
               "--key", C2SP_VKEY).stdout
    assert "verified: example.com/foo+530d903a" in spec
    assert spec.endswith("This is an example message.\n")
    go = _note_file(tmp_path, "go", GO_DOUBLE)
    one = run(tmp_path, "audit", "verify-note", go, "--key", PETER_VKEY).stdout
    assert "verified: PeterNeumann+c74f20a3" in one
    assert "ignored (no such key given): EnochRoot+af0cfe78" in one
    both = run(tmp_path, "audit", "verify-note", go, "--key", PETER_VKEY,
               "--key", ENOCH_VKEY).stdout
    assert "verified: PeterNeumann+c74f20a3" in both and "verified: EnochRoot+af0cfe78" in both
    sumdb = run(tmp_path, "audit", "verify-note", _note_file(tmp_path, "sumdb", SUMDB_CHECKPOINT),
                "--key", SUMDB_VKEY).stdout
    assert "verified: sum.golang.org+033de0ae" in sumdb and "31700353" in sumdb


def test_verify_note_refusals(tmp_path: Path) -> None:
    poem = _note_file(tmp_path, "poem", C2SP_POEM)
    untrusted = run(tmp_path, "audit", "verify-note", poem, "--key", C2SP_VKEY, ok=False)
    assert untrusted.returncode == 4
    assert f"{poem}: note is not signed by any trusted key" in untrusted.stderr
    assert "quasimodo.example/salvatore" in untrusted.stderr
    forged = _note_file(tmp_path, "forged", GO_DOUBLE.replace("don't", "do"))
    bad = run(tmp_path, "audit", "verify-note", forged, "--key", PETER_VKEY, ok=False)
    assert bad.returncode == 4 and "invalid signature from key PeterNeumann" in bad.stderr
    unsigned = _note_file(tmp_path, "unsigned", "This is an example message.\n")
    malformed = run(tmp_path, "audit", "verify-note", unsigned, "--key", C2SP_VKEY, ok=False)
    assert malformed.returncode == 4
    assert f"{unsigned}: malformed signed note" in malformed.stderr
    assert "give the whole note" in malformed.stderr
    spec = _note_file(tmp_path, "spec", C2SP_NOTE)
    bad_key = run(tmp_path, "audit", "verify-note", spec, "--key", "example.com/foo+530d903a",
                  ok=False)
    assert bad_key.returncode == 2 and "--key example.com/foo: malformed verifier key" in bad_key.stderr
    missing = run(tmp_path, "audit", "verify-note", str(tmp_path / "nope"), "--key", C2SP_VKEY,
                  ok=False)
    assert missing.returncode == 2 and "cannot read file" in missing.stderr


def test_verify_checkpoint_origin_other_than_key_name(tmp_path: Path) -> None:
    cp = _note_file(tmp_path, "sumdb", SUMDB_CHECKPOINT)
    default = run(tmp_path, "audit", "verify-checkpoint", cp, "--log-key", SUMDB_VKEY, ok=False)
    assert default.returncode == 4
    assert "expected 'sum.golang.org'" in default.stderr and "--origin" in default.stderr
    ok = run(tmp_path, "audit", "verify-checkpoint", cp, "--log-key", SUMDB_VKEY,
             "--origin", SUMDB_ORIGIN).stdout
    assert f"ok: {SUMDB_ORIGIN} size 31700353" in ok
    other = run(tmp_path, "audit", "verify-checkpoint", cp, "--log-key", SUMDB_VKEY,
                "--origin", "example.com/log", ok=False)
    assert other.returncode == 4 and "expected 'example.com/log'" in other.stderr
    not_cp = _note_file(tmp_path, "spec", C2SP_NOTE)
    note = run(tmp_path, "audit", "verify-checkpoint", not_cp, "--log-key", C2SP_VKEY, ok=False)
    assert note.returncode == 4 and f"{not_cp}: malformed checkpoint" in note.stderr
    assert "verify-note" in note.stderr
