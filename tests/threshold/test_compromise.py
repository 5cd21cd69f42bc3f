"""Red-team scenarios of threshold release: fewer than k compromised key servers release nothing.

The attacker is handed everything a compromised key server has: its share (its
memory, unsealed), its officer's signing key (it can re-configure the server),
every partial it ever made, and the public data of every other server. The
tests show that this is a share of a secret the attacker cannot use:

* the share is consistent with every possible group key (for each candidate key
  there is exactly one polynomial of degree k-1 through the stolen shares and
  it), so it says nothing about the key beyond the public ``Y``;
* every way of turning the stolen partials into the shared point fails to open
  the file key, and a partial it forges for an honest server's index does not
  verify;
* end to end, with three key servers in this process, the stolen server answers
  anything while the two honest ones refuse a principal they never pinned: the
  requester gets no key.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.errors import AccessDenied, IntegrityError
from strongroom.threshold.group import ORDER, base_mult, random_scalar
from strongroom.threshold.shares import (
    KeyShare,
    combine,
    deal,
    lagrange_at_zero,
)
from strongroom.threshold.wrap import (
    Combiner,
    Partial,
    binding,
    partial_decrypt,
    unwrap,
    wrap_file_key,
)
from threshold_fixtures import VAULT, inprocess_keyservers, make_blob, release_request

BOUND = binding("v", "minilm@1", "model.safetensors", "blob-1")


def _dkg(k: int, n: int) -> dict[int, KeyShare]:
    indices = list(range(1, n + 1))
    dealings = [deal(random_scalar(), threshold=k, indices=indices, dealer=d) for d in indices]
    return {i: combine([d.for_index(i) for d in dealings]) for i in indices}


@pytest.mark.parametrize(("k", "n", "stolen"), [(2, 3, [1]), (3, 5, [2, 4])])
def test_stolen_shares_fit_every_possible_key(k: int, n: int, stolen: list[int]) -> None:
    servers = _dkg(k, n)
    points = {i: servers[i].value for i in stolen}
    for _ in range(5):
        candidate = random_scalar()
        # the k-1 stolen points and (0, candidate) fix one polynomial of degree k-1 ...
        xs = [0, *stolen]
        ys = [candidate, *points.values()]
        for x, y in zip(xs, ys, strict=True):
            value = sum(yj * lagrange_at_zero_shifted(xs, xj, x) for xj, yj in zip(xs, ys, strict=True)) % ORDER
            assert value == y
        # ... so the stolen shares are equally consistent with every key: they pin down none of them


def lagrange_at_zero_shifted(xs: list[int], xj: int, x: int) -> int:
    """The Lagrange basis polynomial of ``xj`` over ``xs``, evaluated at ``x``."""
    num, den = 1, 1
    for xm in xs:
        if xm != xj:
            num = num * (x - xm) % ORDER
            den = den * (xj - xm) % ORDER
    return num * pow(den, -1, ORDER) % ORDER


@pytest.mark.parametrize(("k", "n", "stolen"), [(2, 3, [1]), (3, 5, [2, 4])])
def test_partials_of_colluding_servers_below_threshold_open_nothing(k: int, n: int, stolen: list[int]) -> None:
    servers = _dkg(k, n)
    group_key = servers[1].public_key
    file_key = os.urandom(16)
    wrapped = wrap_file_key(group_key, file_key, BOUND)
    digest = hashlib.sha256(b"the attacker's request").digest()
    partials = {i: partial_decrypt(servers[i], digest, [wrapped.u]) for i in stolen}
    # every Lagrange combination of the stolen partials over any index set fails to open the key
    tried = 0
    for size in range(1, k + 1):
        for indices in itertools.combinations(range(1, n + 1), size):
            if not set(stolen) <= set(indices):
                continue
            guess = sum((partials[i].points[0].mult(lagrange_at_zero(list(indices), i)) for i in stolen),
                        start=base_mult(0))
            tried += 1
            with pytest.raises(IntegrityError):
                unwrap(wrapped, guess, group_key, BOUND, what="attacker")
    assert tried > 0
    # the colluders cannot stand in for an honest server: a partial under index h needs its share
    combiner = Combiner(servers[1].commitments, digest, [wrapped.u])
    for i in stolen:
        combiner.add(partials[i])
    honest = next(i for i in servers if i not in stolen)
    fake_value = (sum(servers[i].value for i in stolen) + 1) % ORDER
    forged = partial_decrypt(KeyShare(honest, fake_value, servers[1].commitments), digest, [wrapped.u])
    with pytest.raises(IntegrityError, match="does not verify"):
        combiner.add(forged)
    relabelled = Partial(honest, digest, partials[stolen[0]].points, partials[stolen[0]].proof)
    with pytest.raises(IntegrityError, match="does not verify"):
        combiner.add(relabelled)
    with pytest.raises(AccessDenied, match=f"{len(stolen)} of the {k} key servers"):
        combiner.shared_points()
    # while k servers' partials open it: the key was there to be found
    enough = Combiner(servers[1].commitments, digest, [wrapped.u])
    for i in list(servers)[:k]:
        enough.add(partial_decrypt(servers[i], digest, [wrapped.u]))
    assert bytes(unwrap(wrapped, enough.shared_points()[0], group_key, BOUND, what="k servers")) == file_key


def test_one_compromised_key_server_releases_nothing(tmp_path: Path) -> None:
    manifest_key = Ed25519PrivateKey.generate()
    enclave = Ed25519PrivateKey.generate()
    attacker = Ed25519PrivateKey.generate()
    servers, commitments = inprocess_keyservers(
        tmp_path, 3, 2, manifest_key.public_key().public_bytes_raw(),
        [enclave.public_key().public_bytes_raw()])
    try:
        blob = make_blob(commitments[0], manifest_key, size=4096)
        # the attacker owns ks-1: its officer pins the attacker's key there, its share is in hand
        bad = servers[0]
        import base64

        bad.admin("setup", index=1, manifest_key=base64.b64encode(manifest_key.public_key().public_bytes_raw()
                                                                  ).decode(),
                  principals=[base64.b64encode(attacker.public_key().public_bytes_raw()).decode()])
        stolen, _ = bad.server.share()
        from strongroom.runtime.threshold_client import ThresholdClient

        client = ThresholdClient([(s.name, s.ask) for s in servers], commitments, vault_id=VAULT)
        request = release_request(attacker, blob)
        with pytest.raises(AccessDenied, match="1 of the 2 key servers") as refused:
            client.release(request, blob.manifest, blob.header)
        assert "ks-2: AccessDenied" in str(refused.value) and "ks-3: AccessDenied" in str(refused.value)
        # its own partial, made directly with the stolen share, still opens nothing
        from strongroom.crypto import age
        from strongroom.keys.threshold import find_wrapped, request_digest

        header = age.parse_header(blob.header)
        assert header is not None
        wrapped = find_wrapped(header.stanzas, commitments[0], obj="blob")
        own = partial_decrypt(stolen, request_digest(request, [wrapped.u]), [wrapped.u])
        with pytest.raises(IntegrityError):
            unwrap(wrapped, own.points[0].mult(lagrange_at_zero([1, 2], 1)), commitments[0],
                   binding(VAULT, "minilm@1", "model.safetensors", blob.blob_id), what="attacker")
        # the honest principal is still served by the two honest servers
        released = client.release(release_request(enclave, blob), blob.manifest, blob.header)
        assert released.answered == ["ks-2", "ks-3"] and released.disagreement
        client.close()
    finally:
        for s in servers:
            s.close()
