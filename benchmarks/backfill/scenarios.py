"""The scenarios: each one runs real processes through the harness and returns its figures."""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime
import itertools
import json
import math
import re
import signal
import subprocess
import time
import uuid
import xmlrpc.client
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.backfill.harness import (
    CONSUMER_FETCH_WAIT_MS,
    JOINED_LINE,
    KILL_TAKEOVER_SLACK,
    LEADER_LINE,
    LEADER_SESSION_TIMEOUT,
    LOST_LINE,
    MIN_REQUEST_INTERVAL,
    POLL_INTERVAL,
    RESUMED_LINE,
    TARGET_GRACEFUL_TAKEOVER,
    BenchmarkError,
    Feeder,
    MemorySampler,
    Phase,
    Processes,
    Startup,
    bridge_args,
    checkpoint_history,
    count_committed,
    cpu_seconds,
    first_at,
    get_json,
    metric,
    read_log,
    seconds_text,
    sim_base,
    start_simulator,
    startup_phases,
    step,
    verdict,
    wait_for_log,
    wait_for_metric,
    wait_with_usage,
    warm_up,
)
from bridge.broker import EmbeddedBroker, free_port
from bridge.errors import BrokerError
from bridge.kafka import partitions_of
from bridge.routing import event_topics, serial_of
from tests.realkafka import KafkaUnavailable, newest_version

# --- backfill ---------------------------------------------------------------------------------


@dataclass
class Backfill:
    rows: int
    last_serial: int
    seconds: float
    rows_per_second: float
    #: Process start to the bridge's first checkpoint (the starting point, before any page).
    startup_seconds: float | None
    #: First checkpoint to last: every row, without start-up and shut-down.
    commit_seconds: float | None
    rows_per_second_after_first_commit: float | None
    commits: int
    peak_rss_mb: float
    sampled_max_rss_mb: float
    memory_samples: int
    bridge_cpu_seconds: float
    broker_cpu_seconds: float | None
    simulator_cpu_seconds: float | None
    delivered: int
    checkpoint_serial: int | None
    verified: bool
    #: "embedded" (tansu) or "kafka" (Apache Kafka), and the delivery mode the bridge chose.
    broker: str = "embedded"
    delivery_mode: str | None = None
    #: The bridge's user + system CPU time per 1,000 rows, in milliseconds.
    bridge_cpu_ms_per_1000_rows: float = 0.0
    #: Distinct serials among the delivered events (counted only on Apache Kafka).
    distinct_serials: int | None = None
    #: Start-up, from the bridge's log: process start to the first commit, phase by phase.
    phases: list[Phase] = field(default_factory=list)


