"""Offline wheelhouses: strongroom and every dependency as wheels, pinned by hash, for an airgap.

    report = build_wheelhouse(Path("/media/usb/strongroom-0.1.0"))
    # on the enclave host, with no network:
    #   pip install --no-index --find-links DIR --require-hashes -r DIR/requirements.txt

The wheelhouse is made from *this* installation (this Python, this platform),
so what crosses the gap is exactly what was tested here, and making it needs no
network:

* each installed distribution strongroom depends on (transitively, with the
  extras asked for and the environment markers of this interpreter) is packed
  back into a wheel from its files. Every file is checked against the SHA-256
  its ``RECORD`` lists as it is read: an installed file edited after install is
  refused, naming it, rather than carried into the enclave;
* strongroom itself: its installed files the same way, or, for an editable
  (development) install, a wheel built from its source tree with ``pip wheel
  --no-deps --no-build-isolation`` (offline), or the wheel given (``wheel=``),
  such as the one CI built.

Beside the wheels it writes ``requirements.txt`` (``name==version
--hash=sha256:...`` for every wheel, so pip's ``--require-hashes`` refuses a
wheel swapped or edited on the way), ``SHA256SUMS`` (``sha256sum -c`` checks the
directory without strongroom) and ``wheelhouse.json`` (strongroom's version, the
Python and platform tags, and each file's size and SHA-256). Give ``signer=``
(a strongroom identity) to add ``wheelhouse.dsse``, the manifest signed as a
DSSE envelope that :func:`verify_wheelhouse` checks against a pinned key.

What is not carried: C headers (``*.data/headers``, only needed to compile
against a package) and compiled ``__pycache__`` files (pip compiles on install).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as md
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from strongroom.crypto.dsse import sign_statement, verify_statement
from strongroom.digests import file_inventory, sha256_file
from strongroom.errors import ConfigError, IntegrityError, InvalidInput, NotFound
from strongroom.keys.identity import Identity, PublicIdentity
from strongroom.timefmt import utc_stamp

__all__ = ["FORMAT", "MANIFEST", "PAYLOAD_TYPE", "WheelhouseReport", "build_wheelhouse",
           "install_command", "verify_wheelhouse"]

#: The manifest's format name and the DSSE payload type of its signature.
FORMAT = "strongroom-wheelhouse/1"
PAYLOAD_TYPE = "application/vnd.strongroom.wheelhouse+json"
MANIFEST = "wheelhouse.json"
SIGNATURE = "wheelhouse.dsse"
REQUIREMENTS = "requirements.txt"
SUMS = "SHA256SUMS"
_OWN_FILES = frozenset({MANIFEST, SIGNATURE, REQUIREMENTS, SUMS})
#: Written by the installer, not part of the distribution (regenerated on install).
_INSTALLER_FILES = frozenset({"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"})


def install_command(directory: Path | str) -> str:
    """The documented offline install from a wheelhouse directory."""
    return (f"pip install --no-index --find-links {directory} --require-hashes "
            f"-r {directory}/{REQUIREMENTS}")


@dataclass
class WheelhouseReport:
    """What :func:`build_wheelhouse` wrote: each wheel's pin, and the manifest's files."""

    directory: Path
    pins: dict[str, str] = field(default_factory=dict)  # canonical name -> version
    wheels: list[str] = field(default_factory=list)
    signed_by: str | None = None


# -- which distributions ------------------------------------------------------------------


def _wanted(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in extras | {""})


def _closure(requires: list[str], extras: frozenset[str], root: str
             ) -> dict[str, md.Distribution]:
    """Every installed distribution ``requires`` needs here, by canonical name (NotFound if absent)."""
    found: dict[str, md.Distribution] = {}
    asked: dict[str, frozenset[str]] = {}
    todo = [(req.name, frozenset(req.extras), root) for req in map(Requirement, requires)
            if _wanted(req, extras)]
    while todo:
        name, want, needed_by = todo.pop()
        key = canonicalize_name(name)
        if key in asked and want <= asked[key]:
            continue
        asked[key] = asked.get(key, frozenset()) | want
        try:
            dist = found.get(key) or md.distribution(name)
        except md.PackageNotFoundError:
            raise NotFound(f"{name} (needed by {needed_by}) is not installed", obj=name,
                           remedy="install strongroom with its dependencies in this Python "
                           "first (pip install strongroom)") from None
        found[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if _wanted(req, asked[key]):
                todo.append((req.name, frozenset(req.extras), dist.metadata["Name"]))
    return found


# -- packing an installed distribution back into a wheel -----------------------------------


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel_name(dist: md.Distribution) -> str:
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    if not tags:
        raise IntegrityError("its WHEEL file names no tag", obj=dist.metadata["Name"],
                             remedy="reinstall it from a wheel")
    parts: list[list[str]] = [[], [], []]
    for tag in tags:
        for i, piece in enumerate(tag.split("-", 2)):
            if piece not in parts[i]:
                parts[i].append(piece)
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    return f"{name}-{dist.version}-{'-'.join('.'.join(p) for p in parts)}.whl"


def _entry_scripts(dist: md.Distribution) -> set[str]:
    return {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}


def _archive_name(dist: md.Distribution, rel: str, prefix: Path, site: Path) -> str | None:
    """Where installed file ``rel`` (relative to site-packages) goes in the wheel, or None."""
    parts = Path(rel).parts
    if "__pycache__" in parts or (len(parts) == 2 and parts[0].endswith(".dist-info")
                                  and parts[1] in _INSTALLER_FILES):
        return None
    if not rel.startswith(".."):
        return Path(rel).as_posix()
    # Installed outside site-packages: a script (bin/) or data relative to the prefix.
    where = Path(os.path.normpath(site / rel)).relative_to(prefix).as_posix()
    data = f"{re.sub(r'[-_.]+', '_', dist.metadata['Name'])}-{dist.version}.data"
    if where.startswith("bin/"):
        script = where.removeprefix("bin/")
        return None if script in _entry_scripts(dist) else f"{data}/scripts/{script}"
    if where.startswith("include/"):
        return None  # headers: see the module docstring
    return f"{data}/data/{where}"


def _script_bytes(data: bytes) -> bytes:
    """A script as the wheel holds it: the installer's interpreter line back to ``#!python``."""
    first, nl, rest = data.partition(b"\n")
    if first.startswith(b"#!") and b"python" in first:
        return b"#!python" + nl + rest
    return data


