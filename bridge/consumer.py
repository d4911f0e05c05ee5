"""Consume: subscribe to event types (or globs like `release.*`) and get typed events back.

Reads committed data only, resumes where a consumer group left off, commits offsets only after
the caller has handled an event (the next one was asked for, or the stream closed), and drops a
serial already seen on a partition: on a broker without transactions a retried send can leave a
duplicate record, and this is where it disappears.
"""

from __future__ import annotations

import collections
import fnmatch
import logging
import time
from collections.abc import AsyncIterator, Iterable
from types import TracebackType

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from bridge.config import KafkaSettings
from bridge.errors import BridgeError, ConfigError
from bridge.events import EVENT_TYPES, Event, event_from_json
from bridge.kafka import (
    AUTHORIZATION_ERRORS,
    always_leave_group,
    consumer,
    failure,
    refusal,
    unreachable,
)
from bridge.routing import serial_of, topic_name, type_of_topic

log = logging.getLogger(__name__)


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


class EventStream:
    """`async with EventStream(...) as stream: async for event in stream: ...`"""

    def __init__(
        self,
        kafka: KafkaSettings,
        types: Iterable[str] = ("*",),
        *,
        prefix: str = "pypi",
        group: str | None = None,
        from_beginning: bool = False,
        commit_interval: float = 1.0,
    ) -> None:
        self.kafka = kafka
        self.prefix = prefix
        self.types = resolve_types(types)
        self.group = group
        self.from_beginning = from_beginning
        self.commit_interval = commit_interval
        self.duplicates_dropped = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._last_serial: dict[TopicPartition, int] = {}
        self._handled: dict[TopicPartition, int] = {}
        self._committed_at = time.monotonic()
        self._buffer: collections.deque[tuple[TopicPartition, int, Event | None]] = (
            collections.deque()
        )
        #: The event last handed to the caller, not yet known to be handled.
        self._in_hand: tuple[TopicPartition, int] | None = None

    @property
    def topics(self) -> list[str]:
        return [topic_name(self.prefix, t) for t in self.types]

    async def __aenter__(self) -> EventStream:
        self._consumer = consumer(
            self.kafka,
            *self.topics,
            group_id=self.group,
            isolation_level="read_committed",
            auto_offset_reset="earliest" if self.from_beginning else "latest",
        )
        try:
            await self._consumer.start()
        except AUTHORIZATION_ERRORS as exc:
            await self._consumer.stop()
            raise await self._refused(exc) from None
        except KafkaConnectionError as exc:
            await self._consumer.stop()
            raise await refusal(self.kafka) or unreachable(self.kafka, exc) from None
        return self

    async def _refused(self, exc: KafkaError) -> BridgeError:
        return await failure(self.kafka, exc, "cannot consume", "Read", (f"{self.prefix}.",))

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

    async def _fetch(self, wait: float) -> list[tuple[TopicPartition, int, Event | None]]:
        """Records arriving within `wait` seconds, in partition order; None for a duplicate."""
        if self._consumer is None:
            raise RuntimeError("EventStream used outside `async with`")
        try:
            batch = await self._consumer.getmany(timeout_ms=int(wait * 1000))
        except AUTHORIZATION_ERRORS as exc:
            raise await self._refused(exc) from None
        return [
            (tp, record.offset, self._accept(tp, record))
            for tp, records in batch.items()
            for record in records
        ]

    def handled(self, tp: TopicPartition, offset: int) -> None:
        """Mark the record at `offset` (and all before it on `tp`) as dealt with."""
        if offset > self._handled.get(tp, -1):
            self._handled[tp] = offset

    def _accept(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> Event | None:
        serial = serial_of(record.headers)
        if serial is not None:
            last = self._last_serial.get(tp)
            if last is not None and serial <= last:
                self.duplicates_dropped += 1
                return None
            self._last_serial[tp] = serial
        if record.value is None or type_of_topic(self.prefix, record.topic) is None:
            return None
        return event_from_json(record.value)

    async def get(self, wait: float | None = None) -> Event | None:
        """The next event, or None if none arrives within `wait` seconds (None: wait forever).

        Asking for the next event marks the previous one handled; handled events are committed
        every `commit_interval` seconds and when the stream closes. Safe to cancel.
        """
        if self._in_hand is not None:
            self.handled(*self._in_hand)
            self._in_hand = None
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            while self._buffer:
                tp, offset, event = self._buffer.popleft()
                if event is None:
                    self.handled(tp, offset)  # a dropped duplicate needs no handling
                    continue
                self._in_hand = (tp, offset)
                return event
            if time.monotonic() - self._committed_at >= self.commit_interval:
                await self.commit()
            remaining = 1.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._buffer.extend(await self._fetch(min(1.0, remaining)))

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            event = await self.get()
            if event is not None:
                yield event