def measure_backfill(
    procs: Processes,
    bootstrap: str,
    broker_pid: int | None,
    sim: subprocess.Popen[bytes],
    url: str,
    rows: int,
    extra: Sequence[str] = (),
    *,
    broker_name: str = "embedded",
) -> Backfill:
    """Run the bridge over the whole prefilled journal and measure it."""
    state = get_json(sim_base(url) + "/_sim/state")
    last = int(state["last_serial"])
    if int(state["rows"]) != rows:
        raise BenchmarkError(f"the simulator holds {state['rows']} rows, expected {rows}")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    broker_cpu = cpu_seconds(broker_pid) if broker_pid is not None else None
    sim_cpu = cpu_seconds(sim.pid)
    name = "backfill-bridge" if broker_name == "embedded" else f"backfill-bridge-{broker_name}"
    started_wall, started = time.time(), time.monotonic()
    popen, log_path = procs.start(
        name,
        bridge_args(
            "run",
            "--pypi-url",
            url,
            "--bootstrap-servers",
            bootstrap,
            "--start-serial",
            "0",
            "--stop-at-serial",
            str(last),
            "--min-request-interval",
            "0",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--topic-prefix",
            prefix,
            *extra,
        ),
    )
    sampler = MemorySampler(popen.pid)
    sampler.start()
    try:
        usage = wait_with_usage(popen, timeout=max(300.0, rows / 2_000))
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"the backfill did not finish in time; see {log_path}") from None
    finally:
        sampler.stop()
    seconds = time.monotonic() - started
    if popen.returncode != 0:
        raise BenchmarkError(f"the bridge exited with {popen.returncode}; see {log_path}")
    broker_after = cpu_seconds(broker_pid) if broker_pid is not None else None
    sim_after = cpu_seconds(sim.pid)
    history = asyncio.run(checkpoint_history(bootstrap, prefix))
    final = history[-1] if history else None
    mode = final.mode if final else None
    distinct: int | None = None
    if mode == "transactional":
        delivered, distinct = asyncio.run(count_committed(bootstrap, prefix))
    else:
        # The topics are new and hold no markers, so the offsets of the last checkpoint count
        # every event sent.
        delivered = sum(sum(offsets) for offsets in final.offsets.values()) if final else 0
    startup = commit_seconds = after_first = None
    if history:
        startup = history[0].written_at - started_wall
        commit_seconds = history[-1].written_at - history[0].written_at
        if commit_seconds > 0:
            after_first = delivered / commit_seconds
    cpu = usage.ru_utime + usage.ru_stime
    return Backfill(
        rows=rows,
        last_serial=last,
        seconds=seconds,
        rows_per_second=rows / seconds,
        startup_seconds=startup,
        commit_seconds=commit_seconds,
        rows_per_second_after_first_commit=after_first,
        commits=len(history),
        # ru_maxrss is the kernel's peak for the process, in kB on Linux.
        peak_rss_mb=max(usage.ru_maxrss, sampler.last_hwm_kb) / 1024,
        sampled_max_rss_mb=sampler.max_rss_kb / 1024,
        memory_samples=sampler.samples,
        bridge_cpu_seconds=cpu,
        broker_cpu_seconds=_delta(broker_cpu, broker_after),
        simulator_cpu_seconds=_delta(sim_cpu, sim_after),
        delivered=delivered,
        checkpoint_serial=final.serial if final else None,
        verified=(
            delivered == rows
            and distinct in (None, rows)
            and final is not None
            and final.serial == last
        ),
        broker=broker_name,
        delivery_mode=mode,
        bridge_cpu_ms_per_1000_rows=cpu / rows * 1_000_000,
        distinct_serials=distinct,
        phases=startup_phases(
            read_log(log_path),
            started_wall,
            history[0].written_at if history else None,
        ),
    )


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


# --- the naive baseline -----------------------------------------------------------------------


def naive_parse(row: Sequence[Any]) -> dict[str, Any]:
    """A row as a typical script turns it into a dict: a few prefixes, the rest 'other'."""
    name, version, timestamp, action, serial = row
    if action.startswith("add ") and " file " in action:
        kind = "file.added"
    elif action.startswith("remove file "):
        kind = "file.removed"
    elif action == "new release":
        kind = "release.created"
    elif action == "create":
        kind = "project.created"
    elif action.startswith(("add ", "remove ", "change ", "invite ", "accepted ")):
        kind = "role"
    else:
        kind = "other"
    return {
        "serial": serial,
        "type": kind,
        "project": name,
        "version": version,
        "timestamp": timestamp,
        "time": datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(),
        "action": action,
    }


@dataclass
class Naive:
    rows: int
    seconds: float
    rows_per_second: float


async def measure_naive(url: str, bootstrap: str, rows: int) -> Naive:
    """The baseline: page with ServerProxy, then one awaited send per record, aiokafka defaults."""
    topic = f"naive-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        await admin.close()
    started = time.perf_counter()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    done = 0
    try:
        proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
        cursor = 0
        while done < rows:
            page: Any = proxy.changelog_since_serial(cursor)
            if not page:
                break
            for row in page:
                record = naive_parse(row)
                await producer.send_and_wait(
                    topic, json.dumps(record).encode(), key=str(row[0]).lower().encode()
                )
                done += 1
                if done >= rows:
                    break
            cursor = page[-1][4]
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    if done < rows:
        raise BenchmarkError(f"the naive baseline found only {done} rows of {rows}")
    return Naive(rows=done, seconds=seconds, rows_per_second=done / seconds)


# --- freshness ------------------------------------------------------------------------------------
VISIBILITY_POLL_SECONDS = 0.02


@dataclass
class Freshness:
    seconds: float
    rate: float
    events: int
    missing: int
    p50: float | None
    p99: float | None
    max: float | None
    visibility: str
    visibility_resolution: float | None


