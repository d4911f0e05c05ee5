"""The simulator's rate limit as its answers advertise it (draft-ietf-httpapi-ratelimit-headers-10).

Every XML-RPC answer, faults included, carries `RateLimit-Policy: "pypi-xmlrpc";q=QUOTA;w=WINDOW`
and `RateLimit: "pypi-xmlrpc";r=REMAINING;t=RESET`, counted per client IP over the moving window
that also throttles; or the older `RateLimit-Limit` / `-Remaining` / `-Reset` fields, or none.
The server runs in-process on a free port and aiohttp reads the raw answers.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import xmlrpc.client
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bridge.config import add_flags
from bridge.errors import ConfigError
from bridge.simulator import (
    SIMULATE_FLAGS,
    MovingWindow,
    RunningSimulator,
    SimulatorSettings,
    running_simulator,
    simulator_settings,
)

BASE = SimulatorSettings(port=0, rate=0, prefill=200, seed=7)
XML = {"Content-Type": "text/xml"}
LAST_SERIAL = xmlrpc.client.dumps((), "changelog_last_serial").encode()
#: The two fields of revision 10: a one-item structured-field list each, the item a string.
POLICY_RE = re.compile(r'"(?P<name>[^"]+)";q=(?P<quota>\d+);w=(?P<window>\d+)')
LIMIT_RE = re.compile(r'"(?P<name>[^"]+)";r=(?P<remaining>\d+);t=(?P<reset>\d+)')
THROTTLE_RE = re.compile(r"^HTTPTooManyRequests: .* Limit may reset in (?P<seconds>\d+) seconds\.$")
LEGACY = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
DRAFT_10 = ("RateLimit-Policy", "RateLimit")


@asynccontextmanager
async def serving(**changes: Any) -> AsyncIterator[RunningSimulator]:
    async with running_simulator(dataclasses.replace(BASE, **changes)) as running:
        yield running


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def policy(self) -> dict[str, str]:
        found = POLICY_RE.fullmatch(self.headers["RateLimit-Policy"])
        assert found is not None, self.headers["RateLimit-Policy"]
        return found.groupdict()

    def limit(self) -> dict[str, str]:
        found = LIMIT_RE.fullmatch(self.headers["RateLimit"])
        assert found is not None, self.headers["RateLimit"]
        return found.groupdict()

    def remaining(self) -> int:
        return int(self.limit()["remaining"])

    def reset(self) -> int:
        return int(self.limit()["reset"])


async def http(
    url: str,
    body: bytes = LAST_SERIAL,
    headers: Mapping[str, str] = XML,
    verb: str = "POST",
    source: str | None = None,
) -> Answer:
    """One raw exchange, from the address `source` if given."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0) if source else None)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(verb, url, data=body, headers=headers) as response,
    ):
        return Answer(response.status, response.headers, await response.read())


async def inject(url: str, kind: str, **extra: Any) -> None:
    control = url.removesuffix("/pypi") + "/_sim/faults"
    async with (
        aiohttp.ClientSession() as session,
        session.post(control, json={"kind": kind, **extra}) as response,
    ):
        assert response.status == 200, await response.text()


def call(method: str, *params: Any) -> bytes:
    return xmlrpc.client.dumps(params, method).encode()


def fault_in(answer: Answer) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(answer.body)
    return caught.value


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser, SIMULATE_FLAGS, {})
    return parser.parse_args(argv)


# --- the draft-10 fields ---------------------------------------------------------------------


async def test_by_default_the_policy_is_pypis_3600_calls_an_hour() -> None:
    async with serving() as sim:
        answer = await http(sim.url)
    assert answer.headers["RateLimit-Policy"] == '"pypi-xmlrpc";q=3600;w=3600'
    assert answer.headers["RateLimit"] == '"pypi-xmlrpc";r=3599;t=3600'


async def test_both_fields_name_the_same_policy() -> None:
    async with serving(rate_limit=10, rate_limit_window=60) as sim:
        answer = await http(sim.url)
    assert answer.policy()["name"] == answer.limit()["name"] == "pypi-xmlrpc"


async def test_the_policy_is_the_quota_and_window_of_the_flags() -> None:
    settings = simulator_settings(
        parse(["--port", "0", "--rate", "0", "--rate-limit", "7", "--rate-limit-window", "90"])
    )
    async with running_simulator(settings) as sim:
        answers = [await http(sim.url) for _ in range(3)]
    assert {a.headers["RateLimit-Policy"] for a in answers} == {'"pypi-xmlrpc";q=7;w=90'}


async def test_a_window_of_a_fraction_of_a_second_is_advertised_as_whole_seconds() -> None:
    async with serving(rate_limit=5, rate_limit_window=0.5) as sim:
        answer = await http(sim.url)
    assert answer.policy()["window"] == "1"


