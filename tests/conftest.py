"""Shared fixtures: real processes started once per session and cleaned up after.

A test that needs a real component (broker, Prometheus, Helm) calls `require(...)`: outside CI a
missing component skips the test with the reason; in CI (`CI=true`) it fails, so nothing is
silently skipped there.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from bridge.broker import EmbeddedBroker, start_broker
from bridge.errors import EmbeddedBrokerError
from tests.realkafka import (
    KafkaCluster,
    KafkaUnavailable,
    newest_version,
    older_version,
    running_clusters,
    start_kafka,
)

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


# --- Apache Kafka itself (tests/realkafka.py) ---------------------------------------------------


def real_kafka(directory: Path, **options: object) -> KafkaCluster:
    """Start a real Kafka cluster, or fail in CI (skip elsewhere) if Java, Maven or jars lack."""
    try:
        return start_kafka(directory, **options)  # type: ignore[arg-type]
    except KafkaUnavailable as exc:
        require(False, f"Apache Kafka ({exc})")
        raise


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One single-node Apache Kafka (the newest pinned 4.x) shared by the whole session.

    Tests share it through topic prefixes of their own; a test that must restart or break a
    broker starts its own cluster instead.
    """
    cluster = real_kafka(tmp_path_factory.mktemp("kafka"), version=newest_version())
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def kafka_older(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """The older pinned 4.x, single node, for the transactional scenarios."""
    cluster = real_kafka(tmp_path_factory.mktemp("kafka-older"), version=older_version())
    yield cluster
    cluster.stop()


@pytest.fixture(params=["newest", "older"])
def any_kafka(request: pytest.FixtureRequest) -> KafkaCluster:
    """Each transactional scenario runs on the newest and on the older pinned Kafka."""
    name = "kafka" if request.param == "newest" else "kafka_older"
    cluster: KafkaCluster = request.getfixturevalue(name)
    return cluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test shows where the logs of the Kafka brokers it ran against are kept."""
    report: pytest.TestReport = yield
    if report.failed:
        for cluster in running_clusters():
            report.sections.append(
                (
                    f"Apache Kafka {cluster.version} ({len(cluster.nodes)} node(s))",
                    f"logs kept in {cluster.directory}\n{cluster.log_tails()}",
                )
            )
    return report


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
