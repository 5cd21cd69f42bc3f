"""One embedded red-team target (and one full run of the suite) per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from strongroom.redteam.runner import SuiteReport, run_suite
from strongroom.redteam.schema import load_builtin
from strongroom.redteam.target import EmbeddedTarget


@pytest.fixture(scope="session")
def rt_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTarget]:
    """A real deployment in a temporary directory (ceremony, model, people, grants)."""
    target = EmbeddedTarget.build(tmp_path_factory.mktemp("rt-target"))
    try:
        yield target
    finally:
        target.close()


@pytest.fixture(scope="session")
def rt_report(rt_target: EmbeddedTarget) -> SuiteReport:
    """Every shipped scenario run once against the target (CI's red-team run)."""
    return run_suite(rt_target, load_builtin())
