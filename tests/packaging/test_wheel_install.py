"""strongroom as an operator installs it: a built wheel, an offline wheelhouse, a clean venv.

* The wheel is built with ``python -m build --wheel --no-isolation`` from a copy of
  the source tree (``--no-isolation``: an isolated build would fetch setuptools
  from an index; the dev extra installs setuptools, wheel and build, so this needs
  no network). Every file under ``src/strongroom`` that is not Python source
  (migrations, console templates and static files, Cedar policies, red-team
  scenarios, py.typed) must be in it: a new kind of package data that
  pyproject.toml's package-data misses fails here, not in an enclave.
* ``strongroom bundle --to DIR --wheel`` that wheel makes the offline wheelhouse,
  and a clean venv installs from it with exactly the documented
  ``pip install --no-index --find-links DIR --require-hashes -r DIR/requirements.txt``
  (pip's configuration and find-links variables are cleared, so nothing but DIR
  can supply a package), then runs ``strongroom --version``, ``init`` and
  ``status`` from that venv in an empty directory.
* A wheel edited inside the wheelhouse is refused by pip's hash check (and by
  ``strongroom bundle --verify``).

The install tests are marked slow (``make test-slow``): building the wheelhouse
and installing 60-odd wheels take about 3 minutes on this 2-core machine. The
package-data check builds only the wheel (~20 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from strongroom import __version__
from strongroom.crypto.age import X25519Identity

from cli_fixtures import strongroom_exe
from testsupport import REPO_ROOT

INSTALL = "pip install --no-index --find-links {d} --require-hashes -r {d}/requirements.txt"


def _clean_env(**extra: str) -> dict[str, str]:
    """No pip configuration, no extra find-links or index: only what the command names."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "STRONGROOM_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, check=False,
                          **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """strongroom's wheel, built offline from a copy of the source tree."""
    base = tmp_path_factory.mktemp("wheel")
    tree = base / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, tree / name)
    shutil.copytree(REPO_ROOT / "src", tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    done = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                 "--outdir", str(base / "dist"), str(tree)], env=_clean_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = (base / "dist").glob("strongroom-*.whl")
    return wheel


def test_wheel_carries_every_package_data_file(built_wheel: Path) -> None:
    src = REPO_ROOT / "src"
    wanted = {p.relative_to(src).as_posix() for p in (src / "strongroom").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    with zipfile.ZipFile(built_wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    missing = sorted(wanted - names)
    assert not missing, f"not in the wheel (add them to package-data): {missing}"
    for needed in ("strongroom/store/migrations/env.py", "strongroom/py.typed",
                   "strongroom/server/console/static/console.js"):
        assert needed in names
    assert any(n.startswith("strongroom/store/migrations/versions/0010") for n in names)
    assert any(n.endswith(".cedar") for n in names) and any(n.endswith(".html") for n in names)
    assert "strongroom = strongroom.cli.entry:main" in entry_points


@pytest.fixture(scope="module")
def wheelhouse(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    house = tmp_path_factory.mktemp("house") / "wheelhouse"
    done = _run([strongroom_exe(), "bundle", "--to", str(house), "--wheel", str(built_wheel)],
                env={**os.environ, "STRONGROOM_URL": ""})
    assert done.returncode == 0, done.stderr
    assert INSTALL.format(d=house) in done.stdout  # the command it prints is the documented one
    return house


def _venv(where: Path) -> Path:
    done = _run([sys.executable, "-m", "venv", str(where)], env=_clean_env())
    assert done.returncode == 0, done.stderr
    return where / "bin"


@pytest.mark.slow
@pytest.mark.timeout(900)  # pip compiles 60-odd packages: ~4 min at load 12 on 2 cores
def test_offline_install_from_the_wheelhouse_runs(wheelhouse: Path, tmp_path: Path) -> None:
    bin_dir = _venv(tmp_path / "venv")
    pip, *args = INSTALL.format(d=wheelhouse).split()
    done = _run([str(bin_dir / pip), *args], env=_clean_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    exe = str(bin_dir / "strongroom")
    version = _run([exe, "--version"], env=_clean_env())
    assert version.stdout.strip() == f"strongroom {__version__}", version.stderr
    work = tmp_path / "site"
    work.mkdir()
    pubs = []
    for i in (1, 2):
        ident = X25519Identity.generate()
        (work / f"c{i}.pub").write_text(f"{ident.recipient}\n")
        pubs += ["--custodian", f"c{i}.pub"]
    env = _clean_env()
    init = _run([exe, "init", *pubs, "--threshold", "2"], cwd=work, env=env)
    assert init.returncode == 0, init.stderr
    status = _run([exe, "status", "--json"], cwd=work, env=env)
    assert status.returncode == 0, status.stderr
    assert '"initialized": true' in status.stdout and '"sealed": true' in status.stdout
    check = _run([exe, "db", "upgrade", "--check"], cwd=work, env=env)
    assert check.returncode == 0 and "current" in check.stdout, check.stderr
    # It ran the installed copy, not this checkout.
    where = _run([str(bin_dir / "python"), "-c", "import strongroom; print(strongroom.__file__)"],
                 env=env)
    assert str(tmp_path / "venv") in where.stdout


@pytest.mark.slow
def test_a_wheel_edited_in_the_wheelhouse_is_refused(wheelhouse: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in wheelhouse.iterdir():
        (tampered / f.name).symlink_to(f)
    (victim,) = [f for f in wheelhouse.glob("idna-*.whl")]
    (tampered / victim.name).unlink()
    with zipfile.ZipFile(victim) as src, \
            zipfile.ZipFile(tampered / victim.name, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "idna/__init__.py":
                data += b"\nimport os  # planted\n"
            dst.writestr(item, data)

    verify = _run([strongroom_exe(), "bundle", "--verify", str(tampered)],
                  env={**os.environ, "STRONGROOM_URL": ""})
    assert verify.returncode == 4 and victim.name in verify.stderr, verify.stderr

    bin_dir = _venv(tmp_path / "venv")
    pip, *args = INSTALL.format(d=tampered).split()
    done = _run([str(bin_dir / pip), *args], env=_clean_env())
    assert done.returncode != 0
    assert "DO NOT MATCH THE HASHES" in done.stderr and "idna" in done.stderr, done.stderr[-3000:]
    assert not (bin_dir / "strongroom").exists()
