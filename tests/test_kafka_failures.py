"""Exactly once through broker failures, on Apache Kafka itself.

A three-broker cluster (replication factor 3, min.insync.replicas 2, acks=all) loses, by
SIGKILL in the middle of a transaction of a 200,000-row backfill, first the broker leading some
event partitions, then the transaction coordinator of the bridge's transactional id; each is
started again a little later. A single broker is restarted under a running backfill too. Each
time the bridge waits, recovers from its checkpoint and finishes, and `pypi-bridge audit
--strict` (read_committed) finds every journal entry exactly once. The stall each failure caused
(the longest time without committed progress) is printed with the run's figures.

The single broker is restarted with SIGTERM. Killed with SIGKILL in the middle of a commit, a
lone Kafka 4.4 broker may come back with the commit half done and never finish it: its
transaction coordinator, loading before the partitions have a leader again (the broker's
unclean shutdown takes them away for a moment), skips the markers of those partitions as if
they were deleted. Their last stable offset then stays behind for good, and every
read_committed reader waits; only `kafka-transactions.sh abort` ends it. Waiting is right (the
next transaction of the same producer would otherwise settle the old one, possibly as
committed, under a bridge that resumed before it), so the bridge waits and says so.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient, CoordinationType

import bridge.kafka
from bridge.broker import free_port
from bridge.checkpoint import read_checkpoint
from bridge.config import KafkaSettings, TopicSettings
from bridge.kafka import ensure_topics, partitions_of
from bridge.routing import checkpoint_topic, event_topics, leadership_topic, topic_name
from tests.conftest import Figures, real_kafka
from tests.realkafka import KafkaCluster, KafkaNode
from tests.support import Process, Simulator, run_args, run_audit, start, start_simulator

pytestmark = pytest.mark.slow
ROWS = 200_000
#: The event type with the most rows in the simulated journal: its partitions are always busy.
BUSIEST = "file.added"


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    sim = start_simulator(
        tmp_path_factory.mktemp("journal"),
        "--prefill",
        str(ROWS),
        "--rate",
        "0",
        # Pages of 10,000 rows: one transaction each (--batch-size 10000, the default).
        "--page-size",
        "10000",
        "--latency",
        "0.05",
        "--seed",
        "11",
    )
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def three_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three KRaft nodes: default and min in-sync replication 3 and 2, transaction log too."""
    cluster = real_kafka(tmp_path_factory.mktemp("kafka3"), nodes=3)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def one_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """A single node of this module's own: restarting it must not disturb other tests."""
    cluster = real_kafka(tmp_path_factory.mktemp("kafka1"))
    yield cluster
    cluster.stop()


# --- watching the bridge ------------------------------------------------------------------------


def sample(port: int) -> tuple[int, int] | None:
    """The committed serial and the events published so far, from the bridge's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    serial = re.search(r"^pypi_bridge_committed_serial (\S+)$", text, re.MULTILINE)
    published = re.findall(r"^pypi_bridge_events_published_total\{.*\} (\S+)$", text, re.MULTILINE)
    if serial is None:
        return None
    return int(float(serial.group(1))), sum(int(float(n)) for n in published)


def ready(port: int) -> bool | None:
    """Whether the bridge's /readyz answers 200 (None: it does not answer at all)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False
    except OSError:
        return None


@dataclass
class CommitWatch:
    """Samples a running bridge's committed serial; measures stalls in its progress."""

    port: int
    #: (monotonic time, serial) at every change of the committed serial.
    changes: list[tuple[float, int]] = field(default_factory=list)
    published: int = 0
    was_ready: bool = False
    #: Samples of /readyz answering 503 after it first answered 200.
    unready: int = 0
    ended_at: float | None = None

    async def run(self, bridge: Process) -> None:
        while bridge.popen.poll() is None:
            seen = await asyncio.to_thread(sample, self.port)
            if seen is not None:
                serial, self.published = seen
                if not self.changes or serial != self.changes[-1][1]:
                    self.changes.append((time.monotonic(), serial))
            answer = await asyncio.to_thread(ready, self.port)
            self.was_ready = self.was_ready or answer is True
            if self.was_ready and answer is False:
                self.unready += 1
            await asyncio.sleep(0.1)
        self.ended_at = time.monotonic()

    async def reach(self, rows: int, bridge: Process, within: float) -> None:
        """Until `rows` events are published (committed), or fail."""
        deadline = time.monotonic() + within
        while self.published < rows:
            if bridge.popen.poll() is not None:
                raise AssertionError(f"bridge exited early:\n{bridge.output()[-3000:]}")
            assert time.monotonic() < deadline, f"only {self.published} rows published"
            await asyncio.sleep(0.1)

    def stall_around(self, moment: float) -> float:
        """The longest time without committed progress from the last commit before `moment`."""
        times = [t for t, _ in self.changes]
        before = [t for t in times if t <= moment]
        points = [before[-1] if before else moment, *(t for t in times if t > moment)]
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


