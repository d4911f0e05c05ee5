"""A zombie leader: paused until the group hands its lead to a standby, then resumed.

Two replicas back-fill a journal; the leader is stopped (SIGSTOP) until its group session
expires and the standby says it leads, then continued (SIGCONT) at once, while the new leader is
recovering: the worst moment. The resumed leader believes it still leads, and may hold batches it
built, queued or half-sent before the pause. It must write nothing the new leader does not
account for, say so in exactly one line, step down and stand by (alive, `/readyz` role standby,
not leading while the other leads), and the journal must end up in the topics exactly once.

- On Apache Kafka (transactional delivery, both pinned versions) the new leader's producer
  fences the zombie's transactional id: read_committed readers see every serial once.
- On the embedded broker (high-water delivery: no transactions, nothing on the broker fences a
  producer) the zombie fences itself: it has had no heartbeat for its session timeout, so it
  sends nothing more and logs "no heartbeat for N s: stepping down before a successor can lead".
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord

from bridge.broker import EmbeddedBroker, free_port
from bridge.parse import Row
from bridge.routing import event_topics
from tests.conftest import Figures
from tests.realkafka import KafkaCluster
from tests.support import Process, Simulator, fixed_journal, read_topics, run_args, run_audit, start

pytestmark = pytest.mark.slow
LEADING = "is now the leader"
SESSION_TIMEOUT = 6.0
LEASE_LINE = "stepping down before a successor can lead"
FENCED_LINE = "(this one was fenced)"
#: Every line in which a replica says it stops leading; a zombie must say it once.
STEP_DOWN_LINES = (LEASE_LINE, FENCED_LINE, "is no longer the leader")
#: Every term of a leader starts with this line (its producer and delivery mode).
TERM_START = "delivery mode:"


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    # Small pages and a little latency make a backfill long enough to pause in the middle.
    with fixed_journal(
        tmp_path_factory.mktemp("zombie-journal"), 120_000, seed=29, page_size=2000, latency=0.05
    ) as sim:
        yield sim


@pytest.fixture(scope="module")
def rows(journal: Simulator) -> list[Row]:
    return journal.rows()


@dataclass
class Zombie:
    """What happened to the paused leader and its successor."""

    stale: Process
    successor: Process
    #: SIGSTOP to the successor's "is now the leader".
    takeover: float
    #: SIGCONT to the stale leader's line about stepping down.
    step_down: float
    #: The stale leader's lines about stepping down, after SIGCONT.
    lines: list[str]


def role(port: int) -> tuple[int, str]:
    """Status and role of a replica's /readyz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, str(json.load(response).get("role"))
    except urllib.error.HTTPError as error:
        return error.code, str(json.load(error).get("role"))
    except OSError:
        return 0, "unreachable"


async def wait_for(process: Process, texts: tuple[str, ...], within: float, after: int) -> float:
    """Wait until one of `texts` is in the process's log after offset `after`."""
    deadline = time.monotonic() + within
    while not any(text in process.output()[after:] for text in texts):
        assert process.popen.poll() is None, f"exited early:\n{process.output()[-3000:]}"
        assert time.monotonic() < deadline, f"none of {texts} in {within} s:\n{process.output()}"
        await asyncio.sleep(0.02)
    return time.monotonic()


async def first_leader(a: Process, b: Process, within: float) -> tuple[Process, Process]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if LEADING in a.output():
            return a, b
        if LEADING in b.output():
            return b, a
        await asyncio.sleep(0.05)
    raise AssertionError(f"no leader in {within} s:\n{a.output()[-2000:]}\n{b.output()[-2000:]}")


