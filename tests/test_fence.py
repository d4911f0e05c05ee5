"""The fence that keeps a paused-and-resumed leader from writing next to its successor.

Fast tests, no processes: the lease on the group session and its timing, the sink's checks (each
publish, each batch, each produce request, and for good once the lease ran out), what the leader
group is told after a fence, and the replica's loop after a fenced term: it steps down, rejoins
as a standby, and starts a new term only once elected again. One test sends to the embedded
broker: a batch queued before the pause is withheld by the producer-level check.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

from bridge.broker import EmbeddedBroker
from bridge.config import KafkaSettings, RunSettings, TopicSettings
from bridge.errors import Fenced, LeaseExpired
from bridge.kafka import ensure_topics
from bridge.leadership import LEADING, Leadership, Lease, leader_assignor
from bridge.metrics import Metrics
from bridge.parse import parse_row
from bridge.routing import Router, topic_name
from bridge.service import Replica
from bridge.sink import Sink, _Withheld
from tests.support import read_topics

SESSION = 6.0
HEARTBEAT, SYNC_GROUP, PRODUCE, METADATA = 12, 14, 0, 3


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def lease(clock: Clock, renewed: float | None = 0.0) -> Lease:
    held = Lease(SESSION, clock=clock)
    if renewed is not None:
        held.renew(clock.now - renewed)
    return held


# --- the lease ----------------------------------------------------------------------------------


def test_the_lease_lasts_the_session_timeout_less_a_fifth() -> None:
    clock = Clock()
    held = lease(clock)
    assert held.limit == pytest.approx(SESSION * 0.8)
    clock.now += 4.7
    held.check()
    clock.now += 0.1
    assert not held.valid()
    with pytest.raises(LeaseExpired, match=r"no heartbeat for 4\.8 s: stepping down"):
        held.check()


def test_a_lease_never_renewed_is_no_lease() -> None:
    held = lease(Clock(), renewed=None)
    assert not held.valid()
    with pytest.raises(LeaseExpired, match="no heartbeat for this whole term"):
        held.check()


def test_a_renewal_counts_from_when_its_request_was_sent_and_never_goes_back() -> None:
    clock = Clock()
    held = lease(clock, renewed=None)
    held.renew(clock.now - 2.0)
    held.renew(clock.now - 3.0)  # an older request answered late moves nothing
    assert held.age() == pytest.approx(2.0)


def test_a_resumed_process_reads_the_clock_afresh_at_its_first_check() -> None:
    clock = Clock()
    held = lease(clock)
    held.check()
    clock.now += 9.0  # SIGSTOP ... SIGCONT
    with pytest.raises(LeaseExpired, match=r"no heartbeat for 9\.0 s"):
        held.check()


def test_lease_expired_is_a_fence() -> None:
    assert issubclass(LeaseExpired, Fenced)
    assert not LeaseExpired(7.0).retriable


# --- what renews it -----------------------------------------------------------------------------


class FakeClient:
    """Stands in for aiokafka's client: records what was sent, answers with `error_code`."""

    def __init__(self, clock: Clock, error_code: int = 0, takes: float = 0.0) -> None:
        self.clock = clock
        self.error_code = error_code
        self.takes = takes
        self.sent: list[int] = []
        self.readied: list[int] = []

    async def ready(self, node_id: int, **options: Any) -> bool:
        self.readied.append(node_id)
        return True

    async def send(self, node_id: int, request: Any, **options: Any) -> Any:
        self.sent.append(request.API_KEY)
        self.clock.now += self.takes
        return SimpleNamespace(error_code=self.error_code)


def request(api_key: int) -> Any:
    return SimpleNamespace(API_KEY=api_key)


