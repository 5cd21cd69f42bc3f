"""The gate's metrics count a batch's releases with fewer writes and the same figures."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from strongroom.runtime.metrics import _observe_many


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in registry.collect() for s in m.samples if not s.name.endswith("_created")}


@pytest.mark.parametrize("amounts", [[], [0.0003], [0.0012, 0.0012, 0.004, 7.0, 30.0, 0.0005],
                                     [0.001, 0.0025, 0.0005]])  # on a bound: that bucket
def test_a_batch_is_observed_as_each_of_its_releases(amounts: list[float]) -> None:
    buckets = (0.0005, 0.001, 0.0025, 0.005, 10.0)
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("t_seconds", "t", ["decision"], buckets=buckets, registry=one).labels("allow")
    h2 = Histogram("t_seconds", "t", ["decision"], buckets=buckets, registry=many).labels("allow")
    for a in amounts:
        h1.observe(a)
    _observe_many(h2, amounts)
    assert _samples(many) == pytest.approx(_samples(one))


def test_a_histogram_without_the_usual_fields_is_observed_one_by_one() -> None:
    seen: list[float] = []

    class Plain:
        def observe(self, amount: float) -> None:
            seen.append(amount)

    _observe_many(Plain(), [0.1, 0.2])  # type: ignore[arg-type]
    assert seen == [0.1, 0.2]
