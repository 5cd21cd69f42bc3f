"""``strongroom attest policy set|show`` on a real vault: officer-signed, pinned, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.access import statements
from strongroom.access.directory import ResourceLabel
from strongroom.store.db import Store

from cli_fixtures import Run

M1 = "ab" * 48


# The SQLite run is the one test that proves the commands (vault init and unseal, ~70 s on
# 2 cores); the PostgreSQL run repeats it on the other backend and is marked slow.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The conftest database URL, with the PostgreSQL variant marked slow."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'strongroom.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def test_policy_set_pins_and_show_lists(unsealed_cli: Run, tmp_path: Path, db_url: str) -> None:
    run = unsealed_cli
    doc = {"name": "inference", "serial": 1, "platforms": ["sev-snp"], "measurements": [M1],
           "min_tcb": {"sev-snp": {"snp": 8, "microcode": 115}}}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    out = run("attest", "policy", "set", path).stdout
    assert "serial 1 signed" in out
    shown = json.loads(run("attest", "policy", "show", "--json").stdout)
    assert shown == [doc]
    assert "1 measurement(s)" in run("attest", "policy", "show", "inference").stdout

    again = run("attest", "policy", "set", path, ok=False)
    assert again.returncode == 2 and "serial must be above 1" in again.stderr
    path.write_text(json.dumps({**doc, "serial": 2, "platforms": ["sev-snp-test"],
                                "min_tcb": {}}))
    test_only = run("attest", "policy", "set", path, ok=False)
    assert test_only.returncode == 2 and "test-only" in test_only.stderr
    path.write_text(json.dumps({**doc, "serial": 2, "measurements": []}))
    empty = run("attest", "policy", "set", path, ok=False)
    assert empty.returncode == 2 and "at least one measurement" in empty.stderr
    assert "no attestation policy is pinned under 'other'" in run(
        "attest", "policy", "show", "other").stdout
    audit = run("audit", "tail", "--json").stdout
    assert "attest.policy" in audit

    # An officer labels an artifact as needing the policy: the signed label carries it.
    run("compartments", "label", "minilm", "--classification", "secret",
        "--attested", "inference")
    store = Store.open(db_url)
    try:
        (env,) = statements.envelopes(store, "label", subject="minilm")
        assert ResourceLabel.from_statement(statements.unverified_payload(env)).attested == (
            "inference")
    finally:
        store.close()
