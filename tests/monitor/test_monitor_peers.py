"""Peer groups and flags from the officer-signed directory, and the engine reading them."""

from __future__ import annotations

import time

from strongroom.access.directory import DirectoryReader, Enrollment, Vetting, publish
from strongroom.keys.identity import Identity
from strongroom.monitor.detectors import ActivityEvent, RiskEngine
from strongroom.monitor.peers import SignedDirectoryPeers, StaticPeers, enrollment_flags
from strongroom.store.db import Store

OFFICERS = [Identity.generate(f"o{i}") for i in range(3)]
KEYS = {o.public.key_id: o.public.public_key for o in OFFICERS}
DAY = 86400
YEAR = 365 * DAY


def _enroll(store: Store, name: str, *, roles: tuple[str, ...] = ("researcher",),
            compartments: tuple[str, ...] = ("atlas",), status: str = "active",
            employment: str = "active", issued: int, signers: int = 2,
            kind: str = "person") -> Enrollment:
    e = Enrollment(name=name, key=Identity.generate(name).public.public_bytes, roles=roles,
                   compartments=compartments, vetting=Vetting(status, issued - DAY, issued + YEAR),
                   employment=employment, kind=kind, issued=issued)
    publish(store, "enrollment", e.sign(*[o.private_key for o in OFFICERS[:signers]]))
    return e


def test_signed_directory_gives_peer_groups_and_vetting_flags(store: Store) -> None:
    now = int(time.time())
    for i in range(3):
        _enroll(store, f"r{i}", issued=now - 30 * DAY)
    _enroll(store, "lapsed", status="lapsed", issued=now - 2 * DAY)
    _enroll(store, "leaver", employment="terminated", issued=now - DAY)
    _enroll(store, "ci", roles=("eval",), compartments=(), kind="service", issued=now)
    _enroll(store, "forged", roles=("security",), issued=now, signers=1)  # under-signed
    clock = [float(now)]
    peers = SignedDirectoryPeers(DirectoryReader(store, lambda: KEYS, 2), clock=lambda: clock[0])
    assert peers.person("r0").peer_group == "researcher/atlas"
    assert peers.group_size("researcher/atlas") == 5
    assert peers.person("ci").peer_group == "service:eval/none"
    assert peers.person("forged").peer_group == "unknown/default"  # not enrolled: no group
    assert peers.flag("r1", now) is None
    assert peers.flag("lapsed", now) == (float(now - 2 * DAY), "vetting-lapsed")
    assert peers.flag("lapsed", now - 3 * DAY) is None  # not before it was issued
    assert peers.flag("leaver", now) == (float(now - DAY), "employment-terminated")
    # A later enrollment is seen once the view is refreshed.
    _enroll(store, "r9", issued=now)
    assert peers.group_size("researcher/atlas") == 5
    clock[0] += 301
    assert peers.group_size("researcher/atlas") == 6


def test_engine_flags_releases_after_a_signed_vetting_lapse(store: Store) -> None:
    now = int(time.time())
    _enroll(store, "carol", status="suspended", issued=now - DAY)
    _enroll(store, "dave", issued=now - DAY)
    engine = RiskEngine(directory=SignedDirectoryPeers(DirectoryReader(store, lambda: KEYS, 2)),
                        learn_s=0)
    for who in ("carol", "dave"):
        engine.process(ActivityEvent(now, who, "key.release", "m@1/s", "allow", "load", {}, "s",
                                     10))
    assert [(f.person, f.details["flag"]) for f in engine.findings
            if f.rule == "SR-FLAGGED"] == [("carol", "vetting-suspended")]


def test_enrollment_flags_cover_expiry_and_continuous_evaluation() -> None:
    key = Identity.generate("x").public.public_bytes
    e = Enrollment(name="x", key=key, vetting=Vetting("active", 100, 5000, ("foreign-contact",)),
                   issued=200)
    assert sorted(enrollment_flags(e)) == [(200.0, "vetting:foreign-contact"),
                                           (5000.0, "vetting-expired")]
    static = StaticPeers(flags={"x": enrollment_flags(e)})
    assert static.flag("x", 4999) == (200.0, "vetting:foreign-contact")
    assert static.flag("x", 6000) == (5000.0, "vetting-expired")
