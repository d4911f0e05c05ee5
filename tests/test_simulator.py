"""The PyPI journal simulator, spoken to over real sockets with the standard library's client.

The server runs in-process on a free port; `xmlrpc.client` (in a thread) plays the part of any
PyPI client, and aiohttp looks at what `xmlrpc.client` hides (status, headers, broken bodies).
`Journal.all_rows()` is the oracle for what the wire must carry.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import re
import time
import xmlrpc.client
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from xml.parsers.expat import ExpatError

import aiohttp
import pytest

from bridge.config import add_flags
from bridge.errors import ConfigError
from bridge.simulator import (
    LEGACY_END,
    SIMULATE_FLAGS,
    Journal,
    Row,
    RunningSimulator,
    SimulatorSettings,
    era_timestamp,
    fault_kinds,
    normalize,
    running_simulator,
    serve,
    simulator_settings,
)

BASE = SimulatorSettings(port=0, rate=0, prefill=500, seed=7)
XML = {"Content-Type": "text/xml"}
THROTTLE_RE = re.compile(
    r"^HTTPTooManyRequests: .* Limit may reset in (?P<seconds>\d+) seconds\.$", re.S
)


@asynccontextmanager
async def serving(**changes: Any) -> AsyncIterator[RunningSimulator]:
    async with running_simulator(dataclasses.replace(BASE, **changes)) as running:
        yield running


async def call(url: str, method: str, *params: Any) -> Any:
    """One XML-RPC call with the standard library client, off the event loop."""
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
    return await asyncio.to_thread(getattr(proxy, method), *params)


async def fault_of(url: str, method: str, *params: Any) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as caught:
        await call(url, method, *params)
    return caught.value


def request_body(method: str, *params: Any) -> bytes:
    return xmlrpc.client.dumps(params, method).encode()


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    content_type: str
    body: bytes


async def http(
    url: str, body: bytes = b"", headers: Mapping[str, str] = XML, verb: str = "POST"
) -> Answer:
    """One raw HTTP exchange, for what xmlrpc.client does not show."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(verb, url, data=body, headers=headers) as response,
    ):
        return Answer(
            response.status, response.headers, response.content_type, await response.read()
        )


def fault_in(body: bytes) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(body)
    return caught.value


LAST_SERIAL = request_body("changelog_last_serial")


def control(url: str, path: str) -> str:
    return url.removesuffix("/pypi") + "/_sim/" + path


