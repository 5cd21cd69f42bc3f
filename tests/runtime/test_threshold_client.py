"""The requester asks exactly k key servers at once, and the next one only for each that fails.

Key servers here are in-process asks over a 2-of-3 (and 3-of-5) group dealt in the
test: each computes its real partial for the request it is sent, or misbehaves as
the test says (down, refusing, or answering with a partial that does not verify).
Every ask is counted, so the tests see who was asked and when.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.crypto import age
from strongroom.errors import AccessDenied, InvalidInput, ServerError
from strongroom.keys.threshold import find_wrapped, request_digest
from strongroom.runtime.keyserver import PartialRequest
from strongroom.runtime.threshold_client import ThresholdClient, ThresholdRelease
from strongroom.threshold.group import random_scalar
from strongroom.threshold.shares import KeyShare, combine, deal
from strongroom.threshold.wrap import Partial, partial_decrypt
from threshold_fixtures import VAULT, make_blob, release_request

MANIFEST_KEY = Ed25519PrivateKey.generate()
PRINCIPAL = Ed25519PrivateKey.generate()


def _group(k: int, n: int) -> dict[int, KeyShare]:
    indices = list(range(1, n + 1))
    dealings = [deal(random_scalar(), threshold=k, indices=indices, dealer=d) for d in indices]
    return {i: combine([d.for_index(i) for d in dealings]) for i in indices}


def _honest(share: KeyShare) -> Callable[[PartialRequest], Partial]:
    def ask(body: PartialRequest) -> Partial:
        header = age.parse_header(body.header)
        assert header is not None
        u = find_wrapped(header.stanzas, share.public_key, obj="test").u
        return partial_decrypt(share, request_digest(body.request, [u]), [u])

    return ask


class Servers:
    """n key servers whose asks are counted; ``bad`` maps a name to how it misbehaves."""

    def __init__(
        self,
        k: int,
        n: int,
        bad: dict[str, str] | None = None,
        gate: threading.Barrier | None = None,
    ) -> None:
        self.shares = _group(k, n)
        self.asked: list[str] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()
        self.bad = bad or {}
        self.gate = gate
        self.links = [(f"ks-{i}", self._ask(f"ks-{i}", share)) for i, share in self.shares.items()]

    def _ask(self, name: str, share: KeyShare) -> Callable[[PartialRequest], Partial]:
        honest = _honest(share)

        def ask(body: PartialRequest) -> Partial:
            with self._lock:
                self.asked.append(name)
                self.threads.add(threading.current_thread().name)
            if self.gate is not None:
                self.gate.wait(timeout=10)  # every server of the first round waits for the others
            how = self.bad.get(name)
            if how is not None and how.startswith(
                "waits-for:"
            ):  # slow: answers once the other was asked
                other = how.partition(":")[2]
                for _ in range(500):
                    with self._lock:
                        if other in self.asked:
                            break
                    threading.Event().wait(0.01)
                else:
                    raise AccessDenied(f"{other} was not asked while {name} was slow", obj=name)
            if how is not None and how.startswith("forwards:"):  # another server's genuine partial
                other = how.partition(":")[2]
                return _honest(self.shares[int(other.rpartition("-")[2])])(body)
            if how == "down":
                raise ServerError("cannot reach the key server (ConnectError)", obj=name)
            if how == "refuses":
                raise AccessDenied("principal is not pinned on this key server", obj=name)
            if how == "replays":  # its genuine partial, but for another request: does not verify
                header = age.parse_header(body.header)
                assert header is not None
                u = find_wrapped(header.stanzas, share.public_key, obj="test").u
                return partial_decrypt(share, os.urandom(32), [u])
            return honest(body)

        return ask

    def client(self, *, pinned: bool = False) -> ThresholdClient:
        indices = {f"ks-{i}": i for i in self.shares} if pinned else None
        return ThresholdClient(
            self.links,
            [*next(iter(self.shares.values())).commitments],
            vault_id=VAULT,
            indices=indices,
        )


def _release(servers: Servers, *, pinned: bool = False) -> tuple[bytes, list[str], list[str]]:
    released = _released(servers, pinned=pinned)
    return bytes(released.key), released.answered, [r.server for r in released.refusals]


def _released(servers: Servers, *, pinned: bool = False) -> ThresholdRelease:
    client = servers.client(pinned=pinned)
    blob = make_blob(client.commitments[0], MANIFEST_KEY, size=1024)
    try:
        released = client.release(release_request(PRINCIPAL, blob), blob.manifest, blob.header)
    finally:
        client.close()
    from threshold_fixtures import FileKeyIdentity

    plain = age.decrypt(blob.encrypted, [FileKeyIdentity(released.key)])
    assert plain == blob.plaintext
    return released


def test_exactly_k_servers_are_asked_and_at_the_same_time() -> None:
    # The barrier only opens when both asks of the first round are in flight together.
    servers = Servers(2, 3, gate=threading.Barrier(2))
    _, answered, refused = _release(servers)
    assert sorted(servers.asked) == ["ks-1", "ks-2"]
    assert sorted(answered) == ["ks-1", "ks-2"] and refused == []


@pytest.mark.parametrize("how", ["down", "refuses", "replays"])
def test_the_next_server_is_asked_only_for_one_that_fails(how: str) -> None:
    servers = Servers(2, 3, bad={"ks-1": how})
    _, answered, refused = _release(servers)
    assert sorted(servers.asked) == ["ks-1", "ks-2", "ks-3"]
    assert sorted(answered) == ["ks-2", "ks-3"] and refused == ["ks-1"]


def test_a_failed_server_is_replaced_at_once_not_after_the_others_answer() -> None:
    servers = Servers(2, 3, bad={"ks-1": "down", "ks-2": "waits-for:ks-3"})
    _, answered, refused = _release(servers)
    assert sorted(answered) == ["ks-2", "ks-3"] and refused == ["ks-1"]


def test_each_failure_costs_one_more_ask_and_no_more() -> None:
    servers = Servers(3, 5, bad={"ks-1": "down", "ks-3": "replays"})
    _, answered, refused = _release(servers)
    assert sorted(servers.asked) == ["ks-1", "ks-2", "ks-3", "ks-4", "ks-5"]
    assert sorted(answered) == ["ks-2", "ks-4", "ks-5"] and sorted(refused) == ["ks-1", "ks-3"]
    servers = Servers(3, 5, bad={"ks-5": "down"})  # the failing one is never reached
    _release(servers)
    assert sorted(servers.asked) == ["ks-1", "ks-2", "ks-3"]


def test_below_k_every_server_is_asked_and_named() -> None:
    servers = Servers(2, 3, bad={"ks-1": "down", "ks-3": "refuses"})
    client = servers.client()
    blob = make_blob(client.commitments[0], MANIFEST_KEY, size=1024)
    with pytest.raises(AccessDenied, match="1 of the 2 key servers") as err:
        client.release(release_request(PRINCIPAL, blob), blob.manifest, blob.header)
    client.close()
    assert sorted(servers.asked) == ["ks-1", "ks-2", "ks-3"]
    assert "ks-1: ServerError" in err.value.message and "ks-3: AccessDenied" in err.value.message


def test_the_asking_threads_are_kept_across_releases_and_closed() -> None:
    servers = Servers(2, 3)
    client = servers.client()
    before = threading.active_count()
    for _ in range(5):
        blob = make_blob(client.commitments[0], MANIFEST_KEY, size=256)
        client.release(release_request(PRINCIPAL, blob), blob.manifest, blob.header)
    assert (
        len(servers.threads) <= 2
    )  # the same two threads asked each time, not two new ones per release
    assert threading.active_count() - before <= 2
    client.close()
    assert threading.active_count() <= before


def test_a_server_answering_with_another_servers_index_is_refused_by_name() -> None:
    # ks-1 relays ks-2's genuine partial (it verifies: it is ks-2's, for this request). Pinned
    # to its index, ks-1 is refused as itself, misbehaving, and ks-2 and ks-3 release.
    servers = Servers(2, 3, bad={"ks-1": "forwards:ks-2"})
    released = _released(servers, pinned=True)
    assert sorted(released.answered) == ["ks-2", "ks-3"]
    (refusal,) = released.refusals
    assert refusal.server == "ks-1" and refusal.kind == "IntegrityError" and refusal.misbehaved
    assert "share index 2, not its own 1" in refusal.message and "relayed" in refusal.message
    assert released.misbehaving == ["ks-1"] and not released.disagreement


def test_without_pinned_indices_a_relayed_partial_counts_as_the_relaying_servers() -> None:
    # The control, with ks-2 itself down: unpinned, ks-1's relayed partial is taken as ks-1's
    # answer and nobody is named; pinned, ks-1 is refused and one honest server is not enough.
    bad = {"ks-1": "forwards:ks-2", "ks-2": "down"}
    released = _released(Servers(2, 3, bad=bad))
    assert sorted(released.answered) == ["ks-1", "ks-3"] and released.misbehaving == []
    with pytest.raises(AccessDenied) as exc:
        _released(Servers(2, 3, bad=bad), pinned=True)
    assert "1 of the 2 key servers" in exc.value.message
    assert "ks-1: IntegrityError: " in exc.value.message and "not its own 1" in exc.value.message


@pytest.mark.parametrize(
    ("indices", "words"),
    [
        ({"ks-1": 1, "ks-2": 2}, "'ks-3' has no pinned share index"),
        ({"ks-1": 1, "ks-2": 2, "ks-3": 3, "ks-9": 4}, "'ks-9', which is not a configured"),
        ({"ks-1": 1, "ks-2": 1, "ks-3": 3}, "same share index"),
        ({"ks-1": 1, "ks-2": 2, "ks-3": "3"}, "'ks-3' is not a number"),
    ],
)
def test_pinned_indices_that_do_not_fit_the_servers_are_refused(
    indices: dict[str, object], words: str
) -> None:
    servers = Servers(2, 3)
    with pytest.raises(InvalidInput) as exc:
        ThresholdClient(servers.links, [*servers.shares[1].commitments], vault_id=VAULT,
                        indices=indices)  # type: ignore[arg-type]  # fmt: skip
    assert words in exc.value.message and exc.value.remedy
