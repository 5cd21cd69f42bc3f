"""Code owners pinned by k officers: rows written by anyone else do not count."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import InvalidInput
from strongroom.gateway.owners import CodeOwners, pinned_owners, publish_owners, require_owners
from strongroom.keys.identity import Identity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "access"))
from access_kit import World, access_world

OWNERS = [Identity.generate(n) for n in ("olga", "omar", "oren")]


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    with access_world(db_url, tmp_path) as w:  # two officers, both must sign
        yield w


def _owners(who: list[Identity], k: int, serial: int) -> CodeOwners:
    return CodeOwners(tuple(i.public for i in who), k, serial=serial, issued=int(time.time()))


def test_owners_count_only_with_the_officers_quorum(world: World) -> None:
    w = world
    reader = w.rule.reader
    with pytest.raises(InvalidInput, match="no code owners are pinned"):
        require_owners(reader)
    one, two = (o.private_key for o in w.officers)
    # One statement, signed twice: two built apart could straddle a second (``issued``)
    # and then be two statements with one signature each.
    statement = _owners(OWNERS, 2, 1)
    publish_owners(w.store, statement.sign(one))
    assert pinned_owners(reader) is None  # one of two officers is not enough
    publish_owners(w.store, statement.sign(two))  # the second cosigns: merged
    owners, k = require_owners(reader)
    assert k == 2 and [o.name for o in owners] == ["olga", "omar", "oren"]
    # a database administrator's own owner list, signed by keys that are not officers
    mallory = Identity.generate("mallory")
    fake = Identity.generate("fake-officer")
    publish_owners(w.store, _owners([mallory], 1, 99).sign(fake.private_key))
    owners, k = require_owners(reader)
    assert k == 2 and "mallory" not in [o.name for o in owners]
    # the officers replace the owners: the newest serial wins
    publish_owners(w.store, _owners(OWNERS[:2], 1, 2).sign(one, two))
    owners, k = require_owners(reader)
    assert k == 1 and [o.name for o in owners] == ["olga", "omar"]


def test_bad_owner_lists_are_refused() -> None:
    with pytest.raises(InvalidInput, match="listed twice"):
        _owners([OWNERS[0], OWNERS[0]], 1, 1)
    with pytest.raises(InvalidInput, match="threshold 3 with 2"):
        _owners(OWNERS[:2], 3, 1)
    with pytest.raises(InvalidInput, match="serial"):
        _owners(OWNERS, 2, 0)
