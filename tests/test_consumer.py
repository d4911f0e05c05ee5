"""The consumer API against the real broker, after a real bridge published a simulated journal.

A subscriber gets exactly the events of the types it asked for, as the typed classes the parser
makes; a member of a consumer group that stops (normally, or because its handler raised) and
comes back neither misses nor repeats an event; duplicate records are dropped.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from bridge.broker import EmbeddedBroker
from bridge.config import KafkaSettings
from bridge.consumer import EventStream
from bridge.errors import ConfigError
from bridge.events import EVENT_TYPES, Event, FileAdded, RoleAdded, RoleEvent
from bridge.parse import parse_row
from bridge.routing import topic_name
from tests.support import read_topics, run_args, start, start_simulator

#: Journal rows the simulator makes up front; with this seed every type the tests use occurs.
ROWS = 3000
SEED = 2026
#: Seconds a finished stream is watched for an event it should not deliver.
QUIET = 1.0


@dataclass(frozen=True)
class Published:
    """A journal the real bridge has published, and what the parser makes of each of its rows."""

    bootstrap: str
    prefix: str
    events: list[Event]

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap)

    def of(self, *types: str) -> list[Event]:
        """The expected events of `types`, in serial order; never empty, so no test is vacuous."""
        chosen = [e for e in self.events if e.type in types]
        assert chosen, f"the simulated journal has no {types} event; change SEED"
        return chosen

    def stream(self, *types: str, group: str | None = None) -> EventStream:
        return EventStream(self.kafka, types, prefix=self.prefix, group=group, from_beginning=True)


def publish(broker: EmbeddedBroker, log_dir: Path, name: str) -> Published:
    """Run `pypi-bridge run` over a fresh simulated journal until all of it is committed."""
    sim = start_simulator(log_dir, "--prefill", str(ROWS), "--rate", "0", "--seed", str(SEED))
    try:
        rows = sim.rows()
        prefix = f"{name}-{uuid.uuid4().hex[:8]}"
        bridge = start(
            run_args(
                sim,
                broker.bootstrap_servers,
                prefix,
                "--start-serial",
                "0",
                "--stop-at-serial",
                str(rows[-1][4]),
            ),
            log_dir / "bridge.log",
        )
        assert bridge.wait(120) == 0, bridge.output()[-3000:]
    finally:
        sim.stop()
    return Published(broker.bootstrap_servers, prefix, [parse_row(row) for row in rows])


@pytest.fixture(scope="module")
def published(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish(broker, tmp_path_factory.mktemp("consumer"), "consumer")


def group_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def by_serial(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: e.serial)


async def take(stream: EventStream, count: int, wait: float = 10.0) -> list[Event]:
    """The next `count` events; fails if one of them takes more than `wait` seconds."""
    got: list[Event] = []
    while len(got) < count:
        event = await stream.get(wait)
        assert event is not None, f"only {len(got)} of {count} events arrived"
        got.append(event)
    return got


async def take_all(stream: EventStream, count: int) -> list[Event]:
    """The next `count` events, and then nothing more."""
    got = await take(stream, count)
    extra = await stream.get(QUIET)
    assert extra is None, f"an event beyond the {count} expected: {extra}"
    return got


def assert_same_events(got: list[Event], expected: list[Event]) -> None:
    got_serials = sorted(e.serial for e in got)
    assert got_serials == [e.serial for e in expected]
    assert by_serial(got) == expected


async def test_a_type_subscription_yields_exactly_that_types_events(published: Published) -> None:
    expected = published.of("release.created")
    async with published.stream("release.created") as stream:
        got = await take_all(stream, len(expected))
    assert_same_events(got, expected)


@pytest.mark.parametrize("glob", ["release.*", "role.*"])
async def test_a_glob_subscription_yields_exactly_the_matching_types_events(
    published: Published, glob: str
) -> None:
    types = [t for t in EVENT_TYPES if t.startswith(glob.removesuffix("*"))]
    expected = published.of(*types)
    assert len({e.type for e in expected}) > 2, "the glob should match several types here"
    async with published.stream(glob) as stream:
        got = await take_all(stream, len(expected))
    assert_same_events(got, expected)


async def test_several_types_yield_the_events_of_each_and_no_other(published: Published) -> None:
    types = ("file.removed", "project.removed", "release.yanked")
    expected = published.of(*types)
    async with published.stream(*types) as stream:
        got = await take_all(stream, len(expected))
    assert {e.type for e in got} == set(types)
    assert_same_events(got, expected)


async def test_events_come_back_as_the_typed_classes_the_parser_makes(
    published: Published,
) -> None:
    expected = published.of("file.added", "role.added")
    async with published.stream("file.added", "role.added") as stream:
        got = await take_all(stream, len(expected))
    files = [e for e in got if e.type == "file.added"]
    roles = [e for e in got if e.type == "role.added"]
    assert files
    assert roles
    assert all(isinstance(e, FileAdded) for e in files)
    assert all(isinstance(e, RoleAdded) and isinstance(e, RoleEvent) for e in roles)
    assert {e.package_type for e in files if isinstance(e, FileAdded)} >= {"wheel", "sdist"}
    assert_same_events(got, expected)


async def test_one_projects_events_arrive_in_serial_order(published: Published) -> None:
    expected = published.of("file.added")
    async with published.stream("file.added") as stream:
        got = await take_all(stream, len(expected))
    last: dict[str, int] = {}
    for event in got:
        assert event.serial > last.get(event.project_normalized, -1), event
        last[event.project_normalized] = event.serial


async def test_a_member_restarted_in_its_group_resumes_promptly_without_miss_or_repeat(
    published: Published,
) -> None:
    expected = published.of("release.created")
    group = group_name()
    async with published.stream("release.created", group=group) as stream:
        first = await take(stream, 100)
    reopened = time.monotonic()
    async with published.stream("release.created", group=group) as stream:
        rest = await take(stream, 1, wait=30)
        resumed_in = time.monotonic() - reopened
        rest += await take_all(stream, len(expected) - len(first) - 1)
    assert not set(first) & set(rest), "events were delivered again after the restart"
    assert_same_events(first + rest, expected)
    # aiokafka's consumer sessions time out after 10 s: a restart that waits that long is
    # waiting for the closed member to be dropped from the group instead of it having left.
    assert resumed_in < 10, f"the restarted member got its first event after {resumed_in:.1f} s"


class HandlerFailed(Exception):
    """What a caller's handler raises in the middle of a stream."""


