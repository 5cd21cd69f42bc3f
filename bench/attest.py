"""Confidential-computing evidence: verifications per second, and an attested release's cost.

    .venv/bin/python bench/attest.py [--rounds 5] [--releases 200] [--verifies 500]

1. **Verifications/s**: one thread verifying SEV-SNP reports end to end
   (report parse, VCEK -> ASK -> ARK with RSA-PSS, ECDSA P-384 over the
   report, chip id, TCB and policy checks). The roots are a forged vendor's
   (strongroom.attest.forge, RSA-2048; AMD's ARKs and ASKs are RSA-4096, whose
   verification costs a little more): the work per report is otherwise the same.
2. **Attested vs ordinary release** through one real gate (unsealed keyring,
   SQLite audit log appended durably, egress ledger), single thread, interleaved
   round by round (bench/machine.py) and judged on the median:
   ``ordinary`` is ``release()`` of an unlabelled artifact; ``attested`` is
   ``release_attested()`` of an artifact labelled ``attested: bench`` by an
   enclave whose ephemeral key was admitted once per round (evidence cached per
   ephemeral key, as the gate does for the key's lifetime), each release wrapping
   the file key to that key; ``fresh`` presents new evidence (nonce, report,
   verification) with every release, the worst case. Issue 21's aim: attested
   at most 2x ordinary.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(_TESTS), str(Path(__file__).resolve().parent)]

from machine import describe, interleave, summary  # noqa: E402
from strongroom.attest.admission import (  # noqa: E402
    AdmissionDesk,
    AttestationService,
    AttestedClaim,
    binding,
)
from strongroom.attest.forge import ForgedChip, ForgedVendor  # noqa: E402
from strongroom.attest.policy import AttestationPolicy  # noqa: E402
from strongroom.crypto.age import X25519Identity  # noqa: E402
from strongroom.keys.identity import Identity  # noqa: E402
from strongroom.release import ReleaseGate, ReleaseRequest, sign_release_evidence  # noqa: E402
from strongroom.store.db import Store  # noqa: E402

from keyring_fixtures import unsealed_service  # noqa: E402

PLATFORM = "sev-snp-test"
MEASUREMENT = b"\x5a" * 48
#: Issue 21's aim: an attested release costs at most this many ordinary ones.
AIM = 2.0


class Labelled:
    """The key-custody evidence rule plus the label's ``attested`` (as GrantEvidence reports it)."""

    def __init__(self, inner: Any, attested: str) -> None:
        self.inner, self.attested = inner, attested

    def verify(self, request: ReleaseRequest, now: float) -> Mapping[str, Any]:
        return {**self.inner.verify(request, now), "attested": self.attested}


def verifications(vendor: ForgedVendor, chip: ForgedChip, n: int) -> float:
    """Reports verified per second, one thread."""
    from datetime import UTC, datetime

    platform, collateral = vendor.platform(), chip.collateral()
    reports = [chip.report(measurement=MEASUREMENT, report_data=os.urandom(64))
               for _ in range(n)]
    now = datetime.now(UTC)
    start = time.perf_counter()
    for report in reports:
        platform.verify(report, collateral, now=now)
    return n / (time.perf_counter() - start)


def requests(officer: Identity, blob: str, n: int) -> list[ReleaseRequest]:
    """Signed release requests (signing is the client's cost: done before timing)."""
    out = []
    for _ in range(n):
        ev = sign_release_evidence(officer.private_key, artifact="m@1", shard="w.safetensors",
                                   blob_id=blob, purpose="load")
        out.append(ReleaseRequest(principal=officer.public.principal,
                                  principal_key=officer.public.public_bytes, artifact="m@1",
                                  shard="w.safetensors", blob_id=blob, nbytes=1000,
                                  purpose="load", evidence=ev))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--releases", type=int, default=200, help="releases per subject per round")
    ap.add_argument("--verifies", type=int, default=500, help="reports per verification round")
    args = ap.parse_args()
    print(describe())
    vendor = ForgedVendor.create("Genoa")
    chip = vendor.chip()

    print(f"\n1. SEV-SNP evidence verified end to end, one thread ({args.verifies} per round)")
    rates = [verifications(vendor, chip, args.verifies) for _ in range(args.rounds)]
    print(summary("verifications", rates, "reports/s"))

    print(f"\n2. release cost, {args.releases} releases per subject per round, SQLite, one thread")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{Path(tmp) / 'bench.db'}")
        svc, _, _, officer = unsealed_service(store, Path(tmp))
        try:
            for blob in ("plain", "labelled"):
                svc.wrap_file_key(blob, os.urandom(16))
            base = svc._gate
            assert base is not None
            desk = AdmissionDesk({PLATFORM: vendor.platform()}, lifetime_s=3600)
            policy = AttestationPolicy(name="bench", serial=1, platforms=(PLATFORM,),
                                       measurements=frozenset({MEASUREMENT.hex()}),
                                       min_tcb={PLATFORM: {"snp": 8}})
            gate = ReleaseGate(base.keyring, base.audit, evidence=Labelled(base.evidence, "bench"),
                               egress=base.egress, sizes=base.sizes,
                               attestation=AttestationService(desk, {"bench": policy}.get))

            def claim() -> tuple[X25519Identity, AttestedClaim]:
                identity = X25519Identity.generate()
                nonce = desk.challenge()
                report = chip.report(measurement=MEASUREMENT,
                                     report_data=binding(identity.recipient.public_bytes, nonce))
                return identity, AttestedClaim(identity.recipient, PLATFORM, report,
                                               chip.collateral(), nonce)

            def ordinary(_: int) -> float:
                reqs = requests(officer, "plain", args.releases)
                start = time.perf_counter()
                for r in reqs:
                    key = base.release(r)
                    key[:] = bytes(len(key))
                return (time.perf_counter() - start) / len(reqs) * 1e6

            def attested(_: int) -> float:
                reqs = requests(officer, "labelled", args.releases)
                identity, first = claim()
                start = time.perf_counter()
                gate.release_attested(reqs[0], first)  # the one admission of this ephemeral key
                standing = AttestedClaim(identity.recipient)
                for r in reqs[1:]:
                    gate.release_attested(r, standing)
                return (time.perf_counter() - start) / len(reqs) * 1e6

            def fresh(_: int) -> float:
                reqs = requests(officer, "labelled", args.releases)
                claims = [claim()[1] for _ in reqs]
                start = time.perf_counter()
                for r, c in zip(reqs, claims, strict=True):
                    gate.release_attested(r, c)
                return (time.perf_counter() - start) / len(reqs) * 1e6

            rounds = interleave(args.rounds, {"ordinary": ordinary, "attested": attested,
                                              "fresh": fresh})
        finally:
            svc.seal()
            store.close()
    for name, samples in rounds.items():
        print(summary(name, samples, "us/release", higher_is_better=False))
    base_us = statistics.median(rounds["ordinary"])
    ratio = statistics.median(rounds["attested"]) / base_us
    worst = statistics.median(rounds["fresh"]) / base_us
    print(f"attested / ordinary: {ratio:.2f}x (aim <= {AIM:.0f}x: "
          f"{'met' if ratio <= AIM else 'NOT met'}); fresh evidence every release: {worst:.2f}x")


if __name__ == "__main__":
    main()
