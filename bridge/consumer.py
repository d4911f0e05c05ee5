"""Consume: subscribe to event types (or globs like `release.*`) and get typed events back.

Reads committed data only, resumes where a consumer group left off, commits offsets only after
the caller has handled an event (the next one was asked for, or the stream closed), and drops a
serial already seen on a partition: on a broker without transactions a retried send can leave a
duplicate record, and this is where it disappears.

Beyond a plain subscription, a stream can start at a serial or a journal time (`from_serial`,
`from_time`), stop once it has delivered everything the newest watermark covered when it started
(`until_caught_up`), deliver all chosen types in serial order (`ordered`), and read only the
partitions that hold some projects' events (`projects`). Those streams assign their partitions
themselves instead of subscribing (see `EventStream`).

Finding where to start reads no partition from its beginning: records are in serial order within
a partition, so a binary search over offsets (a seek and a small fetch per probe, all partitions
probed at once) finds the first record past a serial in O(log n) fetches. Serial order across
partitions is a merge of the partitions' heads; a partition with nothing buffered holds the
merge back until a watermark (`bridge.watermark`) proves it can hold nothing earlier.
"""

from __future__ import annotations

import collections
import datetime
import fnmatch
import heapq
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import TypeAlias

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from bridge.config import KafkaSettings
from bridge.errors import BridgeError, ConfigError, ContractError
from bridge.events import EVENT_TYPES, Event, event_from_json
from bridge.kafka import (
    AUTHORIZATION_ERRORS,
    always_leave_group,
    consumer,
    failure,
    partitions_of,
    refusal,
    started,
    unreachable,
)
from bridge.parse import normalize_name
from bridge.routing import partition_for, serial_of, topic_name, type_of_topic, watermark_topic
from bridge.watermark import Watermark

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]

#: Journal timestamps are a transaction's start time, so they step back against serial order by
#: a few seconds. The search for a time aims this much earlier, and reading goes forward from
#: there to the first record at or after the time: exact unless a step back exceeds it.
TIME_SLACK_SECONDS = 300
#: Bytes fetched per partition by the start search (a probe needs one record) and, in ordered
#: mode, per partition and fetch: with `ORDERED_BUFFER` this bounds what ordered mode holds.
SEARCH_FETCH_BYTES = 64 * 1024
ORDERED_FETCH_BYTES = 64 * 1024
#: Bytes of one fetch response in ordered mode (a broker may exceed the per-partition bound).
ORDERED_RESPONSE_BYTES = 1024 * 1024
#: Records an ordered stream holds per partition before it pauses that partition.
ORDERED_BUFFER = 128
#: The search waits this long for a fetch with nothing to return (a probe past the end).
SEARCH_FETCH_WAIT_MS = 20
#: Newest records of the watermark topic read at start (its tail may hold transaction markers).
WATERMARK_TAIL = 16


def resolve_types(patterns: Iterable[str]) -> list[str]:
    """Event types matching names or globs (`release.*`); every pattern must match something."""
    chosen: set[str] = set()
    for pattern in patterns:
        matched = fnmatch.filter(EVENT_TYPES, pattern.strip())
        if not matched:
            raise ConfigError(
                f"no event type matches {pattern!r}",
                f"use one of {', '.join(sorted(EVENT_TYPES))} or a glob such as 'release.*'",
            )
        chosen.update(matched)
    return sorted(chosen) if chosen else sorted(EVENT_TYPES)


def parse_time(text: str) -> float:
    """POSIX seconds from RFC 3339 (`2026-12-03T12:00:00Z`) or a number of seconds."""
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError("expected RFC 3339 (2026-12-03T12:00:00Z) or POSIX seconds")
        return value
    try:
        moment = datetime.datetime.fromisoformat(stripped.replace("z", "Z"))
    except ValueError:
        raise ValueError("expected RFC 3339 (2026-12-03T12:00:00Z) or POSIX seconds") from None
    if moment.tzinfo is None:
        raise ValueError("expected a time with its offset, such as Z or +02:00")
    return moment.timestamp()


