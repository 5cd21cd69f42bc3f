"""Threshold release across key servers run as separate ``strongroom keyserver serve`` processes.

Three key servers (2 of 3), each initialised like a vault with its own custodians,
officer, database (SQLite file or its own PostgreSQL schema) and audit log, are
unsealed over HTTP, set up and run distributed key generation through
officer-signed statements. Then: a release loads the blob bit-identical; a
server's disagreement leaves the requester without a key; re-sharing to a
fourth server keeps the group key; killed servers leave releases running while
k are up, and none once fewer are.
"""

from __future__ import annotations

import base64
import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyserver_procs import KeyServerProc, keygen, load_blob, start_keyserver
from strongroom.errors import AccessDenied
from strongroom.runtime.threshold_client import ThresholdClient
from strongroom.threshold.group import Element
from threshold_fixtures import VAULT, make_blob, release_request

from testsupport import need_service, pg_schema


# The SQLite run is the one test that proves the feature end to end (four processes, ~45 s on
# 2 cores); the PostgreSQL run repeats it on the other backend and is marked slow.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def databases(request: pytest.FixtureRequest) -> Iterator[list[str | None]]:
    if request.param == "sqlite":
        yield [None] * 4
        return
    base = need_service("STRONGROOM_TEST_PG_URL", "PostgreSQL")
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(pg_schema(base)) for _ in range(4)]


def test_two_of_three_key_servers_release_reshare_and_survive_a_kill(
    tmp_path: Path, databases: list[str | None]
) -> None:
    manifest_key = Ed25519PrivateKey.generate()
    principal = Ed25519PrivateKey.generate()
    principal_pub = principal.public_key().public_bytes_raw()
    mpub = manifest_key.public_key().public_bytes_raw()
    servers: list[KeyServerProc] = []
    try:
        for i in (1, 2, 3):
            servers.append(start_keyserver(tmp_path, i, databases[i - 1], mpub, [principal_pub]))
        commitments = keygen(servers, threshold=2)
        group_key = commitments[0]
        blob = make_blob(group_key, manifest_key)
        targets = [(s.name, s.url) for s in servers]
        client = ThresholdClient(targets, commitments, vault_id=VAULT)

        # release: the first two servers answer, the blob loads bit-identical
        plain, answered = load_blob(client, principal, blob)
        assert plain == blob.plaintext and answered == ["ks-1", "ks-2"]

        # each server audited its own decision in its own log (its own database)
        for s in servers[:2]:
            assert s.status()["epoch"] == 1

        # a server that answers for a principal the others unpinned gives no key: 1 of 2
        for s in servers[1:]:
            s.admin("setup", index=s.index, manifest_key=base64.b64encode(mpub).decode(), principals=[])
        with pytest.raises(AccessDenied, match="1 of the 2 key servers") as refused:
            client.release(release_request(principal, blob), blob.manifest, blob.header)
        assert "ks-2: AccessDenied" in str(refused.value) and "ks-3: AccessDenied" in str(refused.value)
        for s in servers[1:]:
            s.admin("setup", index=s.index, manifest_key=base64.b64encode(mpub).decode(),
                    principals=[base64.b64encode(principal_pub).decode()])

        # a header that the signed manifest does not pin is refused by every server
        other = make_blob(group_key, manifest_key)
        with pytest.raises(AccessDenied, match="0 of the 2"):
            client.release(release_request(principal, blob), blob.manifest, other.header)

        # re-sharing to a fourth server (2 of 4) keeps the group key: old files still open
        servers.append(start_keyserver(tmp_path, 4, databases[3], mpub, [principal_pub]))
        recipients = {str(s.index): s.status()["transport"] for s in servers}
        # shares cross the network in dealings: sealed to hybrid post-quantum transport keys
        assert all(r.startswith("age1pq1") for r in recipients.values())
        old = [c.hex() for c in commitments]
        dealings = [s.admin("deal", mode="reshare", threshold=2, recipients=recipients) for s in servers[:2]]
        results = [s.admin("accept", mode="reshare", dealings=dealings, old_commitments=old, epoch=2)
                   for s in servers]
        new_commitments = [Element.decode(bytes.fromhex(c)) for c in results[0]["commitments"]]
        assert all(r["commitments"] == results[0]["commitments"] for r in results)
        assert new_commitments[0] == group_key and new_commitments != commitments
        client4 = ThresholdClient([(s.name, s.url) for s in reversed(servers)], new_commitments, vault_id=VAULT)
        plain, answered = load_blob(client4, principal, blob)
        assert plain == blob.plaintext and answered == ["ks-4", "ks-3"]

        # a server killed mid-load: every release of the load still completes bit-identical
        done: list[list[str]] = []
        killed = threading.Event()

        def load() -> None:
            for i in range(12):
                if i == 4:
                    killed.set()
                plain, answered = load_blob(client4, principal, blob)
                assert plain == blob.plaintext
                done.append(answered)

        loader = threading.Thread(target=load)
        loader.start()
        assert killed.wait(60)
        servers[3].proc.send_signal(signal.SIGKILL)  # ks-4, first in the client's order
        loader.join(120)
        assert len(done) == 12 and done[-1] == ["ks-3", "ks-2"]
        servers[3].stop()
        # releases continue while two are up; none with one
        servers[2].stop()
        servers[1].stop()
        with pytest.raises(AccessDenied, match="1 of the 2 key servers"):
            load_blob(client4, principal, blob)
        client.close()
        client4.close()
    finally:
        for s in servers:
            s.stop()