class _Visibility:
    """Serial -> time it became visible (an upper bound on the delay when polled)."""

    def __init__(self, serials: list[int], times: list[float]) -> None:
        self._serials = serials
        self._times = times

    def at(self, serial: int) -> float | None:
        i = bisect.bisect_left(self._serials, serial)
        return self._times[i] if i < len(self._times) else None


def _from_polls(polls: list[tuple[float, int]]) -> _Visibility:
    """Polls are (start time, last serial seen); a serial is dated by the poll before it."""
    serials: list[int] = []
    times: list[float] = []
    for (previous_start, _), (_, serial) in itertools.pairwise(polls):
        serials.append(serial)
        times.append(previous_start)
    return _Visibility(serials, times)


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (`share` from 0 to 1) of the values, None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


class _Polls:
    """Records every poll's start time and the last serial it saw."""

    def __init__(self) -> None:
        self.items: list[tuple[float, int]] = []

    async def run(self, session: aiohttp.ClientSession, base: str) -> None:
        while True:
            started = time.time()
            try:
                async with session.get(base + "/_sim/state") as response:
                    state = await response.json()
            except (aiohttp.ClientError, OSError) as exc:
                raise BenchmarkError(f"the simulator stopped answering: {exc}") from None
            self.items.append((started, int(state["last_serial"] or 0)))
            await asyncio.sleep(VISIBILITY_POLL_SECONDS)


async def _exact_visibility(
    session: aiohttp.ClientSession, base: str, after: int
) -> dict[int, float] | None:
    """The simulator's own per-row visibility times, if it offers them."""
    async with session.get(base + "/_sim/visibility", params={"after": str(after)}) as response:
        if response.status != 200:
            return None
        payload = await response.json()
    return {int(serial): float(at) for serial, at in payload["rows"]}


class _Receiver:
    """Notes when each serial first reaches the consumer."""

    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        self.arrived = asyncio.Event()

    async def run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                for record in records:
                    serial = serial_of(record.headers)
                    if serial is not None and serial not in self.received:
                        self.received[serial] = now
            if batch:
                self.arrived.set()

    async def wait_for(self, serials: Sequence[int], seconds: float) -> None:
        """Until every serial has arrived or `seconds` have passed."""
        deadline = time.monotonic() + seconds
        while any(s not in self.received for s in serials):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)


async def _wait_for_partitions(consumer: AIOKafkaConsumer, topics: list[str]) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            consumer.assign(await partitions_of(consumer, topics))
            return
        except BrokerError:
            if time.monotonic() > deadline:
                raise BenchmarkError("the bridge did not create its topics in time") from None


async def measure_freshness(
    start_bridge: Callable[[str], None],
    broker: EmbeddedBroker,
    url: str,
    seconds: float,
    rate: float,
) -> Freshness:
    """Delay from a row becoming visible to a consumer receiving its event, under steady traffic.

    `start_bridge(prefix)` starts the bridge with that topic prefix (on the main thread, as
    `Processes.start` requires).
    """
    base = sim_base(url)
    polls = _Polls()
    receiver = _Receiver()
    received = receiver.received
    prefix = f"fresh-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as session:
        poller = asyncio.create_task(polls.run(session, base))
        start_bridge(prefix)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=CONSUMER_FETCH_WAIT_MS,
        )
        await consumer.start()
        consuming: asyncio.Task[None] | None = None
        try:
            await _wait_for_partitions(consumer, event_topics(prefix))
            await consumer.seek_to_beginning()
            consuming = asyncio.create_task(receiver.run(consumer))
            try:
                await asyncio.wait_for(receiver.arrived.wait(), 120)
            except TimeoutError:
                raise BenchmarkError("no event reached the consumer within 120 s") from None
            # Rows visible before the bridge's first delivery carry its start-up: leave them out.
            begin = time.time()
            first_serial = _serial_at(polls.items, begin)
            await asyncio.sleep(seconds)
            end = time.time()
            last_serial = _serial_at(polls.items, end)
            rows = await asyncio.to_thread(_rows_between, url, first_serial, last_serial)
            await receiver.wait_for(rows, POLL_INTERVAL + MIN_REQUEST_INTERVAL + 15)
            exact = await _exact_visibility(session, base, first_serial)
        finally:
            tasks = [t for t in (poller, consuming) if t is not None]
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.stop()
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
    if exact is not None:
        visible_at = {s: exact[s] for s in rows if s in exact}
        source, resolution = "simulator /_sim/visibility (exact)", None
    else:
        dated = _from_polls(polls.items)
        visible_at = {s: t for s in rows if (t := dated.at(s)) is not None}
        source = "polling /_sim/state every 20 ms (upper bound)"
        gaps = [b[0] - a[0] for a, b in zip(polls.items, polls.items[1:], strict=False)]
        resolution = sum(gaps) / len(gaps) if gaps else None
    delays = [received[s] - t for s, t in visible_at.items() if s in received]
    return Freshness(
        seconds=seconds,
        rate=rate,
        events=len(delays),
        missing=sum(1 for s in rows if s not in received),
        p50=percentile(delays, 0.50),
        p99=percentile(delays, 0.99),
        max=max(delays) if delays else None,
        visibility=source,
        visibility_resolution=resolution,
    )