def _timestamp_of(record: Record) -> int | None:
    """The journal timestamp in a record's value, or None if it has none."""
    if record.value is None:
        return None
    try:
        value = orjson.loads(record.value)
        return int(value["timestamp"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _readable_end(client: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The offset a committed read of `tp` can reach, from the newest fetch response."""
    stable = client.last_stable_offset(tp)
    if stable is not None and stable >= 0:
        return int(stable)
    highwater = client.highwater(tp)
    return None if highwater is None else int(highwater)


async def _readable_ends(
    client: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Each partition's end as a committed read sees it now, from fetch responses.

    ListOffsets is only the starting point: some Kafka-protocol brokers (the embedded one among
    them) answer it with the base offset of the last record batch, so reading from there to the
    end the fetch response reports gives the true end.
    """
    listed = await client.end_offsets(partitions)
    client.resume(*partitions)
    for tp in partitions:
        client.seek(tp, listed[tp])
    ends: dict[TopicPartition, int] = {}
    pending = set(partitions)
    while pending:
        await client.getmany(timeout_ms=25)
        for tp in list(pending):
            end = _readable_end(client, tp)
            if end is not None and await client.position(tp) >= end:
                ends[tp] = end
                pending.discard(tp)
                client.pause(tp)
    return ends


async def _first_records(
    client: AIOKafkaConsumer, probes: dict[TopicPartition, int]
) -> dict[TopicPartition, Record | None]:
    """The first record at or after each probe offset (None: none before the partition's end)."""
    client.resume(*probes)
    for tp, offset in probes.items():
        client.seek(tp, offset)
    found: dict[TopicPartition, Record | None] = {}
    pending = set(probes)
    while pending:
        batch = await client.getmany(timeout_ms=25)
        for tp, records in batch.items():
            if tp in pending and records:
                found[tp] = records[0]
                pending.discard(tp)
                client.pause(tp)
        for tp in list(pending):
            end = _readable_end(client, tp)
            if end is not None and await client.position(tp) >= end:
                found[tp] = None
                pending.discard(tp)
                client.pause(tp)
    return found


async def search_start(
    client: AIOKafkaConsumer,
    ranges: dict[TopicPartition, tuple[int, int]],
    before: Callable[[Record], bool],
) -> tuple[dict[TopicPartition, int], int]:
    """Per partition, the offset of the first record for which `before` is false.

    `ranges` gives each partition's (first offset, end offset); `before` must be true for a
    prefix of each partition's records and false after it. All partitions are probed together,
    one fetch round per step, so the search takes about log2(records) rounds. Returns the
    offsets and the number of rounds. Offsets have gaps (transaction markers, compaction): a
    probe reads the first record at or after its offset. `client` must have the partitions
    assigned, paused (see `search_client`).
    """
    low = {tp: begin for tp, (begin, _) in ranges.items()}
    high = {tp: end for tp, (_, end) in ranges.items()}
    rounds = 0
    while True:
        probes = {tp: (low[tp] + high[tp]) // 2 for tp in ranges if low[tp] < high[tp]}
        if not probes:
            return low, rounds
        rounds += 1
        for tp, record in (await _first_records(client, probes)).items():
            if record is None or record.offset >= high[tp] or not before(record):
                high[tp] = probes[tp]
            else:
                low[tp] = record.offset + 1


def search_client(kafka: KafkaSettings, partitions: Iterable[TopicPartition]) -> AIOKafkaConsumer:
    """A consumer for the start search, to be started, with `partitions` assigned and paused.

    It is assigned once: aiokafka's fetcher can swallow the cancellation of a `stop()` that
    comes right after a new assignment, and would then never stop.
    """
    client = _search_consumer(kafka)
    _assign_paused(client, list(partitions))
    return client


def _search_consumer(kafka: KafkaSettings) -> AIOKafkaConsumer:
    return consumer(
        kafka,
        isolation_level="read_committed",
        fetch_max_wait_ms=SEARCH_FETCH_WAIT_MS,
        max_partition_fetch_bytes=SEARCH_FETCH_BYTES,
    )


def _assign_paused(client: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
    client.assign(partitions)
    if partitions:
        client.pause(*partitions)


async def read_watermark(kafka: KafkaSettings, prefix: str) -> Watermark | None:
    """The newest watermark of `prefix`, or None while there is none (or no topic yet).

    A client of its own: a consumer or mirror asks this before it reads anything else. The
    topic is looked for while nothing is assigned (assigning a missing topic would ask for its
    metadata, and a broker with `auto.create.topics.enable` would create it); it is then the
    client's first assignment, which its `stop()` survives (see `search_client`).
    """
    tp = TopicPartition(watermark_topic(prefix), 0)
    async with started(kafka, _search_consumer(kafka)) as client:
        if tp.topic not in await client.topics():
            return None
        _assign_paused(client, [tp])
        found, _, _ = await newest_watermark(client, prefix)
    return found


async def newest_watermark(
    client: AIOKafkaConsumer, prefix: str
) -> tuple[Watermark | None, TopicPartition, int]:
    """The newest watermark of `prefix`, its partition, and the offset just past what was read.

    `client` has the watermark partition assigned (paused, as `search_client` leaves it).
    """
    tp = TopicPartition(watermark_topic(prefix), 0)
    begins = await client.beginning_offsets([tp])
    listed = await client.end_offsets([tp])
    client.resume(tp)
    client.seek(tp, max(begins[tp], listed[tp] - WATERMARK_TAIL))
    records: list[Record] = []
    while True:
        batch = await client.getmany(timeout_ms=25)
        records.extend(batch.get(tp, []))
        end = _readable_end(client, tp)
        if end is not None and await client.position(tp) >= end:
            break
    client.pause(tp)
    after = await client.position(tp)
    key = prefix.encode()
    found = [Watermark.decode(r.value) for r in records if r.key == key and r.value is not None]
    return (max(found, key=lambda w: w.serial) if found else None), tp, after


class _Merge:
    """Serial order across partitions: each partition's buffered records, merged by serial.

    A partition's records are in serial order, so its buffered head bounds what it can still
    deliver. A partition with nothing buffered bounds nothing by itself; a watermark does: once
    the partition is read up to the watermark's offset, no record of a serial up to the
    watermark's can arrive there any more. The smallest head is released once no partition can
    still deliver a smaller serial.
    """

    def __init__(self, partitions: Iterable[TopicPartition]) -> None:
        self.queues: dict[TopicPartition, collections.deque[tuple[int, Record | None]]] = {
            tp: collections.deque() for tp in partitions
        }
        self.positions: dict[TopicPartition, int] = dict.fromkeys(self.queues, 0)
        self.watermarks: list[Watermark] = []
        self._heads: list[tuple[int, str, int]] = []
        #: The smallest serial a partition with nothing buffered may still deliver, minus one.
        self._floor: float = -1

    def held(self) -> int:
        """Records held back, not yet released."""
        return sum(1 for queue in self.queues.values() for _, r in queue if r is not None)

    def add(self, tp: TopicPartition, record: Record, serial: int) -> None:
        queue = self.queues[tp]
        if not queue:
            heapq.heappush(self._heads, (serial, tp.topic, tp.partition))
        queue.append((record.offset, record))

    def skip(self, tp: TopicPartition, offset: int) -> bool:
        """A record of `tp` that is not delivered; False if it can count as handled at once."""
        queue = self.queues[tp]
        if not queue:
            return False
        queue.append((offset, None))
        return True

    def add_watermark(self, watermark: Watermark) -> None:
        self.watermarks.append(watermark)
        self.watermarks.sort(key=lambda w: w.serial)

    def bound(self, tp: TopicPartition) -> int:
        """The largest serial a partition with nothing buffered is proven to be done with."""
        position = self.positions[tp]
        proven = -1
        for watermark in self.watermarks:
            if watermark.offset(tp.topic, tp.partition) <= position:
                proven = max(proven, watermark.serial)
        return proven

    def refresh(self) -> None:
        """Recompute the floor after positions or watermarks changed; forget spent watermarks."""
        while len(self.watermarks) > 1 and all(
            self.watermarks[1].offset(tp.topic, tp.partition) <= self.positions[tp]
            for tp in self.queues
        ):
            self.watermarks.pop(0)
        empty = [tp for tp, queue in self.queues.items() if not queue]
        self._floor = min((float(self.bound(tp)) for tp in empty), default=math.inf)

    def pop(self) -> tuple[TopicPartition, int, Record] | None:
        """The next record in serial order and the last offset it covers, if it is proven next."""
        if not self._heads or self._heads[0][0] > self._floor:
            return None
        _, topic, partition = heapq.heappop(self._heads)
        tp = TopicPartition(topic, partition)
        queue = self.queues[tp]
        covered, record = queue.popleft()
        assert record is not None
        # Records skipped right after it are handled with it.
        while queue and queue[0][1] is None:
            covered = queue.popleft()[0]
        if queue:
            head = queue[0][1]
            assert head is not None
            heapq.heappush(self._heads, (_serial(head), topic, partition))
        else:
            self._floor = min(self._floor, self.bound(tp))
        return tp, covered, record


def _serial(record: Record) -> int:
    serial = serial_of(record.headers)
    return -1 if serial is None else serial


class EventStream:
    """`async with EventStream(...) as stream: async for event in stream: ...`

    Without `from_serial`, `from_time`, `until_caught_up`, `ordered` or `projects` the stream
    subscribes to the topics (with a `group`, its members share the partitions). With any of
    them it assigns itself every partition it needs; a `group` then only keeps its position:
    each partition resumes after the group's last commit, and `from_serial` / `from_time` /
    `from_beginning` decide where a partition without one starts.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        types: Iterable[str] = ("*",),
        *,
        prefix: str = "pypi",
        group: str | None = None,
        from_beginning: bool = False,
        from_serial: int | None = None,
        from_time: float | None = None,
        until_caught_up: bool = False,
        ordered: bool = False,
        projects: Iterable[str] = (),
        commit_interval: float = 1.0,
    ) -> None:
        self.kafka = kafka
        self.prefix = prefix
        self.types = resolve_types(types)
        self.group = group
        if sum((from_beginning, from_serial is not None, from_time is not None)) > 1:
            raise ConfigError(
                "from_beginning, from_serial and from_time each say where to start",
                "choose one of --from-beginning, --from-serial and --from-time",
            )
        self.from_beginning = from_beginning
        self.from_serial = from_serial
        self.from_time = from_time
        self.until_caught_up = until_caught_up
        self.ordered = ordered
        self.projects = sorted({normalize_name(p.strip()) for p in projects if p.strip()})
        self.commit_interval = commit_interval
        self.duplicates_dropped = 0
        #: Partitions read (manual assignment only), sorted.
        self.assignment: list[TopicPartition] = []
        #: Rounds of fetches the start search took (every partition searched at once).
        self.search_rounds = 0
        #: With `until_caught_up`: the serial of the watermark it stops at (None: no watermark,
        #: it stops at the partitions' ends at start).
        self.until_serial: int | None = None
        #: With `until_caught_up`: True once everything up to the goal was delivered.
        self.finished = False
        self._consumer: AIOKafkaConsumer | None = None
        self._last_serial: dict[TopicPartition, int] = {}
        self._handled: dict[TopicPartition, int] = {}
        self._committed_at = time.monotonic()
        self._buffer: collections.deque[tuple[TopicPartition, int, Event | None]] = (
            collections.deque()
        )
        #: The event last handed to the caller, not yet known to be handled.
        self._in_hand: tuple[TopicPartition, int] | None = None
        # Manual assignment: per partition, serials at or below this are not delivered ...
        self._floor: dict[TopicPartition, int] = {}
        # ... nor records before the first one stamped at or after this time ...
        self._not_before: dict[TopicPartition, float] = {}
        # ... nor records at or past this offset (until_caught_up).
        self._until: dict[TopicPartition, int] = {}
        self._done: set[TopicPartition] = set()
        self._keys = {name.encode() for name in self.projects}
        self._merge: _Merge | None = None
        self._watermark_tp: TopicPartition | None = None
        self._last_released = -1

    @property
    def topics(self) -> list[str]:
        return [topic_name(self.prefix, t) for t in self.types]

    @property
    def manual(self) -> bool:
        """Whether the stream assigns its partitions itself instead of subscribing."""
        return bool(
            self.from_serial is not None
            or self.from_time is not None
            or self.until_caught_up
            or self.ordered
            or self.projects
        )

    async def __aenter__(self) -> EventStream:
        if self.manual:
            self._consumer = self._manual_consumer()
        else:
            self._consumer = consumer(
                self.kafka,
                *self.topics,
                group_id=self.group,
                isolation_level="read_committed",
                auto_offset_reset="earliest" if self.from_beginning else "latest",
            )
        try:
            await self._consumer.start()
            if self.manual:
                await self._plan(self._consumer)
        except AUTHORIZATION_ERRORS as exc:
            await self._stop_consumer()
            raise await self._refused(exc) from None
        except KafkaConnectionError as exc:
            await self._stop_consumer()
            raise await refusal(self.kafka) or unreachable(self.kafka, exc) from None
        except KafkaError as exc:
            await self._stop_consumer()
            raise await self._refused(exc) from None
        except BaseException:
            await self._stop_consumer()
            raise
        return self

    def _manual_consumer(self) -> AIOKafkaConsumer:
        options: dict[str, object] = {}
        if self.ordered:
            options["max_partition_fetch_bytes"] = ORDERED_FETCH_BYTES
            options["fetch_max_bytes"] = ORDERED_RESPONSE_BYTES
        return consumer(
            self.kafka, group_id=self.group, isolation_level="read_committed", **options
        )

    async def _stop_consumer(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def _refused(self, exc: KafkaError) -> BridgeError:
        return await failure(self.kafka, exc, "cannot consume", "Read", (f"{self.prefix}.",))

    # --- manual assignment: which partitions, where each starts, where it stops ------------

    async def _plan(self, main: AIOKafkaConsumer) -> None:
        # Metadata first, with the main consumer: the search client is assigned only once.
        partitions = await partitions_of(main, self.topics)
        watermark_tp: list[TopicPartition] = []
        if self.ordered or self.until_caught_up:
            topic = watermark_topic(self.prefix)
            if topic in await main.topics():
                watermark_tp.append(TopicPartition(topic, 0))
            elif self.ordered:
                raise ContractError(
                    f"serial order needs the watermark topic {topic}, which does not exist",
                    "run a bridge that writes watermarks (pypi-bridge run) on this prefix",
                )
        if self.projects:
            counts = collections.Counter(tp.topic for tp in partitions)
            wanted = {
                TopicPartition(topic, partition_for(name, count))
                for topic, count in counts.items()
                for name in self.projects
            }
            partitions = [tp for tp in partitions if tp in wanted]
        search = search_client(self.kafka, [*partitions, *watermark_tp])
        await search.start()
        try:
            await self._plan_with(main, search, partitions, bool(watermark_tp))
        finally:
            await search.stop()

    async def _plan_with(
        self,
        main: AIOKafkaConsumer,
        search: AIOKafkaConsumer,
        partitions: list[TopicPartition],
        has_watermarks: bool,
    ) -> None:
        self.assignment = sorted(partitions)
        watermark: Watermark | None = None
        after = 0
        if has_watermarks:
            watermark, self._watermark_tp, after = await newest_watermark(search, self.prefix)
        ends = await _readable_ends(search, partitions) if partitions else {}
        begins = await search.beginning_offsets(partitions) if partitions else {}
        starts: dict[TopicPartition, int] = {}
        if self.group is not None:
            for tp in partitions:
                committed = await main.committed(tp)
                if committed is not None:
                    starts[tp] = committed
        unplaced = [tp for tp in partitions if tp not in starts]
        if self.from_serial is not None or self.from_time is not None:
            starts.update(await self._search(search, unplaced, begins, ends))
        else:
            for tp in unplaced:
                starts[tp] = begins[tp] if self.from_beginning else ends[tp]
        if self.until_caught_up:
            self.until_serial = None if watermark is None else watermark.serial
            for tp in partitions:
                goal = ends[tp] if watermark is None else watermark.offset(tp.topic, tp.partition)
                self._until[tp] = goal
                if starts[tp] >= goal:
                    self._done.add(tp)
        assigned = list(partitions)
        if self.ordered:
            assert self._watermark_tp is not None
            self._merge = _Merge(partitions)
            if watermark is not None:
                self._merge.add_watermark(watermark)
            if self.from_serial is not None:
                self._last_released = self.from_serial
            assigned.append(self._watermark_tp)
        main.assign(assigned)
        for tp in partitions:
            main.seek(tp, starts[tp])
            if self._merge is not None:
                self._merge.positions[tp] = starts[tp]
        if self._watermark_tp is not None and self.ordered:
            main.seek(self._watermark_tp, after)
        if self._merge is not None:
            self._merge.refresh()
        self._check_finished()
        log.info(
            "reading %d partition(s) of %d type(s)%s%s",
            len(partitions),
            len(self.types),
            f", start found in {self.search_rounds} fetch round(s)" if self.search_rounds else "",
            f", until serial {self.until_serial}" if self.until_serial is not None else "",
        )

    async def _search(
        self,
        search: AIOKafkaConsumer,
        partitions: list[TopicPartition],
        begins: dict[TopicPartition, int],
        ends: dict[TopicPartition, int],
    ) -> dict[TopicPartition, int]:
        """Where each partition starts for `from_serial` / `from_time`, by binary search."""
        before: Callable[[Record], bool]
        if self.from_serial is not None:
            floor = self.from_serial

            def before(record: Record) -> bool:
                serial = serial_of(record.headers)
                return serial is not None and serial <= floor

            for tp in partitions:
                self._floor[tp] = floor
        else:
            assert self.from_time is not None
            aim = self.from_time - TIME_SLACK_SECONDS

            def before(record: Record) -> bool:
                stamp = _timestamp_of(record)
                return stamp is not None and stamp < aim

            for tp in partitions:
                self._not_before[tp] = self.from_time
        ranges = {tp: (begins[tp], ends[tp]) for tp in partitions}
        starts, self.search_rounds = await search_start(search, ranges, before)
        return starts

    # --- reading ------------------------------------------------------------------------------

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leaving the block normally means the event in hand was dealt with; an error means not.
        if exc_type is None and self._in_hand is not None:
            self.handled(*self._in_hand)
        self._in_hand = None
        await self.close()

    async def close(self) -> None:
        if self._consumer is None:
            return
        try:
            await self.commit()
        finally:
            always_leave_group(self._consumer)
            await self._consumer.stop()
            self._consumer = None

    async def commit(self) -> None:
        """Commit the offsets of every event handed out and handled so far."""
        if self._consumer is None or self.group is None or not self._handled:
            return
        offsets = {tp: OffsetAndMetadata(offset + 1, "") for tp, offset in self._handled.items()}
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("could not commit consumer offsets (events may be seen again): %s", exc)
            return
        self._handled.clear()
        self._committed_at = time.monotonic()

    async def _getmany(
        self, wait: float, *partitions: TopicPartition, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        if self._consumer is None:
            raise RuntimeError("EventStream used outside `async with`")
        try:
            batch: dict[TopicPartition, list[Record]] = await self._consumer.getmany(
                *partitions, timeout_ms=int(wait * 1000), max_records=max_records
            )
        except AUTHORIZATION_ERRORS as exc:
            raise await self._refused(exc) from None
        return batch

    async def _fetch(self, wait: float) -> list[tuple[TopicPartition, int, Event | None]]:
        """Records arriving within `wait` seconds, in partition order; None for a duplicate."""
        if self.manual:
            return await self._fetch_assigned(wait)
        batch = await self._getmany(wait)
        return [
            (tp, record.offset, self._accept(tp, record))
            for tp, records in batch.items()
            for record in records
        ]

    def handled(self, tp: TopicPartition, offset: int) -> None:
        """Mark the record at `offset` (and all before it on `tp`) as dealt with."""
        if offset > self._handled.get(tp, -1):
            self._handled[tp] = offset

    def _duplicate(self, tp: TopicPartition, serial: int | None) -> bool:
        if serial is None:
            return False
        last = self._last_serial.get(tp)
        if last is not None and serial <= last:
            self.duplicates_dropped += 1
            return True
        self._last_serial[tp] = serial
        return False

    def _accept(self, tp: TopicPartition, record: Record) -> Event | None:
        if self._duplicate(tp, serial_of(record.headers)):
            return None
        if record.value is None or type_of_topic(self.prefix, record.topic) is None:
            return None
        return event_from_json(record.value)

    def _wanted(self, tp: TopicPartition, record: Record, serial: int | None) -> bool:
        """Whether a record (not a duplicate, before any `until` goal) is one to deliver."""
        if record.value is None or type_of_topic(self.prefix, record.topic) is None:
            return False
        floor = self._floor.get(tp)
        if floor is not None and serial is not None and serial <= floor:
            return False
        not_before = self._not_before.get(tp)
        if not_before is not None:
            stamp = _timestamp_of(record)
            if stamp is None or stamp < not_before:
                return False
            # From the first record at or after the time on, the partition is read whole.
            del self._not_before[tp]
        return not self._keys or record.key in self._keys

    def _past_goal(self, tp: TopicPartition, offset: int) -> bool:
        goal = self._until.get(tp)
        if goal is not None and offset >= goal:
            self._done.add(tp)
            return True
        return False

    async def _update_positions(self) -> None:
        assert self._consumer is not None
        for tp in self.assignment:
            position = await self._consumer.position(tp)
            if self._merge is not None:
                self._merge.positions[tp] = position
            goal = self._until.get(tp)
            if goal is not None and position >= goal:
                self._done.add(tp)

    def _check_finished(self) -> None:
        if not self.until_caught_up or self.finished:
            return
        if len(self._done) < len(self.assignment) or self._buffer:
            return
        if self._merge is not None and self._merge.held():
            return
        self.finished = True

    async def _fetch_assigned(self, wait: float) -> list[tuple[TopicPartition, int, Event | None]]:
        assert self._consumer is not None
        if self._done:
            self._consumer.pause(*self._done)
        batch = await self._getmany(wait)
        found: list[tuple[TopicPartition, int, Event | None]] = []
        for tp, records in batch.items():
            for record in records:
                if self._past_goal(tp, record.offset):
                    break  # never handled: a group resumes before it
                serial = serial_of(record.headers)
                if self._duplicate(tp, serial) or not self._wanted(tp, record, serial):
                    found.append((tp, record.offset, None))
                    continue
                assert record.value is not None
                found.append((tp, record.offset, event_from_json(record.value)))
        await self._update_positions()
        return found

    async def _fetch_ordered(self, wait: float) -> None:
        """Fetch more into the merge: only partitions with room, and new watermarks."""
        assert self._consumer is not None
        assert self._merge is not None
        merge = self._merge
        full = [
            tp for tp, q in merge.queues.items() if len(q) >= ORDERED_BUFFER or tp in self._done
        ]
        hungry = [tp for tp in merge.queues if tp not in full]
        if full:
            self._consumer.pause(*full)
        if hungry:
            self._consumer.resume(*hungry)
        assert self._watermark_tp is not None
        # At most one partition's allowance per call: a broker may answer a fetch with far more
        # than asked, and what is not taken now stays in the client's fetch buffer, unparsed.
        batch = await self._getmany(wait, *hungry, self._watermark_tp, max_records=ORDERED_BUFFER)
        key = self.prefix.encode()
        for tp, records in batch.items():
            if tp == self._watermark_tp:
                for record in records:
                    if record.key == key and record.value is not None:
                        merge.add_watermark(Watermark.decode(record.value))
                continue
            for record in records:
                if self._past_goal(tp, record.offset):
                    break
                serial = serial_of(record.headers)
                if (
                    self._duplicate(tp, serial)
                    or serial is None
                    or serial <= self._last_released
                    or not self._wanted(tp, record, serial)
                ):
                    if not merge.skip(tp, record.offset):
                        self.handled(tp, record.offset)
                    continue
                merge.add(tp, record, serial)
        await self._update_positions()
        merge.refresh()

    def _next_ordered(self) -> Event | None:
        assert self._merge is not None
        while True:
            popped = self._merge.pop()
            if popped is None:
                return None
            tp, covered, record = popped
            assert record.value is not None
            self._last_released = _serial(record)
            self._in_hand = (tp, covered)
            return event_from_json(record.value)

    async def get(self, wait: float | None = None) -> Event | None:
        """The next event, or None if none arrives within `wait` seconds (None: wait forever).

        Asking for the next event marks the previous one handled; handled events are committed
        every `commit_interval` seconds and when the stream closes. Safe to cancel. With
        `until_caught_up`, None at once when `finished`.
        """
        if self._in_hand is not None:
            self.handled(*self._in_hand)
            self._in_hand = None
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            if self._merge is not None:
                event = self._next_ordered()
                if event is not None:
                    return event
            while self._buffer:
                tp, offset, found = self._buffer.popleft()
                if found is None:
                    self.handled(tp, offset)  # a dropped record needs no handling
                    continue
                self._in_hand = (tp, offset)
                return found
            self._check_finished()
            if self.finished:
                await self.commit()
                return None
            if time.monotonic() - self._committed_at >= self.commit_interval:
                await self.commit()
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._merge is not None:
                await self._fetch_ordered(min(1.0, remaining))
            else:
                self._buffer.extend(await self._fetch(min(1.0, remaining)))

    async def __aiter__(self) -> AsyncIterator[Event]:
        while not self.finished:
            event = await self.get()
            if event is not None:
                yield event
