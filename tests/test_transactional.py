"""Transactional delivery with real processes: simulator -> `pypi-bridge run` -> a broker with
transactions -> readers.

The broker is librdkafka's mock cluster (`tests/mockcluster.py`), and also a real Kafka when
`KAFKA_BOOTSTRAP_SERVERS` is set. The mock takes transactions but does not isolate them: its
read_committed readers see aborted and unfinished transactions too, and it fences no producer by
transactional id. So besides a read_committed consumer, the tests read the log raw, transaction
markers included, and keep what Kafka's rules commit (`TransactionLog`); on the mock, kills and
fences are timed so that the mock's missing isolation cannot mislead the bridge's recovery, and
the fence is an injected error. Against a real Kafka the same tests run untimed, with a real
second producer as the fence, and the read_committed consumer must agree with the raw view.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import random
import signal
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import ProducerFenced, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from bridge.broker import EmbeddedBroker
from bridge.config import KafkaSettings, TopicSettings
from bridge.kafka import ensure_topics
from bridge.parse import Row
from bridge.routing import checkpoint_topic, event_topics
from tests.conftest import require
from tests.mockcluster import MockClusterProcess, start_mock_cluster
from tests.support import Process, Simulator, read_topics, run_args, start, start_simulator
from tests.test_end_to_end import check_exactly_once

REAL_KAFKA = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
CLUSTERS = ["mock", *(["kafka"] if REAL_KAFKA else [])]
# Kafka protocol numbers used with the mock's error injection.
PRODUCE_API = 0
INVALID_PRODUCER_EPOCH = 47
COMMIT_MARKER = 1
FENCED_LINE = "(this one was fenced)"
Moment = Literal["mid-transaction", "between transactions", "any time"]


@dataclass
class Cluster:
    """A Kafka cluster with transactions: the mock, or a real one."""

    name: str
    bootstrap_servers: str
    mock: MockClusterProcess | None = None

    @property
    def isolates(self) -> bool:
        """Whether read_committed hides aborted and open transactions (the mock's does not)."""
        return self.mock is None

    async def new_prefix(self, label: str) -> str:
        """A topic prefix of the test's own (a real cluster keeps topics between runs).

        Its topics are made at once, as the bridge makes them, so that readers started before
        the bridge do not auto-create them with the broker's defaults.
        """
        prefix = f"tx-{label}-{uuid.uuid4().hex[:8]}"
        if self.mock is not None:
            # The mock answers no CreateTopics.
            self.mock.create_bridge_topics(prefix)
        else:
            await ensure_topics(KafkaSettings(self.bootstrap_servers), TopicSettings(prefix))
        return prefix

    def run_args(self, sim: Simulator, prefix: str, *extra: str) -> list[str]:
        # A kill -9'd leader is replaced once its session times out; Kafka's floor is 6 s.
        session = "2" if self.mock is not None else "6"
        return run_args(
            sim, self.bootstrap_servers, prefix, "--leader-session-timeout", session, *extra
        )

    async def read_committed(self, prefix: str) -> list[ConsumerRecord[bytes, bytes]]:
        # The mock's transaction markers carry no CRC.
        return await read_topics(
            self.bootstrap_servers, event_topics(prefix), "read_committed", check_crcs=False
        )


@pytest.fixture(scope="module")
def mock_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockClusterProcess]:
    require(importlib.util.find_spec("confluent_kafka") is not None, "confluent-kafka")
    started = start_mock_cluster(tmp_path_factory.mktemp("mock") / "mockcluster.log")
    yield started
    started.stop()


@pytest.fixture(scope="module", params=CLUSTERS)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    if request.param == "kafka":
        return Cluster("kafka", REAL_KAFKA)
    mock: MockClusterProcess = request.getfixturevalue("mock_cluster")
    return Cluster("mock", mock.bootstrap_servers, mock)


Launch = Callable[[list[str], Path], Process]


