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
