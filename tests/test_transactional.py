"""Transactional delivery proven on Apache Kafka itself: simulator -> `pypi-bridge run` -> a real
KRaft broker -> `read_committed` readers and `pypi-bridge audit --strict`.

Every scenario runs on the newest and on an older pinned Kafka 4.x (`any_kafka`, tests/kafka/
pom.xml). Besides a read_committed consumer, the log is also read raw, transaction markers
included (`TransactionLog`), and the two views must agree: a record is committed only if a COMMIT
marker of its producer follows it, so the verdict rests on what the broker wrote, not only on how
it filters.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords

from bridge.broker import EmbeddedBroker, free_port
from bridge.config import KafkaSettings, TopicSettings
from bridge.kafka import ensure_topics
from bridge.parse import Row
from bridge.routing import checkpoint_topic, event_topics
from tests.conftest import Figures
from tests.realkafka import KafkaCluster
from tests.support import (
    Process,
    Simulator,
    fixed_journal,
    read_topics,
    run_args,
    run_audit,
    start,
)
from tests.test_end_to_end import check_exactly_once
from tests.test_faults import _first_leader, finish, wait_for_line

pytestmark = pytest.mark.slow
COMMIT_MARKER = 1
FENCED_LINE = "(this one was fenced)"
LEADING = "is now the leader"
# Kafka protocol errors a fresh or moving partition answers for a moment.
_RETRIABLE_FETCH = {3, 6}  # UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER
Moment = Literal["mid-transaction", "between transactions", "any time"]


@dataclass
class Cluster:
    """A real Kafka cluster under test and the bridge's view of it."""

    kafka: KafkaCluster

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    async def new_prefix(self, label: str) -> str:
        """A topic prefix of the test's own (the session shares one broker).

        Its topics are made at once, as the bridge makes them, so that readers started before
        the bridge find them.
        """
        prefix = f"tx-{label}-{uuid.uuid4().hex[:8]}"
        await ensure_topics(KafkaSettings(self.bootstrap_servers), TopicSettings(prefix))
        return prefix

    def run_args(self, sim: Simulator, prefix: str, *extra: str, session: float = 6) -> list[str]:
        """`run` aimed at this cluster; a kill -9'd leader is replaced once its session ends."""
        return run_args(
            sim, self.bootstrap_servers, prefix, "--leader-session-timeout", str(session), *extra
        )

    async def read_committed(self, prefix: str) -> list[ConsumerRecord[bytes, bytes]]:
        return await read_topics(self.bootstrap_servers, event_topics(prefix), "read_committed")

    def audit(self, sim: Simulator, prefix: str) -> str:
        code, report = run_audit(sim, self.bootstrap_servers, prefix, "--strict")
        assert code == 0, report
        return report


@pytest.fixture
def cluster(any_kafka: KafkaCluster) -> Cluster:
    return Cluster(any_kafka)


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
    with fixed_journal(tmp_path_factory.mktemp("sim"), 20_000, seed=11) as sim:
        yield sim


@pytest.fixture(scope="module")
def rows(journal: Simulator) -> list[Row]:
    found = journal.rows()
    assert len(found) == 20_000
    return found


@pytest.fixture(scope="module")
def slow_journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """Small pages with latency: a backfill that lasts long enough to interrupt."""
    with fixed_journal(
        tmp_path_factory.mktemp("slowsim"), 20_000, seed=12, page_size=1000, latency=0.2
    ) as sim:
        yield sim


@pytest.fixture(scope="module")
def slow_rows(slow_journal: Simulator) -> list[Row]:
    return slow_journal.rows()