def leadership(clock: Clock | None = None) -> Leadership:
    """A leader group member that never touches a broker; its lease runs on `clock`."""
    member = Leadership(KafkaSettings("127.0.0.1:9"), "fence", "a", Metrics("a"))
    member.lease = Lease(SESSION, clock=clock or Clock())
    member.lease.renew(member.lease.clock())
    rejoins: list[bool] = []
    coordinator = SimpleNamespace(member_id="a-1", request_rejoin=lambda: rejoins.append(True))
    member._consumer = SimpleNamespace(_coordinator=coordinator, rejoins=rejoins)
    return member


def rejoins(member: Leadership) -> int:
    return len(member._consumer.rejoins)  # type: ignore[union-attr]


async def test_accepted_heartbeats_and_group_syncs_renew_the_lease_from_their_send_time() -> None:
    clock = Clock()
    member = leadership(clock)
    member.lease = Lease(SESSION, clock=clock)
    client = FakeClient(clock, takes=0.5)
    member._watch_renewals(SimpleNamespace(_client=client))
    sent_at = clock.now
    await client.send(1, request(HEARTBEAT))
    assert member.lease.renewed_at == sent_at  # not the answer's time, half a second later
    sent_at = clock.now
    await client.send(1, request(SYNC_GROUP))
    assert member.lease.renewed_at == sent_at
    await client.send(1, request(METADATA))
    assert member.lease.renewed_at == sent_at


async def test_a_refused_heartbeat_renews_nothing() -> None:
    clock = Clock()
    member = leadership(clock)
    before = member.lease.renewed_at
    client = FakeClient(clock, error_code=27)  # REBALANCE_IN_PROGRESS
    member._watch_renewals(SimpleNamespace(_client=client))
    clock.now += 1.0
    await client.send(1, request(HEARTBEAT))
    assert member.lease.renewed_at == before


# --- the sink's checks --------------------------------------------------------------------------


def sink(held: Lease | None, mode: str = "high-water") -> Sink:
    """A sink whose term has started in `mode`."""
    term = Sink(
        KafkaSettings("127.0.0.1:9"),
        TopicSettings("fence"),
        Router("fence", "https://pypi.org/pypi"),
        Metrics("a"),
        delivery="auto",
        transactional_id="fence-bridge",
        replica_id="a",
        lease=held,
    )
    term.mode = mode
    return term


def test_once_the_lease_ran_out_the_sink_sends_nothing_for_the_rest_of_its_term() -> None:
    clock = Clock()
    held = lease(clock)
    term = sink(held)
    term.check_lease()
    clock.now += 5.0
    with pytest.raises(LeaseExpired):
        term.check_lease()
    held.renew(clock.now)  # the member rejoined the group: a new term may lead, not this one
    with pytest.raises(LeaseExpired, match=r"no heartbeat for 5\.0 s"):
        term.check_lease()


def test_a_sink_without_a_lease_checks_nothing() -> None:
    sink(None).check_lease()


def test_with_transactions_the_broker_fences_a_stale_leader_not_the_lease() -> None:
    # A transactional producer of a stale leader is fenced by its successor's; a leader that
    # merely lost touch with the group coordinator for a while carries on.
    sink(lease(Clock(), renewed=30.0), mode="transactional").check_lease()


async def test_publish_checks_the_lease_before_anything_else() -> None:
    clock = Clock()
    term = sink(lease(clock, renewed=5.0))
    term._producer = SimpleNamespace()  # touched at all, it would fail
    with pytest.raises(LeaseExpired):
        await term.publish([parse_row(("foo", "1.0", 1700000000, "new release", 1))], 1, None)


@dataclass
class FakeBatch:
    records: int = 0

    def append(self, **record: Any) -> object | None:
        self.records += 1
        return object()

    def record_count(self) -> int:
        return self.records


@dataclass
class FakeProducer:
    """Hands batches over; the lease runs out once the first one is handed over."""

    clock: Clock
    handed: list[str] = field(default_factory=list)

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.handed.append(topic)
        self.clock.now += 10.0
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(offset=0))
        return done


