"""Leadership: exactly one replica polls PyPI, decided by Kafka itself.

Every replica joins one consumer group on a one-partition coordination topic; the member that
owns the partition leads. No extra infrastructure or RBAC is needed. A standby takes over when the
leader's session times out (a crash) or at once when the leader leaves the group (a graceful
stop). The assignment is sticky: a replica that joins does not take leadership away from a healthy
leader. When leadership is revoked the bridge stops producing before the revocation completes,
so the next leader never overlaps with this one.

A leader that is paused (SIGSTOP, a frozen VM, a stalled event loop) misses that revocation: the
group drops it once its session times out and elects a successor, and the paused leader resumes
believing it still leads. On a broker with transactions, the successor's producer fences the
zombie's transactional id (`Fenced`). Without transactions the zombie fences itself: the `Lease`
records when the coordinator last confirmed this member's session, and the sink checks it before
every publish, every batch and every produce request; once the session may have expired, nothing
more is sent (`LeaseExpired`). A fenced leader then steps down and rejoins the group as a standby
(`Leadership.step_down`): it leads again only when the group elects it again, and claims nothing
in that rebalance, so the sticky assignment keeps the successor leading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
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
from bridge.errors import BridgeError, LeaseExpired
from bridge.kafka import (
    AUTHORIZATION_ERRORS,
    always_leave_group,
    bridge_prefixes,
    consumer,
    failure,
)
from bridge.metrics import Metrics
from bridge.routing import leadership_topic

log = logging.getLogger(__name__)
LEADING = b"leading"
#: Share of the session timeout a leader keeps in hand: it stops writing this long before the
#: coordinator could drop it, time enough for a request that passed the check to land.
LEASE_MARGIN = 0.2
# Kafka API keys of the answers that prove the coordinator still counts this member alive.
_HEARTBEAT_API = 12
_SYNC_GROUP_API = 14
#: aiokafka's member id after the coordinator forgot this member (its session expired).
_NO_MEMBER = ""
_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def lease_clock() -> float:
    """Seconds on a clock that keeps counting while this process or its host is suspended.

    The coordinator's clock runs on while this replica is paused; `CLOCK_BOOTTIME` (Linux) also
    counts a suspended host, where `CLOCK_MONOTONIC` would stop and make an old lease look new.
    """
    return time.clock_gettime(_CLOCK)


class Lease:
    """How long this replica may still act as the leader: its group session, as last renewed.

    The coordinator drops a member that has not heartbeated for the session timeout, and may
    elect a successor at once. A renewal counts from the moment its request was *sent* (the
    coordinator received it no earlier, so its session clock started no earlier), and only when
    the coordinator answered without error. The lease is valid until `limit` seconds after the
    last renewal: the session timeout less a margin for a request that passed the check to land.

    The clock is read at each check, never cached: a process resumed after SIGSTOP sees at its
    first check how long it was away.
    """

    def __init__(
        self,
        session_timeout: float,
        *,
        margin: float | None = None,
        clock: Callable[[], float] = lease_clock,
    ) -> None:
        self.session_timeout = session_timeout
        self.margin = session_timeout * LEASE_MARGIN if margin is None else margin
        self.clock = clock
        #: Send time of the newest request the coordinator answered with success.
        self.renewed_at: float | None = None

    @property
    def limit(self) -> float:
        return self.session_timeout - self.margin

    def renew(self, sent_at: float) -> None:
        if self.renewed_at is None or sent_at > self.renewed_at:
            self.renewed_at = sent_at

    def age(self) -> float:
        """Seconds since the last renewal (infinite before the first)."""
        if self.renewed_at is None:
            return math.inf
        return max(0.0, self.clock() - self.renewed_at)

    def valid(self) -> bool:
        return self.age() < self.limit

    def check(self) -> None:
        """Raise `LeaseExpired` unless the session is surely still alive."""
        age = self.age()
        if age >= self.limit:
            raise LeaseExpired(age)


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
            await self.owner._revoked()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.owner._assigned(any(tp.partition == 0 for tp in assigned))


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
        self.lease = Lease(session_timeout)
        self.leading = False
        #: Whether this replica led, healthy, until a rebalance revoked it: it claims the lead
        #: in the rejoin (the assignment is sticky). A fenced or expired leader claims nothing.
        self._incumbent = False
        self.became_leader = asyncio.Event()
        self.lost_leadership = asyncio.Event()
        #: Awaited when leadership goes, before the group may hand it to someone else.
        self.on_lose: Callable[[], Awaitable[None]] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._pump: asyncio.Task[None] | None = None
        #: Why the broker refuses this member (it lacks an ACL), once it has: no retry cures it.
        self.refused: BridgeError | None = None
        self.refusal = asyncio.Event()
        self._prefixes = bridge_prefixes(prefix)

    async def start(self) -> None:
        """Connect, then join the group (`connect()` and `join()` in one)."""
        await self.connect()
        await self.join()

    async def connect(self) -> None:
        """Connect and find the group's coordinator: the part of joining that names no topic.

        It can run beside the topic check. Subscribing asks for the coordination topic's
        metadata, and a broker with `auto.create.topics.enable` would create a missing topic then
        with its own defaults, so `join()` follows the topic check. A failure leaves nothing
        open: `connect()` may be called again.
        """
        options: dict[str, Any] = {
            "group_id": self.group_id,
            "client_id": f"pypi-bridge-{self.replica_id}",
            "session_timeout_ms": int(self.session_timeout * 1000),
            # Frequent heartbeats: a standby hears of a graceful hand-over sooner, and the
            # leader's lease is renewed often.
            "heartbeat_interval_ms": max(200, int(self.session_timeout * 1000) // 20),
            "rebalance_timeout_ms": int(self.session_timeout * 1000) * 3,
            "partition_assignment_strategy": (leader_assignor(self._claims_leadership),),
        }
        member = consumer(self.kafka, **options)
        self._watch_renewals(member)
        try:
            await member.start()
            coordinator = getattr(member, "_coordinator", None)
            if coordinator is not None:
                await coordinator.ensure_coordinator_known()
        except BaseException:
            with contextlib.suppress(KafkaError):
                await member.stop()
            raise
        self._consumer = member

    async def join(self) -> None:
        """Subscribe to the coordination topic (it exists by now) and keep the membership alive."""
        assert self._consumer is not None, "connect() first"
        # The group's leader assigns from the metadata it holds: have the topic's before the join
        # (as `start()` of a consumer subscribed beforehand does), or the first assignment is
        # empty and the group runs leaderless until a metadata refresh.
        await self._consumer._client._wait_on_metadata(self.topic)
        self._consumer.subscribe([self.topic], listener=_Listener(self))
        self._pump = asyncio.create_task(self._keep_member(), name="leadership-pump")
        log.info("joined the leader group %s as %s", self.group_id, self.replica_id)

    async def _keep_member(self) -> None:
        """Poll the (empty) coordination topic so the group sees this member as alive."""
        assert self._consumer is not None
        while True:
            try:
                await self._consumer.getmany(timeout_ms=500)
            except AUTHORIZATION_ERRORS as exc:
                problem = "cannot read the leader group's topic"
                self.refused = await failure(self.kafka, exc, problem, "Read", self._prefixes)
                self.refusal.set()
                return
            except KafkaError as exc:
                self.metrics.errors.labels("leadership").inc()
                log.warning("leader group membership: %s; retrying", exc)
                await asyncio.sleep(1)

    def _watch_renewals(self, member: AIOKafkaConsumer) -> None:
        """Renew the lease with every heartbeat (and group sync) the coordinator accepts.

        The coordinator's requests all go through the consumer's client, which exists before
        `start()`, so not even the first group sync is missed.
        """
        client = member._client
        send = client.send
        lease = self.lease

        async def timed(node_id: int, request: Any, **options: Any) -> Any:
            sent_at = lease.clock()
            response = await send(node_id, request, **options)
            if request.API_KEY in (_HEARTBEAT_API, _SYNC_GROUP_API) and not getattr(
                response, "error_code", 1
            ):
                lease.renew(sent_at)
            return response

        client.send = timed

    def _claims_leadership(self) -> bool:
        return self.leading or self._incumbent

    def _member_expired(self) -> bool:
        coordinator = getattr(self._consumer, "_coordinator", None)
        return coordinator is not None and coordinator.member_id == _NO_MEMBER

    def _assigned(self, won: bool) -> None:
        self._incumbent = False
        if won:
            self._win()

    def _win(self) -> None:
        if not self.leading:
            self.leading = True
            self.lost_leadership.clear()
            self.became_leader.set()
            self.metrics.set_leader(True)
            log.info("%s is now the leader", self.replica_id)

    async def _revoked(self) -> None:
        if not self.lease.valid():
            # Paused past its session (the zombie case): the same one line as the sink's check.
            self.metrics.errors.labels("leadership").inc()
            await self._lose(str(LeaseExpired(self.lease.age())), warn=True)
        elif self._member_expired():
            # The coordinator forgot this member: its session expired and a successor may lead.
            await self._lose(self._no_longer("its group session expired"))
        else:
            await self._lose(self._no_longer("leadership revoked by a group rebalance"), claim=True)

    def _no_longer(self, why: str) -> str:
        return f"{self.replica_id} is no longer the leader ({why}); stopping production"

    async def _lose(self, line: str, *, claim: bool = False, warn: bool = False) -> None:
        self.leading = False
        self._incumbent = claim
        self.became_leader.clear()
        self.metrics.set_leader(False)
        log.log(logging.WARNING if warn else logging.INFO, "%s", line)
        if self.on_lose is not None:
            await self.on_lose()
        self.lost_leadership.set()

    def disclaim(self) -> None:
        """Claim nothing in the next rebalance (this replica's last term was fenced)."""
        self._incumbent = False

    def step_down(self) -> None:
        """Give up the lead after a fence, and rejoin the group as a standby.

        The group may still count this replica as its leader (a fence can come before the group
        notices anything), so a replica that still believes it leads asks for a rebalance, in
        which it claims nothing: it leads again only if the group elects it again. The caller
        has already stopped producing and logged why; this adds no line of its own.
        """
        self.disclaim()
        if not self.leading:
            return  # a rebalance took the lead away already; the rejoin is under way
        self.leading = False
        self.became_leader.clear()
        self.metrics.set_leader(False)
        self.lost_leadership.set()
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is not None:
            coordinator.request_rejoin()

    async def stop(self) -> None:
        """Leave the group at once, so a standby takes over without waiting for a time-out."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.leading:
            await self._lose(self._no_longer("this replica is stopping"))
        if self._consumer is not None:
            always_leave_group(self._consumer)
            try:
                await self._consumer.stop()
            except KafkaError as exc:
                log.warning("leaving the leader group: %s", exc)
            self._consumer = None
