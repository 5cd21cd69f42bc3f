"""Output shaping, rate limits, budgets and the extraction-pattern detectors."""

from __future__ import annotations

import random
import string

import numpy as np
import pytest

from strongroom.errors import InvalidInput
from strongroom.gateway.defence import (
    DetectorConfig,
    ExtractionDetector,
    Limits,
    LimitsConfig,
    OutputPolicy,
    Throttled,
    looks_random,
)

NATURAL = [
    "The quick brown fox jumps over the lazy dog.",
    "red running shoes",
    "What is the capital of France?",
    "Crème brûlée à Zürich",
    "東京は日本の首都です。",
    "How do I reset my password for the staff portal?",
    "iPhone 15 pro max case",
]


def test_output_policy_truncates_renormalises_and_rounds() -> None:
    policy = OutputPolicy(precision=3, max_dimensions=8)
    rng = np.random.default_rng(0)
    v = rng.standard_normal((4, 32))
    out = policy.shape(v, policy.dimensions(32, None))
    assert out.shape == (4, 8)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=3e-3)
    assert np.array_equal(out, np.round(out, 3))
    with pytest.raises(InvalidInput, match="between 1 and 8"):
        policy.dimensions(32, 9)


def test_rate_limit_refuses_bursts_and_refills() -> None:
    limits = Limits(LimitsConfig(principal_rate=1.0, principal_burst=3))
    for _ in range(3):
        limits.admit("ivy", 1, 100.0)
    with pytest.raises(Throttled, match="rate limit") as err:
        limits.admit("ivy", 1, 100.0)
    assert err.value.retry_after >= 1
    limits.admit("bob", 1, 100.0)  # others are not affected
    limits.admit("ivy", 1, 101.1)


def test_budget_caps_texts_per_window() -> None:
    limits = Limits(LimitsConfig(principal_budget=100, budget_window_s=60))
    limits.admit("ivy", 60, 0.0)
    with pytest.raises(Throttled, match="budget of 100"):
        limits.admit("ivy", 41, 1.0)
    assert limits.used("ivy", 1.0) == 60
    limits.admit("ivy", 41, 61.0)  # the first charge left the window


def test_global_budget_spans_principals() -> None:
    limits = Limits(LimitsConfig(global_budget=10))
    limits.admit("a", 6, 0.0)
    with pytest.raises(Throttled, match="all callers"):
        limits.admit("b", 6, 0.0)


def test_natural_text_does_not_look_random() -> None:
    assert not any(looks_random(t) for t in NATURAL)


def test_random_strings_and_word_salad_look_random() -> None:
    rng = random.Random(1)
    chars = string.ascii_letters + string.digits + " "
    assert all(looks_random("".join(rng.choice(chars) for _ in range(40))) for _ in range(50))
    assert looks_random("lamp seventeen cathedral orbit violin quickly purple hammer")


def test_natural_traffic_raises_no_alert() -> None:
    det = ExtractionDetector()
    for i in range(120):  # each text repeated 17 times: below the duplicate threshold
        alerts = det.observe("ivy", "10.0.0.1", [NATURAL[i % len(NATURAL)]], float(i))
        assert alerts == []


def test_random_inputs_raise_one_alert_and_suspend() -> None:
    det = ExtractionDetector(DetectorConfig(random_texts=10))
    rng = random.Random(2)
    batch = ["".join(rng.choice(string.ascii_letters) for _ in range(30)) for _ in range(12)]
    alerts = det.observe("mallory", "10.0.0.9", batch, 0.0)
    assert [a.kind for a in alerts] == ["near-random-inputs"]
    assert alerts[0].severity == "high" and "suspended_s" in alerts[0].details
    assert det.suspended("mallory", "10.0.0.9", 1.0) > 0
    assert det.suspended("ivy", "10.0.0.1", 1.0) == 0
    assert det.observe("mallory", "10.0.0.9", batch, 2.0) == []  # not raised twice


def test_duplicates_probing_and_shared_hosts() -> None:
    det = ExtractionDetector(DetectorConfig(duplicates=5, probes=6, principals_per_host=3))
    kinds: list[str] = []
    kinds += [a.kind for a in det.observe("a", "h1", ["Hello, world!"] * 3 + ["hello world"] * 2, 0)]
    template = "the weather in {} is nice today"
    cities = ["paris", "rome", "oslo", "lima", "kyiv", "bern"]
    kinds += [a.kind for a in det.observe("b", "h2", [template.format(c) for c in cities], 0)]
    for p in ("x", "y", "z"):
        kinds += [a.kind for a in det.observe(p, "h3", ["a normal question"], 0)]
    assert kinds == ["near-duplicates", "systematic-probing", "many-principals-one-host"]
    assert det.suspended("anyone", "h3", 1) > 0


def test_history_expires() -> None:
    det = ExtractionDetector(DetectorConfig(duplicates=5, window_s=10))
    det.observe("a", "h", ["same text"] * 4, 0)
    assert det.observe("a", "h", ["same text"] * 4, 20) == []
