"""Sink: publishes batches of events to Kafka, each batch with its checkpoint.

Two delivery modes give the exactly-once promise:

- transactional: the events of a batch and the checkpoint record are one Kafka transaction under
  a fixed transactional id, so a batch is visible whole or not at all, and a stale leader's
  producer is fenced by the broker.
- high-water: for brokers without transactions (the embedded one). The checkpoint is written
  once the batch is acknowledged; after a crash, `checkpoint.landed_serials` finds the events of
  the unfinished batch that already landed, and the sink skips them instead of sending them again.

`auto` probes the broker (can it give this producer a transactional id?) and picks one; the
choice is logged and exported as `pypi_bridge_delivery_mode`.

A stale leader (paused past its group session, then resumed while a successor leads) is fenced
by the broker in transactional mode: the successor's producer took over the transactional id, so
whatever the stale one writes is aborted, and it gets `Fenced`. In high-water mode nothing on the
broker stops it, so the sink fences itself: it checks the leader's lease on its group session
(`leadership.Lease`) before every publish, before every batch it hands to the producer, and
before every produce request leaves the producer (batches queued before a pause are caught
there). Once the lease has run out, the sink sends nothing more for the rest of its term and
raises `LeaseExpired`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    ProducerFenced,
    UnknownError,
    UnsupportedVersionError,
)
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata

from bridge.checkpoint import (
    Checkpoint,
    WarmReader,
    checkpoint_key,
    landed_serials,
    read_checkpoint,
)
from bridge.config import DeliveryMode, KafkaSettings, TopicSettings
from bridge.errors import BrokerLacksFeature, Fenced, LeaseExpired
from bridge.events import Event
from bridge.index import ProjectIndex, Updates
from bridge.kafka import (
    AUTHORIZATION_ERRORS,
    bridge_prefixes,
    failure,
    producer,
    refusal,
    unreachable,
)
from bridge.leadership import Lease
from bridge.metrics import Metrics
from bridge.routing import (
    CONTENT_TYPE,
    Headers,
    Record,
    Router,
    checkpoint_topic,
    event_topics,
    key_hash,
    projects_topic,
    watermark_topic,
)
from bridge.watermark import Watermark

log = logging.getLogger(__name__)
#: A batch once acknowledged: its topic, its partition and the offset just past its last record.
Landed = tuple[str, int, int]
# What a broker without transactions answers to InitProducerId.
_NO_TRANSACTIONS = (UnknownError, UnsupportedVersionError)
_PRODUCE_API = 0
#: Index records per batch (and per transaction) while seeding the project index.
SEED_CHUNK = 10_000


class IndexRecord(NamedTuple):
    """One project index record; `value` None is a tombstone."""

    topic: str
    key: bytes
    value: bytes | None
    headers: Headers


class _Withheld(KafkaError):  # type: ignore[misc]
    """A produce request the lease check kept in the process; its batches fail with this."""

    retriable = False


class Sink:
    """Publishes event batches with their checkpoint; one instance per leadership term."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        router: Router,
        metrics: Metrics,
        *,
        delivery: DeliveryMode,
        transactional_id: str,
        replica_id: str,
        lease: Lease | None = None,
        warm: WarmReader | None = None,
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.router = router
        self.metrics = metrics
        self.requested = delivery
        self.transactional_id = transactional_id
        self.replica_id = replica_id
        #: The leader's lease on its group session; None: no check (a sink outside a term).
        self.lease = lease
        #: A recovery reader connected while standing by (see `WarmReader`); None: open one.
        self.warm = warm
        #: Set once the lease ran out: from then on, nothing leaves this sink.
        self._expired: LeaseExpired | None = None
        self.mode = ""
        self.checkpoint: Checkpoint | None = None
        self._producer: AIOKafkaProducer | None = None
        self._landed: set[int] = set()
        self._offsets: dict[str, list[int]] = {}
        #: Topic -> its partition ids in order, as the default partitioner sees them. Fixed for
        #: the term: partitions added meanwhile are used from the next term on.
        self._partitions: dict[str, list[int]] = {}
        self._event_topics = frozenset(event_topics(topics.prefix))
        self._projects_topic = projects_topic(topics.prefix)
        self._index_headers: Headers = [("content-type", CONTENT_TYPE)]
        #: The project index's state between batches (its quarantined projects).
        self.index = ProjectIndex()
        self.index_seeded = False
        #: When the last watermark was written (monotonic), for the heartbeat.
        self.watermark_at = 0.0

    # --- start: choose the mode, then recover ----------------------------------------------

    async def start(self) -> Checkpoint | None:
        """Connect, pick the delivery mode and recover; returns the checkpoint to resume from."""
        self.mode = await self._open_producer()
        self.metrics.set_delivery_mode(self.mode)
        transactional = self.mode == "transactional"
        self.checkpoint = await read_checkpoint(
            self.kafka, self.topics.prefix, committed_only=transactional, warm=self.warm
        )
        if transactional:
            self._offsets = dict(self.checkpoint.offsets) if self.checkpoint else {}
        else:
            self._landed, self._offsets = await landed_serials(
                self.kafka, self.topics.prefix, self.checkpoint
            )
        if self.checkpoint is not None:
            self.index = ProjectIndex(self.checkpoint.quarantined)
            self.index_seeded = self.checkpoint.index_seeded
            self.metrics.committed_serial.set(self.checkpoint.serial)
            if self.checkpoint.timestamp is not None:
                self.metrics.committed_timestamp.set(self.checkpoint.timestamp)
        return self.checkpoint

    async def _open_producer(self) -> str:
        if self.requested != "high-water":
            candidate = self._guarded(producer(self.kafka, transactional_id=self.transactional_id))
            try:
                await candidate.start()
            except _NO_TRANSACTIONS as exc:
                await candidate.stop()
                if self.requested == "transactional":
                    raise BrokerLacksFeature(
                        f"--delivery transactional, but {self.kafka.bootstrap_servers} refused a "
                        f"transactional producer ({type(exc).__name__})",
                        "use a broker with transactions, or --delivery high-water",
                    ) from None
                log.info(
                    "delivery mode: high-water (the broker refused a transactional id: %s); "
                    "consumers should drop serials they already saw",
                    type(exc).__name__,
                )
            except AUTHORIZATION_ERRORS as exc:
                await candidate.stop()
                problem = "cannot open the producer"
                raise await failure(self.kafka, exc, problem, "IdempotentWrite") from None
            except KafkaConnectionError as exc:
                await candidate.stop()
                raise await refusal(self.kafka) or unreachable(self.kafka, exc) from None
            else:
                self._producer = candidate
                why = "forced" if self.requested == "transactional" else "the broker supports it"
                log.info(
                    "delivery mode: transactional (%s), transactional id %r",
                    why,
                    self.transactional_id,
                )
                return "transactional"
        else:
            log.info("delivery mode: high-water (forced by --delivery)")
        plain = self._guarded(producer(self.kafka))
        try:
            await plain.start()
        except KafkaConnectionError as exc:
            await plain.stop()
            raise await refusal(self.kafka) or unreachable(self.kafka, exc) from None
        self._producer = plain
        return "high-water"

    # --- the lease check ------------------------------------------------------------------------

    def check_lease(self) -> None:
        """Raise `LeaseExpired` if the leader's session may have expired; for good, once so.

        High-water mode only: with transactions the broker fences a stale leader, and a leader
        that merely lost touch with the group coordinator for a while may carry on.
        """
        if (
            self._expired is None
            and self.lease is not None
            and self.mode == "high-water"
            and not self.lease.valid()
        ):
            self._expired = LeaseExpired(self.lease.age())
        if self._expired is not None:
            raise self._lease_error()

    def _lease_error(self) -> LeaseExpired:
        assert self._expired is not None
        return LeaseExpired(self._expired.age)

    def _guarded(self, candidate: AIOKafkaProducer) -> AIOKafkaProducer:
        """Check the lease right before each produce request is written to the socket.

        The producer's sender sends batches queued in its accumulator on its own, so the checks
        in `publish` cannot catch a batch queued before a pause and sent after it. The check runs
        once the connection is ready, so no await separates it from the write. A withheld
        request fails its batches (the error is not retriable) and nothing is sent.
        """
        client: AIOKafkaClient = candidate.client
        send = client.send
        ready = client.ready

        async def checked(node_id: int, request: object, **options: object) -> object:
            if getattr(request, "API_KEY", None) == _PRODUCE_API:
                await ready(node_id, **options)
                try:
                    self.check_lease()
                except LeaseExpired as exc:
                    raise _Withheld(str(exc)) from None
            return await send(node_id, request, **options)

        client.send = checked
        return candidate

    async def stop(self) -> None:
        if self._producer is not None:
            try:
                await self._producer.stop()
            except KafkaError as exc:
                log.warning("producer did not close cleanly: %s", exc)
            self._producer = None

    # --- publish -------------------------------------------------------------------------------

    async def publish(
        self,
        events: Sequence[Event],
        serial: int,
        timestamp: int | None,
        head: int | None = None,
    ) -> int:
        """Publish `events`, their project index records, the checkpoint `serial` and a
        watermark together; returns how many events were sent.

        `serial` is the highest journal serial this batch covers (all rows up to it are
        handled); `head` the journal's newest serial known, for the watermark.
        """
        if self._producer is None:
            raise RuntimeError("Sink.publish before start")
        self.check_lease()
        started = time.perf_counter()
        todo = [e for e in events if e.serial not in self._landed] if self._landed else events
        skipped = len(events) - len(todo)
        # From every event, skipped or not: index records are states, and writing one twice
        # changes nothing. The index's state moves on only once the batch is committed.
        index = ProjectIndex(self.index.quarantined)
        extra = self._index_records(index.updates(events))
        checkpoint = Checkpoint(
            serial=serial,
            timestamp=timestamp,
            offsets=self._offsets,
            replica=self.replica_id,
            mode=self.mode,
            quarantined=tuple(sorted(index.quarantined)),
            index_seeded=self.index_seeded,
        )
        async with self._translated():
            if self.mode == "transactional":
                async with self._producer.transaction():
                    metadata = await self._send_all(todo, extra)
                    # The batch's offsets are known once acknowledged: in the same commit.
                    offsets = self._merged_offsets(metadata)
                    await self._send_marks(dataclasses.replace(checkpoint, offsets=offsets), head)
            else:
                metadata = await self._send_all(todo, extra)
                self._advance_offsets(metadata)
                await self._send_marks(self._with_offsets(checkpoint), head)
        if self.mode == "transactional":
            self._advance_offsets(metadata)
        if skipped:
            self.metrics.duplicates_skipped.inc(skipped)
            self._landed.difference_update(e.serial for e in events)
        self.index = index
        self._account(todo, serial, timestamp, time.perf_counter() - started, len(events))
        self.checkpoint = self._with_offsets(checkpoint)
        return len(todo)

    async def heartbeat(self, head: int | None) -> None:
        """Write a watermark for what is committed (the journal is quiet: no batch carries one)."""
        if self._producer is None or self.checkpoint is None:
            raise RuntimeError("Sink.heartbeat before the first publish")
        self.check_lease()
        async with self._write():
            await (await self._send_watermark(self.checkpoint, head))
        self.watermark_at = time.monotonic()

    async def seed_index(self, listing: Mapping[str, int], head: int | None = None) -> int:
        """Write the project index from `list_packages_with_serial`'s answer, then record that
        it is seeded (in the checkpoint); returns how many projects were written.

        Written in chunks (a transaction each in transactional mode): a crash before the last
        leaves the index unseeded, and the next leader seeds it again (the records are states).
        """
        if self._producer is None or self.checkpoint is None:
            raise RuntimeError("Sink.seed_index before the first publish")
        # Chunk by chunk, so that only one chunk's records are in memory beside the listing.
        pairs = iter(listing.items())
        written = 0
        while chunk := self._index_records(self.index.seed(itertools.islice(pairs, SEED_CHUNK))):
            written += len(chunk)
            async with self._write():
                await self._send_all((), chunk)
        self.index_seeded = True
        await self.publish([], self.checkpoint.serial, self.checkpoint.timestamp, head)
        return written

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        """One write of its own: a transaction in transactional mode; errors translated."""
        assert self._producer is not None
        async with self._translated():
            if self.mode == "transactional":
                async with self._producer.transaction():
                    yield
            else:
                yield

    @contextlib.asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        """Kafka's errors while writing, as the bridge's own (one line, what to do)."""
        try:
            yield
        except _Withheld:
            raise self._lease_error() from None
        except ProducerFenced:
            raise Fenced(
                "another replica took over this transactional id (this one was fenced)",
                "nothing to do: this replica stops writing and rejoins the leader group as a "
                "standby",
            ) from None
        except AUTHORIZATION_ERRORS as exc:
            prefixes = bridge_prefixes(self.topics.prefix)
            raise await failure(self.kafka, exc, "cannot publish", "Write", prefixes) from None
        except KafkaConnectionError as exc:
            raise unreachable(self.kafka, exc) from None

    def _index_records(self, updates: Updates) -> list[IndexRecord]:
        topic, headers = self._projects_topic, self._index_headers
        return [IndexRecord(topic, key.encode(), value, headers) for key, value in updates.items()]

    @property
    def _mark_key(self) -> bytes:
        return self.topics.prefix.encode()

    def _watermark(self, checkpoint: Checkpoint, head: int | None) -> Watermark:
        return Watermark(
            serial=checkpoint.serial,
            timestamp=checkpoint.timestamp,
            offsets=checkpoint.offsets,
            head=head if head is None else max(head, checkpoint.serial),
        )

    async def _send_watermark(
        self, checkpoint: Checkpoint, head: int | None
    ) -> asyncio.Future[RecordMetadata]:
        """Queue the public watermark for what `checkpoint` covers; the future of its send."""
        assert self._producer is not None
        sent: asyncio.Future[RecordMetadata] = await self._producer.send(
            watermark_topic(self.topics.prefix),
            self._watermark(checkpoint, head).encode(),
            self._mark_key,
        )
        return sent

    async def _send_marks(self, checkpoint: Checkpoint, head: int | None) -> None:
        """The checkpoint (internal) and the watermark (public) for the batch, side by side."""
        assert self._producer is not None
        sent = [
            await self._send_watermark(checkpoint, head),
            await self._producer.send(
                checkpoint_topic(self.topics.prefix),
                checkpoint.encode(),
                checkpoint_key(self.topics.prefix),
            ),
        ]
        results = await asyncio.gather(*sent, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            # A denied checkpoint topic fails its send, and then the transaction fails the other:
            # the denial is the one that says what to do.
            raise next((e for e in errors if isinstance(e, AUTHORIZATION_ERRORS)), errors[0])
        self.watermark_at = time.monotonic()

    async def _send_all(
        self, events: Sequence[Event], extra: Iterable[IndexRecord] = ()
    ) -> list[Landed]:
        """Send `events` (and `extra` records) in record batches, one open batch per partition;
        wait for every ack.

        Filling the batches here, rather than awaiting `producer.send` per record, saves a
        coroutine, a future and a metadata tuple per record: most of the producer's cost in a
        backfill. A partition's batches are handed over in order, so its records keep journal
        order, and the partition of a key is the default partitioner's (murmur2), as before.
        """
        assert self._producer is not None
        producer = self._producer
        partitions = self._partitions
        filling: dict[tuple[str, int], BatchBuilder] = {}
        sent: list[tuple[str, int, int, asyncio.Future[RecordMetadata]]] = []
        records: Iterable[Record | IndexRecord] = itertools.chain(
            map(self.router.route, events), extra
        )
        for record in records:
            topic = record.topic
            ids = partitions.get(topic)
            if ids is None:
                ids = partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = ids[key_hash(record.key) % len(ids)]
            batch = filling.get((topic, partition))
            if batch is not None:
                appended = batch.append(
                    timestamp=None, key=record.key, value=record.value, headers=record.headers
                )
                if appended is not None:
                    continue
                # Full: hand it over now, so that it travels while the rest is built.
                self.check_lease()
                future = await producer.send_batch(batch, topic, partition=partition)
                sent.append((topic, partition, batch.record_count(), future))
            batch = filling[topic, partition] = producer.create_batch()
            # A new batch takes its first record whatever its size.
            batch.append(timestamp=None, key=record.key, value=record.value, headers=record.headers)
        for (topic, partition), batch in filling.items():
            self.check_lease()
            future = await producer.send_batch(batch, topic, partition=partition)
            sent.append((topic, partition, batch.record_count(), future))
        acks = await asyncio.gather(*(future for *_, future in sent))
        return [
            (topic, partition, ack.offset + count)
            for (topic, partition, count, _), ack in zip(sent, acks, strict=True)
        ]

    def _merged_offsets(self, landed: Sequence[Landed]) -> dict[str, list[int]]:
        merged = {topic: list(offsets) for topic, offsets in self._offsets.items()}
        for topic, partition, end in landed:
            if topic not in self._event_topics:
                continue  # the project index: the checkpoint and the watermark cover events
            offsets = merged.setdefault(topic, [])
            while len(offsets) <= partition:
                offsets.append(0)
            offsets[partition] = max(offsets[partition], end)
        return merged

    def _advance_offsets(self, landed: Sequence[Landed]) -> None:
        self._offsets = self._merged_offsets(landed)

    def _with_offsets(self, checkpoint: Checkpoint) -> Checkpoint:
        return dataclasses.replace(checkpoint, offsets=self._offsets)

    def _account(
        self,
        sent: Sequence[Event],
        serial: int,
        timestamp: int | None,
        seconds: float,
        rows: int,
    ) -> None:
        counts: dict[str, int] = {}
        for event in sent:
            counts[event.type] = counts.get(event.type, 0) + 1
        for type_name, count in counts.items():
            self.metrics.events_published.labels(type_name).inc(count)
        self.metrics.committed_serial.set(serial)
        if timestamp is not None:
            self.metrics.committed_timestamp.set(timestamp)
        self.metrics.commit_duration.observe(seconds)
        self.metrics.batch_rows.observe(rows)
        self.metrics.mark_progress()