def _serial_at(polls: list[tuple[float, int]], moment: float) -> int:
    """The last serial visible at `moment`, from the polls started by then."""
    seen = [serial for started, serial in polls if started <= moment]
    return seen[-1] if seen else 0


def _rows_between(url: str, after: int, through: int) -> list[int]:
    """Serials in (after, through], read from the simulator as PyPI pages them."""
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
    serials: list[int] = []
    cursor = after
    while cursor < through:
        page: Any = proxy.changelog_since_serial(cursor)
        if not page:
            break
        serials.extend(row[4] for row in page if row[4] <= through)
        cursor = page[-1][4]
    return serials


# --- real Apache Kafka: takeover and restart --------------------------------------------------


def replica_args(
    url: str, bootstrap: str, prefix: str, replica_id: str, port: int, *extra: str
) -> list[str]:
    """`pypi-bridge run` as one of several replicas tailing the journal (default intervals)."""
    return bridge_args(
        "run",
        "--pypi-url",
        url,
        "--bootstrap-servers",
        bootstrap,
        "--http-host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--topic-prefix",
        prefix,
        "--replica-id",
        replica_id,
        "--leader-session-timeout",
        f"{LEADER_SESSION_TIMEOUT:g}",
        *extra,
    )


def _resumed_serial(log_path: Path, after: float) -> int:
    for stamp, line in read_log(log_path):
        if stamp >= math.floor(after * 1000) / 1000 and RESUMED_LINE in line:
            found = re.search(RESUMED_LINE + r" (\d+)", line)
            if found is not None:
                return int(found[1])
    raise BenchmarkError(f"{log_path.name}: no {RESUMED_LINE!r} line with a serial")


def _first_commit_by(bootstrap: str, prefix: str, replica: str, after: float) -> float | None:
    history = asyncio.run(checkpoint_history(bootstrap, prefix, "read_committed"))
    mine = (c.written_at for c in history if c.replica == replica and c.written_at >= after)
    return next(mine, None)


@dataclass
class Takeover:
    signal: str
    session_timeout: float
    target_seconds: float
    #: Signal to the standby's "is now the leader" line (that line's own timestamp).
    to_leader_line: float
    #: Signal to the standby's "resuming after serial" line: it has recovered from the checkpoint.
    to_resumed: float
    #: Signal to the standby's first commit (the written_at of its first checkpoint).
    to_first_commit: float | None
    met: bool
    #: Signal to the old leader's "is no longer the leader" line (SIGTERM only): it has stopped
    #: producing and leaves the group next.
    old_leader_stopped_seconds: float | None
    #: Signal to the old leader's exit (as seen by polling every 10 ms) and its status.
    old_leader_exit_seconds: float | None
    old_leader_returncode: int | None
    #: Terms the leader ended (and began again) when the standby joined the group.
    leader_terms_ended_by_join: int
    phases: list[Phase]


def measure_takeover(
    procs: Processes, bootstrap: str, url: str, sig: signal.Signals, extra: Sequence[str] = ()
) -> tuple[Takeover, str]:
    """Two replicas tail the journal; the leader gets `sig`; how soon does the standby lead?

    Returns the figures and the topic prefix (its topics and checkpoint stay for a restart).
    """
    with Feeder(url):
        return _takeover(procs, bootstrap, url, sig, extra)


