"""``strongroom encrypt|decrypt|keygen`` run as the installed console script."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from strongroom.crypto import age

from cli_fixtures import strongroom_exe
from testsupport import need_tool


def run(
    *args: str | Path, input: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [strongroom_exe(), *map(str, args)], input=input, capture_output=True, cwd=cwd, timeout=60
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return result


@pytest.fixture
def keyfile(tmp_path: Path) -> tuple[Path, str]:
    """An identity file written in-process (fast); the keygen tests use the CLI."""
    identity = age.X25519Identity.generate()
    path = tmp_path / "key.txt"
    path.write_text(f"# public key: {identity.recipient}\n{identity}\n")
    return path, str(identity.recipient)


def test_keygen_file(tmp_path: Path) -> None:
    path = tmp_path / "new-key.txt"
    result = run("keygen", "-o", path)
    assert result.returncode == 0
    public = result.stderr.decode().strip().removeprefix("Public key: ")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# created: ")
    assert lines[1] == f"# public key: {public}"
    assert lines[2].startswith("AGE-SECRET-KEY-1")
    assert str(age.X25519Identity.parse(lines[2]).recipient) == public


def test_keygen_refuses_to_overwrite(keyfile: tuple[Path, str]) -> None:
    path, _ = keyfile
    before = path.read_bytes()
    result = run("keygen", "-o", path)
    assert result.returncode != 0
    assert b"overwrite" in result.stderr
    assert path.read_bytes() == before


def test_keygen_stdout() -> None:
    result = run("keygen")
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    assert lines[1].startswith("# public key: age1")
    assert lines[2].startswith("AGE-SECRET-KEY-1")


def test_round_trip_files(keyfile: tuple[Path, str], tmp_path: Path) -> None:
    path, public = keyfile
    plain = os.urandom(3 * age.CHUNK_SIZE + 1)
    src = tmp_path / "plain.bin"
    src.write_bytes(plain)
    enc = tmp_path / "plain.bin.age"
    assert run("encrypt", "-r", public, "-o", enc, src).returncode == 0
    assert age.decrypt(enc.read_bytes(), age.parse_identities(path.read_text())) == plain
    out = tmp_path / "out.bin"
    assert run("decrypt", "-i", path, "-o", out, enc).returncode == 0
    assert out.read_bytes() == plain


@pytest.mark.parametrize("size", [0, 100])
def test_round_trip_pipes(keyfile: tuple[Path, str], size: int) -> None:
    path, public = keyfile
    plain = os.urandom(size)
    piped = run("encrypt", "-r", public, input=plain)
    assert piped.returncode == 0
    back = run("decrypt", "-i", path, input=piped.stdout)
    assert back.returncode == 0 and back.stdout == plain


def test_several_recipients_and_identity_files(tmp_path: Path) -> None:
    identities = [age.X25519Identity.generate() for _ in range(2)]
    for n, identity in enumerate(identities):
        (tmp_path / f"k{n}").write_text(f"{identity}\n")
    enc = run("encrypt", *(f"-r{i.recipient}" for i in identities), input=b"hello")
    assert enc.returncode == 0
    for identity in identities:
        assert age.decrypt(enc.stdout, [identity]) == b"hello"
    both = run("decrypt", "-i", tmp_path / "k1", "-i", tmp_path / "k0", input=enc.stdout)
    assert both.stdout == b"hello"


def test_corrupted_input_leaves_no_output(keyfile: tuple[Path, str], tmp_path: Path) -> None:
    path, public = keyfile
    blob = bytearray(age.encrypt(os.urandom(200_000), [age.parse_recipient(public)]))
    blob[-100] ^= 1
    bad = tmp_path / "bad.age"
    bad.write_bytes(bytes(blob))
    out = tmp_path / "out.bin"
    result = run("decrypt", "-i", path, "-o", out, bad)
    assert result.returncode == 4
    assert b"failed authentication" in result.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.age", "key.txt"]


def test_wrong_identity(keyfile: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = keyfile
    other = age.X25519Identity.generate()
    enc = tmp_path / "x.age"
    enc.write_bytes(age.encrypt(b"x", [other.recipient]))
    result = run("decrypt", "-i", path, "-o", tmp_path / "out", enc)
    assert result.returncode == 5
    assert b"no identity matched" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["encrypt"],
        ["encrypt", "-r", "age1notakey"],
        ["encrypt", "-r", "ssh-rsa AAAA"],
        ["decrypt"],
        ["decrypt", "-i", "/nonexistent/key.txt"],
    ],
)
def test_bad_arguments_fail_cleanly(args: list[str], tmp_path: Path) -> None:
    result = run(*args, input=b"", cwd=tmp_path)
    assert result.returncode not in (0, 1)
    assert result.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_identity_file_is_not_echoed(tmp_path: Path) -> None:
    secret = str(age.X25519Identity.generate())
    broken = secret[:-1] + ("Q" if secret[-1] != "Q" else "P")
    key = tmp_path / "key.txt"
    key.write_text(broken + "\n")
    result = run("decrypt", "-i", key, input=b"")
    assert result.returncode == 2
    assert broken.encode() not in result.stderr
    assert secret[16:40].encode() not in result.stderr


@pytest.mark.agecli
def test_interop_with_age_tool(keyfile: tuple[Path, str], tmp_path: Path) -> None:
    age_bin = need_tool("age")
    path, public = keyfile
    plain = os.urandom(age.CHUNK_SIZE + 1)
    ours = run("encrypt", "-r", public, input=plain).stdout
    (tmp_path / "ours.age").write_bytes(ours)
    out = subprocess.run(
        [age_bin, "-d", "-i", str(path), str(tmp_path / "ours.age")],
        capture_output=True,
        check=True,
    )
    assert out.stdout == plain
    theirs = subprocess.run([age_bin, "-r", public], input=plain, capture_output=True, check=True)
    assert run("decrypt", "-i", path, input=theirs.stdout).stdout == plain


# -- hybrid keys, passphrases and armor (issue 23) ----------------------------------


def _passphrase_env(tmp_path: Path, passphrase: str = "correct horse battery") -> dict[str, str]:
    path = tmp_path / "passphrase.txt"
    path.write_text(passphrase + "\n")
    path.chmod(0o600)
    return {**os.environ, "STRONGROOM_PASSPHRASE_FILE": str(path)}


def run_env(env: dict[str, str], *args: str | Path,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([strongroom_exe(), *map(str, args)], input=input,
                            capture_output=True, env=env, timeout=120)
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return result


def test_keygen_pq_round_trip_with_armor(tmp_path: Path) -> None:
    key = tmp_path / "pq.txt"
    result = run("keygen", "--pq", "-o", key)
    assert result.returncode == 0, result.stderr
    public = result.stderr.decode().strip().removeprefix("Public key: ")
    assert public.startswith("age1pq1")
    secret = key.read_text().splitlines()[2]
    assert secret.startswith("AGE-SECRET-KEY-PQ-1")
    plain = os.urandom(age.CHUNK_SIZE + 7)
    armored = run("encrypt", "-a", "-r", public, input=plain)
    assert armored.returncode == 0, armored.stderr
    assert armored.stdout.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert b"mlkem768x25519" not in armored.stdout  # it is inside the armor
    assert run("decrypt", "-i", key, input=armored.stdout).stdout == plain


def test_passphrase_round_trip(tmp_path: Path) -> None:
    env = _passphrase_env(tmp_path)
    enc = run_env(env, "encrypt", "-p", "-o", tmp_path / "p.age", input=b"launch codes")
    assert enc.returncode == 0, enc.stderr
    assert b"-> scrypt " in (tmp_path / "p.age").read_bytes()
    assert run_env(env, "decrypt", tmp_path / "p.age").stdout == b"launch codes"
    wrong = run_env(_passphrase_env(tmp_path / "..", "nope"), "decrypt", tmp_path / "p.age")
    assert wrong.returncode == 5 and b"no identity matched" in wrong.stderr


@pytest.mark.parametrize(("args", "code", "says"), [
    (["encrypt", "-p", "-r", "age1qqqq"], 2, b"-p cannot be combined with -r"),
    (["encrypt", "-r", "age1pq1qqqqqqqqqqqqqq"], 2, b"malformed recipient"),
    (["decrypt"], 2, b"not passphrase-encrypted"),
])
def test_bad_input_is_named(args: list[str], code: int, says: bytes, tmp_path: Path) -> None:
    key = age.X25519Identity.generate()
    data = age.encrypt(b"x", [key.recipient]) if args == ["decrypt"] else b""
    result = run_env(_passphrase_env(tmp_path), *args, input=data)
    assert result.returncode == code, result.stderr
    assert says in result.stderr


def test_passphrase_needs_a_terminal_or_a_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STRONGROOM_PASSPHRASE_FILE"}
    result = subprocess.run([strongroom_exe(), "encrypt", "-p"], input=b"x", capture_output=True,
                            env=env, timeout=60, start_new_session=True)  # no controlling tty
    assert result.returncode == 2
    assert b"no terminal" in result.stderr and b"STRONGROOM_PASSPHRASE_FILE" in result.stderr


def test_garbled_armor_is_an_armor_error(keyfile: tuple[Path, str]) -> None:
    path, public = keyfile
    armored = run("encrypt", "-a", "-r", public, input=b"hello").stdout
    garbled = armored.replace(b"\n", b"\n ", 2)
    result = run("decrypt", "-i", path, input=garbled)
    assert result.returncode == 4
    assert b"armored age file" in result.stderr


def _age_on_a_terminal(age_bin: str, args: list[str], src: Path, dst: Path,
                       passphrase: str) -> int:
    """Run ``age ARGS < src > dst`` with a pseudo-terminal that answers its passphrase prompts."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal (age reads /dev/tty)
        try:
            os.dup2(os.open(src, os.O_RDONLY), 0)
            os.dup2(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
            os.execv(age_bin, [age_bin, *args])
        finally:
            os._exit(127)
    seen = answered = 0
    transcript = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            os.kill(pid, 9)
            break
        try:
            piece = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not piece:
            break
        transcript += piece
        seen = transcript.lower().count(b"passphrase:") + transcript.count(b"secure one):")
        while answered < seen:
            os.write(fd, passphrase.encode() + b"\n")
            answered += 1
    os.close(fd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.agecli
def test_passphrase_interop_with_age_tool(tmp_path: Path) -> None:
    """age 1.1 decrypts our scrypt files, and we decrypt its (work factor 18, under our bound)."""
    age_bin = need_tool("age")
    env = _passphrase_env(tmp_path, "tr0ub4dor&3")
    plain = os.urandom(age.CHUNK_SIZE + 3)
    (tmp_path / "plain").write_bytes(plain)
    assert run_env(env, "encrypt", "-p", "-o", tmp_path / "ours.age",
                   tmp_path / "plain").returncode == 0
    assert _age_on_a_terminal(age_bin, ["-d"], tmp_path / "ours.age", tmp_path / "out",
                              "tr0ub4dor&3") == 0
    assert (tmp_path / "out").read_bytes() == plain
    assert _age_on_a_terminal(age_bin, ["-p", "-a"], tmp_path / "plain",
                              tmp_path / "theirs.age", "tr0ub4dor&3") == 0
    assert (tmp_path / "theirs.age").read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE")
    assert run_env(env, "decrypt", tmp_path / "theirs.age").stdout == plain


@pytest.mark.agecli
def test_armor_interop_with_age_tool(keyfile: tuple[Path, str], tmp_path: Path) -> None:
    age_bin = need_tool("age")
    path, public = keyfile
    plain = os.urandom(1000)
    ours = run("encrypt", "-a", "-r", public, input=plain).stdout
    out = subprocess.run([age_bin, "-d", "-i", str(path)], input=ours, capture_output=True,
                         check=True)
    assert out.stdout == plain
    theirs = subprocess.run([age_bin, "-a", "-r", public], input=plain, capture_output=True,
                            check=True).stdout
    assert theirs.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    assert run("decrypt", "-i", path, input=theirs).stdout == plain
