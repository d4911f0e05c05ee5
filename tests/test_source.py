"""The source client's rules, unit by unit (its behaviour against the simulator is in
test_end_to_end.py): throttling text, fault classes, backoff, pacing, User-Agent."""

from __future__ import annotations

import random

import pytest
from aiohttp import web

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
from bridge.xmlrpc import XmlRpcFault, encode_call
from tests.support import loopback_server

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


def test_only_the_project_listing_may_answer_more_than_the_cap() -> None:
    settings = SourceSettings(max_response_bytes=1000)
    assert settings.response_cap("list_packages_with_serial") == 4000
    assert settings.response_cap("changelog_since_serial") == 1000
    assert settings.response_cap("changelog_last_serial") == 1000


def _struct(members: int) -> bytes:
    """A list_packages_with_serial answer of `members` projects."""
    body = "".join(
        f"<member><name>project-{i:06d}</name><value><int>{i + 1}</int></value></member>"
        for i in range(members)
    )
    return (
        "<?xml version='1.0'?><methodResponse><params><param><value><struct>"
        f"{body}</struct></value></param></params></methodResponse>"
    ).encode()


async def test_a_listing_over_the_page_cap_is_read_and_a_page_that_size_is_not() -> None:
    """On a real loopback server: a 3x-cap listing is read whole; the same size for a changelog
    page is abandoned as too large (and would be retried)."""
    listing = _struct(100)
    cap = len(listing) // 3
    served: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        method = (await request.read()).split(b"<methodName>")[1].split(b"<")[0].decode()
        served.append(method)
        return web.Response(body=listing, content_type="text/xml")

    async with loopback_server("/pypi", answer) as url:
        settings = SourceSettings(pypi_url=url, min_request_interval=0, max_response_bytes=cap)
        async with PyPIClient(settings) as client:
            found = await client.list_packages_with_serial()
            assert len(found) == 100
            page_cap = settings.response_cap("changelog_since_serial")
            with pytest.raises(TransientSourceError, match="over --max-response-bytes") as error:
                await client._post(encode_call("changelog_since_serial", (0,)), page_cap)
            assert error.value.outcome == "too_large"
    assert served[0] == "list_packages_with_serial"
