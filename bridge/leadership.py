"""Leadership: exactly one replica polls PyPI, decided by Kafka itself.

Every replica joins one consumer group on a one-partition coordination topic; the member that
owns the partition leads. No extra infrastructure or RBAC is needed. A standby takes over when the
leader's session times out (a crash) or at once when the leader leaves the group (a graceful
stop). The assignment is sticky: a replica that joins does not take leadership away from a healthy
leader. When leadership is revoked the bridge stops producing before the revocation completes,
so the next leader never overlaps with this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import KafkaError

from bridge.config import KafkaSettings
from bridge.kafka import always_leave_group, consumer
from bridge.metrics import Metrics
from bridge.routing import leadership_topic

log = logging.getLogger(__name__)
LEADING = b"leading"


def leader_assignor(is_leading: Callable[[], bool]) -> type[AbstractPartitionAssignor]:
    """An assignor that gives the coordination partition to the current leader if it is present.

    aiokafka calls assignors as classes, so each replica gets a class bound to its own state.
    """

    class StickyLeaderAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
        name = "pypi-bridge-sticky-leader"
        version = 0

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(
                cls.version, list(topics), LEADING if is_leading() else b""
            )

        @classmethod
        def assign(
            cls,
            cluster: ClusterMetadata,
            members: Mapping[str, ConsumerProtocolMemberMetadata],
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            ordered = sorted(members)
            incumbents = [m for m in ordered if members[m].user_data == LEADING]
            winner = (incumbents or ordered)[0] if ordered else None
            result: dict[str, ConsumerProtocolMemberAssignment] = {}
            for member in ordered:
                topics: list[tuple[str, list[int]]] = []
                if member == winner:
                    for topic in members[member].subscription:
                        partitions = sorted(cluster.partitions_for_topic(topic) or [])
                        topics.append((topic, partitions))
                result[member] = ConsumerProtocolMemberAssignment(cls.version, topics, b"")
            return result

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            pass

    return StickyLeaderAssignor


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: Leadership) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        if self.owner.leading:
            await self.owner._lose("leadership revoked by a group rebalance")

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        if any(tp.partition == 0 for tp in assigned):
            self.owner._win()


class Leadership:
    """This replica's membership of the leader group."""

    def __init__(
        self,
        kafka: KafkaSettings,
        prefix: str,
        replica_id: str,
        metrics: Metrics,
        *,
        session_timeout: float = 6.0,
    ) -> None:
        self.kafka = kafka
        self.topic = leadership_topic(prefix)
        self.group_id = f"{prefix}-bridge.leader"
        self.replica_id = replica_id
        self.metrics = metrics
        self.session_timeout = session_timeout
        self.leading = False
        self.became_leader = asyncio.Event()
        self.lost_leadership = asyncio.Event()
        #: Awaited when leadership goes, before the group may hand it to someone else.
        self.on_lose: Callable[[], Awaitable[None]] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        options: dict[str, Any] = {
            "group_id": self.group_id,
            "client_id": f"pypi-bridge-{self.replica_id}",
            "session_timeout_ms": int(self.session_timeout * 1000),
            "heartbeat_interval_ms": max(300, int(self.session_timeout * 1000) // 10),
            "rebalance_timeout_ms": int(self.session_timeout * 1000) * 3,
            "partition_assignment_strategy": (leader_assignor(lambda: self.leading),),
        }
        self._consumer = consumer(self.kafka, **options)
        self._consumer.subscribe([self.topic], listener=_Listener(self))
        await self._consumer.start()
        self._pump = asyncio.create_task(self._keep_member(), name="leadership-pump")
        log.info("joined the leader group %s as %s", self.group_id, self.replica_id)

    async def _keep_member(self) -> None:
        """Poll the (empty) coordination topic so the group sees this member as alive."""
        assert self._consumer is not None
        while True:
            try:
                await self._consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                self.metrics.errors.labels("leadership").inc()
                log.warning("leader group membership: %s; retrying", exc)
                await asyncio.sleep(1)

    def _win(self) -> None:
        if not self.leading:
            self.leading = True
            self.lost_leadership.clear()
            self.became_leader.set()
            self.metrics.set_leader(True)
            log.info("%s is now the leader", self.replica_id)

    async def _lose(self, why: str) -> None:
        self.leading = False
        self.became_leader.clear()
        self.metrics.set_leader(False)
        log.info("%s is no longer the leader (%s); stopping production", self.replica_id, why)
        if self.on_lose is not None:
            await self.on_lose()
        self.lost_leadership.set()

    async def stop(self) -> None:
        """Leave the group at once, so a standby takes over without waiting for a time-out."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.leading:
            await self._lose("this replica is stopping")
        if self._consumer is not None:
            always_leave_group(self._consumer)
            try:
                await self._consumer.stop()
            except KafkaError as exc:
                log.warning("leaving the leader group: %s", exc)
            self._consumer = None