async def test_remaining_goes_down_by_one_with_every_method() -> None:
    async with serving(rate_limit=5, rate_limit_window=30) as sim:
        answers = [
            await http(sim.url, call("changelog_last_serial")),
            await http(sim.url, call("changelog_since_serial", 0)),
            await http(sim.url, call("list_packages_with_serial")),
            await http(sim.url, call("changelog_last_serial")),
        ]
    assert [a.remaining() for a in answers] == [4, 3, 2, 1]


async def test_reset_counts_down_to_when_the_oldest_call_leaves_the_window() -> None:
    async with serving(rate_limit=5, rate_limit_window=30) as sim:
        first = await http(sim.url)
        await asyncio.sleep(1.2)
        second = await http(sim.url)
        await asyncio.sleep(1.0)
        third = await http(sim.url)
    assert first.reset() == 30
    assert second.reset() == 29
    assert third.reset() == 28


async def test_remaining_comes_back_once_the_window_has_moved_on() -> None:
    async with serving(rate_limit=2, rate_limit_window=1.0) as sim:
        assert [(await http(sim.url)).remaining() for _ in range(2)] == [1, 0]
        await asyncio.sleep(1.1)
        assert (await http(sim.url)).remaining() == 1


async def test_a_throttled_answer_says_none_remain_and_resets_when_the_fault_says() -> None:
    async with serving(rate_limit=2, rate_limit_window=30) as sim:
        await http(sim.url)
        await http(sim.url)
        throttled = await http(sim.url)
    fault = fault_in(throttled)
    assert fault.faultCode == -32500
    found = THROTTLE_RE.match(fault.faultString)
    assert found is not None, fault.faultString
    assert throttled.status == 200
    assert throttled.remaining() == 0
    assert throttled.reset() == int(found["seconds"])


async def test_a_client_that_paces_itself_by_the_headers_is_never_throttled() -> None:
    async with serving(rate_limit=3, rate_limit_window=1.0) as sim:
        for _ in range(8):
            answer = await http(sim.url)
            assert b"HTTPTooManyRequests" not in answer.body
            if answer.remaining() == 0:
                await asyncio.sleep(answer.reset())


async def test_each_client_address_has_its_own_window() -> None:
    async with serving(rate_limit=3, rate_limit_window=30) as sim:
        mine = [(await http(sim.url, source="127.0.0.1")).remaining() for _ in range(2)]
        other = await http(sim.url, source="127.0.0.2")
    assert mine == [2, 1]
    assert other.remaining() == 2


# --- faults carry them too -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers", "verb"),
    [
        (call("package_releases", "requests"), XML, "POST"),  # -32601
        (call("changelog_since_serial", "5"), XML, "POST"),  # -32602
        (b"<notrpc/>", XML, "POST"),  # -32700
        (b"", XML, "GET"),  # application error
        (LAST_SERIAL, {"Content-Type": "text/plain"}, "POST"),  # application error
    ],
    ids=["method-not-found", "bad-argument", "not-xmlrpc", "get", "not-text-xml"],
)
async def test_an_xmlrpc_fault_carries_the_headers_and_counts(
    body: bytes, headers: Mapping[str, str], verb: str
) -> None:
    async with serving(rate_limit=5, rate_limit_window=30) as sim:
        answer = await http(sim.url, body, headers, verb)
        after = await http(sim.url)
    assert fault_in(answer).faultCode in (-32500, -32601, -32602, -32700)
    assert answer.headers["RateLimit-Policy"] == '"pypi-xmlrpc";q=5;w=30'
    assert (answer.remaining(), after.remaining()) == (4, 3)


@pytest.mark.parametrize(("kind", "status"), [("fault", 200), ("malformed", 200), ("502", 502)])
async def test_an_injected_fault_carries_the_headers_and_counts(kind: str, status: int) -> None:
    async with serving(rate_limit=5, rate_limit_window=30) as sim:
        await inject(sim.url, kind)
        answer = await http(sim.url)
        after = await http(sim.url)
    assert answer.status == status
    assert answer.headers["RateLimit-Policy"] == '"pypi-xmlrpc";q=5;w=30'
    assert (answer.remaining(), after.remaining()) == (4, 3)


async def test_a_fault_drawn_at_random_carries_the_headers() -> None:
    async with serving(rate_limit=5, rate_limit_window=30, fault_rate=1.0, faults=("503",)) as sim:
        answers = [await http(sim.url) for _ in range(2)]
    assert [a.status for a in answers] == [503, 503]
    assert [a.remaining() for a in answers] == [4, 3]


