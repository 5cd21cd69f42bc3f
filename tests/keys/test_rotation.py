"""KEK rotation: rotate, rewrap without touching payloads, retire, and kill -9 mid-rewrap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from strongroom.crypto.age import parse_identities
from strongroom.errors import IntegrityError, InvalidInput
from strongroom.keys import ceremony
from strongroom.keys.keyring import Keyring
from strongroom.store.db import Store
from strongroom.store.tables.keys import WrappedKey

from keyring_fixtures import unsealed_service


def test_rotate_rewrap_retire(store: Store, tmp_path: Path) -> None:
    svc, *_ = unsealed_service(store, tmp_path)
    ring = svc.keyring
    keys = {f"blob-{i}": os.urandom(16) for i in range(10)}
    for b, k in keys.items():
        ring.wrap_file_key(b, k)
    assert svc.rotate() == 2
    ring.wrap_file_key("blob-new", keys["blob-0"])
    assert ring.locate("blob-new").version == 2
    with pytest.raises(InvalidInput, match="still wraps 10 file key"):
        svc.retire(1)
    assert svc.rewrap() == 10
    assert svc.rewrap() == 0
    for b, k in keys.items():
        loc = ring.locate(b)
        assert loc.version == 2 and bytes(ring.unwrap(b, loc)) == k
    with pytest.raises(InvalidInput, match="newest"):
        svc.retire(2)
    assert svc.retire(1) == 10
    assert svc.status().retired_versions == (1,)
    with store.session() as s:
        assert not s.scalars(select(WrappedKey).where(WrappedKey.kek_version == 1)).all()
    svc.seal()


def test_retired_version_in_use_refused(store: Store, tmp_path: Path) -> None:
    svc, *_ = unsealed_service(store, tmp_path)
    ring = svc.keyring
    ring.wrap_file_key("b1", os.urandom(16))
    stanza_v1 = ring.wrap_file_key("b2", os.urandom(16))
    svc.rotate()
    svc.rewrap()
    svc.retire(1)
    # someone restores a v1-only wrapping (or strips the v2 rows): the gate must refuse it
    with store.session() as s:
        s.execute(delete(WrappedKey).where(WrappedKey.blob_id == "b2"))
    with pytest.raises(IntegrityError, match="retired KEK version"):
        ring.locate("b2", [stanza_v1])
    svc.seal()


_CRASH_REWRAP = """
import os, signal, sys, json
sys.path[:0] = sys.argv[3].split(":")
from pathlib import Path
from strongroom.store.db import Store
from strongroom.keys import kek
from keyring_fixtures import unsealed_service
store = Store.open(sys.argv[1]); tmp = Path(sys.argv[2])
svc, *_ = unsealed_service(store, tmp)
keys = {f"b{i:03d}": os.urandom(16).hex() for i in range(200)}
for b, k in keys.items():
    svc.keyring.wrap_file_key(b, bytes.fromhex(k))
(tmp / "keys.json").write_text(json.dumps(keys))
svc.rotate()
count = 0
real = kek.KekRing._seal_file_key
def crash(*a):
    global count
    count += 1
    if count == 100:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a)
kek.KekRing._seal_file_key = staticmethod(crash)
svc.rewrap()
"""


def test_kill_during_rewrap(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    here = Path(__file__).parent
    paths = f"{here}:{here.parent}"
    proc = subprocess.run([sys.executable, "-c", _CRASH_REWRAP, url, str(tmp_path), paths],
                          capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    keys = json.loads((tmp_path / "keys.json").read_text())
    store = Store.open(url)
    try:
        ring = Keyring(store)
        status = ring.status()
        files = sorted((tmp_path / "shares").glob(f"share-{status.vault_id}-*.age"))
        for i in (1, 2):
            ident = parse_identities((tmp_path / "custodians" / f"custodian{i}.key").read_text())
            content = ceremony.read_share_file(files[i - 1], ident)
            ring.submit_share(ceremony.build_submission(ring.status(), content))
        assert not ring.status().sealed
        with store.session() as s:
            v2 = len(s.scalars(select(WrappedKey).where(WrappedKey.kek_version == 2)).all())
        assert 0 < v2 < 200  # the crash really was mid-rewrap
        for blob, key in keys.items():  # every file key unwraps, by v1 or v2
            assert bytes(ring.unwrap(blob, ring.locate(blob))).hex() == key
        assert ring.rewrap() == 200 - v2  # and the rewrap resumes
        ring.retire(1)
        for blob, key in keys.items():
            assert bytes(ring.unwrap(blob, ring.locate(blob))).hex() == key
    finally:
        ring.seal()
        store.close()
