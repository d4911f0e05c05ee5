"""Kafka plumbing shared by the sink, the checkpoint, leadership and the consumers.

Client construction (with the operator's TLS/SASL settings), topic creation, and reading the
tail of partitions, so those details live in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    IllegalArgumentError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    KafkaConnectionError,
    KafkaError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)
from aiokafka.protocol.group import LeaveGroupRequest

from bridge.config import KafkaSettings, TopicSettings
from bridge.errors import BrokerError, ConfigError
from bridge.routing import checkpoint_topic, event_topics, leadership_topic

log = logging.getLogger(__name__)
# Refusals that no retry cures: the operator must change a setting or an ACL.
_REFUSED = (
    IllegalArgumentError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    PolicyViolationError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
)


def producer(kafka: KafkaSettings, **options: Any) -> AIOKafkaProducer:
    """A producer tuned for throughput: batches fill while the previous one is in flight."""
    defaults: dict[str, Any] = {
        "acks": "all",
        # The sink fills whole record batches itself; lingering would only hold back the last,
        # partly filled batch of every commit.
        "linger_ms": 0,
        "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "request_timeout_ms": 30_000,
    }
    return AIOKafkaProducer(**{**kafka.client_options(), **defaults, **options})


def consumer(kafka: KafkaSettings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    defaults: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 16 * 1024 * 1024,
        # librdkafka's default too. Brokers verify every batch's CRC when it is produced, and
        # librdkafka's mock cluster writes transaction markers with no CRC at all.
        "check_crcs": False,
    }
    return AIOKafkaConsumer(*topics, **{**kafka.client_options(), **defaults, **options})


def admin(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=30_000)


def unreachable(kafka: KafkaSettings, exc: BaseException) -> BrokerError:
    return BrokerError(
        f"cannot reach Kafka at {kafka.bootstrap_servers}: {type(exc).__name__}: {exc}",
        "check --bootstrap-servers and the network",
    )


async def ensure_topics(kafka: KafkaSettings, topics: TopicSettings) -> None:
    """Create the event, checkpoint and leadership topics that do not exist yet."""
    client = admin(kafka)
    try:
        await client.start()
        existing = set(await client.list_topics())
        replicas = topics.replication_factor
        if replicas == -1:
            # "Broker default": three copies where the cluster has three brokers, else one each.
            brokers = len(client._client.cluster.brokers()) or 1
            replicas = min(3, brokers)
        wanted = [
            NewTopic(name, topics.partitions, replicas) for name in event_topics(topics.prefix)
        ]
        wanted.append(
            NewTopic(
                checkpoint_topic(topics.prefix),
                1,
                replicas,
                topic_configs={"cleanup.policy": "compact"},
            )
        )
        wanted.append(NewTopic(leadership_topic(topics.prefix), 1, replicas))
        missing = [t for t in wanted if t.name not in existing]
        if missing and not await _can_create_topics(client):
            log.warning(
                "Kafka at %s cannot create topics (its metadata names no controller); "
                "create the %d missing topics of prefix %r (the checkpoint and leadership "
                "topics with one partition each)",
                kafka.bootstrap_servers,
                len(missing),
                topics.prefix,
            )
        elif missing:
            response = await client.create_topics(missing)
            for name, code, *message in getattr(response, "topic_errors", ()):
                error = for_code(code)
                # Another replica may have created it first: that is fine.
                if code and error is not TopicAlreadyExistsError:
                    raise error(f"topic {name}: {message[0] if message else ''}")
            log.info("created %d topics with prefix %r", len(missing), topics.prefix)
    except KafkaConnectionError as exc:
        raise unreachable(kafka, exc) from None
    except _REFUSED as exc:
        raise ConfigError(
            f"Kafka at {kafka.bootstrap_servers} refused to create the topics: "
            f"{type(exc).__name__}: {exc}",
            "check --partitions/--replication-factor against the cluster, and the ACLs",
        ) from None
    except KafkaError as exc:
        raise BrokerError(
            f"cannot create topics on {kafka.bootstrap_servers}: {type(exc).__name__}: {exc}",
            "the bridge keeps retrying",
        ) from None
    finally:
        await client.close()


def always_leave_group(member: AIOKafkaConsumer) -> None:
    """Make the consumer send LeaveGroup on close even in generation 0.

    aiokafka skips LeaveGroup while the group generation is 0, assuming Kafka's numbering from 1;
    some Kafka-protocol brokers (the embedded one) start at 0. Without LeaveGroup a graceful stop
    would hand over only after the session time-out, like a crash. Call before `stop()`.
    """
    coordinator = getattr(member, "_coordinator", None)
    if coordinator is None:
        return

    async def leave() -> None:
        if coordinator.member_id and coordinator._group_instance_id is None:
            request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
            try:
                await coordinator._send_req(request)
            except KafkaError as exc:
                log.warning(
                    "could not leave the leader group (a standby waits for the "
                    "session time-out instead): %s",
                    exc,
                )
        coordinator.reset_generation()

    coordinator._maybe_leave_group = leave


async def _can_create_topics(client: AIOKafkaAdminClient) -> bool:
    """Whether the cluster names a controller, where CreateTopics requests go.

    librdkafka's mock cluster names none (and answers no CreateTopics); it creates topics on
    first use instead.
    """
    if client._client.cluster.controller is None:
        await client._client.force_metadata_update()
    return client._client.cluster.controller is not None


async def partitions_of(client: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics` (refreshing metadata until each topic is known)."""
    found: list[TopicPartition] = []
    for topic in topics:
        for _ in range(50):
            parts = client.partitions_for_topic(topic)
            if parts:
                found.extend(TopicPartition(topic, p) for p in sorted(parts))
                break
            await client._client.force_metadata_update()
            await asyncio.sleep(0.1)
        else:
            raise BrokerError(f"topic {topic} does not exist", "start the bridge once to create it")
    return found


async def read_ranges(
    client: AIOKafkaConsumer, starts: dict[TopicPartition, int]
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record from each partition's start offset up to its end at the time of reading.

    The end is the high watermark carried by fetch responses, not a ListOffsets answer: some
    Kafka-protocol brokers (the embedded one among them) answer ListOffsets with the base offset
    of the last record batch, which would hide that batch's later records.
    """
    if not starts:
        return []
    client.assign(list(starts))
    for tp, offset in starts.items():
        client.seek(tp, offset)
    records: list[ConsumerRecord[bytes, bytes]] = []
    pending = set(starts)
    while pending:
        batch = await client.getmany(*pending, timeout_ms=200)
        for messages in batch.values():
            records.extend(messages)
        for tp in list(pending):
            highwater = client.highwater(tp)
            if highwater is not None and await client.position(tp) >= highwater:
                pending.discard(tp)
    return records