async def post_control(url: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(control(url, path), json=payload) as response,
    ):
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def state(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(control(url, "state")) as response:
        result: dict[str, Any] = await response.json()
        return result


async def inject(url: str, kind: str, count: int = 1, **extra: Any) -> None:
    await post_control(url, "faults", {"kind": kind, "count": count, **extra})


async def until(predicate: Callable[[], bool]) -> None:
    for _ in range(250):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not reached within 5 s")


@pytest.fixture(scope="module")
async def big() -> AsyncIterator[RunningSimulator]:
    """More rows than one page holds, at the default page size."""
    async with serving(prefill=60_000) as running:
        yield running


@pytest.fixture(scope="module")
async def first_page(big: RunningSimulator) -> list[list[Any]]:
    """What `changelog_since_serial(0)` returns from `big`, read once."""
    rows: list[list[Any]] = await call(big.url, "changelog_since_serial", 0)
    return rows


# --- the three methods ---------------------------------------------------------------------


async def test_last_serial_is_nil_on_an_empty_journal() -> None:
    async with serving(prefill=0) as sim:
        assert await call(sim.url, "changelog_last_serial") is None


async def test_last_serial_is_the_newest_row(big: RunningSimulator) -> None:
    assert await call(big.url, "changelog_last_serial") == big.journal.last_serial


def test_a_page_stops_silently_at_fifty_thousand_rows(
    big: RunningSimulator, first_page: list[list[Any]]
) -> None:
    assert big.journal.rows > 50_000
    assert [tuple(row) for row in first_page] == big.journal.since(0, 50_000)


async def test_a_page_holds_only_rows_after_the_serial(big: RunningSimulator) -> None:
    oracle = list(big.journal.all_rows())
    after = oracle[-10][4]
    rows = await call(big.url, "changelog_since_serial", after)
    assert [tuple(row) for row in rows] == oracle[-9:]


async def test_paging_from_the_last_serial_received_reads_every_row_once() -> None:
    async with serving(prefill=3_500, page_size=1_000) as sim:
        received: list[Row] = []
        serial = 0
        while page := await call(sim.url, "changelog_since_serial", serial):
            assert len(page) <= 1_000
            received += [tuple(row) for row in page]
            serial = page[-1][4]
        assert received == list(sim.journal.all_rows())


def test_serials_ascend_with_gaps(first_page: list[list[Any]]) -> None:
    serials = [row[4] for row in first_page]
    steps = [b - a for a, b in itertools.pairwise(serials)]
    assert min(steps) >= 1
    assert any(step > 1 for step in steps)


def test_rows_have_five_fields_and_nil_versions_for_project_actions(
    first_page: list[list[Any]],
) -> None:
    rows = first_page
    for name, version, timestamp, action, serial in rows:
        assert version is None or isinstance(version, str)
        assert [type(name), type(timestamp), type(action), type(serial)] == [str, int, str, int]
    assert {row[1] for row in rows if row[3] == "create"} == {None}
    assert None not in {row[1] for row in rows if row[3] == "new release"}


async def test_non_ascii_arrives_as_a_literal_character_reference() -> None:
    async with serving(prefill=20_000, page_size=20_000) as sim:
        raw = await http(sim.url, request_body("changelog_since_serial", 0))
        assert re.search(rb"&amp;#\d+;", raw.body)
        rows = await call(sim.url, "changelog_since_serial", 0)
        escaped = [row[3] for row in rows if re.search(r"&#\d+;", row[3])]
        assert escaped
        assert all(row[3].isascii() and row[3].isprintable() for row in rows)


async def test_list_packages_with_serial_agrees_with_the_journal(big: RunningSimulator) -> None:
    listed: dict[str, int] = await call(big.url, "list_packages_with_serial")
    last: dict[str, tuple[str, int]] = {}
    for name, _, _, action, serial in big.journal.all_rows():
        if not name.startswith("user:") and "alternate repository" not in action:
            last[normalize(name)] = (action, serial)
    first = big.journal.since(0, 1)[0][4]
    for name, serial in listed.items():
        if normalize(name) in last:
            assert serial == last[normalize(name)][1]
        else:
            assert serial < first
    removed = [key for key, (action, _) in last.items() if action == "remove project"]
    assert removed
    assert not {normalize(name) for name in listed} & set(removed)


async def test_a_fifty_thousand_row_page_is_served_in_well_under_a_second(
    big: RunningSimulator,
) -> None:
    started = time.perf_counter()
    answer = await http(big.url, request_body("changelog_since_serial", 0))
    elapsed = time.perf_counter() - started
    assert answer.body.count(b"</data></array></value>\n") == 50_001
    assert elapsed < 1.0


# --- refusals ------------------------------------------------------------------------------


async def test_get_is_answered_with_an_application_error_fault() -> None:
    async with serving() as sim:
        answer = await http(sim.url, verb="GET")
    assert answer.status == 200
    fault = fault_in(answer.body)
    assert (fault.faultCode, fault.faultString) == (-32500, "application error")


async def test_a_post_that_is_not_text_xml_is_answered_with_an_application_error() -> None:
    async with serving() as sim:
        answer = await http(sim.url, LAST_SERIAL, {"Content-Type": "text/plain"})
    assert fault_in(answer.body).faultCode == -32500


async def test_an_unknown_method_is_fault_32601() -> None:
    async with serving() as sim:
        assert (await fault_of(sim.url, "package_releases", "requests")).faultCode == -32601


async def test_a_string_serial_is_fault_32602() -> None:
    async with serving() as sim:
        fault = await fault_of(sim.url, "changelog_since_serial", "5")
    assert fault.faultCode == -32602
    assert fault.faultString == "client error; serial: Input should be a valid integer"


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("changelog_since_serial", ()),
        ("changelog_since_serial", (1, 2)),
        ("changelog_last_serial", (1,)),
        ("list_packages_with_serial", ("x",)),
    ],
)
async def test_a_missing_or_extra_argument_is_fault_32602(
    method: str, params: tuple[Any, ...]
) -> None:
    async with serving() as sim:
        assert (await fault_of(sim.url, method, *params)).faultCode == -32602