async def test_each_batch_is_checked_before_it_is_handed_to_the_producer() -> None:
    clock = Clock()
    term = sink(lease(clock))
    producer = FakeProducer(clock)
    term._producer = producer
    events = [
        parse_row(("foo", "1.0", 1700000000, "new release", 1)),
        parse_row(("foo", "1.0", 1700000000, "add source file foo-1.0.tar.gz", 2)),
    ]
    with pytest.raises(LeaseExpired):
        await term._send_all(events)
    assert producer.handed == [topic_name("fence", "release.created")]


async def test_the_last_check_is_right_before_a_produce_request_is_written() -> None:
    clock = Clock()
    term = sink(lease(clock))
    client = FakeClient(clock)
    term._guarded(SimpleNamespace(client=client))
    await client.send(1, request(PRODUCE))
    assert client.sent == [PRODUCE]
    assert client.readied == [1], "the connection is made before the check, not after"
    clock.now += 5.0
    await client.send(1, request(METADATA))  # other requests pass
    with pytest.raises(_Withheld, match="stepping down before a successor can lead"):
        await client.send(1, request(PRODUCE))
    assert client.sent == [PRODUCE, METADATA]
    # aiokafka fails a batch whose request raised a non-retriable error: nothing is resent.
    assert not _Withheld("x").retriable


async def test_a_batch_queued_before_the_pause_never_reaches_the_broker(
    broker: EmbeddedBroker,
) -> None:
    prefix = f"fence-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(broker.bootstrap_servers)
    await ensure_topics(kafka, TopicSettings(prefix, partitions=1))
    topic = topic_name(prefix, "release.created")
    clock = Clock()
    term = Sink(
        kafka,
        TopicSettings(prefix, partitions=1),
        Router(prefix, "https://pypi.org/pypi"),
        Metrics("a"),
        delivery="high-water",
        transactional_id=f"{prefix}-bridge",
        replica_id="a",
        lease=lease(clock),
    )
    term.mode = await term._open_producer()
    assert term.mode == "high-water"
    producer = term._producer
    assert producer is not None
    try:
        await producer.send_and_wait(topic, b"before the pause")
        clock.now += 9.0  # paused with a batch in the producer's queue, then resumed
        queued = await producer.send(topic, b"queued before the pause")
        with pytest.raises(_Withheld):
            await queued
    finally:
        await term.stop()
    landed = await read_topics(broker.bootstrap_servers, [topic])
    assert [r.value for r in landed] == [b"before the pause"]


# --- what the leader group is told --------------------------------------------------------------


def claims(member: Leadership) -> bool:
    metadata = leader_assignor(member._claims_leadership).metadata(["t"])
    return bool(metadata.user_data == LEADING)


async def test_a_healthy_leader_revoked_by_a_rebalance_claims_the_lead_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    member = leadership()
    member._assigned(True)
    with caplog.at_level(logging.INFO, "bridge.leadership"):
        await member._revoked()
    assert not member.leading
    assert claims(member), "the assignment is sticky: a joining replica takes nothing away"
    assert "revoked by a group rebalance" in caplog.text
    member._assigned(False)
    assert not claims(member)


async def test_a_leader_revoked_after_its_lease_ran_out_claims_nothing_and_says_why_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    member = leadership(clock)
    member._assigned(True)
    clock.now += 7.0
    with caplog.at_level(logging.INFO, "bridge.leadership"):
        await member._revoked()
    assert not claims(member)
    [line] = caplog.records
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        "no heartbeat for 7.0 s: stepping down before a successor can lead"
    )


async def test_a_leader_the_coordinator_forgot_claims_nothing() -> None:
    member = leadership()
    member._assigned(True)
    member._consumer._coordinator.member_id = ""  # type: ignore[union-attr]
    await member._revoked()
    assert not claims(member)