@dataclass
class Backfill:
    """A `pypi-bridge run` backfilling the whole journal, watched through its /metrics."""

    bridge: Process
    watch: CommitWatch
    watcher: asyncio.Task[None]
    started_at: float

    async def finish(self, within: float) -> int:
        code = await asyncio.to_thread(self.bridge.wait, within)
        await self.watcher
        return code

    @property
    def duration(self) -> float:
        assert self.watch.ended_at is not None
        return self.watch.ended_at - self.started_at


def start_backfill(sim: Simulator, bootstrap: str, prefix: str, log: Path, *extra: str) -> Backfill:
    port = free_port()
    last = sim.state()["last_serial"]
    bridge = start(
        run_args(
            sim,
            bootstrap,
            prefix,
            "--start-serial",
            "0",
            "--stop-at-serial",
            str(last),
            "--http-port",
            str(port),
            "--progress-interval",
            "2",
            *extra,
        ),
        log,
    )
    watch = CommitWatch(port)
    watcher = asyncio.create_task(watch.run(bridge))
    return Backfill(bridge, watch, watcher, time.monotonic())


# --- asking Kafka -------------------------------------------------------------------------------


async def partition_leaders(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        metadata = await client.fetch_all_metadata()
        return {
            TopicPartition(topic, p): metadata.leader_for_partition(TopicPartition(topic, p))
            for topic in topics
            for p in sorted(metadata.partitions_for_topic(topic) or ())
        }
    finally:
        await client.close()


async def replica_counts(bootstrap: str, topics: list[str]) -> dict[str, set[int]]:
    """Topic -> the distinct replica counts of its partitions."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        # Topics created a moment ago reach every broker's metadata cache a little later.
        deadline = time.monotonic() + 30
        while True:
            metadata = await client.fetch_all_metadata()
            counts: dict[str, set[int]] = {}
            for topic in topics:
                for partition in metadata._partitions.get(topic, {}).values():
                    counts.setdefault(topic, set()).add(len(partition.replicas))
            if len(counts) == len(topics) or time.monotonic() > deadline:
                return counts
            await asyncio.sleep(0.3)
    finally:
        await client.close()


async def topic_setting(bootstrap: str, topics: list[str], name: str) -> dict[str, str]:
    """Topic -> the value of config `name` in force for it (its own or the broker default)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {name: None}) for topic in topics]
        )
    finally:
        await admin.close()
    found: dict[str, str] = {}
    for response in responses:
        for _code, _message, _type, topic, entries in response.resources:
            for entry in entries:
                if entry[0] == name:
                    found[topic] = entry[1]
    return found


