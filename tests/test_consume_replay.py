"""Replay, serial order and the project filter (issue 12, items 3-5), against real brokers.

One 200,000-row journal is published once for the module by a real bridge writing three
partitions per topic on the embedded broker, killed with SIGKILL twice during the backfill and
restarted. While that happens, `pypi-bridge consume --ordered` reads all types from the start
and `pypi-bridge consume --until-caught-up` reads one type. The tests then replay the topics
from serials and times, in serial order for random sets of types, and for a few projects, and
compare with the simulator's journal as the bridge's parser reads it. One test does the same on
Apache Kafka in transactional mode.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import re
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from bridge.broker import EmbeddedBroker
from bridge.config import KafkaSettings
from bridge.consumer import EventStream, _Merge, parse_time, read_watermark
from bridge.errors import ConfigError
from bridge.events import EVENT_TYPES, Event
from bridge.parse import parse_row
from bridge.routing import partition_for, topic_name
from bridge.watermark import Watermark
from tests.realkafka import KafkaCluster
from tests.support import Process, bridge_command, child_env, run_args, start, start_simulator

ROWS = 200_000
SEED = 1212
PARTITIONS = 3
#: Seconds a finished stream is watched for an event it should not deliver.
QUIET = 1.0


@dataclass
class Journal:
    """A published journal: where it is, and what the parser makes of each of its rows."""

    bootstrap: str
    prefix: str
    events: list[Event]
    #: Output of `consume --ordered` (all types) run during the backfill with its kills.
    ordered_during_kills: list[int] = field(default_factory=list)
    #: Output of `consume --until-caught-up` started mid-backfill, and the serial it aimed at.
    caught_up: list[int] = field(default_factory=list)
    caught_up_serial: int = -1
    caught_up_type: str = "file.added"

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap)

    def of(self, types: list[str]) -> list[Event]:
        chosen = set(types)
        return [e for e in self.events if e.type in chosen]


def partition_of(event: Event) -> int:
    return partition_for(event.project_normalized, PARTITIONS)


def first_per_partition(events: list[Event]) -> dict[tuple[str, int], int]:
    """(type, partition) -> serial of the first event there, in the order given."""
    found: dict[tuple[str, int], int] = {}
    for event in events:
        found.setdefault((event.type, partition_of(event)), event.serial)
    return found


async def _wait_for_watermark(bootstrap: str, prefix: str, within: float = 60.0) -> None:
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if await read_watermark(kafka, prefix) is not None:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no watermark on {prefix}.watermark within {within} s")


async def _wait_for_covered(
    bootstrap: str, prefix: str, event_type: str, within: float = 120.0
) -> None:
    """Until the newest watermark covers at least one committed event of `event_type`."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        stream = EventStream(
            kafka, [event_type], prefix=prefix, from_beginning=True, until_caught_up=True
        )
        async with stream:
            async for _ in stream:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {event_type} event under a watermark of {prefix} within {within} s")