@pytest.fixture(scope="module")
def big_journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """200,000 rows in small pages with a little latency: long enough for many kills."""
    with fixed_journal(
        tmp_path_factory.mktemp("big"), 200_000, seed=13, page_size=2000, latency=0.05
    ) as sim:
        yield sim


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

    def behind(self) -> bool:
        """Not read to the high watermark yet (or never answered)."""
        return self.high_watermark is None or self.next_offset < self.high_watermark


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
        # Topics created a moment ago reach the broker's metadata cache a little later.
        deadline = time.monotonic() + 30
        while missing := [
            t for t in self.topics if not self._client.cluster.partitions_for_topic(t)
        ]:
            assert time.monotonic() < deadline, f"no topic {missing[0]}"
            await asyncio.sleep(0.2)
            await self._client.force_metadata_update()
        for topic in self.topics:
            for partition in self._client.cluster.partitions_for_topic(topic) or ():
                self._logs[TopicPartition(topic, partition)] = _PartitionLog()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.close()

    async def refresh(self) -> None:
        """Read every partition from where the last refresh stopped to its high watermark."""
        todo = set(self._logs)
        stalls = 0
        while todo:
            before = self.marks()
            by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
            for tp in todo:
                by_leader[self._client.cluster.leader_for_partition(tp)].append(tp)
            answered = await asyncio.gather(
                *(self._fetch(node, tps) for node, tps in by_leader.items())
            )
            todo = {tp for tp in todo if self._logs[tp].behind()}
            if self.marks() == before:
                stalls += 1
                assert stalls < 50, f"no progress reading {sorted(todo)[:3]}"
                if not all(answered):
                    # A partition just created or moving: ask for metadata again shortly.
                    await asyncio.sleep(0.2)
                    await self._client.force_metadata_update()

    async def _fetch(self, node: int, partitions: list[TopicPartition]) -> bool:
        """Fetch from one leader; False if a partition answered a retriable error."""
        by_topic: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for tp in partitions:
            by_topic[tp.topic].append((tp.partition, self._logs[tp].next_offset, 8 << 20))
        request = FetchRequest(0, 0, 32 << 20, 0, list(by_topic.items()))
        response = await self._client.send(node, request)
        clean = True
        for topic, answers in response.topics:
            for answer in answers:
                partition, error, high_watermark, records = (
                    answer[0],
                    answer[1],
                    answer[2],
                    answer[-1],
                )
                if error in _RETRIABLE_FETCH:
                    clean = False
                    continue
                assert error == 0, f"fetch {topic}[{partition}]: {for_code(error).__name__}"
                log = self._logs[TopicPartition(topic, partition)]
                log.high_watermark = high_watermark
                if records:
                    self._take(topic, partition, log, MemoryRecords(records))
        return clean

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

    def open_since(
        self, marks: dict[TopicPartition, int], topics: Sequence[str]
    ) -> set[tuple[str, int, int]]:
        """(topic, partition, offset) of the records of `topics` written after `marks` whose
        transaction has not ended."""
        return {
            (record.topic, record.partition, record.offset)
            for tp, log in self._logs.items()
            if tp.topic in topics
            for records in log.open.values()
            for record in records
            if record.offset >= marks.get(tp, 0)
        }

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
    bridge: Process, log: TransactionLog, prefix: str, moment: Moment
) -> set[tuple[str, int, int]]:
    """Stop the publishing bridge (SIGSTOP) at a moment of the kind asked for; for
    `mid-transaction`, return the events its open transaction had in the log then.

    `mid-transaction`: its open transaction has events in the log; `between transactions`: no
    transaction of it is open; `any time`: as it comes.
    """
    events, checkpoints = event_topics(prefix), [checkpoint_topic(prefix)]
    marks = log.marks()
    while "backfill: serial" not in bridge.output():
        assert bridge.popen.poll() is None, f"the bridge ended:\n{bridge.output()[-3000:]}"
        await asyncio.sleep(0.05)
    for _ in range(300):
        await asyncio.sleep(random.uniform(0.02, 0.3))
        assert bridge.popen.poll() is None, f"the bridge ended:\n{bridge.output()[-3000:]}"
        bridge.popen.send_signal(signal.SIGSTOP)
        # Requests already on the wire still land; let them.
        await asyncio.sleep(0.2)
        await log.refresh()
        open_events = log.open_since(marks, events)
        if moment == "mid-transaction" and open_events:
            # A commit that reached the coordinator just before the stop has its markers written
            # a moment later (seconds on a busy machine): the transaction must still be open on
            # a second look.
            await asyncio.sleep(2.0)
            await log.refresh()
            if open_events <= log.open_since(marks, events):
                return open_events
        elif moment == "any time" or (
            moment == "between transactions"
            and not open_events
            and not log.open_since(marks, checkpoints)
        ):
            return set()
        bridge.popen.send_signal(signal.SIGCONT)
    raise AssertionError(f"never caught the bridge {moment}:\n{bridge.output()[-3000:]}")


