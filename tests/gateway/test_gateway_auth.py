"""Signed requests: the signature, the replay window, nonces and the infer allow-list."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.errors import AccessDenied
from strongroom.gateway.auth import AllowList, SignedRequestAuth, sign_request
from strongroom.keys.identity import Identity

IVY = Identity.generate("ivy")
NOW = 1_800_000_000.0


def test_a_signed_request_authenticates() -> None:
    auth = SignedRequestAuth([IVY.public])
    headers = sign_request(IVY, "POST", "/v1/embeddings", b"{}", now=NOW)
    caller = auth.authenticate("POST", "/v1/embeddings", headers, b"{}", NOW + 5)
    assert caller.principal == "ivy" and caller.key_id == IVY.public.key_id


def test_replay_is_refused() -> None:
    auth = SignedRequestAuth([IVY.public])
    headers = sign_request(IVY, "POST", "/p", b"x", now=NOW)
    auth.authenticate("POST", "/p", headers, b"x", NOW)
    with pytest.raises(AccessDenied, match="replayed"):
        auth.authenticate("POST", "/p", headers, b"x", NOW + 1)


def test_stale_and_future_requests_are_refused() -> None:
    auth = SignedRequestAuth([IVY.public], window_s=30)
    for skew in (-31, 31):
        headers = sign_request(IVY, "POST", "/p", b"x", now=NOW + skew)
        with pytest.raises(AccessDenied, match="window"):
            auth.authenticate("POST", "/p", headers, b"x", NOW)


def test_unknown_keys_and_unsigned_requests_are_refused() -> None:
    auth = SignedRequestAuth([IVY.public])
    with pytest.raises(AccessDenied, match="not signed"):
        auth.authenticate("POST", "/p", {}, b"", NOW)
    stranger = Identity.generate("mallory")
    with pytest.raises(AccessDenied, match="unknown caller key"):
        auth.authenticate("POST", "/p", sign_request(stranger, "POST", "/p", b"", now=NOW), b"", NOW)


@settings(max_examples=60, deadline=None)
@given(body=st.binary(max_size=64), other=st.binary(max_size=64),
       path=st.sampled_from(["/v1/embeddings", "/v1/embeddings/", "/v2/x"]))
def test_any_change_to_body_or_path_breaks_the_signature(body: bytes, other: bytes,
                                                         path: str) -> None:
    auth = SignedRequestAuth([IVY.public])
    headers = sign_request(IVY, "POST", "/v1/embeddings", body, now=NOW)
    if other == body and path == "/v1/embeddings":
        assert auth.authenticate("POST", path, headers, other, NOW).principal == "ivy"
    else:
        with pytest.raises(AccessDenied, match="does not verify"):
            auth.authenticate("POST", path, headers, other, NOW)


def test_allow_list_grants_infer_only() -> None:
    rule = AllowList({"ivy"})
    rule.check("ivy", "infer", "minilm@1")
    with pytest.raises(AccessDenied):
        rule.check("ivy", "load", "minilm@1")
    with pytest.raises(AccessDenied):
        rule.check("mallory", "infer", "minilm@1")
