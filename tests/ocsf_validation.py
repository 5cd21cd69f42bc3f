"""Validate OCSF events against OCSF's own schema (helper for the SIEM export tests).

The schema is the one the OCSF project publishes for the version strongroom
pins (``strongroom.audit.ocsf.OCSF_VERSION``), shipped by the
``ocsf-json-schema`` package (offline: no schema server is asked) and turned
into JSON Schema 2020-12 per class and profile, objects embedded;
``jsonschema-rs`` checks each event. Unknown attributes are refused
(``additionalProperties: false``), so a misspelled field fails too.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jsonschema_rs
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from strongroom.audit.ocsf import OCSF_VERSION

__all__ = ["validate_ocsf"]


@functools.cache
def _schema() -> OcsfJsonSchemaEmbedded:
    return OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))


@functools.cache
def _validator(class_uid: int, profiles: tuple[str, ...]) -> Any:
    schema = _schema()
    name = schema.lookup_class_name_from_uid(class_uid)
    return jsonschema_rs.validator_for(schema.get_class_schema(name, list(profiles)))


def validate_ocsf(event: Mapping[str, Any]) -> None:
    """Assert ``event`` is a valid OCSF event of its class and declared profiles."""
    assert event["metadata"]["version"] == OCSF_VERSION
    profiles = tuple(sorted(event["metadata"].get("profiles", [])))
    validator = _validator(int(event["class_uid"]), profiles)
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}"
              for e in validator.iter_errors(dict(event))]
    assert not errors, f"not a valid OCSF {OCSF_VERSION} event: " + "; ".join(errors[:5])
