"""Checkpoint: the one place the committed serial is written and read back.

The checkpoint is a record on a compacted one-partition topic (`{prefix}-bridge.checkpoint`),
written with the events it covers: inside the same transaction on a transactional broker, or
right after the batch is acknowledged otherwise. Besides the serial it stores, for every event
partition, the offset just past the records it covers; on a broker without transactions, recovery
reads every partition from there to its end to learn exactly which later serials already landed,
and the sink skips those instead of sending them twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from bridge.config import KafkaSettings
from bridge.errors import BridgeError, ContractError
from bridge.kafka import bridge_prefixes, consumer, failure, partitions_of, read_ranges
from bridge.routing import checkpoint_topic, event_topics, serial_of

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
#: Recovery reads partitions to their end, and a broker holds a fetch of a partition with
#: nothing new for the whole fetch wait (500 ms by default): a fresh start would wait that long.
RECOVERY_FETCH_WAIT_MS = 20


@dataclass(frozen=True)
class Checkpoint:
    """Every journal entry up to `serial` is committed to the event topics."""

    serial: int
    #: Journal timestamp of the last committed entry (None when nothing was committed yet).
    timestamp: int | None
    #: Event topic -> next offset of each partition (index = partition) once this batch landed.
    offsets: dict[str, list[int]] = field(default_factory=dict)
    replica: str = ""
    mode: str = ""
    written_at: float = 0.0
    #: Normalized names of the projects under quarantine (the project index's status).
    quarantined: tuple[str, ...] = ()
    #: Whether the project index was seeded from `list_packages_with_serial` (once, ever).
    index_seeded: bool = False

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "version": FORMAT_VERSION,
                "serial": self.serial,
                "timestamp": self.timestamp,
                "offsets": self.offsets,
                "replica": self.replica,
                "mode": self.mode,
                "written_at": self.written_at or time.time(),
                "quarantined": self.quarantined,
                "index_seeded": self.index_seeded,
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> Checkpoint:
        try:
            data = orjson.loads(payload)
            return cls(
                serial=int(data["serial"]),
                timestamp=data.get("timestamp"),
                offsets={str(k): [int(o) for o in v] for k, v in data.get("offsets", {}).items()},
                replica=str(data.get("replica", "")),
                mode=str(data.get("mode", "")),
                written_at=float(data.get("written_at", 0.0)),
                quarantined=tuple(str(k) for k in data.get("quarantined", ())),
                index_seeded=bool(data.get("index_seeded", False)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ContractError(
                f"the checkpoint record is unreadable ({exc})",
                "inspect the checkpoint topic; delete it only to restart from --start-serial",
            ) from None


def checkpoint_key(prefix: str) -> bytes:
    return prefix.encode()


class WarmReader:
    """A recovery reader connected while the replica stands by, so a takeover need not connect.

    Connecting, the first metadata answer and finding the checkpoint's partition do not need
    the lead; a standby does them beside its group join. Once elected, the sink reads the
    checkpoint with this reader instead of a new one. It
    reads nothing before the election: in transactional mode only the new leader's
    InitProducerId settles the old leader's open transaction, and the read must follow it.
    """

    def __init__(self, kafka: KafkaSettings, prefix: str, *, committed_only: bool) -> None:
        self.kafka = kafka
        self.prefix = prefix
        self.committed_only = committed_only
        isolation = "read_committed" if committed_only else "read_uncommitted"
        self.client = consumer(
            kafka, isolation_level=isolation, fetch_max_wait_ms=RECOVERY_FETCH_WAIT_MS
        )
        self.ready = False

    async def start(self, topics_exist: asyncio.Event | None = None) -> None:
        """Connect and learn the partitions; a failure leaves the reader unused, not broken.

        Connecting runs beside the topic check; asking for the checkpoint topic's metadata waits
        for `topics_exist` (a broker that auto-creates topics would create it with its defaults).
        """
        try:
            await self.client.start()
            if topics_exist is not None:
                await topics_exist.wait()
            await partitions_of(self.client, [checkpoint_topic(self.prefix)])
        except (KafkaError, BridgeError) as exc:
            log.debug("recovery reader not warmed up (%s); the term opens its own", exc)
            return
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.client.stop()


@contextlib.asynccontextmanager
async def _reader(
    kafka: KafkaSettings, *, committed_only: bool, warm: WarmReader | None
) -> AsyncIterator[AIOKafkaConsumer]:
    """The warm reader when it fits the isolation level asked for, else a fresh one."""
    if warm is not None and warm.ready and warm.committed_only == committed_only:
        yield warm.client
        return
    isolation = "read_committed" if committed_only else "read_uncommitted"
    client = consumer(kafka, isolation_level=isolation, fetch_max_wait_ms=RECOVERY_FETCH_WAIT_MS)
    try:
        await client.start()
        yield client
    finally:
        await client.stop()


async def read_checkpoint(
    kafka: KafkaSettings, prefix: str, *, committed_only: bool, warm: WarmReader | None = None
) -> Checkpoint | None:
    """The newest checkpoint for `prefix`, or None if the bridge never committed anything."""
    topic = checkpoint_topic(prefix)
    try:
        async with _reader(kafka, committed_only=committed_only, warm=warm) as client:
            # One partition when the bridge created it; an auto-created topic may have more.
            partitions = await partitions_of(client, [topic])
            begins = await client.beginning_offsets(partitions)
            ends = await client.end_offsets(partitions)
            # The tail may hold transaction markers; a few records back always reaches a data
            # record.
            records = await read_ranges(
                client, {tp: max(begins[tp], ends[tp] - 16) for tp in partitions}
            )
    except KafkaError as exc:
        problem = f"cannot read the checkpoint topic {topic}"
        raise await failure(kafka, exc, problem, "Read", bridge_prefixes(prefix)) from None
    key = checkpoint_key(prefix)
    found = [Checkpoint.decode(r.value) for r in records if r.key == key and r.value is not None]
    return max(found, key=lambda c: c.serial) if found else None


async def landed_serials(
    kafka: KafkaSettings, prefix: str, checkpoint: Checkpoint | None
) -> tuple[set[int], dict[str, list[int]]]:
    """Serials after the checkpoint that already sit in the event topics, and the end offsets.

    This is the high-water recovery: a batch may have partly landed before a crash, and without
    transactions those records are visible; the sink must not send them again.
    """
    try:
        # Always a reader of its own: once a consumer is assigned partitions, aiokafka asks for
        # the metadata of those topics only, so the warm reader (assigned the checkpoint's)
        # would never learn of the event topics.
        async with _reader(kafka, committed_only=False, warm=None) as client:
            partitions = await partitions_of(client, event_topics(prefix))
            known = checkpoint.offsets if checkpoint else {}
            begins = await client.beginning_offsets(partitions)
            starts: dict[TopicPartition, int] = {}
            for tp in partitions:
                offsets = known.get(tp.topic, [])
                start = offsets[tp.partition] if tp.partition < len(offsets) else begins[tp]
                starts[tp] = max(start, begins[tp])
            records = await read_ranges(client, starts)
            ends = {tp: await client.position(tp) for tp in partitions}
    except KafkaError as exc:
        problem = "cannot read the event topics to recover"
        raise await failure(kafka, exc, problem, "Read", bridge_prefixes(prefix)) from None
    floor = checkpoint.serial if checkpoint else -1
    landed = {s for r in records if (s := serial_of(r.headers)) is not None and s > floor}
    end_offsets: dict[str, list[int]] = {}
    for tp in sorted(partitions, key=lambda t: (t.topic, t.partition)):
        end_offsets.setdefault(tp.topic, []).append(ends[tp])
    log.info(
        "recovery: read %d records written after the checkpoint, %d serials already landed",
        len(records),
        len(landed),
    )
    return landed, end_offsets