def check_read_committed(
    records: list[ConsumerRecord[bytes, bytes]], log: TransactionLog, topics: Sequence[str]
) -> None:
    """A read_committed consumer returned no record of an aborted or unfinished transaction,
    and every record the raw log shows committed."""
    seen = {(r.topic, r.partition, r.offset) for r in records}
    leaked = sorted(seen & log.not_committed(topics))
    assert not leaked, f"{len(leaked)} records of aborted transactions were read, e.g. {leaked[:3]}"
    committed = {(r.topic, r.partition, r.offset) for r in log.committed(topics)}
    assert seen == committed, f"read_committed and the raw log differ: {len(seen ^ committed)}"


# --- the tests ----------------------------------------------------------------------------------


async def test_auto_mode_picks_transactional_on_apache_kafka(
    cluster: Cluster,
    journal: Simulator,
    rows: list[Row],
    tmp_path: Path,
    bridge_process: Launch,
) -> None:
    prefix = await cluster.new_prefix("auto")
    args = cluster.run_args(journal, prefix, "--start-serial", "0", "--stop-at-serial")
    bridge = bridge_process([*args, str(rows[100][4])], tmp_path / "bridge.log")
    assert await finish(bridge, 60) == 0, bridge.output()[-3000:]
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
    assert await finish(bridge, 60) == 0, bridge.output()[-3000:]
    assert "delivery mode: high-water (the broker refused a transactional id" in bridge.output()


async def test_forced_transactional_on_the_embedded_broker_fails_with_one_line(
    broker: EmbeddedBroker,
    journal: Simulator,
    tmp_path: Path,
    bridge_process: Launch,
) -> None:
    args = run_args(journal, broker.bootstrap_servers, "tx-forced", "--start-serial", "0")
    bridge = bridge_process([*args, "--delivery", "transactional"], tmp_path / "bridge.log")
    assert await finish(bridge, 60) == 1, bridge.output()[-3000:]
    output = bridge.output()
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("pypi-bridge: error:")]
    assert len(errors) == 1, output[-3000:]
    assert "--delivery transactional" in errors[0]
    assert "--delivery high-water" in errors[0]


async def test_backfill_is_read_committed_exactly_once_with_topics_keys_headers_and_schemas(
    cluster: Cluster,
    journal: Simulator,
    rows: list[Row],
    tmp_path: Path,
    bridge_process: Launch,
    figures: Figures,
) -> None:
    prefix = await cluster.new_prefix("backfill")
    args = cluster.run_args(journal, prefix, "--start-serial", "0", "--batch-size", "2000")
    started = time.monotonic()
    bridge = bridge_process([*args, "--stop-at-serial", str(rows[-1][4])], tmp_path / "bridge.log")
    assert await finish(bridge, 180) == 0, bridge.output()[-3000:]
    elapsed = time.monotonic() - started
    assert "delivery mode: transactional" in bridge.output()
    consumed = await cluster.read_committed(prefix)
    check_exactly_once(consumed, rows, prefix)
    async with TransactionLog(cluster.bootstrap_servers, prefix) as log:
        await log.refresh()
        check_read_committed(consumed, log, event_topics(prefix))
    assert "20000 journal entries" in cluster.audit(journal, prefix)
    figures.add(
        f"20,000-row transactional backfill on Kafka {cluster.kafka.version}",
        f"{elapsed:.1f} s start to exit, read_committed and audit --strict clean",
    )


