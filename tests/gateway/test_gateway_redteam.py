"""Red team: an SVD attack on returned vectors, and hunting for weight bytes in every answer."""

from __future__ import annotations

import base64
import json
import random
import re
import string
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from starlette.testclient import TestClient

from strongroom.gateway.alerts import MemoryAlertSink
from strongroom.gateway.auth import AllowList, SignedRequestAuth, sign_request
from strongroom.gateway.defence import LimitsConfig, OutputPolicy
from strongroom.gateway.models import load_model
from strongroom.gateway.server import EMBEDDINGS_PATH, Gateway, GatewayConfig, create_app
from strongroom.keys.identity import Identity

from gateway_helpers import (
    TOY_HIDDEN,
    TOY_OUT,
    Recorder,
    embed_request,
    make_toy_artifact,
    vectors,
)

MALLORY = Identity.generate("mallory")


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        self.t += 1.0  # one request a second: under the rate limits
        return self.t


@pytest.fixture
def toy(tmp_path: Path) -> tuple[dict[str, np.ndarray], object]:
    tensors = make_toy_artifact(tmp_path / "toy")
    files = lambda p: (tmp_path / "toy" / p).read_bytes()  # noqa: E731
    model = load_model(load_file(str(tmp_path / "toy" / "model.safetensors")), files)
    return tensors, model


def _gateway(model: object, config: GatewayConfig) -> tuple[Gateway, MemoryAlertSink, Recorder]:
    sink, audit = MemoryAlertSink(), Recorder()
    gw = Gateway(model, "toy@1", auth=SignedRequestAuth([MALLORY.public]),  # type: ignore[arg-type]
                 authorizer=AllowList({"mallory"}), audit=audit, alerts=sink, config=config,
                 clock=Clock())
    return gw, sink, audit


def _random_texts(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(string.ascii_letters + string.digits) for _ in range(24))
            for _ in range(n)]


def _hidden_size_estimate(samples: np.ndarray) -> int:
    """Carlini et al.'s step: the biggest drop in the singular values of stacked outputs."""
    s = np.linalg.svd(samples, compute_uv=False)
    s = s[s > s[0] * 1e-12]
    return int(np.argmax(s[:-1] / s[1:])) + 1


def _attack(gw: Gateway, per_request: int, budget: int) -> tuple[np.ndarray, int]:
    rng = random.Random(5)
    got: list[np.ndarray] = []
    refused = 0
    while sum(len(v) for v in got) < budget and refused < 20:
        reply = embed_request(gw, MALLORY, _random_texts(rng, per_request))
        if reply.status == 200:
            got.append(vectors(reply))
        else:
            refused += 1
    return (np.vstack(got) if got else np.zeros((0, TOY_OUT))), refused


def test_svd_attack_recovers_the_hidden_size_when_unprotected(toy: tuple) -> None:
    gw, sink, _ = _gateway(toy[1], GatewayConfig.unprotected())
    samples, refused = _attack(gw, per_request=32, budget=160)
    assert refused == 0 and samples.shape == (160, TOY_OUT)
    assert _hidden_size_estimate(samples) == TOY_HIDDEN
    assert sink.alerts == []


def test_svd_attack_is_refused_and_alerted_by_default(toy: tuple) -> None:
    gw, sink, audit = _gateway(toy[1], GatewayConfig())
    samples, refused = _attack(gw, per_request=32, budget=160)
    assert samples.shape[0] == 0 and refused == 20  # the first batch already trips the detector
    assert [a.kind for a in sink.alerts] == ["near-random-inputs"]
    assert {e["decision"] for e in audit.events} == {"throttle"}


def test_svd_attack_one_text_at_a_time_is_cut_off_and_alerted(toy: tuple) -> None:
    gw, sink, _ = _gateway(toy[1], GatewayConfig())
    samples, refused = _attack(gw, per_request=1, budget=160)
    assert samples.shape[0] < gw.config.detector.random_texts
    assert refused == 20 and [a.kind for a in sink.alerts] == ["near-random-inputs"]


def test_dimension_limit_hides_the_hidden_size(toy: tuple) -> None:
    # A deployment of a logits-like model returns fewer components than its hidden size.
    config = GatewayConfig.unprotected()
    config = GatewayConfig(output=OutputPolicy(precision=4, max_dimensions=16, max_inputs=64),
                           limits=config.limits, detector=config.detector)
    gw, _, _ = _gateway(toy[1], config)
    samples, _ = _attack(gw, per_request=32, budget=160)
    assert samples.shape == (160, 16)
    assert _hidden_size_estimate(samples) != TOY_HIDDEN


def _paraphrases(n: int) -> list[str]:
    """Ordinary questions, each worded differently (what a distiller sends: no pattern)."""
    topics = ["tides", "photosynthesis", "inflation", "volcanoes", "jazz", "glaciers", "vaccines",
              "bridges", "comets", "bees", "tariffs", "sleep"]
    forms = ["explain {} simply", "what drives {} in practice", "give me an overview of {}",
             "why do people study {}", "summarise the history of {}", "how would you teach {}"]
    return [forms[i % len(forms)].format(topics[(i * 5) % len(topics)]) + f" ({i})"
            for i in range(n)]