@pytest.mark.parametrize(
    "body",
    [
        b"hello",
        b"<notrpc/>",
        b"<?xml version='1.0'?><methodCall><methodName>x</methodName><params><param>"
        b"<value><int>abc</int></value></param></params></methodCall>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><methodCall/>',
    ],
)
async def test_a_body_that_is_not_xmlrpc_is_fault_32700(body: bytes) -> None:
    async with serving() as sim:
        answer = await http(sim.url, body)
    assert fault_in(answer.body).faultCode == -32700


# --- rate limit ----------------------------------------------------------------------------


async def test_a_throttled_call_is_http_200_with_a_fault_saying_when_to_retry() -> None:
    async with serving(rate_limit=3, rate_limit_window=30) as sim:
        for _ in range(3):
            await call(sim.url, "changelog_last_serial")
        answer = await http(sim.url, LAST_SERIAL)
        assert answer.status == 200
        fault = fault_in(answer.body)
        assert fault.faultCode == -32500
        match = THROTTLE_RE.match(fault.faultString)
        assert match is not None, fault.faultString
        assert 1 <= int(match["seconds"]) <= 30
        assert (await state(sim.url))["throttled"] == 1


async def test_rate_limit_headers_advise_the_quota_and_what_remains() -> None:
    async with serving(rate_limit=3, rate_limit_window=30) as sim:
        answers = [await http(sim.url, LAST_SERIAL) for _ in range(4)]
    assert {a.headers["RateLimit-Policy"] for a in answers} == {'"pypi-xmlrpc";q=3;w=30'}
    remaining = [re.findall(r";r=(\d+);t=\d+$", a.headers["RateLimit"]) for a in answers]
    assert remaining == [["2"], ["1"], ["0"], ["0"]]


async def test_every_method_counts_against_the_limit() -> None:
    async with serving(rate_limit=3, rate_limit_window=30) as sim:
        await call(sim.url, "changelog_last_serial")
        await call(sim.url, "changelog_since_serial", 0)
        await call(sim.url, "list_packages_with_serial")
        fault = await fault_of(sim.url, "changelog_since_serial", 0)
    assert THROTTLE_RE.match(fault.faultString)


async def test_the_limit_window_moves_on() -> None:
    async with serving(rate_limit=2, rate_limit_window=1.0) as sim:
        await call(sim.url, "changelog_last_serial")
        await call(sim.url, "changelog_last_serial")
        await fault_of(sim.url, "changelog_last_serial")
        await asyncio.sleep(1.1)
        assert await call(sim.url, "changelog_last_serial") == sim.journal.last_serial


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503])
async def test_an_http_error_fault_answers_with_an_html_page(status: int) -> None:
    async with serving() as sim:
        await inject(sim.url, str(status))
        answer = await http(sim.url, LAST_SERIAL)
    assert (answer.status, answer.content_type) == (status, "text/html")
    assert answer.body.startswith(b"<html>")


async def test_a_timeout_fault_never_answers() -> None:
    async with serving() as sim:
        await inject(sim.url, "timeout")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(asyncio.TimeoutError):
                await session.post(
                    sim.url,
                    data=LAST_SERIAL,
                    headers=XML,
                    timeout=aiohttp.ClientTimeout(total=0.5),
                )
        assert await call(sim.url, "changelog_last_serial") == sim.journal.last_serial


async def test_a_truncate_fault_cuts_the_body_short() -> None:
    async with serving() as sim:
        await inject(sim.url, "truncate")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                sim.url, data=request_body("changelog_since_serial", 0), headers=XML
            ) as response,
        ):
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()


async def test_a_malformed_fault_is_a_200_that_does_not_parse() -> None:
    async with serving() as sim:
        await inject(sim.url, "malformed")
        answer = await http(sim.url, LAST_SERIAL)
    assert answer.status == 200
    with pytest.raises(ExpatError):
        xmlrpc.client.loads(answer.body)


async def test_a_reset_fault_drops_the_connection_without_an_answer() -> None:
    async with serving() as sim:
        await inject(sim.url, "reset")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.post(sim.url, data=LAST_SERIAL, headers=XML)