@pytest.fixture
def bridge_process() -> Iterator[Launch]:
    """Starts bridges; whatever still runs when the test ends (failed) is killed."""
    started: list[Process] = []

    def launch(args: list[str], log_path: Path) -> Process:
        started.append(start(args, log_path))
        return started[-1]

    yield launch
    for process in started:
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGCONT)
            process.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    sim = start_simulator(
        tmp_path_factory.mktemp("sim"), "--prefill", "20000", "--rate", "0", "--seed", "11"
    )
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def rows(journal: Simulator) -> list[Row]:
    found = journal.rows()
    assert len(found) == 20_000
    return found


@pytest.fixture(scope="module")
def slow_journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """Small pages with latency: a backfill that lasts long enough to interrupt."""
    sim = start_simulator(
        tmp_path_factory.mktemp("slowsim"),
        *("--prefill", "20000", "--rate", "0", "--seed", "12"),
        *("--page-size", "1000", "--latency", "0.2"),
    )
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def slow_rows(slow_journal: Simulator) -> list[Row]:
    return slow_journal.rows()


# --- reading the log raw, transaction markers included ----------------------------------------


@dataclass
class _PartitionLog:
    next_offset: int = 0
    high_watermark: int | None = None
    #: Records of transactions not ended yet, by producer id.
    open: dict[int, list[ConsumerRecord[bytes, bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    committed: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    aborted: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)


class TransactionLog:
    """The records of a bridge's topics, sorted by what became of their transaction.

    The log is read with plain fetch requests, control batches included, so the verdict does not
    rest on the broker honouring read_committed: a record is committed when a COMMIT marker of
    its producer follows it in its partition, aborted when an ABORT marker does, and open
    otherwise. The committed records are what a read_committed consumer of a real Kafka reads
    once the open transactions are aborted (by the next producer with the same transactional
    id, or by the transaction time-out).
    """

    def __init__(self, bootstrap_servers: str, prefix: str) -> None:
        self.topics = [*event_topics(prefix), checkpoint_topic(prefix)]
        self._client: Any = AIOKafkaClient(bootstrap_servers=bootstrap_servers)
        self._logs: dict[TopicPartition, _PartitionLog] = {}

    async def __aenter__(self) -> TransactionLog:
        await self._client.bootstrap()
        await self._client.set_topics(self.topics)
        for topic in self.topics:
            partitions = self._client.cluster.partitions_for_topic(topic)
            assert partitions, f"no topic {topic}"
            for partition in partitions:
                self._logs[TopicPartition(topic, partition)] = _PartitionLog()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.close()

    async def refresh(self) -> None:
        """Read every partition from where the last refresh stopped to its high watermark."""
        todo = set(self._logs)
        while todo:
            before = self.marks()
            by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
            for tp in todo:
                by_leader[self._client.cluster.leader_for_partition(tp)].append(tp)
            await asyncio.gather(*(self._fetch(node, tps) for node, tps in by_leader.items()))
            todo = {
                tp
                for tp in todo
                if self._logs[tp].next_offset < (self._logs[tp].high_watermark or 0)
            }
            assert not todo or self.marks() != before, f"no progress reading {sorted(todo)[:3]}"

    async def _fetch(self, node: int, partitions: list[TopicPartition]) -> None:
        by_topic: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for tp in partitions:
            by_topic[tp.topic].append((tp.partition, self._logs[tp].next_offset, 8 << 20))
        request = FetchRequest(0, 0, 32 << 20, 0, list(by_topic.items()))
        response = await self._client.send(node, request)
        for topic, answers in response.topics:
            for answer in answers:
                partition, error, high_watermark, records = (
                    answer[0],
                    answer[1],
                    answer[2],
                    answer[-1],
                )
                assert error == 0, f"fetch {topic}[{partition}]: {for_code(error).__name__}"
                log = self._logs[TopicPartition(topic, partition)]
                log.high_watermark = high_watermark
                if records:
                    self._take(topic, partition, log, MemoryRecords(records))

    @staticmethod
    def _take(topic: str, partition: int, log: _PartitionLog, batches: Any) -> None:
        while (batch := batches.next_batch()) is not None:
            if batch.base_offset < log.next_offset:
                continue
            if batch.is_control_batch:
                ended = log.open.pop(batch.producer_id, [])
                for marker in batch:
                    kind = int.from_bytes(marker.key[2:4], "big")
                    (log.committed if kind == COMMIT_MARKER else log.aborted).extend(ended)
            else:
                records = [
                    ConsumerRecord(
                        topic,
                        partition,
                        r.offset,
                        r.timestamp,
                        r.timestamp_type,
                        r.key,
                        r.value,
                        None,
                        len(r.key or b""),
                        len(r.value or b""),
                        list(r.headers),
                    )
                    for r in batch
                ]
                if batch.is_transactional:
                    log.open[batch.producer_id].extend(records)
                else:
                    log.committed.extend(records)
            log.next_offset = batch.next_offset

    def marks(self) -> dict[TopicPartition, int]:
        """Where each partition ends now: what lies beyond was written later."""
        return {tp: log.next_offset for tp, log in self._logs.items()}

    def open_since(self, marks: dict[TopicPartition, int], topics: Sequence[str]) -> int:
        """Records of `topics` written after `marks` whose transaction has not ended."""
        return sum(
            1
            for tp, log in self._logs.items()
            if tp.topic in topics
            for records in log.open.values()
            for record in records
            if record.offset >= marks.get(tp, 0)
        )

    def committed(self, topics: Sequence[str]) -> list[ConsumerRecord[bytes, bytes]]:
        chosen = [r for tp, log in self._logs.items() if tp.topic in topics for r in log.committed]
        return sorted(chosen, key=lambda r: (r.topic, r.partition, r.offset))

    def not_committed(self, topics: Sequence[str]) -> set[tuple[str, int, int]]:
        """(topic, partition, offset) of every aborted or still open record of `topics`."""
        return {
            (r.topic, r.partition, r.offset)
            for tp, log in self._logs.items()
            if tp.topic in topics
            for r in [*log.aborted, *(r for rs in log.open.values() for r in rs)]
        }


async def freeze(
    bridge: Process,
    log: TransactionLog,
    marks: dict[TopicPartition, int],
    prefix: str,
    cluster: Cluster,
    moment: Moment,
) -> None:
    """Stop the publishing bridge (SIGSTOP) at a moment of the kind asked for.

    `mid-transaction`: its open transaction has events in the log; `between transactions`: no
    transaction of it is open; `any time`: as it comes. On the mock, never while a transaction's
    checkpoint record is written but not committed: the mock would show that record to the next
    leader's read_committed reader, where a real Kafka would not (the next leader's
    InitProducerId aborts the transaction first).
    """
    events, checkpoints = event_topics(prefix), [checkpoint_topic(prefix)]
    while "backfill: serial" not in bridge.output():
        assert bridge.popen.poll() is None, f"the bridge ended:\n{bridge.output()[-3000:]}"
        await asyncio.sleep(0.05)
    for _ in range(200):
        await asyncio.sleep(random.uniform(0.05, 0.3))
        assert bridge.popen.poll() is None, f"the bridge ended:\n{bridge.output()[-3000:]}"
        bridge.popen.send_signal(signal.SIGSTOP)
        # Requests already on the wire still land; let them.
        await asyncio.sleep(0.2)
        await log.refresh()
        open_events = log.open_since(marks, events) > 0
        open_checkpoint = log.open_since(marks, checkpoints) > 0
        wanted = {
            "mid-transaction": open_events,
            "between transactions": not open_events and not open_checkpoint,
            "any time": True,
        }[moment]
        if wanted and (cluster.isolates or not open_checkpoint):
            return
        bridge.popen.send_signal(signal.SIGCONT)
    raise AssertionError(f"never caught the bridge {moment}:\n{bridge.output()[-3000:]}")


@contextlib.asynccontextmanager
async def network_delay(cluster: Cluster, milliseconds: int = 50) -> AsyncIterator[None]:
    """Delay the mock's answers while a moment is sought, as a network would.

    The sink sends a commit's events in a few batches at its end, so on a local mock the moment
    between their acknowledgement and the checkpoint lasts about a millisecond.
    """
    if cluster.mock is None:
        yield
        return
    cluster.mock.set_rtt(milliseconds)
    try:
        yield
    finally:
        cluster.mock.set_rtt(0)


def check_read_committed(
    records: list[ConsumerRecord[bytes, bytes]], log: TransactionLog, topics: Sequence[str]
) -> None:
    """A read_committed consumer returned no record of an aborted or unfinished transaction."""
    seen = {(r.topic, r.partition, r.offset) for r in records}
    leaked = sorted(seen & log.not_committed(topics))
    assert not leaked, f"{len(leaked)} records of aborted transactions were read, e.g. {leaked[:3]}"


# --- the tests ----------------------------------------------------------------------------------


async def test_auto_mode_picks_transactional_on_a_broker_with_transactions(
    cluster: Cluster,
    journal: Simulator,
    rows: list[Row],
    tmp_path: Path,
    bridge_process: Launch,
) -> None:
    prefix = await cluster.new_prefix("auto")
    args = cluster.run_args(journal, prefix, "--start-serial", "0", "--stop-at-serial")
    bridge = bridge_process([*args, str(rows[100][4])], tmp_path / "bridge.log")
    assert bridge.wait(60) == 0, bridge.output()[-3000:]
    assert "delivery mode: transactional (the broker supports it)" in bridge.output()


async def test_auto_mode_picks_high_water_on_the_embedded_broker(
    broker: EmbeddedBroker,
    journal: Simulator,
    rows: list[Row],
    tmp_path: Path,
    bridge_process: Launch,
) -> None:
    args = run_args(journal, broker.bootstrap_servers, "tx-auto", "--start-serial", "0")
    bridge = bridge_process([*args, "--stop-at-serial", str(rows[100][4])], tmp_path / "bridge.log")
    assert bridge.wait(60) == 0, bridge.output()[-3000:]
    assert "delivery mode: high-water (the broker refused a transactional id" in bridge.output()


async def test_forced_transactional_on_the_embedded_broker_fails_with_one_line(
    broker: EmbeddedBroker,
    journal: Simulator,
    tmp_path: Path,
    bridge_process: Launch,
) -> None:
    args = run_args(journal, broker.bootstrap_servers, "tx-forced", "--start-serial", "0")
    bridge = bridge_process([*args, "--delivery", "transactional"], tmp_path / "bridge.log")
    assert bridge.wait(60) == 1, bridge.output()[-3000:]
    output = bridge.output()
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("pypi-bridge: error:")]
    assert len(errors) == 1, output[-3000:]
    assert "--delivery transactional" in errors[0]
    assert "--delivery high-water" in errors[0]


async def test_backfill_is_read_committed_exactly_once(
    cluster: Cluster,
    journal: Simulator,
    rows: list[Row],
    tmp_path: Path,
    bridge_process: Launch,
) -> None:
    prefix = await cluster.new_prefix("backfill")
    args = cluster.run_args(journal, prefix, "--start-serial", "0", "--batch-size", "2000")
    bridge = bridge_process([*args, "--stop-at-serial", str(rows[-1][4])], tmp_path / "bridge.log")
    assert bridge.wait(120) == 0, bridge.output()[-3000:]
    assert "delivery mode: transactional" in bridge.output()
    check_exactly_once(await cluster.read_committed(prefix), rows, prefix)


async def test_kill_9_mid_backfill_then_restart_commits_every_row_once(
    cluster: Cluster,
    slow_journal: Simulator,
    slow_rows: list[Row],
    tmp_path: Path,
    bridge_process: Launch,
) -> None:
    prefix = await cluster.new_prefix("kill")
    topics = event_topics(prefix)
    args = cluster.run_args(slow_journal, prefix, "--start-serial", "0", "--batch-size", "300")
    async with TransactionLog(cluster.bootstrap_servers, prefix) as log:
        moments: list[Moment] = ["mid-transaction", "between transactions", "any time"]
        for run, moment in enumerate(moments):
            await log.refresh()
            marks = log.marks()
            bridge = bridge_process(args, tmp_path / f"bridge-{run}.log")
            async with network_delay(cluster):
                await freeze(bridge, log, marks, prefix, cluster, moment)
            bridge.stop(signal.SIGKILL)
        final = bridge_process(
            [*args, "--stop-at-serial", str(slow_rows[-1][4])], tmp_path / "bridge-final.log"
        )
        assert final.wait(120) == 0, final.output()[-3000:]
        assert "resuming after serial" in final.output()
        await log.refresh()
        check_exactly_once(log.committed(topics), slow_rows, prefix)
        # The kill mid-transaction left events behind; none of them is committed.
        assert log.not_committed(topics)
        if cluster.isolates:
            consumed = await cluster.read_committed(prefix)
            check_read_committed(consumed, log, topics)
            check_exactly_once(consumed, slow_rows, prefix)


async def test_a_fenced_leader_writes_nothing_and_the_next_term_commits_every_row_once(
    cluster: Cluster,
    slow_journal: Simulator,
    slow_rows: list[Row],
    tmp_path: Path,
    bridge_process: Launch,
) -> None:
    prefix = await cluster.new_prefix("fence")
    topics = event_topics(prefix)
    args = cluster.run_args(slow_journal, prefix, "--start-serial", "0", "--batch-size", "300")
    bridge = bridge_process(
        [*args, "--stop-at-serial", str(slow_rows[-1][4])], tmp_path / "bridge.log"
    )
    async with TransactionLog(cluster.bootstrap_servers, prefix) as log:
        async with network_delay(cluster):
            await freeze(bridge, log, {}, prefix, cluster, "mid-transaction")
        try:
            if cluster.mock is not None:
                # The mock never fences by transactional id: it is told to answer the bridge's
                # next produce request as Kafka answers a fenced producer.
                cluster.mock.fail_next(PRODUCE_API, INVALID_PRODUCER_EPOCH)
            else:
                # A new producer with the bridge's transactional id: the real fence.
                usurper = AIOKafkaProducer(
                    bootstrap_servers=cluster.bootstrap_servers,
                    transactional_id=f"{prefix}-bridge",
                )
                await usurper.start()
                await usurper.stop()
        finally:
            bridge.popen.send_signal(signal.SIGCONT)
        assert bridge.wait(120) == 0, bridge.output()[-3000:]
        fenced = [line for line in bridge.output().splitlines() if FENCED_LINE in line]
        assert len(fenced) == 1, bridge.output()[-3000:]
        assert "Traceback" not in bridge.output()
        await log.refresh()
        check_exactly_once(log.committed(topics), slow_rows, prefix)
        # The fenced transaction had events in the log; none of them is committed.
        assert log.not_committed(topics)
        if cluster.isolates:
            consumed = await cluster.read_committed(prefix)
            check_read_committed(consumed, log, topics)
            check_exactly_once(consumed, slow_rows, prefix)


async def test_the_mock_cluster_does_not_fence_by_transactional_id(
    mock_cluster: MockClusterProcess,
) -> None:
    topic = f"tx-zombie-{uuid.uuid4().hex[:8]}"
    mock_cluster.command(f"topic {topic} 1")
    servers = mock_cluster.bootstrap_servers
    first = AIOKafkaProducer(bootstrap_servers=servers, transactional_id=topic)
    second = AIOKafkaProducer(bootstrap_servers=servers, transactional_id=topic)
    await first.start()
    try:
        await first.begin_transaction()
        await first.send_and_wait(topic, b"zombie")
        await second.start()
        try:
            # On a real Kafka this raises ProducerFenced: the second start fenced the first.
            await first.commit_transaction()
        except ProducerFenced:
            pytest.fail("the mock cluster fences now: make the fence test use a real fence")
        finally:
            await second.stop()
    finally:
        await first.stop()


async def test_the_mock_cluster_shows_aborted_records_to_read_committed_readers(
    mock_cluster: MockClusterProcess,
) -> None:
    topic = f"tx-aborted-{uuid.uuid4().hex[:8]}"
    mock_cluster.command(f"topic {topic} 1")
    servers = mock_cluster.bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=servers, transactional_id=topic)
    await producer.start()
    try:
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
    finally:
        await producer.stop()
    records = await read_topics(servers, [topic], "read_committed", check_crcs=False)
    # A real Kafka returns nothing here; the tests read the mock with TransactionLog instead.
    assert [r.value for r in records] == [b"aborted"], "the mock isolates now: read it plainly"