async def test_kill_9_mid_transaction_and_between_transactions_commits_every_row_once(
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
        left_open: set[tuple[str, int, int]] = set()
        for run, moment in enumerate(moments):
            await log.refresh()
            bridge = bridge_process(args, tmp_path / f"bridge-{run}.log")
            left_open |= await freeze(bridge, log, prefix, moment)
            bridge.stop(signal.SIGKILL)
        final = bridge_process(
            [*args, "--stop-at-serial", str(slow_rows[-1][4])], tmp_path / "bridge-final.log"
        )
        assert await finish(final, 180) == 0, final.output()[-3000:]
        assert "resuming after serial" in final.output()
        await log.refresh()
        check_exactly_once(log.committed(topics), slow_rows, prefix)
        # The kill mid-transaction left events behind; none of them is committed.
        assert left_open
        assert left_open <= log.not_committed(topics)
        consumed = await cluster.read_committed(prefix)
        check_read_committed(consumed, log, topics)
        check_exactly_once(consumed, slow_rows, prefix)
    cluster.audit(slow_journal, prefix)


async def test_ten_kill_9s_at_random_moments_of_a_200000_row_backfill_lose_and_repeat_nothing(
    cluster: Cluster,
    big_journal: Simulator,
    tmp_path: Path,
    bridge_process: Launch,
    figures: Figures,
) -> None:
    prefix = await cluster.new_prefix("kill10")
    last = big_journal.state()["last_serial"]
    # A 2 s session (the test broker allows it): each restart waits that long for the killed
    # member to leave the leader group.
    args = cluster.run_args(
        big_journal, prefix, "--start-serial", "0", "--batch-size", "1500", session=2
    )
    rng = random.Random(2026)
    log_path = tmp_path / "bridge.log"
    kills = 0
    for _ in range(10):
        bridge = bridge_process(args, log_path)
        offset = len(bridge.output())
        await wait_for_line(bridge, "backfill: serial", 90, offset)
        # Anywhere from the first batch through the middle of a transaction.
        await asyncio.sleep(rng.uniform(0.0, 1.5))
        bridge.stop(signal.SIGKILL)
        kills += 1
    final = bridge_process([*args, "--stop-at-serial", str(last)], log_path)
    assert await finish(final, 600) == 0, final.output()[-3000:]
    assert "Traceback" not in final.output()
    report = await asyncio.to_thread(cluster.audit, big_journal, prefix)
    assert "200000 journal entries" in report
    figures.add(
        f"kill -9 restarts survived on Kafka {cluster.kafka.version} (200,000 rows, audited)",
        kills,
    )


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
        await freeze(bridge, log, prefix, "mid-transaction")
        try:
            # A new producer with the bridge's transactional id: the broker fences the bridge.
            usurper = AIOKafkaProducer(
                bootstrap_servers=cluster.bootstrap_servers, transactional_id=f"{prefix}-bridge"
            )
            await usurper.start()
            await usurper.stop()
            # Its start aborted whatever the bridge had open.
            await log.refresh()
            assert not log.open_since({}, topics)
        finally:
            bridge.popen.send_signal(signal.SIGCONT)
        assert await finish(bridge, 180) == 0, bridge.output()[-3000:]
        fenced = [line for line in bridge.output().splitlines() if FENCED_LINE in line]
        assert len(fenced) == 1, bridge.output()[-3000:]
        assert "Traceback" not in bridge.output()
        await log.refresh()
        check_exactly_once(log.committed(topics), slow_rows, prefix)
        consumed = await cluster.read_committed(prefix)
        check_read_committed(consumed, log, topics)
        check_exactly_once(consumed, slow_rows, prefix)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_standby_takes_over_when_the_leader_goes_mid_backfill(
    cluster: Cluster,
    slow_journal: Simulator,
    tmp_path: Path,
    bridge_process: Launch,
    figures: Figures,
    how: signal.Signals,
) -> None:
    prefix = await cluster.new_prefix(f"failover-{how.name.lower()}")
    last = slow_journal.state()["last_serial"]
    args = cluster.run_args(
        slow_journal,
        prefix,
        *("--start-serial", "0", "--stop-at-serial", str(last), "--batch-size", "500"),
    )
    a = bridge_process(
        [*args, "--replica-id", "a", "--http-port", str(free_port())], tmp_path / "a.log"
    )
    b = bridge_process(
        [*args, "--replica-id", "b", "--http-port", str(free_port())], tmp_path / "b.log"
    )
    leader, standby = await asyncio.wait_for(_first_leader(a, b), 90)
    await wait_for_line(leader, "backfill: serial", 60)
    await asyncio.sleep(0.5)
    assert LEADING not in standby.output(), "two leaders at once"
    offset = len(standby.output())
    stopped_at = time.monotonic()
    leader.stop(how)
    took_over = await wait_for_line(standby, LEADING, 60, offset)
    resumed = await wait_for_line(standby, "resuming after serial", 60, offset)
    assert await finish(standby, 600) == 0, standby.output()[-3000:]
    if how == signal.SIGTERM:
        assert leader.popen.returncode == 0, leader.output()[-3000:]
    await asyncio.to_thread(cluster.audit, slow_journal, prefix)
    figures.add(
        f"takeover after the leader's {how.name} on Kafka {cluster.kafka.version} (6 s session)",
        f"{took_over - stopped_at:.1f} s to lead, {resumed - stopped_at:.1f} s to resume",
    )