def test_stepping_down_rejoins_the_group_without_a_claim_and_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    member = leadership()
    member._assigned(True)
    with caplog.at_level(logging.INFO, "bridge.leadership"):
        member.step_down()
    assert not member.leading
    assert not member.became_leader.is_set()
    assert not claims(member)
    assert rejoins(member) == 1
    assert not caplog.records, "the caller logs the one line"
    member.step_down()
    assert rejoins(member) == 1, "only a replica that still believes it leads asks to rejoin"


def test_the_incumbent_wins_the_assignment_whatever_its_member_id() -> None:
    member = leadership()
    member._assigned(True)
    assignor = leader_assignor(lambda: False)
    cluster = SimpleNamespace(partitions_for_topic=lambda topic: {0})
    members = {
        "a-standby": assignor.metadata(["t"]),
        "z-incumbent": leader_assignor(member._claims_leadership).metadata(["t"]),
    }
    result = assignor.assign(cluster, members)
    assert result["z-incumbent"].partitions() == [TopicPartition("t", 0)]
    assert result["a-standby"].partitions() == []


# --- the replica after a fenced term ------------------------------------------------------------


class Terms:
    """Replica._lead stand-in: each term ends as scripted (an exception, or a serial)."""

    def __init__(self, *endings: BaseException | int) -> None:
        self.endings = list(endings)
        self.started = 0

    async def __call__(self) -> int:
        self.started += 1
        ending = self.endings.pop(0)
        if isinstance(ending, BaseException):
            raise ending
        return ending


async def wait_until(condition: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polls state, not an event
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    "fence",
    [
        Fenced("another replica took over this transactional id (this one was fenced)"),
        LeaseExpired(7.0),
    ],
    ids=["fenced-by-the-broker", "lease-expired"],
)
async def test_a_fenced_leader_stands_by_and_leads_again_only_when_elected(
    fence: Fenced, caplog: pytest.LogCaptureFixture
) -> None:
    replica = Replica(RunSettings(replica_id="a"))
    member = leadership()
    replica._leadership = member
    terms = Terms(fence, 40000000)
    replica._lead = terms  # type: ignore[method-assign]
    member._assigned(True)  # elected
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, "bridge"):
        loop = asyncio.create_task(replica._lead_when_elected(member, stop))
        await wait_until(lambda: terms.started == 1 and replica.health.role == "standby")
        # Still in the group's eyes the leader, it asked to rejoin, claims nothing, waits.
        assert rejoins(member) == 1
        assert not claims(member)
        await asyncio.sleep(0.3)
        assert terms.started == 1, "a fenced replica started a term without being elected"
        member._assigned(False)  # the rejoin made someone else the leader
        await asyncio.sleep(0.1)
        assert terms.started == 1
        member._assigned(True)  # elected again later
        assert await asyncio.wait_for(loop, 5) == 0
    assert terms.started == 2
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [str(fence)]


async def test_a_term_fenced_while_a_rebalance_revokes_it_adds_no_line_and_no_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    replica = Replica(RunSettings(replica_id="a"))
    member = leadership()
    replica._leadership = member
    member.on_lose = replica._end_term
    fenced = asyncio.Event()

    async def term() -> int:
        await fenced.wait()
        raise Fenced("another replica took over this transactional id (this one was fenced)")

    replica._lead = term  # type: ignore[method-assign]
    member._assigned(True)
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, "bridge"):
        loop = asyncio.create_task(replica._lead_when_elected(member, stop))
        await wait_until(lambda: replica._term is not None)
        revoking = asyncio.create_task(member._revoked())
        await asyncio.sleep(0.05)
        fenced.set()
        await revoking
        await wait_until(lambda: replica.health.role == "standby")
        assert not claims(member), "a fenced term claims nothing in the rejoin"
        stop.set()
        assert await asyncio.wait_for(loop, 5) == 0
    assert rejoins(member) == 0, "the rebalance under way is the rejoin"
    assert [r.getMessage() for r in caplog.records] == [
        "a is no longer the leader (leadership revoked by a group rebalance); stopping production"
    ]
