"""Wheelhouse pieces that need no real install: repacking checks RECORD, the manifest catches edits.

The end-to-end offline install (every dependency, a clean venv, pip's
``--require-hashes``) is tests/packaging/test_wheel_install.py.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import re
import zipfile
from pathlib import Path

import pytest

from strongroom.errors import IntegrityError, InvalidInput
from strongroom.keys.identity import Identity
from strongroom.supplychain import wheelhouse as wh


def _fake_dist(site: Path, name: str = "strongroom", body: bytes = b"VALUE = 1\n") -> md.Distribution:
    """An installed distribution as pip leaves it: files, METADATA, WHEEL and a RECORD."""
    (site / name).mkdir(parents=True)
    info = site / f"{name}-9.9.dist-info"
    info.mkdir()
    files = {
        f"{name}/__init__.py": body,
        f"{name}/data.txt": b"package data\n",
        f"{name}-9.9.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 9.9\n"
        .encode(),
        f"{name}-9.9.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        f"{name}-9.9.dist-info/INSTALLER": b"pip\n",
    }
    rows = []
    for rel, data in files.items():
        (site / rel).write_bytes(data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append(f"{rel},sha256={digest},{len(data)}")
    rows += [f"{name}/__pycache__/__init__.cpython-311.pyc,,", f"{name}-9.9.dist-info/RECORD,,"]
    (info / "RECORD").write_text("\n".join(rows) + "\n")
    return md.PathDistribution(info)


def test_repack_carries_the_files_and_a_fresh_record(tmp_path: Path) -> None:
    dist = _fake_dist(tmp_path / "site")
    out = tmp_path / "out"
    out.mkdir()
    wheel = wh._repack(dist, out)
    assert wheel.name == "strongroom-9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = zf.read("strongroom-9.9.dist-info/RECORD").decode()
    assert {"strongroom/__init__.py", "strongroom/data.txt",
            "strongroom-9.9.dist-info/METADATA"} <= names
    assert not any("INSTALLER" in n or "__pycache__" in n for n in names)
    assert "strongroom/data.txt,sha256=" in record


def test_repack_refuses_a_file_edited_after_install(tmp_path: Path) -> None:
    dist = _fake_dist(tmp_path / "site")
    (tmp_path / "site" / "strongroom" / "__init__.py").write_bytes(b"VALUE = 2  # planted\n")
    with pytest.raises(IntegrityError, match=r"strongroom/__init__.py differs from the hash"):
        wh._repack(dist, tmp_path)


def test_manifest_and_signature_catch_a_changed_file(tmp_path: Path) -> None:
    made = tmp_path / "made"
    made.mkdir()
    wheel = wh._repack(_fake_dist(tmp_path / "site"), made)  # no dependencies: one wheel
    signer = Identity.generate("release-engineer")
    house = tmp_path / "house"
    report = wh.build_wheelhouse(house, wheel=wheel, signer=signer)
    assert report.pins == {"strongroom": "9.9"} and report.signed_by == signer.public.key_id
    req = (house / "requirements.txt").read_text()
    assert f"strongroom==9.9 \\\n    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}" in req
    sums = (house / "SHA256SUMS").read_text()
    assert wheel.name in sums and "requirements.txt" in sums
    assert wh.verify_wheelhouse(house, signer.public)["strongroom"] == "9.9"

    with pytest.raises(IntegrityError):
        wh.verify_wheelhouse(house, Identity.generate().public)  # not the pinned signer
    (house / "extra.whl").write_bytes(b"planted")
    with pytest.raises(IntegrityError, match=re.escape("extra.whl: present but not listed")):
        wh.verify_wheelhouse(house)
    (house / "extra.whl").unlink()
    with (house / wheel.name).open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(IntegrityError, match=re.escape(f"{wheel.name}: differs from the manifest")):
        wh.verify_wheelhouse(house)
    with pytest.raises(InvalidInput, match="not empty"):
        wh.build_wheelhouse(house, wheel=wheel)