async def test_a_truncated_answer_carries_the_headers_before_its_body_breaks() -> None:
    async with serving(rate_limit=5, rate_limit_window=30) as sim:
        await inject(sim.url, "truncate")
        async with (
            aiohttp.ClientSession() as session,
            session.post(sim.url, data=call("changelog_since_serial", 0), headers=XML) as response,
        ):
            assert response.headers["RateLimit"].startswith('"pypi-xmlrpc";r=4;')
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()


async def test_a_forced_throttle_says_its_retry_after_and_uses_up_nothing() -> None:
    async with serving(rate_limit=5, rate_limit_window=30) as sim:
        await inject(sim.url, "throttle", retry_after=7)
        throttled = await http(sim.url)
        after = await http(sim.url)
    assert THROTTLE_RE.match(fault_in(throttled).faultString)["seconds"] == "7"  # type: ignore[index]
    assert throttled.headers["RateLimit-Policy"] == '"pypi-xmlrpc";q=5;w=30'
    assert throttled.headers["RateLimit"] == '"pypi-xmlrpc";r=0;t=7'
    assert after.remaining() == 4


# --- the other styles ----------------------------------------------------------------------


async def test_legacy_sends_the_three_older_fields_instead() -> None:
    async with serving(rate_limit=3, rate_limit_window=30, rate_limit_headers="legacy") as sim:
        answers = [await http(sim.url) for _ in range(4)]
    for answer in answers:
        assert not set(DRAFT_10) & set(answer.headers)
    assert [[a.headers[name] for name in LEGACY] for a in answers] == [
        ["3", "2", "30"],
        ["3", "1", "30"],
        ["3", "0", "30"],
        ["3", "0", "30"],
    ]
    assert b"HTTPTooManyRequests" in answers[3].body


async def test_legacy_reset_counts_down_too() -> None:
    async with serving(rate_limit=3, rate_limit_window=30, rate_limit_headers="legacy") as sim:
        first = await http(sim.url)
        await asyncio.sleep(1.2)
        second = await http(sim.url)
    assert (first.headers["RateLimit-Reset"], second.headers["RateLimit-Reset"]) == ("30", "29")


async def test_none_sends_no_rate_limit_headers_but_still_throttles() -> None:
    async with serving(rate_limit=1, rate_limit_window=30, rate_limit_headers="none") as sim:
        answers = [await http(sim.url) for _ in range(2)]
    for answer in answers:
        assert not {*DRAFT_10, *LEGACY} & set(answer.headers)
    assert THROTTLE_RE.match(fault_in(answers[1]).faultString)


async def test_rate_limit_zero_turns_the_limit_and_its_headers_off() -> None:
    async with serving(rate_limit=0) as sim:
        answers = [await http(sim.url) for _ in range(5)]
    for answer in answers:
        assert not {*DRAFT_10, *LEGACY} & set(answer.headers)
        assert b"HTTPTooManyRequests" not in answer.body


# --- settings ------------------------------------------------------------------------------


def test_the_defaults_are_pypis_limit_advertised_as_in_draft_10() -> None:
    settings = simulator_settings(parse([]))
    assert (settings.rate_limit, settings.rate_limit_window) == (3_600, 3_600.0)
    assert settings.rate_limit_headers == "draft-10"
    assert settings == SimulatorSettings()


@pytest.mark.parametrize("style", ["draft-10", "legacy", "none"])
def test_each_header_style_is_a_flag_value(style: str) -> None:
    assert simulator_settings(parse(["--rate-limit-headers", style])).rate_limit_headers == style


def test_an_unknown_header_style_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--rate-limit-headers", "draft-11"])
    assert "expected one of draft-10, legacy, none" in capsys.readouterr().err


def test_an_unknown_header_style_in_the_settings_is_refused() -> None:
    with pytest.raises(ConfigError, match="draft-10, legacy, none"):
        SimulatorSettings(rate_limit_headers="x-ratelimit")


def test_the_help_documents_the_rate_limit_flags() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, SIMULATE_FLAGS, {})
    text = " ".join(parser.format_help().split())
    for flag in ("--rate-limit ", "--rate-limit-window ", "--rate-limit-headers "):
        assert flag in text
    assert "RateLimit-Policy" in text
    assert "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset" in text
    assert "(default: draft-10)" in text
    assert "(default: 3600)" in text


def test_the_moving_window_refuses_without_using_up_the_window() -> None:
    window = MovingWindow(2, 60)
    outcomes = [window.hit("a") for _ in range(3)]
    assert [allowed for allowed, _ in outcomes] == [True, True, False]
    assert [quota.remaining for _, quota in outcomes] == [1, 0, 0]
    assert window.hit("b")[1].remaining == 1
