"""Where ``-o`` writes: devices, FIFOs and ``-`` in place; regular files replaced whole or not at all.

``encrypt`` and ``decrypt`` run as the installed console script against FIFOs,
stdout, ``/dev/null`` (checked to stay a character device), symlinks out of
the directory and failures part-way; the other commands with ``-o``/``--out``
are checked for the regular-file case: the file appears whole, or nothing does.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from strongroom.crypto import age

from cli_fixtures import strongroom_exe

PLAIN = os.urandom(2 * age.CHUNK_SIZE + 17)


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(
        [strongroom_exe(), *map(str, args)], capture_output=True, cwd=cwd, timeout=60
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    return result


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path | str]:
    """A key pair, a plaintext file and its ciphertext, in ``tmp_path / "in"``."""
    identity = age.X25519Identity.generate()
    d = tmp_path / "in"
    d.mkdir()
    (d / "key.txt").write_text(f"{identity}\n")
    (d / "plain.bin").write_bytes(PLAIN)
    (d / "plain.age").write_bytes(age.encrypt(PLAIN, [identity.recipient]))
    return {"key": d / "key.txt", "plain": d / "plain.bin", "enc": d / "plain.age",
            "recipient": str(identity.recipient)}


def _args(command: str, files: dict[str, Path | str]) -> tuple[list[str | Path], bytes | None]:
    """The arguments (before ``-o``) and, for decrypt, the expected output."""
    if command == "encrypt":
        return ["encrypt", "-r", files["recipient"], files["plain"]], None
    return ["decrypt", "-i", files["key"], files["enc"]], PLAIN


def _check(command: str, out: bytes, expected: bytes | None, key: Path) -> None:
    if expected is None:  # ciphertext: check that it decrypts
        out = age.decrypt(out, age.parse_identities(key.read_text()))
    assert out == PLAIN


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_fifo_is_written_in_place(command: str, files: dict[str, Path | str],
                                  tmp_path: Path) -> None:
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    args, expected = _args(command, files)
    result = run(*args, "-o", fifo)
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced"
    assert got, "the reader got nothing"
    _check(command, got[0], expected, Path(files["key"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.fifo"]


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_dash_is_stdout(command: str, files: dict[str, Path | str]) -> None:
    args, expected = _args(command, files)
    result = run(*args, "-o", "-")
    assert result.returncode == 0, result.stderr
    _check(command, result.stdout, expected, Path(files["key"]))


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_dev_null_stays_a_character_device(command: str, files: dict[str, Path | str]) -> None:
    before = os.lstat("/dev/null")
    assert stat.S_ISCHR(before.st_mode), "/dev/null is not a character device on this machine"
    args, _ = _args(command, files)
    result = run(*args, "-o", "/dev/null")
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode), "/dev/null was replaced: restore it with mknod"
    assert (after.st_rdev, after.st_mode) == (before.st_rdev, before.st_mode)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_symlink_out_of_the_directory_is_refused(command: str, files: dict[str, Path | str],
                                                 tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "precious.txt"
    target.write_bytes(b"keep me")
    outdir = tmp_path / "out"
    outdir.mkdir()
    link = outdir / "result.bin"
    link.symlink_to(target)
    args, _ = _args(command, files)
    result = run(*args, "-o", link)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert "symbolic link" in err and str(link) in err and "remove the link" in err
    assert target.read_bytes() == b"keep me"
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert [p.name for p in outdir.iterdir()] == ["result.bin"]
    assert [p.name for p in elsewhere.iterdir()] == ["precious.txt"]


def test_failure_part_way_leaves_nothing(files: dict[str, Path | str], tmp_path: Path) -> None:
    # The first chunks decrypt (and are written) before the corrupted last one fails.
    enc = Path(files["enc"])
    corrupt = bytearray(enc.read_bytes())
    corrupt[-5] ^= 1
    bad = tmp_path / "in" / "bad.age"
    bad.write_bytes(bytes(corrupt))
    outdir = tmp_path / "out"
    outdir.mkdir()
    result = run("decrypt", "-i", files["key"], "-o", outdir / "plain.bin", bad)
    assert result.returncode != 0
    assert list(outdir.iterdir()) == []


def test_wrong_key_leaves_nothing_and_keeps_the_old_file(files: dict[str, Path | str],
                                                         tmp_path: Path) -> None:
    other = tmp_path / "in" / "other.txt"
    other.write_text(f"{age.X25519Identity.generate()}\n")
    outdir = tmp_path / "out"
    outdir.mkdir()
    old = outdir / "plain.bin"
    old.write_bytes(b"previous contents")
    result = run("decrypt", "-i", other, "-o", old, files["enc"])
    assert result.returncode != 0
    assert old.read_bytes() == b"previous contents"
    assert [p.name for p in outdir.iterdir()] == ["plain.bin"]


def test_regular_file_is_replaced_whole_with_mode_0600(files: dict[str, Path | str],
                                                       tmp_path: Path) -> None:
    out = tmp_path / "plain.out"
    out.write_bytes(b"old")
    out.chmod(0o644)
    result = run("decrypt", "-i", files["key"], "-o", "plain.out", files["enc"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == PLAIN
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "plain.out"]


def test_directory_is_refused(files: dict[str, Path | str], tmp_path: Path) -> None:
    result = run("decrypt", "-i", files["key"], "-o", tmp_path, files["enc"])
    assert result.returncode != 0
    assert b"is a directory" in result.stderr


# -- the other commands with -o / --out -------------------------------------------------------


OTHER_WRITERS = {
    "keygen": ["keygen", "-o"],
    "sbom": ["sbom", "--out"],
    "witness keygen": ["witness", "keygen", "--name", "w.example/w1", "--out"],
    "keys new-identity": ["keys", "new-identity", "--out"],
    "transfer keygen": ["transfer", "keygen", "--out"],
}


@pytest.mark.parametrize("name", sorted(OTHER_WRITERS))
def test_other_writers_leave_only_their_file(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = run(*OTHER_WRITERS[name], out / "written")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names in (["written"], ["written", "written.pub"]), names
    assert stat.S_IMODE((out / "written").stat().st_mode) == 0o600


@pytest.mark.parametrize("name", sorted(OTHER_WRITERS))
def test_other_writers_refuse_symlinks(name: str, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(target)
    refused = run(*OTHER_WRITERS[name], out / "link")
    assert refused.returncode != 0
    assert b"Traceback" not in refused.stderr
    assert target.read_bytes() == b"keep me"
    assert [p.name for p in out.iterdir()] == ["link"]


# -- weights export --to DIR ----------------------------------------------------------------


def test_export_leaves_only_the_new_directory_or_nothing(tmp_path: Path) -> None:
    from cli_fixtures import grant_cli, unseal_home
    from vault_fixtures import make_model

    cli, env = unseal_home(tmp_path / "home", None)
    try:
        src = tmp_path / "m.safetensors"
        make_model(src)
        cli("weights", "import", src, "--name", "tiny")
        grant_cli(env, "tiny", ("export",))
        out = tmp_path / "out"
        out.mkdir()
        (out / "dangling").symlink_to(tmp_path / "nowhere")
        refused = cli("weights", "export", "tiny", "--to", out / "dangling", "--reason", "r", ok=False)
        assert refused.returncode != 0 and "exists" in refused.stderr
        assert not (tmp_path / "nowhere").exists()
        cli("weights", "export", "tiny", "--to", out / "plain", "--reason", "handover")
        assert (out / "plain" / "m.safetensors").read_bytes() == src.read_bytes()
        assert sorted(p.name for p in out.iterdir()) == ["dangling", "plain"]
        # A corrupted blob fails the export part-way: no directory, no partial copy left.
        (blob,) = [p for p in (tmp_path / "home" / "blobs").rglob("*") if p.is_file()]
        data = bytearray(blob.read_bytes())
        data[-5] ^= 1
        blob.chmod(0o600)
        blob.write_bytes(bytes(data))
        failed = cli("weights", "export", "tiny", "--to", out / "again", "--reason", "r", ok=False)
        assert failed.returncode != 0
        assert sorted(p.name for p in out.iterdir()) == ["dangling", "plain"]
    finally:
        cli("seal", ok=False)


def test_a_new_file_under_dev_shm_is_an_ordinary_file(files: dict[str, Path | str]) -> None:
    """/dev/shm (a tmpfs) holds ordinary files: a new one is created, mode 0600, not
    refused as a stream name (only names directly in /dev and under /proc are streams)."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm here")
    out = shm / f"strongroom-test-{os.getpid()}.out"
    try:
        result = run("decrypt", "-i", files["key"], "-o", out, files["enc"])
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == PLAIN
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
    finally:
        out.unlink(missing_ok=True)