async def test_a_forced_throttle_says_the_requested_retry_after() -> None:
    async with serving() as sim:
        await inject(sim.url, "throttle", retry_after=7)
        fault = await fault_of(sim.url, "changelog_last_serial")
        assert THROTTLE_RE.match(fault.faultString)["seconds"] == "7"  # type: ignore[index]
        assert (await state(sim.url))["throttled"] == 1


async def test_a_forced_fault_carries_its_code_and_message() -> None:
    async with serving() as sim:
        await inject(sim.url, "fault", code=-32500, message="ValueError: bad serial")
        fault = await fault_of(sim.url, "changelog_last_serial")
    assert (fault.faultCode, fault.faultString) == (-32500, "ValueError: bad serial")


async def test_queued_faults_apply_to_the_next_calls_only() -> None:
    async with serving() as sim:
        await inject(sim.url, "fault", count=2)
        await fault_of(sim.url, "changelog_last_serial")
        await fault_of(sim.url, "changelog_last_serial")
        assert await call(sim.url, "changelog_last_serial") == sim.journal.last_serial


async def test_fault_rate_one_fails_every_call_with_the_listed_kinds() -> None:
    async with serving(fault_rate=1.0, faults=("503",)) as sim:
        statuses = [(await http(sim.url, LAST_SERIAL)).status for _ in range(3)]
        assert statuses == [503, 503, 503]
        assert (await state(sim.url))["faults"] == {"503": 3}


async def test_the_control_api_refuses_an_unknown_fault_kind() -> None:
    async with serving() as sim:
        answer = await http(control(sim.url, "faults"), b'{"kind": "gremlins"}', {})
    assert answer.status == 400


# --- control API and live rows -------------------------------------------------------------


async def test_state_counts_rows_calls_and_throttled() -> None:
    async with serving(rate_limit=1) as sim:
        await call(sim.url, "changelog_last_serial")
        await fault_of(sim.url, "changelog_last_serial")
        seen = await state(sim.url)
    assert seen["rows"] == 500
    assert seen["last_serial"] == sim.journal.last_serial
    assert (seen["calls"], seen["throttled"]) == (2, 1)


async def test_append_adds_rows_at_once() -> None:
    async with serving() as sim:
        before = sim.journal.last_serial
        answer = await post_control(sim.url, "append", {"rows": 25})
        rows = await call(sim.url, "changelog_since_serial", before)
    assert answer["added"] == 25
    assert len(rows) == 25
    assert rows[-1][4] == answer["last_serial"]


async def test_live_rows_follow_the_rate_set_through_the_control_api() -> None:
    async with serving() as sim:
        await post_control(sim.url, "rate", {"rate": 500})
        await until(lambda: sim.journal.rows >= 550)
        await post_control(sim.url, "rate", {"rate": 0})
        settled = sim.journal.rows
        await asyncio.sleep(0.3)
        assert sim.journal.rows == settled


async def test_live_rows_stop_after_the_given_total() -> None:
    async with serving(rate=1000, stop_after_rows=560) as sim:
        await until(lambda: sim.journal.rows >= 560)
        await asyncio.sleep(0.2)
        assert sim.journal.rows == 560


# --- the journal's contents ----------------------------------------------------------------


def rows_of(seed: int = 7, first_serial: int = 40_000_000, n: int = 5_000) -> list[Row]:
    journal = Journal(seed=seed, first_serial=first_serial)
    journal.append(n)
    return list(journal.all_rows())


def test_the_same_seed_gives_the_same_journal() -> None:
    assert rows_of(seed=3) == rows_of(seed=3)


def test_another_seed_gives_another_journal() -> None:
    assert rows_of(seed=3) != rows_of(seed=4)


def test_appends_split_anywhere_give_the_same_rows() -> None:
    split = Journal(seed=7)
    for n in (1, 2, 3, 997, 1, 3_996):
        split.append(n)
    while split.rows < 6_000:
        split.append_burst()
    whole = Journal(seed=7)
    whole.append(split.rows)
    assert list(split.all_rows()) == list(whole.all_rows())