def _takeover(
    procs: Processes, bootstrap: str, url: str, sig: signal.Signals, extra: Sequence[str]
) -> tuple[Takeover, str]:
    label = sig.name.lower()
    prefix = f"takeover-{label}-{uuid.uuid4().hex[:8]}"
    ports = {rid: free_port() for rid in ("a", "b")}
    a, a_log = procs.start(
        f"takeover-{label}-a", replica_args(url, bootstrap, prefix, "a", ports["a"], *extra)
    )
    wait_for_log(a, a_log, (LEADER_LINE,), 0.0, 180)
    # The leader has committed its starting point.
    wait_for_metric(a, ports["a"], "pypi_bridge_committed_serial", lambda v: v > 0, 120)
    b_started = time.time()
    b, b_log = procs.start(
        f"takeover-{label}-b", replica_args(url, bootstrap, prefix, "b", ports["b"], *extra)
    )
    joined = wait_for_log(b, b_log, (JOINED_LINE,), b_started, 180)
    # The join rebalanced the group; the leader keeps (or regains) leadership and polls again.
    wait_for_metric(
        a, ports["a"], "pypi_bridge_last_commit_time_seconds", lambda v: v > joined + 0.5, 60
    )
    if metric(ports["a"], "pypi_bridge_leader") != 1.0 or LEADER_LINE in b_log.read_text():
        raise BenchmarkError(f"replica a does not lead {prefix} alone once b has joined")
    time.sleep(1.0)
    signalled = time.time()
    a.send_signal(sig)
    exited_at: float | None = None
    deadline = time.monotonic() + 120
    while first_at(read_log(b_log), (RESUMED_LINE,), signalled) is None:
        if exited_at is None and a.poll() is not None:
            exited_at = time.time()
        if b.poll() is not None:
            raise BenchmarkError(f"the standby exited ({b.returncode}); see {b_log}")
        if time.monotonic() > deadline:
            raise BenchmarkError(f"the standby did not take over within 120 s; see {b_log}")
        time.sleep(0.01)
    resumed = _resumed_serial(b_log, signalled)
    wait_for_metric(b, ports["b"], "pypi_bridge_committed_serial", lambda v: v > resumed, 120)
    while exited_at is None and time.monotonic() < deadline:
        if a.poll() is not None:
            exited_at = time.time()
        time.sleep(0.01)
    procs.stop(a)
    procs.stop(b)
    lines = read_log(b_log)
    leader_at = first_at(lines, (LEADER_LINE,), signalled)
    resumed_at = first_at(lines, (RESUMED_LINE,), signalled)
    if leader_at is None or resumed_at is None:
        raise BenchmarkError(f"the standby's log lacks its takeover lines; see {b_log}")
    committed_at = _first_commit_by(bootstrap, prefix, "b", signalled)
    target = (
        TARGET_GRACEFUL_TAKEOVER
        if sig == signal.SIGTERM
        else LEADER_SESSION_TIMEOUT + KILL_TAKEOVER_SLACK
    )
    a_lines = read_log(a_log)
    ended = [1 for at, line in a_lines if b_started <= at < signalled and LOST_LINE in line]
    stopped_at = first_at(a_lines, (LOST_LINE,), signalled)
    takeover = Takeover(
        signal=sig.name,
        session_timeout=LEADER_SESSION_TIMEOUT,
        target_seconds=target,
        to_leader_line=leader_at - signalled,
        to_resumed=resumed_at - signalled,
        to_first_commit=None if committed_at is None else committed_at - signalled,
        met=leader_at - signalled <= target,
        old_leader_stopped_seconds=None if stopped_at is None else stopped_at - signalled,
        old_leader_exit_seconds=None if exited_at is None else exited_at - signalled,
        old_leader_returncode=a.returncode,
        leader_terms_ended_by_join=len(ended),
        phases=startup_phases(lines, signalled, committed_at),
    )
    return takeover, prefix


def measure_restart(
    procs: Processes, bootstrap: str, url: str, prefix: str, extra: Sequence[str] = ()
) -> list[Phase]:
    """One replica started on existing topics and checkpoint, alone: its start-up, phase by phase.

    With --log-level DEBUG, so that aiokafka's lines split the topic check from the group join.
    """
    port = free_port()
    with Feeder(url):
        started = time.time()
        c, c_log = procs.start(
            "restart-c",
            replica_args(url, bootstrap, prefix, "c", port, *extra, "--log-level", "DEBUG"),
        )
        wait_for_log(c, c_log, (RESUMED_LINE,), started, 180)
        resumed = _resumed_serial(c_log, started)
        wait_for_metric(c, port, "pypi_bridge_committed_serial", lambda v: v > resumed, 120)
        procs.stop(c)
    committed_at = _first_commit_by(bootstrap, prefix, "c", started)
    return startup_phases(read_log(c_log), started, committed_at)


