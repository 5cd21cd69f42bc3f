"""Issue 15's tail-truncation attack through the real CLI and key agent: caught, named, alerted."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from log_attacks import truncate_tail
from strongroom.audit.config import AuditSettings
from strongroom.audit.highwater import HIGH_WATER_NAME
from strongroom.store.db import Store

from cli_fixtures import unseal_home


def _signed_size(path: Path) -> int:
    if not path.exists():
        return 0
    return int(json.loads(path.read_text())["signed"].split("\n")[1])


def test_truncated_tail_fails_verify_and_alerts(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    run, _ = unseal_home(home, db_url, {"STRONGROOM_CHECKPOINT_INTERVAL_S": "0.3"})
    store = Store.open(db_url)
    try:
        kept = int(run("audit", "checkpoint").stdout.split("\n")[1])
        # Three releases' entries (appending needs no signing key).
        log = AuditSettings().open_log(store, Ed25519PrivateKey.generate())
        for shard in range(3):
            log.append(actor="alice", action="key.release", obj="minilm@1", decision="allow",
                       shard=f"shard-{shard}", nbytes=1 << 20)
        grown = log.size()
        log.close()
        deadline = time.monotonic() + 20
        while _signed_size(home / HIGH_WATER_NAME) < grown:  # the agent signs without being asked
            assert time.monotonic() < deadline, "no checkpoint was signed"
            time.sleep(0.05)

        truncate_tail(store, kept)

        failed = run("audit", "verify", ok=False)
        assert failed.returncode != 0
        said = " ".join((failed.stdout + failed.stderr).split())
        found = re.search(r"rolled back: checkpoint of size (\d+) .*\(entries (\d+)\.\.(\d+) are gone",
                          said)
        assert found, said
        size, first, last = map(int, found.groups())
        # The agent may have appended more (and, once it saw the rollback, its alert).
        assert size >= grown and last == size - 1 and kept <= first < size, said
        alerts = home / "alerts.jsonl"
        while "SR-AUDIT-ROLLBACK" not in (alerts.read_text() if alerts.exists() else ""):
            assert time.monotonic() < deadline + 10, "the agent raised no rollback alert"
            time.sleep(0.05)
    finally:
        run("seal", ok=False)
        store.close()
