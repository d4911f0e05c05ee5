"""The source client's rules, unit by unit (its behaviour against the simulator is in
test_end_to_end.py): throttling text, fault classes, backoff, pacing, User-Agent."""

from __future__ import annotations

import random

import pytest

from bridge.config import SourceSettings
from bridge.errors import SourceFault, Throttled, TransientSourceError
from bridge.source import (
    Backoff,
    PyPIClient,
    classify_fault,
    server_wait,
    throttle_delay,
    user_agent,
)
from bridge.xmlrpc import XmlRpcFault

REAL_THROTTLE = (
    "HTTPTooManyRequests: The action could not be performed because there were too many "
    "requests by the client. Limit may reset in 17 seconds."
)


def test_throttle_delay_is_read_from_pypis_message() -> None:
    assert throttle_delay(REAL_THROTTLE) == 17.0
    assert throttle_delay("HTTPTooManyRequests: Limit may reset in 1 second.") == 1.0
    assert throttle_delay("HTTPTooManyRequests: no hint") == 60.0
    assert throttle_delay("RuntimeError: boom") is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("17", 17.0), ("0.2", 1.0), ("-5", 1.0), (None, 60.0), ("inf", 60.0), ("nan", 60.0),
     ("Wed, 21 Oct 2026 07:28:00 GMT", 60.0), ("9" * 400, 60.0)],
)  # fmt: skip
def test_a_servers_wait_is_at_least_a_second_and_60_when_unreadable(
    text: str | None, seconds: float
) -> None:
    assert server_wait(text) == seconds


def test_throttling_fault_becomes_throttled_with_its_delay() -> None:
    error = classify_fault(XmlRpcFault(-32500, REAL_THROTTLE))
    assert isinstance(error, Throttled)
    assert error.retry_after == 17.0


@pytest.mark.parametrize("code", [-32601, -32602, -32700])
def test_faults_no_retry_can_fix_are_final(code: int) -> None:
    error = classify_fault(XmlRpcFault(code, "nope"))
    assert isinstance(error, SourceFault)
    assert not error.retriable
    assert str(code) in str(error)
    assert ";" in str(error), "the line names the fix after the problem"


def test_wrapped_server_errors_are_retried() -> None:
    error = classify_fault(XmlRpcFault(-32500, "RuntimeError: database is busy"))
    assert isinstance(error, TransientSourceError)
    assert error.retriable


def test_backoff_grows_exponentially_within_the_cap_with_jitter() -> None:
    backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_user_agent_names_the_project_and_the_contact() -> None:
    agent = user_agent("ops@example.org")
    assert agent.startswith("pypi-kafka-bridge/")
    assert "ops@example.org" in agent


async def test_calls_keep_the_minimum_interval() -> None:
    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    client = PyPIClient(SourceSettings(min_request_interval=1.0), sleep=sleep, clock=lambda: now[0])
    await client._pace()
    now[0] += 0.3
    await client._pace()
    await client._pace()
    assert slept == pytest.approx([0.7, 1.0])


def test_backoff_survives_thousands_of_attempts() -> None:
    """Found by the CI run of the hostile tests: attempt 1,024 overflowed 2**attempt."""
    backoff = Backoff(base=0.5, cap=60.0)
    delays = [backoff.next_delay() for _ in range(5000)]
    assert 30.0 <= delays[-1] <= 60.0