@dataclass
class KafkaRun:
    """The real-Kafka part of a run, or why it did not run."""

    available: bool
    reason: str | None = None
    version: str | None = None
    #: Starting the node (format, JVM start, Metadata answered) and the warm-up, in seconds.
    start_seconds: float | None = None
    warm_up_seconds: float | None = None
    backfill: Backfill | None = None
    takeovers: dict[str, Takeover] = field(default_factory=dict)
    startups: list[Startup] = field(default_factory=list)


def run_real_kafka(
    ns: argparse.Namespace, procs: Processes, sim: subprocess.Popen[bytes], url: str
) -> KafkaRun:
    """The backfill, the takeovers and a restart on Apache Kafka; stops its processes after."""
    if ns.real_kafka == "no":
        step("real Kafka: skipped (--real-kafka no)")
        return KafkaRun(available=False, reason="skipped with --real-kafka no")
    step(
        f"real Kafka: starting Apache Kafka {newest_version()}, one KRaft node "
        "(the first use resolves its jars with Maven)"
    )
    started = time.monotonic()
    try:
        cluster = procs.kafka()
    except KafkaUnavailable as exc:
        reason = (str(exc).strip().splitlines() or ["unknown"])[0]
        if ns.real_kafka == "yes":
            raise BenchmarkError(f"Apache Kafka is unavailable: {reason}") from None
        step(f"REAL KAFKA NOT MEASURED: {reason}")
        return KafkaRun(available=False, reason=reason)
    bootstrap = cluster.bootstrap_servers
    process = cluster.nodes[0].process
    start_seconds = time.monotonic() - started
    started = time.monotonic()
    asyncio.run(warm_up(bootstrap))
    warm_up_seconds = time.monotonic() - started
    step(
        f"real Kafka {cluster.version} at {bootstrap} (started in {start_seconds:.1f} s, internal "
        f"topics created in {warm_up_seconds:.1f} s); backfill: {ns.rows:,} rows"
    )
    backfill = measure_backfill(
        procs,
        bootstrap,
        process.pid if process is not None else None,
        sim,
        url,
        ns.rows,
        ns.bridge_arg,
        broker_name="kafka",
    )
    step(
        f"real Kafka backfill: {backfill.rows_per_second:,.0f} rows/s, "
        f"{backfill.bridge_cpu_ms_per_1000_rows:.1f} ms CPU per 1,000 rows, "
        f"peak {backfill.peak_rss_mb:.0f} MB, delivery {backfill.delivery_mode}"
    )
    procs.stop(sim)  # the prefilled journal is done with
    live, live_url = start_simulator(
        procs, "takeover-simulator", "--prefill", "1000", "--rate", "0", "--seed", "7"
    )
    takeovers: dict[str, Takeover] = {}
    prefix = ""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        step(f"real Kafka: takeover after the leader's {sig.name}")
        takeover, prefix = measure_takeover(procs, bootstrap, live_url, sig, ns.bridge_arg)
        takeovers[sig.name] = takeover
        step(
            f"takeover after {sig.name}: leader line {takeover.to_leader_line:.3f} s "
            f"(target {takeover.target_seconds:g} s: {verdict(takeover.met)}), first commit "
            f"{seconds_text(takeover.to_first_commit)}"
        )
    step("real Kafka: a restart on existing topics (--log-level DEBUG), phase by phase")
    restart = measure_restart(procs, bootstrap, live_url, prefix, ns.bridge_arg)
    procs.stop(live)
    procs.stop_kafka(cluster)
    startups = [
        Startup("first start, Kafka (topics created)", "process start", backfill.phases),
        Startup("restart, Kafka (existing topics, DEBUG log)", "process start", restart),
        *(
            Startup(f"standby after {name}", "the signal", takeover.phases)
            for name, takeover in takeovers.items()
        ),
    ]
    return KafkaRun(
        available=True,
        version=cluster.version,
        start_seconds=start_seconds,
        warm_up_seconds=warm_up_seconds,
        backfill=backfill,
        takeovers=takeovers,
        startups=startups,
    )