def test_a_first_upload_is_written_in_one_second() -> None:
    rows = rows_of(n=2_000)
    create = next(i for i, row in enumerate(rows) if row[3] == "create")
    upload = rows[create : create + 4]
    assert upload[1][3].startswith("add Owner ")
    assert upload[2][3] == "new release"
    assert upload[3][3].startswith("add source file ")
    assert len({row[2] for row in upload}) == 1


def test_timestamps_sometimes_go_backwards_against_serial_order() -> None:
    rows = rows_of(n=20_000)
    assert any(b[2] < a[2] for a, b in itertools.pairwise(rows))


def test_timestamps_follow_the_journal_volume_figures() -> None:
    assert era_timestamp(2_168_628) == 1_465_998_124  # June 2016, a real row
    assert era_timestamp(24_891_358) == 1_725_534_675  # Sept 2024, a real row
    assert 1_790_000_000 < era_timestamp(41_000_000) < 1_798_761_600  # late 2026
    assert era_timestamp(1) < 1_041_379_200  # 2002


def test_old_serials_get_legacy_texts_and_dates() -> None:
    rows = rows_of(first_serial=2_000_000, n=10_000)
    actions = {row[3] for row in rows}
    assert "update classifiers" in actions
    assert not actions & {"remove release", "remove project", "yank release"}
    assert all(row[2] < 1_523_836_800 for row in rows)  # before Warehouse, April 2018


def test_the_unknown_rate_controls_unknown_texts() -> None:
    none = Journal(seed=1, unknown_rate=0.0)
    none.append(5_000)
    many = Journal(seed=1, unknown_rate=0.2)
    many.append(5_000)
    assert not [row for row in none.all_rows() if row[3].startswith(("frobnicate", "transmogr"))]
    assert (
        len([row for row in many.all_rows() if row[3].startswith(("frobnicate", "transmo"))]) > 300
    )


# The catalog of JOURNAL.md: (label, action pattern, version rule, name rule).
NIL, SET, EMPTY = "nil", "set", "empty"
CATALOG: list[tuple[str, str, str | None, Callable[[str], bool] | None]] = [
    ("create", r"create", NIL, None),
    ("new release", r"new release", SET, None),
    ("add sdist", r"add source file \S+\.tar\.gz", SET, None),
    ("add pure wheel", r"add py3 file \S+-py3-none-any\.whl", SET, None),
    ("add py2.py3 wheel", r"add py2\.py3 file \S+\.whl", SET, None),
    ("add cp wheel", r"add cp3\d+ file \S+-cp3\d+-cp3\d+-manylinux\S+\.whl", SET, None),
    ("add file, unchecked label", r"add (3\.7|any) file \S+", SET, None),
    ("add egg", r"add 2\.\d file \S+\.egg", SET, None),
    ("remove file", r"remove file \S+", SET, None),
    ("remove release", r"remove release", SET, None),
    ("remove project", r"remove project", NIL, None),
    ("yank release", r"yank release", SET, None),
    ("unyank release", r"unyank release", SET, None),
    ("add role to a user", r"add (Owner|Maintainer) [^ ]+", NIL, None),
    ("add role to a team with spaces", r"add (Owner|Maintainer) \S+( \S+)+", NIL, None),
    ("creator's grant", r"add Owner \S+", NIL, None),
    ("remove role", r"remove (Owner|Maintainer) .+", NIL, None),
    ("change role", r"change (Owner|Maintainer) .+ to (Owner|Maintainer)", NIL, None),
    (
        "change role of a team",
        r"change (Owner|Maintainer) \S+( \S+)+ to (Owner|Maintainer)",
        NIL,
        None,
    ),
    ("invite", r"invite (Owner|Maintainer) \S+", NIL, None),
    ("accepted", r"accepted (Owner|Maintainer) \S+", NIL, None),
    ("revoke_invite", r"revoke_invite (Owner|Maintainer) \S+", NIL, None),
    ("project quarantined", r"project quarantined", NIL, None),
    ("project quarantine cleared", r"project quarantine cleared", NIL, None),
    ("release quarantined", r"release quarantined", SET, None),
    ("release quarantine cleared", r"release quarantine cleared", SET, None),
    ("legacy remove of a release", r"remove", SET, None),
    ("legacy remove of a project", r"remove", NIL, None),
    ("docdestroy", r"docdestroy", NIL, None),
    ("nuke user", r"nuke user", NIL, lambda name: name.startswith("user:")),
    ("alternate repository added", r"add alternate repository \S+ to project \S+", NIL, None),
    (
        "alternate repository deleted",
        r"deleted alternate repository \S+ from project \S+",
        NIL,
        None,
    ),
    ("update classifiers", r"update classifiers", SET, None),
    ("update of several fields", r"update [a-z_]+(, [a-z_]+)+", SET, None),
    ("bare update", r"update", SET, None),
    ("rename", r"rename from \S+", NIL, None),
    ("docupdate", r"docupdate", NIL, None),
    ("add url", r"add url http://\S+", SET, None),
    ("remove url", r"remove url http://\S+", SET, None),
    ("update hosting_mode", r"update hosting_mode", NIL, None),
    ("keyrotate", r"keyrotate ", EMPTY, lambda name: name == ""),
    ("non-ASCII as &#NNN;", r".*&#\d{3,};.*", NIL, None),
    ("unknown text", r"frobnicate.*|transmogrify.*", None, None),
]


