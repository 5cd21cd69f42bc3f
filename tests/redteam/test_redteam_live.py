"""``strongroom redteam run --target URL`` against a real ``strongroom serve`` (SQLite, PostgreSQL).

The operator issues the red team an identity (roles ``auditors`` and
``red-team``); the run attacks the live deployment through its API with it,
lists every scenario whose needs it was not given as not run, leaves the
deployment's audit log verifying, acknowledges (as red-team) the alerts it
raised, and removes the Grant row its DBA scenario inserted.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest

from strongroom.keys.identity import Identity
from strongroom.redteam.schema import load_builtin
from strongroom.server.client import Client, KnownServers

import cli_zygote
from cli_fixtures import serve_process, strongroom_exe, unseal_home
from live_gateway import gateway_process, prepare_gateway
from vault_fixtures import make_model

#: The scenarios a live run supplies the needs of with --identity alone.
LIVE = {"RT-CRED-001", "RT-SRV-001", "RT-ABS-006"}
#: ... and with --database-url (a DBA) and --blob-bucket (read access to the blob store).
LIVE_STORAGE = {"RT-DBA-001", "RT-DNA-001"}
#: ... and with the approvers the operator lends (--approver-identity).
LIVE_APPROVERS = {"RT-GRT-001", "RT-CRED-003", "RT-CRED-004"}
#: ... and with a running gateway and the callers the operator lends (--gateway,
#: --gateway-caller): ai-specific; with the code owners it pinned and a shell on the serving
#: host (--host-home), a gateway started there from unsigned code (RT-GW-001).
LIVE_GATEWAY = {"RT-AI-002", "RT-AI-003", "RT-GW-002", "RT-GW-001"}
#: ... and with that shell, a publisher-signed model altered after signing (and re-signed by
#: the mirror) imported on the serving host (supply-chain).
LIVE_HOST_IMPORT = {"RT-SUP-003", "RT-SUP-004"}
#: Groups with at least two live scenarios once the gateway is given.
GATEWAY_GROUPS = ("ai-specific", "unauthorized-code", "supply-chain")
#: ... and with the officers the operator lends (--officer-identity) and a shell on the serving
#: host (--host-home): humint, bypass and data-network-access scenarios.
LIVE_LENT = {"RT-VET-001", "RT-BG-002", "RT-TAMPER-001", "RT-TAMPER-002", "RT-KEY-001",
             "RT-DNA-002"}
#: Groups this file checks have at least two live scenarios, none missed.
LIVE_GROUPS = ("humint", "bypass", "data-network-access")


def _grant_rows(db_url: str, key_id: str) -> int:
    from sqlalchemy import func, select

    from strongroom.store.db import Store
    from strongroom.store.tables.access import AccessStatement

    store = Store.open(db_url)
    try:
        with store.session() as s:
            return int(s.scalar(select(func.count()).select_from(AccessStatement).where(
                AccessStatement.kind == "grant", AccessStatement.subject == key_id)) or 0)
    finally:
        store.close()


@pytest.mark.timeout(900)  # a serve, a gateway and ~20 CLI calls to set them up: ~5 min loaded
def test_live_run_against_serve(tmp_path: Path, db_url: str) -> None:
    """The one test that proves the live target (~25 s per backend on a quiet machine)."""
    home = tmp_path / "home"
    run, env = unseal_home(home, db_url)
    model = tmp_path / "model.safetensors"
    make_model(model)
    run("weights", "import", model, "--name", "tiny")
    # labelled as an operator labels a model (RT-BG-002 lists the red team for break-glass on
    # it for one scenario, then the lent officer puts the label back)
    run("compartments", "label", "tiny", "--classification", "secret", "--rule",
        "load=2 of approvers")
    rt = Identity.generate("redteam")
    rt.save(tmp_path / "rt.identity")
    (tmp_path / "rt.pub").write_text(rt.public.to_text())
    run("people", "enroll", "redteam", "--key", tmp_path / "rt.pub", "--vetting-expires",
        "2099-01-01", "--clearance", "top-secret", "--role", "auditors", "--role", "red-team")
    lent = []
    for name in ("approver1", "approver2"):  # approvers the operator lends the red team
        ident = Identity.generate(name)
        ident.save(tmp_path / f"{name}.identity")
        (tmp_path / f"{name}.pub").write_text(ident.public.to_text())
        run("people", "enroll", name, "--key", tmp_path / f"{name}.pub", "--vetting-expires",
            "2099-01-01", "--clearance", "top-secret", "--role", "approvers")
        lent += ["--approver-identity", str(tmp_path / f"{name}.identity")]
    gw = prepare_gateway(run, env, tmp_path, [tmp_path / "approver1.identity",
                                              tmp_path / "approver2.identity"])
    run("seal")  # serve starts its own agent
    # its monitor loop ticks every 0.25 s (default 1 s): the run waits for the loop to have
    # scanned each scenario's entries before grading (LiveTarget.scan_monitor), ~20 times
    serve_env = dict(env, STRONGROOM_MONITOR_INTERVAL_S="0.25")
    with serve_process(serve_env, tmp_path / "serve.log") as base, \
            contextlib.ExitStack() as stack:
        shares = sorted((home.parent / "shares").glob("share-*.age"))
        for i in (1, 2):
            run("unseal", "--share", shares[i - 1], "--identity",
                home.parent / "custodians" / f"c{i}.key")
        red = {k: v for k, v in env.items() if k != "STRONGROOM_IDENTITY"}
        gateway = stack.enter_context(gateway_process(env, gw, tmp_path / "gateway.log"))
        t0 = time.monotonic()
        out = cli_zygote.run([strongroom_exe(), "redteam", "run", "--json", "--target", str(base),
                              "--identity", str(tmp_path / "rt.identity"),
                              "--database-url", db_url, "--blob-bucket", str(home / "blobs"), *lent,
                              "--officer-identity", env["STRONGROOM_IDENTITY"],
                              "--host-home", str(home), "--artifact", "tiny",
                              *gw.redteam_args(gateway)], red, timeout=300)
        took = time.monotonic() - t0
        assert "Traceback" not in out.stderr, out.stderr
        doc = json.loads(out.stdout)
        by_id = {s["id"]: s for s in doc["scenarios"]}
        assert doc["missed"] == 0, [s for s in doc["scenarios"] if s["outcome"] == "missed"]
        assert out.returncode == 2  # nothing missed; some scenarios not run
        ran = {i for i, s in by_id.items() if s["outcome"] != "unsupported"}
        assert ran == (LIVE | LIVE_STORAGE | LIVE_APPROVERS | LIVE_LENT | LIVE_GATEWAY
                       | LIVE_HOST_IMPORT), (ran, took)
        assert all(by_id[i]["outcome"] == "blocked" for i in ran
                   if i not in {"RT-BG-002", "RT-TAMPER-001", "RT-TAMPER-002", "RT-GW-002"})
        # the audit log tampered with by the DBA: the deployment's own verify names it
        for i in ("RT-TAMPER-001", "RT-TAMPER-002", "RT-BG-002"):
            assert by_id[i]["outcome"] == "detected", by_id[i]
        for group in LIVE_GROUPS:
            live = [s for s in doc["scenarios"] if s["group"] == group
                    and s["outcome"] in ("blocked", "detected")]
            assert len(live) >= 2, (group, live)
        # the gateway's extraction detector raised its alert (a gateway.alert audit entry)
        assert by_id["RT-GW-002"]["outcome"] == "detected", by_id["RT-GW-002"]
        for group in GATEWAY_GROUPS:
            live = [s for s in doc["scenarios"] if s["group"] == group
                    and s["outcome"] in ("blocked", "detected")]
            assert len(live) >= 2, (group, live)
        assert set(by_id) == {s.id for s in load_builtin()}  # every scenario listed
        for s in doc["scenarios"]:
            if s["outcome"] == "unsupported":  # never passed silently: what it needs, named
                assert s["evidence"][0]["detail"].startswith("not run: needs "), s
        # the evidence is the deployment's own audit entries, by the red-team identity
        cred = next(e for e in by_id["RT-CRED-001"]["evidence"] if e["kind"] == "audit")
        assert cred["actor"] == "redteam" and cred["decision"] == "deny"
        # the stolen dump and every blob of the live deployment: every key tried, none opened
        loot = by_id["RT-DNA-001"]["evidence"][0]["detail"]
        assert "nothing opened" in loot and " 0 blobs" not in loot, loot
        officer = Identity.load(Path(env["STRONGROOM_IDENTITY"]))
        with Client(base, officer, known_servers=KnownServers(tmp_path / "ks")) as client:
            alerts = client.get("/v1/alerts", params={"limit": 1000})
            ours = [a for a in alerts if "redteam" in (a["subject"], a["object"])]
            assert all(a["acked_by"] == "redteam" for a in ours), ours
            # every Grant the run was issued (RT-GRT-001's) is revoked: none left usable
            grants = [g for g in client.get("/v1/access/grants") if g["holder"] == "redteam"]
            assert grants and all(g["state"] == "revoked" for g in grants), grants
        # RT-DBA-001 removed the row it inserted: what is left is the Grants the lent
        # approvers signed (each listed above as verifying, and revoked)
        assert _grant_rows(db_url, rt.public.key_id) == len(grants)
        run("audit", "verify")  # the run left the deployment's log verifying (exit 0)
        # the red team's signed scorecard is in the log
        tail = run("audit", "tail", "-n", "200", "--json", ok=False)
        assert "redteam.result" in tail.stdout, tail.stdout[-2000:] + tail.stderr
