"""Shared fixtures: real processes started once per session and cleaned up after.

A test that needs a real component (broker, Prometheus, Helm) calls `require(...)`: outside CI a
missing component skips the test with the reason; in CI (`CI=true`) it fails, so nothing is
silently skipped there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.broker import EmbeddedBroker, start_broker
from bridge.errors import EmbeddedBrokerError

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Fail in CI, skip elsewhere, when a real component the test needs is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but missing", pytrace=False)
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real embedded broker process for the whole session."""
    try:
        started = start_broker(log_dir=str(tmp_path_factory.mktemp("broker")))
    except EmbeddedBrokerError as exc:
        require(False, f"the embedded broker ({exc})")
        raise
    yield started
    started.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own, for tests that must start from an empty cluster."""
    try:
        started = start_broker(log_dir=str(tmp_path))
    except EmbeddedBrokerError as exc:
        require(False, f"the embedded broker ({exc})")
        raise
    yield started
    started.stop()


# --- figures: fault and failover tests report what they measured at the end of the run -------

_FIGURES: list[tuple[str, str]] = []


class Figures:
    """Record a measured figure; all are printed in the terminal summary."""

    def add(self, name: str, value: object) -> None:
        _FIGURES.append((name, str(value)))


@pytest.fixture
def figures() -> Figures:
    return Figures()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("figures measured by the tests")
        for name, value in _FIGURES:
            terminalreporter.write_line(f"{name}: {value}")
