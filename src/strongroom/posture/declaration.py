"""The declaration: what software cannot see, stated (and signed off) by a person.

A short YAML file (``docs/posture-declaration.example.yaml``)::

    assessor: "Dana Ruiz, head of security"
    date: 2026-11-27
    facility:
      physical_access_control: true   # badges + logs on every room holding weights
      guarded_24x7: false
      side_channel_protection: false  # TEMPEST / emanations, hardware tamper protection
    network:
      isolated_enclave: true          # weight hosts have no direct route to the internet
      airgapped: false                # no network path at all
      hardware_bandwidth_limits: false
    hsm:
      certified: none                 # none | fips-140-2-level-3 | fips-140-3-level-3
    confidential_computing: false     # weights decrypted only inside TEEs
    vetting:
      depth: enhanced                 # none | basic | enhanced | government-secret | government-top-secret
      continuous_evaluation: true
    soc:
      staffed_24x7: false
    redteam:
      third_party_within_days: 400    # days since the last external red team (omit: never)
      nation_state_exercise: false

Every value is a *claim*: the posture report shows it as "declared", never as
"verified". Unknown keys are refused so that a typo does not silently count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from strongroom.errors import InvalidInput, NotFound

__all__ = ["HSM_CERTS", "VETTING_DEPTHS", "Declaration", "declaration_from_text", "load_declaration",
           "parse_declaration"]

VETTING_DEPTHS = ("none", "basic", "enhanced", "government-secret", "government-top-secret")
HSM_CERTS = ("none", "fips-140-2-level-3", "fips-140-3-level-3")

_SCHEMA: dict[str, dict[str, type | tuple[str, ...]]] = {
    "facility": {"physical_access_control": bool, "guarded_24x7": bool,
                 "side_channel_protection": bool},
    "network": {"isolated_enclave": bool, "airgapped": bool, "hardware_bandwidth_limits": bool},
    "hsm": {"certified": HSM_CERTS},
    "vetting": {"depth": VETTING_DEPTHS, "continuous_evaluation": bool},
    "soc": {"staffed_24x7": bool},
    "redteam": {"third_party_within_days": int, "nation_state_exercise": bool},
}
_TOP = {"assessor", "date", "confidential_computing", *_SCHEMA}


@dataclass(frozen=True)
class Declaration:
    """Validated claims; absent claims are ``False`` / ``"none"`` / ``None``."""

    values: Mapping[str, Any]
    source: str = ""

    @property
    def assessor(self) -> str:
        """Who made the claims."""
        return str(self.values.get("assessor", ""))

    def get(self, path: str) -> Any:
        """A claim by dotted path (``"network.isolated_enclave"``), or None."""
        node: Any = self.values
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    def flag(self, path: str) -> bool:
        """A boolean claim (absent: False)."""
        return self.get(path) is True


def _fail(source: str, where: str, message: str) -> InvalidInput:
    return InvalidInput(f"{where}: {message}", obj=source,
                        remedy="see docs/posture.md and docs/posture-declaration.example.yaml")


def parse_declaration(doc: Any, source: str = "<declaration>") -> Declaration:
    """Validate a parsed YAML document."""
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise _fail(source, "document", "must be a mapping")
    extra = set(map(str, doc)) - _TOP
    if extra:
        raise _fail(source, "document", f"unknown field(s) {', '.join(sorted(extra))}")
    for key in ("assessor", "date"):
        if key in doc and not isinstance(doc[key], str | int) and doc[key] is not None:
            raise _fail(source, key, "must be text")
    if "confidential_computing" in doc and not isinstance(doc["confidential_computing"], bool):
        raise _fail(source, "confidential_computing", "must be true or false")
    for section, fields in _SCHEMA.items():
        if section not in doc:
            continue
        body = doc[section]
        if not isinstance(body, Mapping):
            raise _fail(source, section, "must be a mapping")
        unknown = set(map(str, body)) - set(fields)
        if unknown:
            raise _fail(source, section, f"unknown field(s) {', '.join(sorted(unknown))}")
        for name, kind in fields.items():
            if name not in body:
                continue
            value = body[name]
            where = f"{section}.{name}"
            if isinstance(kind, tuple):
                if value not in kind:
                    raise _fail(source, where, f"{value!r} is not one of {', '.join(kind)}")
            elif kind is bool:
                if not isinstance(value, bool):
                    raise _fail(source, where, "must be true or false")
            elif kind is int and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
                raise _fail(source, where, "must be a whole number >= 0")
    values = {k: (str(v) if k == "date" else v) for k, v in doc.items()}
    return Declaration(values, source)


def load_declaration(path: Path) -> Declaration:
    """Read and validate a declaration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound("declaration file not found", obj=str(path)) from None
    return declaration_from_text(text, str(path))


def declaration_from_text(text: str, source: str = "<declaration>") -> Declaration:
    """Parse and validate a declaration's YAML text (``source`` names it in errors)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(source, "yaml", f"does not parse ({str(exc).splitlines()[0]})") from None
    return parse_declaration(doc, source)
