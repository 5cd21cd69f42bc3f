"""The access, people, compartments and docs commands against a real unsealed agent (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from strongroom.cli import access_cmd, docs_cmd, people_cmd
from strongroom.errors import StrongroomError
from strongroom.keys.identity import Identity

from cli_fixtures import Run, unseal_home


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Run, dict[str, str]]]:
    run, env = unseal_home(tmp_path / "home", None)
    for k in ("STRONGROOM_HOME", "STRONGROOM_IDENTITY"):
        monkeypatch.setenv(k, env[k])
    monkeypatch.delenv("STRONGROOM_DATABASE_URL", raising=False)
    try:
        yield run, env
    finally:
        run("seal", ok=False)


def _app() -> typer.Typer:
    app = typer.Typer()
    for m in (access_cmd, people_cmd, docs_cmd):
        m.register(app)
    return app


def _invoke(monkeypatch: pytest.MonkeyPatch, who: Path, *args: str, ok: bool = True) -> str:
    monkeypatch.setenv("STRONGROOM_IDENTITY", str(who))
    result = CliRunner().invoke(_app(), list(args), catch_exceptions=True)
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    else:
        assert isinstance(result.exception, StrongroomError), result.output
    return result.output if ok else str(result.exception)


def _stored(env: dict[str, str], kind: str) -> int:
    """How many statements of ``kind`` the vault's database holds."""
    from strongroom.access import statements
    from strongroom.store.db import Store

    store = Store.open(f"sqlite:///{env['STRONGROOM_HOME']}/strongroom.db")
    try:
        return len(statements.envelopes(store, kind))
    finally:
        store.close()