async def transaction_coordinator(bootstrap: str, transactional_id: str) -> int:
    """The node coordinating `transactional_id`: FindCoordinator with key type 1 (transaction)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        node: int = await client.coordinator_lookup(CoordinationType.TRANSACTION, transactional_id)
        return node
    finally:
        await client.close()


async def transaction_open(bootstrap: str, topics: list[str]) -> bool:
    """Whether some partition's last stable offset trails its high watermark: a transaction is
    open on it (written but neither committed nor aborted yet)."""
    committed = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    uncommitted = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await committed.start()
    await uncommitted.start()
    try:
        partitions = await partitions_of(committed, topics)
        stable = await committed.end_offsets(partitions)
        high = await uncommitted.end_offsets(partitions)
        return any(stable[tp] < high[tp] for tp in partitions)
    finally:
        await committed.stop()
        await uncommitted.stop()


async def wait_for_open_transaction(bootstrap: str, prefix: str, within: float = 30.0) -> None:
    topics = [topic_name(prefix, BUSIEST), checkpoint_topic(prefix)]
    deadline = time.monotonic() + within
    while not await transaction_open(bootstrap, topics):
        assert time.monotonic() < deadline, "never saw a transaction open"


@dataclass
class Outage:
    started_at: float
    #: Seconds from the signal until the node answered again.
    down: float


async def kill_and_restart(
    cluster: KafkaCluster, node: KafkaNode, wait: float, sig: int = signal.SIGKILL
) -> Outage:
    """Stop `node` with `sig`, wait `wait` seconds, start it again and wait until it answers."""
    started_at = time.monotonic()
    # In threads: a SIGTERM'd broker takes a while to shut down, a JVM to start, and the
    # bridge's watcher keeps sampling meanwhile.
    await asyncio.to_thread(cluster.kill, node, sig)
    await asyncio.sleep(wait)
    await asyncio.to_thread(cluster.restart, node)
    return Outage(started_at, time.monotonic() - started_at)


async def assert_clean_audit(sim: Simulator, bootstrap: str, prefix: str) -> None:
    code, report = await asyncio.to_thread(run_audit, sim, bootstrap, prefix, "--strict")
    assert code == 0, report
    assert f"{ROWS} journal entries" in report, report


def assert_no_traceback(bridge: Process) -> None:
    assert "Traceback" not in bridge.output(), bridge.output()[-5000:]


# --- the tests ----------------------------------------------------------------------------------


async def test_topics_are_created_with_the_replication_asked_and_two_replicas_in_sync(
    three_brokers: KafkaCluster,
) -> None:
    bootstrap = three_brokers.bootstrap_servers
    prefix = "rf3"
    # What `pypi-bridge run --replication-factor 3` does before anything else.
    await ensure_topics(KafkaSettings(bootstrap), TopicSettings(prefix, replication_factor=3))
    topics = [*event_topics(prefix), checkpoint_topic(prefix), leadership_topic(prefix)]
    assert await replica_counts(bootstrap, topics) == {topic: {3} for topic in topics}
    # In force through the brokers' default: acks=all then needs two copies of every write.
    wanted = dict.fromkeys(topics, "2")
    deadline = time.monotonic() + 30
    while (found := await topic_setting(bootstrap, topics, "min.insync.replicas")) != wanted:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)  # a broker that has not heard of a new topic yet
    assert found == wanted


#: Picks the node to kill from the bootstrap servers, the prefix and the transaction
#: coordinator's node id: the node, and how the figure names it.
Pick = Callable[[str, str, int], Awaitable[tuple[int, str]]]


async def lose_one_of_three(
    cluster: KafkaCluster,
    journal: Simulator,
    tmp_path: Path,
    figures: Figures,
    prefix: str,
    pick: Pick,
) -> None:
    """SIGKILL one node of three mid-transaction of a backfill with RF 3 and restart it: the
    backfill finishes with no outage claimed, /readyz never fails, and the audit is clean."""
    bootstrap = cluster.bootstrap_servers
    run = start_backfill(
        journal, bootstrap, prefix, tmp_path / "bridge.log", "--replication-factor", "3"
    )
    try:
        await run.watch.reach(ROWS // 5, run.bridge, 120)
        coordinator = await transaction_coordinator(bootstrap, f"{prefix}-bridge")
        victim, named = await pick(bootstrap, prefix, coordinator)
        await wait_for_open_transaction(bootstrap, prefix)
        outage = await kill_and_restart(cluster, cluster.node(victim), 3.0)
        assert await run.finish(300) == 0, run.bridge.output()[-5000:]
    finally:
        run.bridge.stop(signal.SIGKILL)
    assert_no_traceback(run.bridge)
    # Two of three brokers still make a cluster: no outage is claimed, the replica stays ready.
    assert "is unreachable" not in run.bridge.output()
    assert run.watch.unready == 0, "/readyz failed while two brokers of three answered"
    await assert_clean_audit(journal, bootstrap, prefix)
    stall = run.watch.stall_around(outage.started_at)
    figures.add(
        named,
        f"stall {stall:.1f} s (node back after {outage.down:.1f} s), "
        f"{ROWS} rows in {run.duration:.1f} s, audit clean",
    )


async def test_killing_a_partition_leader_mid_transaction_loses_and_repeats_nothing(
    three_brokers: KafkaCluster, journal: Simulator, tmp_path: Path, figures: Figures
) -> None:
    async def busiest_leader(bootstrap: str, prefix: str, coordinator: int) -> tuple[int, str]:
        # A leader of event partitions that does not coordinate the transaction (one failure
        # at a time), the one leading most partitions of the busiest topic.
        leaders = await partition_leaders(bootstrap, event_topics(prefix))
        busiest = topic_name(prefix, BUSIEST)
        victim = max(
            set(leaders.values()) - {coordinator},
            key=lambda n: sum(1 for tp, m in leaders.items() if m == n and tp.topic == busiest),
        )
        led = sum(1 for n in leaders.values() if n == victim)
        named = f"SIGKILL of node {victim} of 3, leader of {led} event partitions (RF 3, min ISR 2)"
        return victim, named

    await lose_one_of_three(three_brokers, journal, tmp_path, figures, "leaderkill", busiest_leader)


async def test_killing_the_transaction_coordinator_mid_transaction_loses_and_repeats_nothing(
    three_brokers: KafkaCluster, journal: Simulator, tmp_path: Path, figures: Figures
) -> None:
    async def the_coordinator(bootstrap: str, prefix: str, coordinator: int) -> tuple[int, str]:
        return coordinator, f"SIGKILL of the transaction coordinator (node {coordinator} of 3)"

    await lose_one_of_three(three_brokers, journal, tmp_path, figures, "coordkill", the_coordinator)


async def test_a_restarted_single_broker_is_waited_for_with_one_line_and_nothing_is_lost(
    one_broker: KafkaCluster, journal: Simulator, tmp_path: Path, figures: Figures
) -> None:
    bootstrap = one_broker.bootstrap_servers
    prefix = "restart1"
    run = start_backfill(journal, bootstrap, prefix, tmp_path / "bridge.log")
    try:
        await run.watch.reach(ROWS // 5, run.bridge, 120)
        await wait_for_open_transaction(bootstrap, prefix)
        outage = await kill_and_restart(one_broker, one_broker.nodes[0], 3.0, signal.SIGTERM)
        assert await run.finish(300) == 0, run.bridge.output()[-5000:]
    finally:
        run.bridge.stop(signal.SIGKILL)
    output = run.bridge.output()
    assert_no_traceback(run.bridge)
    assert output.count("is unreachable") == 1, "one clear line when Kafka goes away"
    assert output.count("reachable again") == 1, "and one when it is back"
    assert run.watch.unready > 0, "not ready while the only broker was down"
    await assert_clean_audit(journal, bootstrap, prefix)
    stall = run.watch.stall_around(outage.started_at)
    figures.add(
        "SIGTERM and restart of the only broker mid-transaction",
        f"stall {stall:.1f} s (broker back after {outage.down:.1f} s), "
        f"{ROWS} rows in {run.duration:.1f} s, audit clean",
    )


async def test_recovery_waits_for_a_transaction_left_open_and_says_so_once(
    one_broker: KafkaCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = one_broker.bootstrap_servers
    prefix = "opentx"
    await ensure_topics(KafkaSettings(bootstrap), TopicSettings(prefix))
    monkeypatch.setattr(bridge.kafka, "OPEN_TRANSACTION_WARNING_SECONDS", 0.5)
    # A transaction on the checkpoint topic that stays open, as a hanging one does.
    holder = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{prefix}-holder")
    await holder.start()
    try:
        await holder.begin_transaction()
        await holder.send_and_wait(checkpoint_topic(prefix), b"{}", key=b"not-a-checkpoint")
        reading = asyncio.create_task(
            read_checkpoint(KafkaSettings(bootstrap), prefix, committed_only=True)
        )
        deadline = time.monotonic() + 20
        while "stayed open" not in caplog.text:
            assert time.monotonic() < deadline, "no word about the open transaction"
            await asyncio.sleep(0.1)
        assert not reading.done(), "recovery must not read past an open transaction"
        await holder.commit_transaction()
        assert await asyncio.wait_for(reading, 20) is None
    finally:
        await holder.stop()
    assert caplog.text.count("stayed open") == 1
    assert f"{checkpoint_topic(prefix)}[0]" in caplog.text