async def test_an_event_whose_handler_raised_is_delivered_again_after_reopening(
    published: Published,
) -> None:
    expected = published.of("file.added")
    group = group_name()
    handled: list[Event] = []
    failed: list[Event] = []

    async def handle_until_the_51st_fails() -> None:
        async with published.stream("file.added", group=group) as stream:
            async for event in stream:
                if len(handled) == 50:
                    failed.append(event)
                    raise HandlerFailed
                handled.append(event)

    with pytest.raises(HandlerFailed):
        await handle_until_the_51st_fails()
    async with published.stream("file.added", group=group) as stream:
        rest = await take_all(stream, len(expected) - len(handled))
    assert failed[0] in rest
    assert not set(handled) & set(rest), "events handled before the failure came again"
    assert_same_events(handled + rest, expected)


async def test_duplicate_serials_in_a_partition_are_dropped_and_counted(
    published: Published,
) -> None:
    # Only this test uses project.created: the copies below change that topic for good.
    topic = topic_name(published.prefix, "project.created")
    originals = await read_topics(published.bootstrap, [topic])
    # A retried send leaves its copy after the original on the same partition: copy each
    # partition's first record (an old serial) and its last one (the one just before).
    firsts: dict[int, int] = {}
    for index, record in enumerate(originals):
        firsts.setdefault(record.partition, index)
    lasts = {record.partition: index for index, record in enumerate(originals)}
    copies = [originals[i] for i in sorted({*firsts.values(), *lasts.values()})]
    producer = AIOKafkaProducer(bootstrap_servers=published.bootstrap)
    await producer.start()
    try:
        for record in copies:
            await producer.send_and_wait(
                topic,
                record.value,
                key=record.key,
                partition=record.partition,
                headers=list(record.headers),
            )
    finally:
        await producer.stop()
    assert len(await read_topics(published.bootstrap, [topic])) == len(originals) + len(copies)
    expected = published.of("project.created")
    async with published.stream("project.created") as stream:
        got = await take_all(stream, len(expected))
        assert stream.duplicates_dropped == len(copies)
    assert_same_events(got, expected)


def test_an_unknown_type_is_a_config_error_naming_the_known_types() -> None:
    with pytest.raises(ConfigError) as caught:
        EventStream(KafkaSettings(bootstrap_servers="127.0.0.1:9"), ["release.nope"])
    message = str(caught.value)
    assert "'release.nope'" in message
    assert all(name in message for name in EVENT_TYPES)