async def pause_the_leader_until_replaced(
    journal: Simulator, bootstrap: str, prefix: str, tmp_path: Path, *extra: str
) -> Zombie:
    """The scenario; returns once the successor finished the backfill (--stop-at-serial)."""
    last = journal.state()["last_serial"]
    args = run_args(
        journal,
        bootstrap,
        prefix,
        "--start-serial",
        "0",
        "--stop-at-serial",
        str(last),
        # Small commits: little is queued in the producer when the pause comes.
        "--batch-size",
        "500",
        "--leader-session-timeout",
        str(SESSION_TIMEOUT),
        *extra,
    )
    ports = {"a": free_port(), "b": free_port()}
    a = start([*args, "--replica-id", "a", "--http-port", str(ports["a"])], tmp_path / "a.log")
    b = start([*args, "--replica-id", "b", "--http-port", str(ports["b"])], tmp_path / "b.log")
    try:
        leader, standby = await first_leader(a, b, 90)
        port = ports["a"] if leader is a else ports["b"]
        await wait_for(leader, ("backfill: serial",), 60, 0)
        # Somewhere in the middle of publishing: a batch being built, queued or in flight.
        await asyncio.sleep(random.uniform(1.0, 2.5))
        assert standby.popen.poll() is None, standby.output()[-3000:]
        assert LEADING not in standby.output(), "two leaders at once"
        standby_mark = len(standby.output())
        stopped_at = time.monotonic()
        leader.popen.send_signal(signal.SIGSTOP)
        try:
            took_over = await wait_for(standby, (LEADING,), 60, standby_mark)
        finally:
            leader_mark = len(leader.output())
            continued_at = time.monotonic()
            # At once: the successor is recovering now, the worst moment for stale writes.
            leader.popen.send_signal(signal.SIGCONT)
        stepped_down = await wait_for(leader, STEP_DOWN_LINES, 30, leader_mark)
        # The stale leader stands by: alive, ready, and not leading while the other leads.
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(role, port) != (200, "standby"):
            assert time.monotonic() < deadline, f"/readyz {role(port)}:\n{leader.output()[-3000:]}"
            await asyncio.sleep(0.2)
        deadline = time.monotonic() + 300
        while True:
            # Read the stale leader first: a lead it took before the successor reached the end
            # (and left the group) is a lead taken while the other led.
            stale_output = leader.output()[leader_mark:]
            if "reached --stop-at-serial" in standby.output():
                break
            assert standby.popen.poll() is None, f"the successor ended:\n{standby.output()}"
            assert leader.popen.poll() is None, f"the stale leader exited:\n{stale_output}"
            for text in (LEADING, TERM_START):
                assert text not in stale_output, f"the stale leader led again:\n{stale_output}"
            assert time.monotonic() < deadline, standby.output()[-3000:]
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(standby.wait, 120) == 0, standby.output()[-3000:]
        lines = [
            line
            for line in stale_output.splitlines()
            if any(text in line for text in STEP_DOWN_LINES)
        ]
        # The stale leader is a sound replica again: once the successor has left the group it is
        # elected, finds everything up to --stop-at-serial committed, and exits 0.
        assert await asyncio.to_thread(leader.wait, 90) == 0, leader.output()[-3000:]
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)
    for process in (a, b):
        assert "Traceback" not in process.output(), process.output()[-3000:]
    return Zombie(
        stale=leader,
        successor=standby,
        takeover=took_over - stopped_at,
        step_down=stepped_down - continued_at,
        lines=lines,
    )


def each_serial_once(records: list[ConsumerRecord[bytes, bytes]], rows: list[Row]) -> None:
    seen = Counter(int(dict(r.headers)["ce_id"]) for r in records)
    duplicated = sorted(s for s, n in seen.items() if n > 1)
    assert not duplicated, f"{len(duplicated)} serials twice, e.g. {duplicated[:5]}"
    missing = sorted({row[4] for row in rows} - set(seen))
    assert not missing, f"{len(missing)} serials missing, e.g. {missing[:5]}"


async def test_a_paused_leader_resumed_after_a_takeover_is_fenced_by_kafka_and_stands_by(
    any_kafka: KafkaCluster,
    journal: Simulator,
    rows: list[Row],
    tmp_path: Path,
    figures: Figures,
) -> None:
    bootstrap = any_kafka.bootstrap_servers
    prefix = f"zombie-tx-{any_kafka.version}-{random.randrange(1 << 30):x}"
    zombie = await pause_the_leader_until_replaced(
        journal, bootstrap, prefix, tmp_path, "--delivery", "transactional"
    )
    assert len(zombie.lines) == 1, "\n".join(zombie.lines) or zombie.stale.output()[-3000:]
    code, report = await asyncio.to_thread(run_audit, journal, bootstrap, prefix, "--strict")
    assert code == 0, report
    committed = await read_topics(bootstrap, event_topics(prefix), "read_committed")
    each_serial_once(committed, rows)
    everything = await read_topics(bootstrap, event_topics(prefix), "read_uncommitted")
    figures.add(
        f"zombie leader, Kafka {any_kafka.version}: SIGSTOP to takeover",
        f"{zombie.takeover:.1f} s (session {SESSION_TIMEOUT:.0f} s)",
    )
    figures.add(
        f"zombie leader, Kafka {any_kafka.version}: SIGCONT to its step-down line",
        f"{zombie.step_down:.2f} s: {zombie.lines[0].split(': ', 1)[-1]}",
    )
    figures.add(
        f"zombie leader, Kafka {any_kafka.version}: aborted records hidden from read_committed",
        len(everything) - len(committed),
    )


async def test_a_paused_leader_without_transactions_fences_itself_before_a_successor_leads(
    broker: EmbeddedBroker,
    journal: Simulator,
    rows: list[Row],
    tmp_path: Path,
    figures: Figures,
) -> None:
    bootstrap = broker.bootstrap_servers
    prefix = f"zombie-hw-{random.randrange(1 << 30):x}"
    zombie = await pause_the_leader_until_replaced(
        journal, bootstrap, prefix, tmp_path, "--delivery", "high-water"
    )
    assert len(zombie.lines) == 1, "\n".join(zombie.lines) or zombie.stale.output()[-3000:]
    assert "no heartbeat for" in zombie.lines[0]
    assert LEASE_LINE in zombie.lines[0]
    # No overlap: every serial exactly once in the topics, no duplicate for consumers to drop.
    code, report = await asyncio.to_thread(run_audit, journal, bootstrap, prefix, "--strict")
    assert code == 0, report
    each_serial_once(await read_topics(bootstrap, event_topics(prefix)), rows)
    figures.add(
        "zombie leader, embedded broker: SIGSTOP to takeover",
        f"{zombie.takeover:.1f} s (session {SESSION_TIMEOUT:.0f} s)",
    )
    figures.add(
        "zombie leader, embedded broker: SIGCONT to its step-down line",
        f"{zombie.step_down:.2f} s",
    )
