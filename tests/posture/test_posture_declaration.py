"""The posture declaration: the shipped example parses; bad files are refused by field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from strongroom.errors import InvalidInput, NotFound
from strongroom.posture.declaration import load_declaration, parse_declaration

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "posture-declaration.example.yaml"


def test_example_declaration_parses() -> None:
    decl = load_declaration(EXAMPLE)
    assert decl.flag("network.isolated_enclave") and not decl.flag("network.airgapped")
    assert decl.get("vetting.depth") == "enhanced" and decl.assessor


@pytest.mark.parametrize(("doc", "where"), [
    ({"facilty": {}}, "unknown field"),
    ({"network": {"isolated": True}}, "network"),
    ({"network": {"isolated_enclave": "yes"}}, "network.isolated_enclave"),
    ({"vetting": {"depth": "thorough"}}, "vetting.depth"),
    ({"hsm": {"certified": "fips-140-3-level-4"}}, "hsm.certified"),
    ({"redteam": {"third_party_within_days": -1}}, "redteam.third_party_within_days"),
    ({"redteam": {"third_party_within_days": True}}, "redteam.third_party_within_days"),
    ({"confidential_computing": "true"}, "confidential_computing"),
    (["not", "a", "mapping"], "document"),
])
def test_bad_declarations_are_refused(doc: Any, where: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_declaration(doc, "decl.yaml")
    assert where in err.value.message and err.value.obj == "decl.yaml"


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_declaration(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("facility: [unclosed")
    with pytest.raises(InvalidInput, match="does not parse"):
        load_declaration(bad)
