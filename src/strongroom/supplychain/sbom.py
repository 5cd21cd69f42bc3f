"""A CycloneDX 1.5 SBOM of the installed strongroom and everything it depends on.

Use it like this::

    bom = build_sbom()                 # dict, JSON-able
    Path("sbom.cdx.json").write_text(json.dumps(bom, indent=2))

Components come from :mod:`importlib.metadata` (what is really installed, not
what a lock file says): the runtime dependency closure of the ``strongroom``
distribution, following each ``Requires-Dist`` whose environment marker holds
here (extras are not followed). Each component has a ``pkg:pypi`` purl, its
licence expression where declared, and the SHA-256 of its ``RECORD`` file
(which itself lists the hash of every installed file). The ``dependencies``
section gives the graph.

Do not treat the SBOM as proof that the installed files are genuine: compare
it with ``requirements.lock`` (``strongroom doctor``).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from strongroom.errors import NotFound

__all__ = ["ROOT_DISTRIBUTION", "build_sbom", "dependency_closure", "normalize"]

ROOT_DISTRIBUTION = "strongroom"


def normalize(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requires(dist: metadata.Distribution) -> list[str]:
    out = []
    for line in dist.requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        out.append(normalize(req.name))
    return out


def dependency_closure(root: str = ROOT_DISTRIBUTION) -> dict[str, metadata.Distribution]:
    """Every installed distribution ``root`` needs at run time, by normalised name."""
    try:
        first = metadata.distribution(root)
    except metadata.PackageNotFoundError:
        raise NotFound("distribution is not installed", obj=root,
                       remedy="install strongroom (pip install -e .)") from None
    seen: dict[str, metadata.Distribution] = {normalize(root): first}
    todo = [first]
    while todo:
        dist = todo.pop()
        for name in _requires(dist):
            if name in seen:
                continue
            try:
                seen[name] = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                continue  # reported by `strongroom doctor`, not invented here
            todo.append(seen[name])
    return seen


def _purl(dist: metadata.Distribution) -> str:
    return f"pkg:pypi/{normalize(dist.metadata['Name'])}@{dist.version}"


def _component(dist: metadata.Distribution, kind: str) -> dict[str, Any]:
    comp: dict[str, Any] = {
        "type": kind,
        "bom-ref": _purl(dist),
        "name": dist.metadata["Name"],
        "version": dist.version,
        "purl": _purl(dist),
    }
    lic = next(iter(dist.metadata.get_all("License-Expression") or dist.metadata.get_all("License") or []), None)
    if lic and len(lic) < 100 and "\n" not in lic:
        comp["licenses"] = [{"expression": lic}]
    record = dist.read_text("RECORD")
    if record is not None:
        comp["hashes"] = [{"alg": "SHA-256", "content": hashlib.sha256(record.encode()).hexdigest()}]
        comp["properties"] = [{"name": "strongroom:hash-of", "value": "RECORD"}]
    return comp


def build_sbom(root: str = ROOT_DISTRIBUTION) -> dict[str, Any]:
    """The CycloneDX 1.5 JSON document (as a dict) of ``root`` and its closure."""
    closure = dependency_closure(root)
    top = closure[normalize(root)]
    components = [_component(d, "library") for n, d in sorted(closure.items()) if n != normalize(root)]
    deps = [
        {"ref": _purl(d), "dependsOn": sorted(_purl(closure[r]) for r in set(_requires(d)) if r in closure)}
        for _, d in sorted(closure.items())
    ]
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "strongroom sbom",
                                      "version": top.version}]},
            "component": _component(top, "application"),
        },
        "components": components,
        "dependencies": deps,
    }