def test_enroll_request_approve_grant_break_glass(cli: tuple[Run, dict[str, str]],
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _, env = cli
    officer = Path(env["STRONGROOM_IDENTITY"])
    ids = {}
    for name, comps in (("alice", ["atlas"]), ("bob", ["atlas"]), ("dave", ["other"])):
        ident = Identity.generate(name)
        ident.save(tmp_path / f"{name}.id")
        (tmp_path / f"{name}.pub").write_text(ident.public.to_text())
        ids[name] = tmp_path / f"{name}.id"
        args = ["people", "enroll", name, "--key", str(tmp_path / f"{name}.pub"),
                "--vetting-expires", "2099-01-01", "--clearance", "top-secret",
                "--role", "approvers"]
        for c in comps:
            args += ["--compartment", c]
        assert "signed by" in _invoke(monkeypatch, officer, *args)
    listing = _invoke(monkeypatch, officer, "people", "ls")
    assert "alice" in listing and "current" in listing
    doc = tmp_path / "recipe.md"
    doc.write_text("warmup 2000 steps\n")
    _invoke(monkeypatch, officer, "docs", "add", str(doc), "--name", "recipe",
            "--classification", "confidential", "--compartment", "atlas")
    assert "recipe@1" in _invoke(monkeypatch, officer, "docs", "ls")
    _invoke(monkeypatch, officer, "compartments", "label", "recipe", "--classification",
            "secret", "--compartment", "atlas", "--rule", "read=1 of approvers",
            "--break-glass", "alice", "--window", "600")
    assert "alice" in _invoke(monkeypatch, officer, "compartments", "ls")
    # dave is cleared high enough but outside the compartment: refused at request time
    refused = _invoke(monkeypatch, ids["dave"], "access", "request", "recipe", "--action", "read",
                      "--purpose", "curious", ok=False)
    assert "policy denies dave" in refused
    out = _invoke(monkeypatch, ids["alice"], "access", "request", "recipe", "--action", "read",
                  "--purpose", "reproduce run 12", "--duration", "2h", "--bytes", "1M")
    request_id = out.split()[1]
    # alice cannot approve her own request, bob cannot approve twice: refused, nothing stored
    assert "alice made this request and cannot approve it" in _invoke(
        monkeypatch, ids["alice"], "access", "approve", request_id, ok=False)
    assert "grant" in _invoke(monkeypatch, ids["bob"], "access", "approve", request_id)
    assert "bob approved this request already" in _invoke(
        monkeypatch, ids["bob"], "access", "approve", request_id, ok=False)
    assert _stored(env, "approval") == 1
    # a veto is final: an approval after a denial is refused and not stored
    out = _invoke(monkeypatch, ids["alice"], "access", "request", "recipe", "--action", "read",
                  "--purpose", "reproduce run 13")
    vetoed = out.split()[1]
    _invoke(monkeypatch, ids["bob"], "access", "deny", vetoed, "--reason", "not this quarter")
    refused = _invoke(monkeypatch, ids["bob"], "access", "approve", vetoed, ok=False)
    assert "denied by bob ('not this quarter')" in refused and "file a new request" in refused
    assert _stored(env, "approval") == 1
    assert "alice" in _invoke(monkeypatch, officer, "access", "grants")
    assert "1/50" in _invoke(monkeypatch, officer, "access", "caps")
    # a document read by someone outside its compartment fails at the gate
    _invoke(monkeypatch, ids["dave"], "docs", "read", "recipe", ok=False)
    monkeypatch.setenv("STRONGROOM_IDENTITY", str(ids["alice"]))
    res = CliRunner().invoke(_app(), ["access", "break-glass", "recipe", "--action", "read",
                                      "--reason", "incident 4411"])
    assert res.exit_code == 0, res.output
    assert "PENDING" in _invoke(monkeypatch, officer, "access", "break-glass",
                                       "--pending")
    bad = tmp_path / "bad.cedar"
    bad.write_text("permit (principal, action, resource) when { principal.nope };")
    assert "does not" in _invoke(monkeypatch, officer, "access", "policy", "set", str(bad),
                                 "--serial", "1", ok=False)
    assert "serial 0" in _invoke(monkeypatch, officer, "access", "policy", "show")


def _envelopes(env: dict[str, str], kind: str) -> list[str]:
    from strongroom.access import statements
    from strongroom.store.db import Store

    store = Store.open(f"sqlite:///{env['STRONGROOM_HOME']}/strongroom.db")
    try:
        return statements.envelopes(store, kind)
    finally:
        store.close()


def _signers(envelope: str) -> list[str]:
    """The kinds of signature an envelope carries: ed25519 (16-hex key ids) or mldsa65."""
    import json

    return sorted("mldsa65" if s["keyid"].startswith("mldsa65:") else "ed25519"
                  for s in json.loads(envelope)["signatures"])


def test_hybrid_people_sign_with_both_keys_classical_people_as_before(
        cli: tuple[Run, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """keys new-identity --pq, people enroll pins the ML-DSA key, and the person's request,
    approval and Grant carry both signatures; a classical approver signs Ed25519 alone."""
    from strongroom.access import statements

    run, env = cli
    officer = Path(env["STRONGROOM_IDENTITY"])
    ids = {}
    for name, pq in (("alice", True), ("bob", True), ("carol", False)):
        run("keys", "new-identity", *(["--pq"] if pq else []), "--name", name,
            "--out", tmp_path / f"{name}.id")
        ids[name] = tmp_path / f"{name}.id"
        _invoke(monkeypatch, officer, "people", "enroll", name, "--key", f"{ids[name]}.pub",
                "--vetting-expires", "2099-01-01", "--clearance", "top-secret",
                "--compartment", "atlas", "--role", "approvers")
    pinned = {statements.unverified_payload(e)["name"]: "mldsa_key" in
              statements.unverified_payload(e) for e in _envelopes(env, "enrollment")}
    assert pinned == {"alice": True, "bob": True, "carol": False}
    doc = tmp_path / "recipe.md"
    doc.write_text("warmup 2000 steps\n")
    _invoke(monkeypatch, officer, "docs", "add", str(doc), "--name", "recipe",
            "--classification", "secret", "--compartment", "atlas")
    for approver in ("bob", "carol"):
        out = _invoke(monkeypatch, ids["alice"], "access", "request", "recipe", "--action",
                      "read", "--purpose", f"run with {approver}")
        assert "grant" in _invoke(monkeypatch, ids[approver], "access", "approve", out.split()[1])
    hybrid = ["ed25519", "mldsa65"]
    approvals = {statements.unverified_payload(e)["approver"]: _signers(e)
                 for e in _envelopes(env, "approval")}
    assert approvals == {"bob": hybrid, "carol": ["ed25519"]}
    assert [_signers(e) for e in _envelopes(env, "request")] == [hybrid, hybrid]
    # Each Grant is signed by the approver who completed it: bob's with both keys.
    assert sorted(_signers(e) for e in _envelopes(env, "grant")) == [["ed25519"], hybrid]
    listing = _invoke(monkeypatch, officer, "access", "grants")
    assert listing.count("alice") == 2