def _repack(dist: md.Distribution, dest: Path) -> Path:
    """``dist``'s installed files as a wheel in ``dest``, each checked against its RECORD."""
    name = dist.metadata["Name"]
    base = Path(str(dist.locate_file(""))).resolve()
    prefix = Path(sys.prefix).resolve()
    record: list[tuple[str, str, int]] = []
    target = dest / _wheel_name(dist)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for item in sorted(dist.files or [], key=str):
            arc = _archive_name(dist, str(item), prefix, base)
            if arc is None:
                continue
            path = Path(str(dist.locate_file(item)))
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise IntegrityError(f"installed file {item} cannot be read "
                                     f"({type(exc).__name__})", obj=name,
                                     remedy=f"reinstall {name}") from None
            if item.hash is not None and _record_hash(data) != f"{item.hash.mode}={item.hash.value}":
                raise IntegrityError(f"installed file {item} differs from the hash its RECORD "
                                     "lists (edited after install)", obj=name,
                                     remedy=f"reinstall {name} from a trusted wheel, then "
                                     "bundle again")
            if "/scripts/" in arc and ".data/" in arc:
                data = _script_bytes(data)
            info = zipfile.ZipInfo(arc, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            record.append((arc, _record_hash(data), len(data)))
        dist_info = next((a for a, _, _ in record if a.endswith(".dist-info/METADATA")), None)
        if dist_info is None:
            raise IntegrityError("no METADATA among its installed files", obj=name,
                                 remedy=f"reinstall {name}")
        rec_name = dist_info.removesuffix("METADATA") + "RECORD"
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows((a, h, str(n)) for a, h, n in record)
        writer.writerow((rec_name, "", ""))
        zf.writestr(zipfile.ZipInfo(rec_name, date_time=(1980, 1, 1, 0, 0, 0)), out.getvalue())
    return target


def _editable_source(dist: md.Distribution) -> Path | None:
    raw = dist.read_text("direct_url.json")
    if not raw:
        return None
    info = json.loads(raw)
    if not info.get("dir_info", {}).get("editable"):
        return None
    url = str(info.get("url", ""))
    return Path(url.removeprefix("file://")) if url.startswith("file://") else None


def _build_from_source(source: Path, dest: Path) -> Path:
    """A wheel of the source tree at ``source``, built offline (no isolation, no index)."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--no-index", "--quiet", "--wheel-dir", tmp, str(source)],
            capture_output=True, text=True, timeout=600, check=False)
        wheels = list(Path(tmp).glob("strongroom-*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            raise ConfigError(
                f"building strongroom's wheel from {source} failed: "
                f"{(done.stderr or done.stdout).strip()[-400:]}", obj=str(source),
                remedy="install the build requirements (setuptools>=77, wheel) in this Python, "
                "or give a built wheel with --wheel")
        return Path(shutil.copy2(wheels[0], dest / wheels[0].name))


# -- the wheelhouse -----------------------------------------------------------------------


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as zf:
        meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            raise InvalidInput("not a wheel (no METADATA)", obj=str(wheel))
        return message_from_bytes(zf.read(meta))


def _pin(wheel: Path) -> tuple[str, str]:
    fields = _metadata(wheel)
    return canonicalize_name(str(fields["Name"])), str(fields["Version"])


def build_wheelhouse(dest: Path, *, wheel: Path | None = None, extras: frozenset[str] = frozenset(),
                     signer: Identity | None = None) -> WheelhouseReport:
    """Write the offline wheelhouse for this Python and platform into the new directory ``dest``."""
    if dest.exists() and any(dest.iterdir()):
        raise InvalidInput("the directory is not empty", obj=str(dest),
                           remedy="give a new or empty directory")
    try:
        own = md.distribution("strongroom")
    except md.PackageNotFoundError:
        own = None
    if wheel is None and own is None:
        raise NotFound("strongroom is not installed in this Python", obj=sys.executable,
                       remedy="give its wheel with --wheel")
    dest.mkdir(parents=True, exist_ok=True)
    report = WheelhouseReport(dest)
    if wheel is not None:
        if _pin(wheel)[0] != "strongroom":
            raise InvalidInput("not a strongroom wheel", obj=str(wheel))
        made = Path(shutil.copy2(wheel, dest / wheel.name))
    elif own is not None and (source := _editable_source(own)) is not None:
        made = _build_from_source(source, dest)
    else:
        assert own is not None
        made = _repack(own, dest)
    # The wheel's own requirements: an editable install's metadata may predate its source.
    dists = _closure(_metadata(made).get_all("Requires-Dist") or [], extras, made.name)
    dists.pop("strongroom", None)
    wheels = [made, *(_repack(d, dest) for _, d in sorted(dists.items()))]
    lines = []
    for w in wheels:
        name, version = _pin(w)
        report.pins[name] = version
        report.wheels.append(w.name)
        lines.append(f"{name}=={version} \\\n    --hash=sha256:{sha256_file(w)[1]}")
    (dest / REQUIREMENTS).write_text(
        f"# strongroom offline install; {install_command('DIR')}\n" + "\n".join(lines) + "\n",
        encoding="utf-8")
    files = {k: v for k, v in file_inventory(dest).items() if k not in _OWN_FILES - {REQUIREMENTS}}
    (dest / SUMS).write_text("".join(f"{v['sha256']}  {k}\n" for k, v in files.items()),
                             encoding="utf-8")
    manifest = {"format": FORMAT, "strongroom": report.pins["strongroom"],
                "python": sys.implementation.cache_tag, "platform": sysconfig.get_platform(),
                "created": utc_stamp(), "install": install_command("DIR"), "files": files}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
    if signer is not None:
        (dest / SIGNATURE).write_text(sign_statement(manifest, PAYLOAD_TYPE, signer.private_key),
                                      encoding="utf-8")
        report.signed_by = signer.public.key_id
    return report


def verify_wheelhouse(directory: Path, signer: PublicIdentity | None = None) -> dict[str, Any]:
    """The manifest of ``directory`` once every file matches it (and, given ``signer``, its signature).

    Raises :class:`IntegrityError` naming the first file missing, added or changed.
    """
    try:
        raw = (directory / MANIFEST).read_text(encoding="utf-8")
    except OSError:
        raise NotFound(f"no {MANIFEST}", obj=str(directory),
                       remedy="give the directory `strongroom bundle --to` wrote") from None
    if signer is not None:
        try:
            envelope = (directory / SIGNATURE).read_bytes()
        except OSError:
            raise IntegrityError(f"no {SIGNATURE}: the wheelhouse is not signed",
                                 obj=str(directory)) from None
        manifest = verify_statement(envelope, PAYLOAD_TYPE, {signer.key_id: signer.public_key},
                                    obj=str(directory / SIGNATURE))
        if manifest != json.loads(raw):
            raise IntegrityError(f"{MANIFEST} differs from the signed manifest", obj=str(directory))
    else:
        manifest = json.loads(raw)
    if manifest.get("format") != FORMAT:
        raise InvalidInput(f"not a {FORMAT} manifest", obj=str(directory / MANIFEST))
    listed: dict[str, dict[str, Any]] = manifest["files"]
    present = {k: v for k, v in file_inventory(directory).items()
               if k not in _OWN_FILES - {REQUIREMENTS}}
    for name in sorted(set(listed) | set(present)):
        if name not in present:
            raise IntegrityError("listed in the manifest but missing", obj=name)
        if name not in listed:
            raise IntegrityError("present but not listed in the manifest", obj=name)
        if present[name] != listed[name]:
            raise IntegrityError("differs from the manifest's size and SHA-256", obj=name,
                                 remedy="make the wheelhouse again from a trusted installation")
    return manifest