@pytest.fixture(scope="module")
def corpus() -> list[Row]:
    """Rows from each era: legacy PyPI, Warehouse before and around Sept 2024, and 2026."""
    rows: list[Row] = []
    for first_serial in (2_000_000, 10_000_000, 24_900_000, 38_000_000):
        journal = Journal(seed=11, first_serial=first_serial, unknown_rate=0.002)
        journal.append(30_000)
        rows += journal.all_rows()
    return rows


@pytest.mark.parametrize(
    ("label", "pattern", "version", "name_rule"), CATALOG, ids=[c[0] for c in CATALOG]
)
def test_every_catalog_form_appears_in_a_corpus_across_eras(
    corpus: list[Row],
    label: str,
    pattern: str,
    version: str | None,
    name_rule: Callable[[str], bool] | None,
) -> None:
    compiled = re.compile(pattern)

    def fits(row: Row) -> bool:
        if not compiled.fullmatch(row[3]):
            return False
        if version == NIL and row[1] is not None:
            return False
        if version == SET and not row[1]:
            return False
        if version == EMPTY and row[1] != "":
            return False
        return name_rule is None or name_rule(row[0])

    assert any(fits(row) for row in corpus), f"no row for {label}"


def test_one_project_appears_under_several_display_names(corpus: list[Row]) -> None:
    names: dict[str, set[str]] = defaultdict(set)
    for name, _, _, action, _ in corpus:
        if action == "new release":
            names[normalize(name)].add(name)
    assert any(len(spellings) > 1 for spellings in names.values())


def test_rows_carry_no_control_characters(corpus: list[Row]) -> None:
    assert all(row[3].isprintable() and row[0].isprintable() for row in corpus)


def test_legacy_texts_stay_in_the_legacy_era(corpus: list[Row]) -> None:
    legacy = re.compile(r"update.*|docupdate|rename from .*|(add|remove) url .*|keyrotate |remove")
    assert all(row[4] < LEGACY_END for row in corpus if legacy.fullmatch(row[3]))


# --- settings and serve --------------------------------------------------------------------


def parse(argv: list[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser, SIMULATE_FLAGS, environ or {})
    return parser.parse_args(argv)


def test_flags_and_variables_become_settings() -> None:
    settings = simulator_settings(
        parse(["--port", "0", "--faults", "503,reset"], {"PYPI_BRIDGE_SEED": "5"})
    )
    assert (settings.port, settings.seed, settings.faults) == (0, 5, ("503", "reset"))
    assert (settings.page_size, settings.rate_limit, settings.rate_limit_window) == (
        50_000,
        3_600,
        3_600.0,
    )


def test_stop_after_rows_below_the_prefill_is_refused() -> None:
    with pytest.raises(ConfigError):
        simulator_settings(parse(["--prefill", "10", "--stop-after-rows", "5"]))


def test_an_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="502"):
        fault_kinds("502,gremlins")


async def test_serve_reports_its_url_and_stops_when_cancelled() -> None:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(dataclasses.replace(BASE, prefill=10), ready.set_result))
    try:
        url = await asyncio.wait_for(ready, 10)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/pypi", url)
        assert isinstance(await call(url, "changelog_last_serial"), int)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