def test_distillation_under_the_detectors_is_stopped_by_the_daily_budget(toy: tuple) -> None:
    config = GatewayConfig(limits=LimitsConfig(principal_budget=40))
    gw, sink, audit = _gateway(toy[1], config)
    questions = _paraphrases(80)
    answered, statuses = 0, []
    for i in range(0, len(questions), 8):
        reply = embed_request(gw, MALLORY, questions[i:i + 8])
        statuses.append(reply.status)
        answered += len(vectors(reply)) if reply.status == 200 else 0
    assert answered == 40 and statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    # one alert for the spent budget, none from the pattern detectors (nothing looked odd)
    assert [a.kind for a in sink.alerts] == ["query-budget"]
    assert sink.alerts[0].principal == "mallory" and sink.alerts[0].details["budget"] == 40
    assert [e["decision"] for e in audit.events].count("throttle") == 5


# -- no weight bytes in any answer --------------------------------------------------


def _weight_fingerprints(tensors: dict[str, np.ndarray]) -> tuple[set[bytes], set[str]]:
    windows: set[bytes] = set()
    reprs: set[str] = set()
    for array in tensors.values():
        raw = array.tobytes()
        windows.update(raw[i:i + 8] for i in range(0, len(raw) - 7, 4))
        reprs.update(repr(float(x)) for x in array.ravel())
    return windows, reprs


def _probe_everything(client: TestClient, caller: Identity) -> list[bytes]:
    """Every route, method and malformed request we can think of; returns all answer bytes."""
    seen: list[bytes] = []

    def keep(resp: object) -> None:
        seen.append(resp.content)  # type: ignore[attr-defined]
        seen.append(json.dumps(dict(resp.headers)).encode())  # type: ignore[attr-defined]

    paths = ["/", "/docs", "/redoc", "/openapi.json", "/v1/models", "/v1/weights", "/metrics",
             "/healthz", "/v1/embeddings/../weights", "/v1/embeddings%2F..%2F", "/static/x",
             EMBEDDINGS_PATH, EMBEDDINGS_PATH + "/", "/v1/embeddings?debug=1"]
    for path in paths:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            keep(client.request(method, path))

    def signed(body: bytes, path: str = EMBEDDINGS_PATH) -> None:
        keep(client.post(path, content=body, headers=sign_request(caller, "POST", path, body)))

    bodies = [
        b"", b"null", b"[]", b"{}", b"not json", b"\xff\xfe\x00", b'{"input": 5}',
        b'{"input": []}', b'{"input": [1, 2]}', b'{"input": "x", "dimensions": 0}',
        b'{"input": "x", "dimensions": 100000}', b'{"input": "x", "dimensions": "all"}',
        b'{"input": "x", "dimensions": true}', b'{"input": "x", "encoding_format": "base64"}',
        b'{"input": "x", "return_weights": true}', b'{"input": "x", "layer": "toy.in.weight"}',
        json.dumps({"input": ["x" * 9000]}).encode(), json.dumps({"input": ["y"] * 500}).encode(),
        json.dumps({"input": "z" * (2 << 20)}).encode(), b'{"input": "' + b"[" * 5000 + b'"}',
        json.dumps({"input": ["\u0000\ud7ff\U0010ffff", "\x00" * 10]}).encode(),
        b'{"input": "a", "input": "b"}', b"1e999999", b'{"input": "' + b"9" * 5000 + b'"}',
    ]
    for body in bodies:
        signed(body)
    keep(client.post(EMBEDDINGS_PATH, content=b'{"input": "x"}'))  # unsigned
    stale = sign_request(caller, "POST", EMBEDDINGS_PATH, b'{"input": "x"}', now=0)
    keep(client.post(EMBEDDINGS_PATH, content=b'{"input": "x"}', headers=stale))
    bad = sign_request(caller, "POST", EMBEDDINGS_PATH, b"other")
    keep(client.post(EMBEDDINGS_PATH, content=b'{"input": "x"}', headers=bad))
    signed(json.dumps({"input": ["a normal sentence about weights"]}).encode())
    return seen


def test_an_infer_caller_gets_no_weight_bytes_from_any_answer(toy: tuple) -> None:
    tensors, model = toy
    ivy = Identity.generate("ivy")
    gw = Gateway(model, "toy@1", auth=SignedRequestAuth([ivy.public]),  # type: ignore[arg-type]
                 authorizer=AllowList({"ivy"}), audit=Recorder(), alerts=MemoryAlertSink(),
                 config=GatewayConfig.unprotected())
    with TestClient(create_app(gw)) as client:
        answers = _probe_everything(client, ivy)
    windows, reprs = _weight_fingerprints(tensors)
    statuses_ok = sum(1 for a in answers if b'"embedding"' in a)
    assert statuses_ok >= 2  # the probe did reach the model
    for answer in answers:
        for text in (answer, base64.b64encode(answer)):
            assert not any(w in text for w in windows)
        assert b"toy.in" not in answer and b"toy.out" not in answer
        assert b"Traceback" not in answer and b"safetensors" not in answer
        numbers = set(re.findall(r"-?\d+\.\d+(?:e-?\d+)?", answer.decode("utf-8", "replace")))
        assert not numbers & reprs
        for w in list(windows)[:500]:
            assert w.hex().encode() not in answer