async def _consume_process(bootstrap: str, prefix: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *bridge_command(
            "consume", "--bootstrap-servers", bootstrap, "--topic-prefix", prefix, *args
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )


async def _collect(process: asyncio.subprocess.Process, within: float) -> tuple[int, str, str]:
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"consume did not exit within {within} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _serials(out: str) -> list[int]:
    return [int(orjson.loads(line)["serial"]) for line in out.splitlines()]


async def _wait_line(process: Process, text: str, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while text not in process.output():
        assert process.popen.poll() is None, process.output()[-3000:]
        assert loop.time() < deadline, f"no {text!r}:\n{process.output()[-3000:]}"
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def journal(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Journal:
    log_dir = tmp_path_factory.mktemp("replay")
    started: list[Process] = []
    consumers: list[asyncio.subprocess.Process] = []
    # Small pages with a little latency stretch the backfill over the kills (10 s or more).
    sim = start_simulator(
        log_dir,
        "--prefill",
        str(ROWS),
        "--rate",
        "0",
        "--page-size",
        "2000",
        "--latency",
        "0.1",
        "--seed",
        str(SEED),
    )
    # The oracle is read beside the backfill (it is 17 s of paging and parsing on its own).
    reading = asyncio.ensure_future(asyncio.to_thread(sim.rows))
    try:
        last = sim.state()["last_serial"]
        prefix = f"replay-{uuid.uuid4().hex[:8]}"
        common = (
            *("--start-serial", "0", "--partitions", str(PARTITIONS), "--batch-size", "5000"),
            # A 2 s session: each restart waits that long for the killed member to leave.
            *("--leader-session-timeout", "2"),
        )
        args = run_args(sim, broker.bootstrap_servers, prefix, *common)
        bridge = start(args, log_dir / "bridge-1.log")
        started.append(bridge)
        await _wait_for_watermark(broker.bootstrap_servers, prefix)
        ordered = await _consume_process(
            broker.bootstrap_servers,
            prefix,
            "--ordered",
            "--from-beginning",
            "--max-events",
            str(ROWS),
        )
        consumers.append(ordered)
        await asyncio.sleep(1.5)
        bridge.stop(signal.SIGKILL)
        bridge = start(args, log_dir / "bridge-2.log")
        started.append(bridge)
        await _wait_line(bridge, "is now the leader", 60)
        caught_up_type = "file.added"
        # A fixed pause is not enough on a busy machine: the first watermarks may cover no
        # upload yet (the journal's early years have none), and the test would prove nothing.
        await _wait_for_covered(broker.bootstrap_servers, prefix, caught_up_type)
        until = await _consume_process(
            broker.bootstrap_servers,
            prefix,
            "--until-caught-up",
            "--from-beginning",
            "--type",
            caught_up_type,
            "--log-level",
            "INFO",
        )
        consumers.append(until)
        await asyncio.sleep(2.5)
        bridge.stop(signal.SIGKILL)
        bridge = start([*args, "--stop-at-serial", str(last)], log_dir / "bridge-3.log")
        started.append(bridge)
        assert await asyncio.to_thread(bridge.wait, 300) == 0, bridge.output()[-3000:]
        code, out, err = await _collect(until, 300)
        assert code == 0, err[-3000:]
        aimed = re.search(r"until serial (\d+)", err)
        assert aimed is not None, err[-3000:]
        code_o, out_o, err_o = await _collect(ordered, 300)
        assert code_o == 0, err_o[-3000:]
        rows = await reading
        assert len(rows) == ROWS
        assert rows[-1][4] == last
    finally:
        reading.cancel()  # a no-op once read; else the thread's answer is not wanted
        sim.stop()
        for process in started:
            process.stop(signal.SIGKILL)
        for child in consumers:
            if child.returncode is None:
                child.kill()
                await child.wait()
    return Journal(
        broker.bootstrap_servers,
        prefix,
        [parse_row(row) for row in rows],
        ordered_during_kills=_serials(out_o),
        caught_up=_serials(out),
        caught_up_serial=int(aimed.group(1)),
        caught_up_type=caught_up_type,
    )


async def take_all(stream: EventStream, limit: float = 120.0) -> list[Event]:
    """Every event of a stream that finishes (`until_caught_up`)."""
    got: list[Event] = []

    async def read() -> None:
        async for event in stream:
            got.append(event)

    await asyncio.wait_for(read(), limit)
    assert stream.finished
    return got


# --- unit: no broker ----------------------------------------------------------------------------


def test_times_parse_as_rfc_3339_or_posix_seconds() -> None:
    assert parse_time("2026-12-03T12:00:00Z") == 1796299200.0
    assert parse_time("2026-12-03T14:00:00+02:00") == 1796299200.0
    assert parse_time("1796299200") == 1796299200.0
    for bad in ("yesterday", "2026-12-03T12:00:00", "inf"):
        with pytest.raises(ValueError, match="expected"):
            parse_time(bad)


def test_two_starting_points_are_a_config_error() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    with pytest.raises(ConfigError, match="--from-serial"):
        EventStream(kafka, from_serial=5, from_time=10.0)
    with pytest.raises(ConfigError, match="--from-beginning"):
        EventStream(kafka, from_serial=5, from_beginning=True)


def test_project_names_are_normalized() -> None:
    stream = EventStream(KafkaSettings(bootstrap_servers="127.0.0.1:9"), projects=["Foo_Bar.baz"])
    assert stream.projects == ["foo-bar-baz"]
    assert stream.manual


def _record(topic: str, partition: int, offset: int, serial: int) -> Any:
    from aiokafka import ConsumerRecord

    return ConsumerRecord(
        topic, partition, offset, 0, 0, b"k", b"{}", None, 1, 2, [("ce_id", str(serial).encode())]
    )


def test_the_merge_holds_an_event_back_until_a_watermark_covers_the_empty_partitions() -> None:
    a, b = TopicPartition("p.x", 0), TopicPartition("p.y", 0)
    merge = _Merge([a, b])
    merge.add(a, _record("p.x", 0, 0, 10), 10)
    merge.add(a, _record("p.x", 0, 1, 30), 30)
    merge.positions.update({a: 2, b: 0})
    merge.refresh()
    assert merge.pop() is None, "b may still deliver something before serial 10"
    merge.add_watermark(Watermark(serial=20, timestamp=None, offsets={"p.y": [1]}))
    merge.refresh()
    assert merge.pop() is None, "b is not read up to the watermark's offset yet"
    merge.add(b, _record("p.y", 0, 0, 15), 15)
    merge.positions[b] = 1
    merge.refresh()
    released = [merge.pop(), merge.pop()]
    assert [r[2].offset for r in released if r] == [0, 0]
    assert [r[0] for r in released if r] == [a, b]
    # b is empty again, read to offset 1: the watermark proves it done up to serial 20, not 30.
    assert merge.pop() is None
    merge.add_watermark(Watermark(serial=40, timestamp=None, offsets={"p.y": [1], "p.x": [2]}))
    merge.refresh()
    popped = merge.pop()
    assert popped is not None
    assert popped[2].offset == 1


def test_partition_for_is_the_partitioners_choice() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    for name in ("numpy", "django", "a", "zope-interface", "é"):
        key = name.encode()
        assert partition_for(name, 3) == partitioner(key, [0, 1, 2], [0, 1, 2])
        assert partition_for(key, 7) == partitioner(key, list(range(7)), list(range(7)))


# --- replay from a serial or a time ---------------------------------------------------------


async def _first_events(
    journal: Journal, types: list[str], expected: dict[tuple[str, int], int], **start: Any
) -> tuple[dict[tuple[str, int], int], int]:
    """(type, partition) -> serial of the first event each partition delivers, search rounds.

    Reads until every partition in `expected` has delivered one (or nothing comes for 30 s:
    ten streams at once on a busy machine are slow, not stuck).
    """
    async with EventStream(journal.kafka, types, prefix=journal.prefix, **start) as stream:
        firsts: dict[tuple[str, int], int] = {}
        while not set(expected) <= set(firsts):
            event = await stream.get(30)
            if event is None:
                break
            firsts.setdefault((event.type, partition_of(event)), event.serial)
        return firsts, stream.search_rounds


async def test_from_serial_starts_each_partition_at_its_first_larger_serial(
    journal: Journal,
) -> None:
    rng = random.Random(7)
    serials = sorted(rng.sample([e.serial for e in journal.events], 100))
    # Types of a few thousand events: the embedded broker's fetch costs grow with the distance
    # from a partition's end, and a hundred searches should take seconds, not minutes.
    types = ["role.invited", "release.yanked", "file.removed"]
    chosen = journal.of(types)
    # A partition of these types holds at most this many records: the search's bound.
    rounds_bound = math.ceil(math.log2(len(chosen))) + 2

    async def check(after: int) -> None:
        expected = first_per_partition([e for e in chosen if e.serial > after])
        got, rounds = await _first_events(journal, types, expected, from_serial=after)
        assert got == expected, f"from serial {after}"
        assert rounds <= rounds_bound, "the start was not found by a binary search"
        # Per type, the first delivered is the type's first event past the serial.
        for type_name in types:
            mine = [s for (t, _), s in got.items() if t == type_name]
            later = [e.serial for e in chosen if e.type == type_name and e.serial > after]
            assert min(mine, default=None) == (later[0] if later else None)

    for i in range(0, len(serials), 10):
        await asyncio.gather(*(check(s) for s in serials[i : i + 10]))


async def test_from_time_starts_each_partition_at_its_first_event_at_or_after_the_time(
    journal: Journal,
) -> None:
    rng = random.Random(8)
    types = ["file.added", "release.yanked"]
    chosen = journal.of(types)
    for when in rng.sample([e.timestamp for e in journal.events], 5):
        expected: dict[tuple[str, int], int] = {}
        for event in chosen:
            if event.timestamp >= when:
                expected.setdefault((event.type, partition_of(event)), event.serial)
        got, rounds = await _first_events(journal, types, expected, from_time=float(when))
        assert got == expected, f"from time {when}"
        assert 0 < rounds <= math.ceil(math.log2(len(chosen))) + 2


async def test_from_serial_past_the_end_delivers_nothing(journal: Journal) -> None:
    last = journal.events[-1].serial
    stream = EventStream(
        journal.kafka, ["*"], prefix=journal.prefix, from_serial=last, until_caught_up=True
    )
    async with stream:
        assert await take_all(stream) == []


# --- until caught up -----------------------------------------------------------------------


def test_until_caught_up_started_mid_backfill_printed_exactly_up_to_its_watermark(
    journal: Journal,
) -> None:
    expected = [
        e.serial
        for e in journal.of([journal.caught_up_type])
        if e.serial <= journal.caught_up_serial
    ]
    assert 0 < len(expected) < len(journal.of([journal.caught_up_type])), "not mid-backfill"
    assert sorted(journal.caught_up) == expected


async def test_until_caught_up_stops_at_the_newest_watermark(journal: Journal) -> None:
    newest = await read_watermark(journal.kafka, journal.prefix)
    assert newest is not None
    assert newest.serial == journal.events[-1].serial
    after = journal.events[len(journal.events) // 2].serial
    types = ["release.created", "role.*"]
    stream = EventStream(
        journal.kafka, types, prefix=journal.prefix, from_serial=after, until_caught_up=True
    )
    async with stream:
        got = await take_all(stream)
        assert stream.until_serial == newest.serial
    expected = [e for e in journal.of(stream.types) if after < e.serial <= newest.serial]
    assert sorted(e.serial for e in got) == [e.serial for e in expected]
    assert sorted(got, key=lambda e: e.serial) == expected


# --- serial order across types ---------------------------------------------------------------


def test_ordered_consume_during_kills_and_restarts_printed_the_whole_journal_in_order(
    journal: Journal,
) -> None:
    assert journal.ordered_during_kills == [e.serial for e in journal.events]


async def test_ordered_streams_are_the_journal_filtered_by_type(journal: Journal) -> None:
    rng = random.Random(9)
    names = sorted(EVENT_TYPES)
    for _ in range(3):
        types = rng.sample(names, rng.randint(2, 8))
        stream = EventStream(
            journal.kafka,
            types,
            prefix=journal.prefix,
            ordered=True,
            from_beginning=True,
            until_caught_up=True,
        )
        async with stream:
            got = await take_all(stream, 300)
        expected = journal.of(types)
        assert expected, types
        serials = [e.serial for e in got]
        assert all(a < b for a, b in itertools.pairwise(serials)), types
        assert got == expected, types


async def test_ordered_from_a_serial_for_one_project_until_caught_up_via_the_cli(
    journal: Journal,
) -> None:
    counts: dict[str, int] = {}
    for event in journal.events:
        counts[event.project_normalized] = counts.get(event.project_normalized, 0) + 1
    busy = max(counts, key=lambda name: counts[name])
    after = journal.events[len(journal.events) // 3].serial
    spelled = busy.upper().replace("-", "_")
    process = await _consume_process(
        journal.bootstrap,
        journal.prefix,
        "--ordered",
        "--from-serial",
        str(after),
        "--project",
        spelled,
        "--until-caught-up",
    )
    code, out, err = await _collect(process, 120)
    assert code == 0, err
    expected = [
        e.serial for e in journal.events if e.project_normalized == busy and e.serial > after
    ]
    assert expected
    assert _serials(out) == expected


# --- the project filter --------------------------------------------------------------------


async def test_the_project_filter_reads_only_its_partitions_and_yields_only_its_events(
    journal: Journal,
) -> None:
    names = sorted({e.project_normalized for e in journal.events})
    rng = random.Random(10)
    chosen = rng.sample(names, 2)
    spellings = [chosen[0].upper(), chosen[1].replace("-", ".")]
    types = ["release.*", "file.added"]
    stream = EventStream(
        journal.kafka,
        types,
        prefix=journal.prefix,
        projects=spellings,
        from_beginning=True,
        until_caught_up=True,
    )
    async with stream:
        got = await take_all(stream)
    wanted = {partition_for(name, PARTITIONS) for name in chosen}
    assert stream.assignment == sorted(
        TopicPartition(topic_name(journal.prefix, t), p) for t in stream.types for p in wanted
    )
    expected = [e for e in journal.of(stream.types) if e.project_normalized in chosen]
    assert expected
    assert sorted(got, key=lambda e: e.serial) == expected


# --- groups ------------------------------------------------------------------------------------


async def test_a_group_resumes_an_assigned_stream_where_it_stopped(journal: Journal) -> None:
    group = f"replay-{uuid.uuid4().hex[:8]}"
    after = journal.events[-3000].serial
    types = ["file.added", "release.created"]
    first: list[Event] = []
    stream = EventStream(
        journal.kafka, types, prefix=journal.prefix, group=group, from_serial=after, ordered=True
    )
    async with stream:
        for _ in range(50):
            event = await stream.get(10)
            assert event is not None
            first.append(event)
    # The same command again: the group's position wins where it has one, so the first run's
    # events do not come again.
    stream = EventStream(
        journal.kafka,
        types,
        prefix=journal.prefix,
        group=group,
        from_serial=after,
        ordered=True,
        until_caught_up=True,
    )
    async with stream:
        second = await take_all(stream)
    expected = [e for e in journal.of(types) if e.serial > after]
    assert first + second == expected


# --- Apache Kafka, transactional ---------------------------------------------------------------


async def test_replay_order_and_projects_on_apache_kafka_in_transactional_mode(
    kafka: KafkaCluster, tmp_path: Path
) -> None:
    sim = start_simulator(tmp_path, "--prefill", "6000", "--rate", "0", "--seed", str(SEED))
    try:
        rows = await asyncio.to_thread(sim.rows)
        prefix = f"replay-kafka-{uuid.uuid4().hex[:8]}"
        bridge = start(
            run_args(
                sim,
                kafka.bootstrap_servers,
                prefix,
                "--start-serial",
                "0",
                "--partitions",
                str(PARTITIONS),
                "--batch-size",
                "500",
                "--delivery",
                "transactional",
                "--stop-at-serial",
                str(rows[-1][4]),
            ),
            tmp_path / "bridge.log",
        )
        assert await asyncio.to_thread(bridge.wait, 300) == 0, bridge.output()[-3000:]
    finally:
        sim.stop()
    events = [parse_row(row) for row in rows]
    settings = KafkaSettings(bootstrap_servers=kafka.bootstrap_servers)
    published = Journal(kafka.bootstrap_servers, prefix, events)
    types = ["release.created", "file.added", "role.added"]
    chosen = published.of(types)
    rng = random.Random(11)
    for after in rng.sample([e.serial for e in events], 10):
        expected = first_per_partition([e for e in chosen if e.serial > after])
        got, _ = await _first_events(published, types, expected, from_serial=after)
        assert got == expected
    after = events[len(events) // 2].serial
    stream = EventStream(
        settings, types, prefix=prefix, ordered=True, from_serial=after, until_caught_up=True
    )
    async with stream:
        got_events = await take_all(stream)
        assert stream.until_serial == events[-1].serial
    assert got_events == [e for e in chosen if e.serial > after]
    project = max(
        {e.project_normalized for e in chosen},
        key=lambda n: sum(e.project_normalized == n for e in chosen),
    )
    stream = EventStream(
        settings,
        types,
        prefix=prefix,
        projects=[project.upper()],
        from_beginning=True,
        until_caught_up=True,
    )
    async with stream:
        got_events = await take_all(stream)
        assert {tp.partition for tp in stream.assignment} == {partition_for(project, PARTITIONS)}
    assert sorted(got_events, key=lambda e: e.serial) == [
        e for e in chosen if e.project_normalized == project
    ]
