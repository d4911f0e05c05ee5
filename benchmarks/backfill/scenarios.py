"""End-to-end benchmark of the bridge, with every component a real process (issue 7).

    python -m benchmarks.backfill [--rows 1000000] [--baseline-rows 50000]
                                  [--freshness-seconds 60] [--real-kafka auto|yes|no]
                                  [--quick] [--output-dir DIR]

One run measures, against the embedded broker (tansu, high-water delivery) and the journal
simulator:

- backfill throughput: `pypi-bridge run` from serial 0 to the last of `--rows` prefilled rows,
  from process start to exit (everything a user waits for), and from its first commit to its
  last (the first checkpoint is the starting point, written before any page is read), so that
  start-up (imports, topics, leader election, recovery) shows up separately. Commit times come
  from the checkpoints themselves (`written_at`), read back after the run, which also proves
  that every row was delivered;
- the bridge's peak resident memory during that backfill (the kernel's own peak, from wait4,
  cross-checked by sampling /proc/<pid>/status every 50 ms);
- a naive baseline written the way most scripts do it (the standard library's ServerProxy,
  a dict per row, json.dumps, one awaited send per record with aiokafka's defaults), against the
  same simulator and broker over a smaller slice;
- freshness under steady traffic: how long after a row becomes visible in the simulator a plain
  aiokafka consumer receives its event, with the bridge's default poll and request intervals;
- the bridge's CPU time (user + system, from wait4) per 1,000 rows of the backfill.

In the same run, on Apache Kafka itself (one KRaft node started with `tests/realkafka.py`, the
newest pinned 4.x; the bridge auto-detects transactional delivery):

- the same backfill, over the same prefilled journal: rows/s, peak RSS, CPU per 1,000 rows; every
  event is counted back with a read_committed consumer (serials distinct, none missing);
- takeover: two replicas (`--leader-session-timeout 6`) tail a journal the harness grows by one
  row every 50 ms (so rows always wait for the next leader); the leader is stopped with SIGTERM
  (graceful, target 1 s) and, in a second pair, with SIGKILL (target: the session time-out plus
  2 s). Each is timed from the signal to the standby's "is now the leader" line (the line's own
  timestamp) and to its first commit (the `written_at` of the first checkpoint the standby
  wrote, read back with read_committed);
- start-up phases, from the bridge's own log timestamps: a first start (topics created), a
  restart on existing topics (with `--log-level DEBUG`, whose aiokafka lines split the topic
  check from the group join) and the two standbys taking over.

Without Java or the broker's jars (`make kafka-jars`) the real-Kafka part says so and is skipped
(`--real-kafka yes` makes that an error, `no` skips it). Timings are printed with their targets
and a met/missed marker, never asserted: a slow or busy machine reports slow figures.

It prints a table (figure, value, target, ratio to the baseline, met) with the machine and date,
and writes `latest.json` and `latest.md` to `--output-dir` (default `benchmarks/results`). Every
process it starts is stopped on the way out, also on Ctrl-C or SIGTERM.

When a row became visible: the simulator keeps no per-row visibility time today, so the harness
polls `/_sim/state` every 20 ms and takes, for each serial, the start of the last poll that did
not show it yet (an upper bound on the delay, by at most one poll). If the simulator offers
`GET /_sim/visibility?after=N` (`{"rows": [[serial, posix_seconds], ...]}`), those exact times
are used instead. The events' own `timestamp` cannot stand in: the simulator writes era times
derived from the serial, not the wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import calendar
import contextlib
import ctypes
import datetime
import itertools
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import xmlrpc.client
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import aiohttp
import aiokafka
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import bridge
from bridge.broker import EmbeddedBroker, free_port, start_broker
from bridge.checkpoint import Checkpoint, checkpoint_key
from bridge.config import RUN_FLAGS, SOURCE_FLAGS, KafkaSettings
from bridge.errors import BrokerError
from bridge.kafka import consumer, partitions_of, read_ranges
from bridge.routing import checkpoint_topic, event_topics, serial_of
from tests.realkafka import KafkaCluster, KafkaUnavailable, newest_version, start_kafka

# --- the targets --------------------------------------------------------------------

TARGET_ROWS_PER_SECOND = 50_000
TARGET_SPEEDUP = 10.0
TARGET_PEAK_MB = 150.0
#: Freshness p99 may exceed the poll interval by this much.
FRESHNESS_SLACK = 0.25
#: A graceful stop (SIGTERM) hands leadership over within this many seconds.
TARGET_GRACEFUL_TAKEOVER = 1.0
#: A crashed leader (SIGKILL) is replaced within its session time-out plus this.
KILL_TAKEOVER_SLACK = 2.0
#: The takeover replicas' --leader-session-timeout (Kafka's default floor is 6 s).
LEADER_SESSION_TIMEOUT = 6.0

ROOT = Path(bridge.__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results"
QUICK = {"rows": 20_000, "baseline_rows": 2_000, "freshness_seconds": 5.0}
SAMPLE_SECONDS = 0.05
VISIBILITY_POLL_SECONDS = 0.02
#: The consumer asks the broker to answer a fetch within this time even with nothing new; the
#: default (500 ms) would add up to half a second of consumer-side wait to every figure.
CONSUMER_FETCH_WAIT_MS = 100


def _default(flags: Sequence[Any], name: str) -> Any:
    return next(flag.default for flag in flags if flag.name == name)


POLL_INTERVAL = float(_default(RUN_FLAGS, "poll-interval"))
MIN_REQUEST_INTERVAL = float(_default(SOURCE_FLAGS, "min-request-interval"))


class BenchmarkError(Exception):
    """A measurement could not be taken (a process failed or did not finish in time)."""


# --- processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: be killed if the harness dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Processes:
    """Every process the harness starts, so that all are stopped whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._popens: list[subprocess.Popen[bytes]] = []
        self._brokers: list[EmbeddedBroker] = []
        self._clusters: list[KafkaCluster] = []

    def start(self, name: str, args: Sequence[str]) -> tuple[subprocess.Popen[bytes], Path]:
        """Start `args` with its output in `<workdir>/<name>.log`; only from the main thread."""
        log_path = self.workdir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYPI_BRIDGE_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
        env["PYTHONUNBUFFERED"] = "1"
        out: IO[bytes] = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(args),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            out.close()
        self._popens.append(popen)
        return popen, log_path

    def broker(self) -> EmbeddedBroker:
        started = start_broker(log_dir=str(self.workdir))
        self._brokers.append(started)
        return started

    def kafka(self) -> KafkaCluster:
        """One Apache Kafka KRaft node (the newest pinned 4.x), its data and logs in the workdir.

        Raises KafkaUnavailable without Java, Maven or the jars. The JVM runs in a session of its
        own, so a Ctrl-C reaches it only through `stop_all`.
        """
        cluster = start_kafka(self.workdir / "kafka", version=newest_version())
        self._clusters.append(cluster)
        return cluster

    def stop_kafka(self, cluster: KafkaCluster) -> None:
        cluster.stop()
        if cluster in self._clusters:
            self._clusters.remove(cluster)

    def stop(self, popen: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if popen.returncode is None and popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()

    def stop_all(self) -> None:
        for popen in reversed(self._popens):
            self.stop(popen)
        for cluster in self._clusters:
            cluster.stop()
        self._clusters.clear()
        for started in self._brokers:
            started.stop()


def bridge_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "bridge", *args]


def start_simulator(procs: Processes, name: str, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start `pypi-bridge simulate` and return it with its XML-RPC URL once it serves."""
    popen, log_path = procs.start(
        name, bridge_args("simulate", "--port", "0", "--log-level", "WARNING", *args)
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("http://"):
                return popen, line.strip()
        if popen.poll() is not None:
            break
        time.sleep(0.1)
    raise BenchmarkError(f"the simulator did not start; see {log_path}")


def _get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.load(response)


def sim_base(url: str) -> str:
    return url.rsplit("/pypi", 1)[0]


# --- sampling a running process ---------------------------------------------------------------


def _status_kb(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                found[name] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a live process has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class MemorySampler:
    """Samples a process's VmRSS and VmHWM every 50 ms from a thread."""

    pid: int
    max_rss_kb: int = 0
    last_hwm_kb: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            kb = _status_kb(self.pid)
            if kb:
                self.samples += 1
                self.max_rss_kb = max(self.max_rss_kb, kb.get("VmRSS", 0))
                self.last_hwm_kb = max(self.last_hwm_kb, kb.get("VmHWM", 0))
            self._stop.wait(SAMPLE_SECONDS)


def wait_with_usage(popen: subprocess.Popen[bytes], timeout: float) -> resource.struct_rusage:
    """Wait for the process like `Popen.wait`, but keep the kernel's account of its resources."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
        if pid:
            popen.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(popen.args, timeout)
        time.sleep(0.01)


# --- the bridge's own log: timestamps and start-up phases -------------------------------------

LEADER_LINE = "is now the leader"
RESUMED_LINE = "resuming after serial"
JOINED_LINE = "joined the leader group"
LOST_LINE = "is no longer the leader"
#: The bridge's text log lines begin with their time (UTC, to the millisecond; bridge/cli.py).
_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) ")
#: Start-up phases in the order the bridge goes through them, each ending at a log line holding
#: one of the texts. The aiokafka lines appear only with --log-level DEBUG (at INFO the bridge
#: silences aiokafka), so without them the topic check and the group join count as one phase.
PHASE_MARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("interpreter start and imports", ("starting as replica",)),
    ("HTTP endpoints", ("metrics and health on",)),
    ("topic check (creation on a first start)", ("topics with prefix", "Subscribed to topic(s)")),
    ("leader group: connect, find the coordinator", ("(Re-)joining group",)),
    ("leader group: join and sync (takeover: from the signal)", (LEADER_LINE,)),
    ("producer start (InitProducerId when transactional)", ("delivery mode:",)),
    ("checkpoint read (and high-water recovery)", (RESUMED_LINE, "no checkpoint:")),
    ("PyPI head (changelog_last_serial)", ("caught up at serial", "backfill: serial")),
)
FIRST_COMMIT = "to the first commit"
PHASES_NOTE = (
    "From the bridge's log timestamps: process start (takeovers: the signal) to the first commit. "
    "Only the DEBUG log of the restart splits the coordinator lookup from the join; elsewhere it "
    'counts in "join and sync". A takeover\'s "join and sync" includes the old leader\'s '
    'stop; "to the first commit" includes the wait of --min-request-interval after the head '
    "lookup."
)


@dataclass
class Phase:
    name: str
    seconds: float


def read_log(path: Path) -> list[tuple[float, str]]:
    """The log's timestamped lines as (POSIX time, line)."""
    lines: list[tuple[float, str]] = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            found = _STAMP.match(line)
            if found is not None:
                stamp = calendar.timegm(time.strptime(found[1], "%Y-%m-%d %H:%M:%S"))
                lines.append((stamp + int(found[2]) / 1000, line))
    return lines


def first_at(lines: list[tuple[float, str]], texts: Sequence[str], after: float) -> float | None:
    """Time of the first line at or after `after` (to the log's millisecond) holding a text."""
    floor = math.floor(after * 1000) / 1000
    for stamp, line in lines:
        if stamp >= floor and any(text in line for text in texts):
            return stamp
    return None


def startup_phases(
    lines: list[tuple[float, str]], since: float, first_commit: float | None
) -> list[Phase]:
    """From `since` (process start, or a signal) to the first commit, phase by phase.

    A phase ends at its log line; phases whose line is missing (or comes after the first commit,
    as the head lookup does on a first start) merge into the next one.
    """
    marks: list[tuple[str, float]] = []
    for name, texts in PHASE_MARKS:
        at = first_at(lines, texts, since)
        if at is not None and (first_commit is None or at <= first_commit):
            marks.append((name, at))
    marks.sort(key=lambda mark: mark[1])
    if first_commit is not None:
        marks.append((FIRST_COMMIT, first_commit))
    phases: list[Phase] = []
    previous = since
    for name, at in marks:
        phases.append(Phase(name, max(0.0, at - previous)))
        previous = at
    return phases


@dataclass
class Startup:
    """One start-up (or takeover) of the bridge, phase by phase, from its log."""

    scenario: str
    counted_from: str
    phases: list[Phase]

    @property
    def total(self) -> float | None:
        return sum(p.seconds for p in self.phases) if self.phases else None


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


async def checkpoint_history(
    bootstrap: str, prefix: str, isolation: str = "read_uncommitted"
) -> list[Checkpoint]:
    """Every checkpoint the bridge wrote for `prefix`, oldest first (each carries its time)."""
    client = consumer(KafkaSettings(bootstrap_servers=bootstrap), isolation_level=isolation)
    await client.start()
    try:
        (tp,) = await partitions_of(client, [checkpoint_topic(prefix)])
        begin = (await client.beginning_offsets([tp]))[tp]
        records = await read_ranges(client, {tp: begin})
    finally:
        await client.stop()
    key = checkpoint_key(prefix)
    return [Checkpoint.decode(r.value) for r in records if r.key == key and r.value is not None]


async def count_committed(bootstrap: str, prefix: str) -> tuple[int, int]:
    """Committed events in the topics of `prefix` and their distinct serials (read_committed).

    On a transactional broker the offsets a checkpoint records also count the commit markers,
    so the events are counted by reading them back.
    """
    client = consumer(KafkaSettings(bootstrap_servers=bootstrap), isolation_level="read_committed")
    await client.start()
    try:
        partitions = await partitions_of(client, event_topics(prefix))
        client.assign(partitions)
        await client.seek_to_beginning()
        ends = await client.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        records = 0
        serials: set[int | None] = set()
        deadline = time.monotonic() + 600
        while pending:
            if time.monotonic() > deadline:
                raise BenchmarkError(f"reading the events of {prefix} back took over 600 s")
            batch = await client.getmany(*pending, timeout_ms=200)
            for messages in batch.values():
                records += len(messages)
                serials.update(serial_of(m.headers) for m in messages)
            for tp in list(pending):
                if await client.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await client.stop()
    serials.discard(None)
    return records, len(serials)


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
    state = _get_json(sim_base(url) + "/_sim/state")
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


# --- freshness --------------------------------------------------------------------------------


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


def metric(port: int, name: str) -> float | None:
    """The value of metric `name` (its only series) on the replica's /metrics, None if absent."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for_log(
    popen: subprocess.Popen[bytes],
    log_path: Path,
    texts: Sequence[str],
    after: float,
    within: float,
) -> float:
    """The log time of the first line after `after` holding one of `texts`, once it appears."""
    deadline = time.monotonic() + within
    while True:
        found = first_at(read_log(log_path), texts, after)
        if found is not None:
            return found
        if popen.poll() is not None:
            raise BenchmarkError(
                f"{log_path.name}: the bridge exited ({popen.returncode}) before {texts[0]!r}"
            )
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{log_path.name}: no {texts[0]!r} within {within:g} s")
        time.sleep(0.01)


def wait_for_metric(
    popen: subprocess.Popen[bytes],
    port: int,
    name: str,
    done: Callable[[float], bool],
    within: float,
) -> float:
    """Poll the replica's /metrics every 20 ms until `done(value)`; returns that value."""
    deadline = time.monotonic() + within
    while True:
        value = metric(port, name)
        if value is not None and done(value):
            return value
        if popen.poll() is not None:
            raise BenchmarkError(f"a replica exited ({popen.returncode}) while waiting for {name}")
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{name} on port {port} stayed at {value} for {within:g} s")
        time.sleep(0.02)


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


class Feeder:
    """Appends one row every 50 ms to a simulator (`POST /_sim/append`), from a thread.

    The simulator's own live traffic comes in Poisson bursts, with gaps of seconds between them:
    a standby's first commit would wait for the next burst. A steady feed keeps rows waiting.
    """

    def __init__(self, url: str, rate: float = 20.0) -> None:
        self.endpoint = sim_base(url) + "/_sim/append"
        self.interval = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self.appended = 0

    def __enter__(self) -> Feeder:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        body = json.dumps({"rows": 1}).encode()
        while not self._stop.wait(self.interval):
            request = urllib.request.Request(  # noqa: S310 - loopback
                self.endpoint, data=body, headers={"Content-Type": "application/json"}
            )
            with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=5):  # noqa: S310
                self.appended += 1


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


async def warm_up(bootstrap: str) -> None:
    """Have a fresh cluster create its internal topics before anything is measured.

    A long-lived cluster has `__consumer_offsets` and `__transaction_state`; a new one creates
    them on the first group join and the first transactional producer, seconds that would be
    charged to the first bridge's start-up.
    """
    topic = "bench-warm-up"
    # aiokafka logs the coordinator-not-available answers it retries while the topics are made.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await client.start()
        try:
            await client.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await client.close()
        member = consumer(KafkaSettings(bootstrap_servers=bootstrap), topic, group_id=topic)
        await member.start()  # returns once assigned: the group coordinator's topic exists
        await member.stop()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=topic)
        await producer.start()  # InitProducerId: the transaction coordinator's topic exists
        try:
            async with producer.transaction():
                await producer.send_and_wait(topic, b"warm-up")
        finally:
            await producer.stop()
    finally:
        quiet.setLevel(level)


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
            f"(target {takeover.target_seconds:g} s: {_met(takeover.met)}), first commit "
            f"{_seconds(takeover.to_first_commit)}"
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


# --- report -----------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    target: str
    ratio_to_baseline: float | None
    met: bool | None


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb: float | None = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 1024 / 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1) if memory_gb is not None else None,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "aiokafka": aiokafka.__version__,
        "orjson": orjson.__version__,
        "aiohttp": aiohttp.__version__,
        "bridge": bridge.__version__,
    }


def figures(backfill: Backfill, naive: Naive, fresh: Freshness, kafka: KafkaRun) -> list[Figure]:
    base = naive.rows_per_second
    speedup = backfill.rows_per_second / base
    fresh_target = POLL_INTERVAL + FRESHNESS_SLACK
    return [
        Figure(
            "backfill, process start to exit",
            backfill.rows_per_second,
            "rows/s",
            f">= {TARGET_ROWS_PER_SECOND:,}",
            speedup,
            backfill.rows_per_second >= TARGET_ROWS_PER_SECOND and backfill.verified,
        ),
        Figure(
            "backfill, first to last commit",
            backfill.rows_per_second_after_first_commit,
            "rows/s",
            "",
            _ratio(backfill.rows_per_second_after_first_commit, base),
            None,
        ),
        Figure("backfill, start-up to first commit", backfill.startup_seconds, "s", "", None, None),
        Figure("naive baseline", base, "rows/s", "", 1.0, None),
        Figure(
            "speed-up over the naive baseline",
            speedup,
            "x",
            f">= {TARGET_SPEEDUP:g}x",
            None,
            speedup >= TARGET_SPEEDUP,
        ),
        Figure(
            "peak RSS during the backfill",
            backfill.peak_rss_mb,
            "MB",
            f"<= {TARGET_PEAK_MB:g}",
            None,
            backfill.peak_rss_mb <= TARGET_PEAK_MB,
        ),
        Figure(
            "bridge CPU per 1,000 rows", backfill.bridge_cpu_ms_per_1000_rows, "ms", "", None, None
        ),
        Figure("freshness p50", fresh.p50, "s", "", None, None),
        Figure(
            "freshness p99",
            fresh.p99,
            "s",
            f"<= {fresh_target:g}",
            None,
            fresh.p99 is not None and fresh.missing == 0 and fresh.p99 <= fresh_target,
        ),
        *kafka_figures(kafka),
    ]


KAFKA = "real Kafka: "


def kafka_figures(kafka: KafkaRun) -> list[Figure]:
    """The real-Kafka rows; n/a (and no verdict) when that part did not run."""
    kb = kafka.backfill
    rows: list[Figure] = [
        Figure(
            KAFKA + "backfill, process start to exit",
            kb.rows_per_second if kb else None,
            "rows/s",
            f">= {TARGET_ROWS_PER_SECOND:,}",
            None,
            (kb.rows_per_second >= TARGET_ROWS_PER_SECOND and kb.verified) if kb else None,
        ),
        Figure(
            KAFKA + "backfill, first to last commit",
            kb.rows_per_second_after_first_commit if kb else None,
            "rows/s",
            "",
            None,
            None,
        ),
        Figure(
            KAFKA + "backfill, start-up to first commit",
            kb.startup_seconds if kb else None,
            "s",
            "",
            None,
            None,
        ),
        Figure(
            KAFKA + "peak RSS during the backfill",
            kb.peak_rss_mb if kb else None,
            "MB",
            f"<= {TARGET_PEAK_MB:g}",
            None,
            kb.peak_rss_mb <= TARGET_PEAK_MB if kb else None,
        ),
        Figure(
            KAFKA + "bridge CPU per 1,000 rows",
            kb.bridge_cpu_ms_per_1000_rows if kb else None,
            "ms",
            "",
            None,
            None,
        ),
    ]
    targets = {
        "SIGTERM": TARGET_GRACEFUL_TAKEOVER,
        "SIGKILL": LEADER_SESSION_TIMEOUT + KILL_TAKEOVER_SLACK,
    }
    for name, target in targets.items():
        takeover = kafka.takeovers.get(name)
        rows += [
            Figure(
                f"{KAFKA}takeover after {name}, to the leader line",
                takeover.to_leader_line if takeover else None,
                "s",
                f"<= {target:g}",
                None,
                takeover.met if takeover else None,
            ),
            Figure(
                f"{KAFKA}takeover after {name}, to the first commit",
                takeover.to_first_commit if takeover else None,
                "s",
                "",
                None,
                None,
            ),
        ]
    return rows


def _ratio(value: float | None, base: float) -> float | None:
    return None if value is None or base <= 0 else value / base


def _value(figure: Figure) -> str:
    if figure.value is None:
        return "n/a"
    if figure.unit == "rows/s":
        return f"{figure.value:,.0f} rows/s"
    if figure.unit == "x":
        return f"{figure.value:.1f}x"
    if figure.unit == "MB":
        return f"{figure.value:.1f} MB"
    if figure.unit == "ms":
        return f"{figure.value:.1f} ms"
    return f"{figure.value:.3f} {figure.unit}"


def _met(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "NO")


def _cells(figure: Figure) -> list[str]:
    ratio = "" if figure.ratio_to_baseline is None else f"{figure.ratio_to_baseline:.1f}x"
    met = _met(figure.met)
    target = f"{figure.target} {figure.unit}".strip() if figure.target else ""
    if figure.unit == "x":
        target = figure.target
    return [figure.name, _value(figure), target, ratio, met]


HEADER = ["figure", "value", "target", "vs baseline", "met"]


def _text_grid(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _markdown_grid(cells: list[list[str]]) -> str:
    header, *body = cells
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def text_table(rows: list[Figure]) -> str:
    return _text_grid([HEADER, *(_cells(f) for f in rows)])


def markdown_table(rows: list[Figure]) -> str:
    return _markdown_grid([HEADER, *(_cells(f) for f in rows)])


def phase_cells(startups: Sequence[Startup]) -> list[list[str]]:
    """Phases down, start-ups across; a blank cell is a phase that start-up did not go through."""
    names = [name for name, _ in PHASE_MARKS] + [FIRST_COMMIT]
    cells = [["start-up phase", *(s.scenario for s in startups)]]
    for name in names:
        row = [name]
        for startup in startups:
            found = next((p.seconds for p in startup.phases if p.name == name), None)
            row.append("" if found is None else f"{found:.3f} s")
        if any(row[1:]):
            cells.append(row)
    cells.append(["total", *(_seconds(s.total) for s in startups)])
    return cells


def describe_machine(info: dict[str, Any], date: str) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB RAM; "
        f"Python {info['python']}, {info['os']}; aiokafka {info['aiokafka']}; {date}"
    )


def _cpu_line(backfill: Backfill, broker: str) -> str:
    cpu = [
        f"bridge {backfill.bridge_cpu_seconds:.1f} s "
        f"({backfill.bridge_cpu_ms_per_1000_rows:.1f} ms per 1,000 rows)"
    ]
    if backfill.broker_cpu_seconds is not None:
        cpu.append(f"{broker} {backfill.broker_cpu_seconds:.1f} s")
    if backfill.simulator_cpu_seconds is not None:
        cpu.append(f"simulator {backfill.simulator_cpu_seconds:.1f} s")
    return f"{', '.join(cpu)} (wall {backfill.seconds:.1f} s)"


def _backfill_line(backfill: Backfill) -> str:
    if backfill.distinct_serials is None:
        events = f"{backfill.delivered:,} events in the topics"
    else:
        events = (
            f"{backfill.delivered:,} events read back with read_committed, "
            f"{backfill.distinct_serials:,} distinct serials"
        )
    return (
        f"{backfill.rows:,} rows in {backfill.seconds:.1f} s: start-up "
        f"{_seconds(backfill.startup_seconds)}, {backfill.commits} commits over "
        f"{_seconds(backfill.commit_seconds)}; {events}, checkpoint at serial "
        f"{backfill.checkpoint_serial} of {backfill.last_serial} "
        f"({'verified' if backfill.verified else 'NOT VERIFIED'}); delivery mode "
        f"{backfill.delivery_mode or 'unknown'}."
    )


def notes(backfill: Backfill, naive: Naive, fresh: Freshness, kafka: KafkaRun) -> list[str]:
    resolution = (
        f", mean poll gap {fresh.visibility_resolution * 1000:.0f} ms"
        if fresh.visibility_resolution is not None
        else ""
    )
    lines = [
        'Rows without "real Kafka:" ran on the embedded broker (tansu; the bridge picks '
        "high-water delivery there).",
        f"Backfill: {_backfill_line(backfill)}",
        f"CPU time during the backfill: {_cpu_line(backfill, 'broker')}; CPU is user + system "
        "of the bridge process from wait4, divided by the rows.",
        f"Peak RSS from the kernel (wait4 ru_maxrss, VmHWM); largest of "
        f"{backfill.memory_samples} VmRSS samples (every 50 ms): "
        f"{backfill.sampled_max_rss_mb:.1f} MB.",
        f"Naive baseline: {naive.rows:,} rows in {naive.seconds:.1f} s (ServerProxy paging, a "
        "dict per row, json.dumps, one awaited send_and_wait per record, aiokafka defaults).",
        f"Freshness: {fresh.events:,} events over {fresh.seconds:g} s at {fresh.rate:g} rows/s, "
        f"{fresh.missing} missing, max {_seconds(fresh.max)}; poll interval {POLL_INTERVAL:g} s, "
        f"min request interval {MIN_REQUEST_INTERVAL:g} s (defaults); visibility from "
        f"{fresh.visibility}{resolution}; consumer fetch wait {CONSUMER_FETCH_WAIT_MS} ms.",
    ]
    return lines + kafka_notes(kafka)


def kafka_notes(kafka: KafkaRun) -> list[str]:
    kb = kafka.backfill
    if not kafka.available or kb is None:
        return [f"Apache Kafka: NOT MEASURED ({kafka.reason}); its rows are n/a."]
    lines = [
        f"Apache Kafka {kafka.version}: one KRaft node (broker and controller, a JVM with a "
        "512 MB heap) on the same machine, started by tests/realkafka.py in "
        f"{_seconds(kafka.start_seconds)}; its internal topics (__consumer_offsets, "
        f"__transaction_state) were created before any measurement, in "
        f"{_seconds(kafka.warm_up_seconds)}, as a long-lived cluster has them; the bridge "
        f"auto-detected {kb.delivery_mode} delivery.",
        f"Real-Kafka backfill (same journal): {_backfill_line(kb)}",
        f"Real-Kafka CPU time: {_cpu_line(kb, 'Kafka JVM')}.",
    ]
    for name, takeover in kafka.takeovers.items():
        old = (
            f"the old leader exited {_seconds(takeover.old_leader_exit_seconds)} after the "
            f"signal (status {takeover.old_leader_returncode})"
        )
        if takeover.old_leader_stopped_seconds is not None:
            old = (
                f"the old leader logged that it stopped producing after "
                f"{takeover.old_leader_stopped_seconds:.3f} s and {old}"
            )
        lines.append(
            f"Takeover after {name}: two replicas (--leader-session-timeout "
            f"{takeover.session_timeout:g}, heartbeat every "
            f"{max(0.3, takeover.session_timeout / 10):g} s) tail a journal the harness grows by "
            "one row every 50 ms, with the default intervals; from the signal, the standby's "
            "leader line after "
            f"{takeover.to_leader_line:.3f} s (target {takeover.target_seconds:g} s: "
            f'{_met(takeover.met)}), its "resuming after serial" after '
            f"{takeover.to_resumed:.3f} s, its first commit after "
            f"{_seconds(takeover.to_first_commit)}; {old}; the standby's join made the leader "
            f"end and restart its term {takeover.leader_terms_ended_by_join} time(s)."
        )
    lines.append(
        "Start-up phases come from the bridge's own log timestamps (UTC, to the millisecond) and "
        "the first checkpoint's written_at; takeover columns count from the signal."
    )
    return lines


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def write_results(
    output: Path,
    info: dict[str, Any],
    date: str,
    settings: dict[str, Any],
    rows: list[Figure],
    details: dict[str, Any],
    lines: list[str],
    startups: Sequence[Startup] = (),
) -> tuple[Path, Path]:
    output.mkdir(parents=True, exist_ok=True)
    payload = {
        "date": date,
        "machine": info,
        "settings": settings,
        "figures": [asdict(f) for f in rows],
        "details": details,
        "notes": lines,
    }
    markdown = "\n".join(
        [
            "# Benchmark: `python -m benchmarks.backfill`",
            "",
            f"Machine: {describe_machine(info, date)}.",
            "",
            markdown_table(rows),
            "",
            *(f"- {line}" for line in lines),
            "",
            *(
                [
                    "## Start-up phases",
                    "",
                    PHASES_NOTE,
                    "",
                    _markdown_grid(phase_cells(startups)),
                    "",
                ]
                if startups
                else []
            ),
        ]
    )
    json_path, md_path = output / "latest.json", output / "latest.md"
    for path, text in ((json_path, json.dumps(payload, indent=2) + "\n"), (md_path, markdown)):
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(text)
        temporary.replace(path)
    return json_path, md_path


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backfill",
        description="Backfill throughput, peak memory, CPU per row, freshness and a naive "
        "baseline on the embedded broker, and backfill, takeover and start-up phases on Apache "
        "Kafka, with the simulator, the brokers and the bridge as real processes.",
    )
    parser.add_argument("--rows", type=int, default=None, help="backfill rows (1,000,000)")
    parser.add_argument(
        "--baseline-rows", type=int, default=None, help="rows the naive baseline sends (50,000)"
    )
    parser.add_argument(
        "--freshness-seconds", type=float, default=None, help="freshness window (60 s)"
    )
    parser.add_argument(
        "--rate", type=float, default=20.0, help="simulated rows/s during freshness"
    )
    parser.add_argument("--seed", type=int, default=2026, help="simulator seed")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small smoke-run sizes (20,000 rows, 2,000 baseline rows, 5 s freshness)",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=DEFAULT_OUTPUT, help="where latest.json/.md go"
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the processes' logs (path printed)"
    )
    parser.add_argument(
        "--bridge-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every bridge, repeatable (--bridge-arg=--batch-size=20000); "
        "the figures then describe that setting, not the defaults",
    )
    parser.add_argument(
        "--real-kafka",
        choices=("auto", "yes", "no"),
        default="auto",
        help="the Apache Kafka part: auto (run it when Java and the broker's jars are available, "
        "else say so and skip it), yes (fail without them), no (skip it)",
    )
    ns = parser.parse_args(argv)
    sizes = QUICK if ns.quick else {}
    ns.rows = ns.rows or int(sizes.get("rows", 1_000_000))
    ns.baseline_rows = ns.baseline_rows or int(sizes.get("baseline_rows", 50_000))
    ns.freshness_seconds = ns.freshness_seconds or float(sizes.get("freshness_seconds", 60.0))
    if ns.rows <= 0 or ns.baseline_rows <= 0 or ns.freshness_seconds <= 0 or ns.rate <= 0:
        parser.error("sizes, durations and the rate must be positive")
    if ns.baseline_rows > ns.rows:
        parser.error("--baseline-rows cannot exceed --rows (the baseline reads the same journal)")
    return ns


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so that the `finally` that stops the processes runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(ns: argparse.Namespace, procs: Processes) -> int:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    step(f"machine: {describe_machine(info, date)}")
    broker = procs.broker()
    step(f"broker at {broker.bootstrap_servers}; prefilling {ns.rows:,} rows")
    sim, url = start_simulator(
        procs,
        "backfill-simulator",
        "--prefill",
        str(ns.rows),
        "--rate",
        "0",
        "--seed",
        str(ns.seed),
    )
    step(f"backfill: {ns.rows:,} rows from {url}")
    load = [os.getloadavg()[0]]
    backfill = measure_backfill(
        procs, broker.bootstrap_servers, broker.process.pid, sim, url, ns.rows, ns.bridge_arg
    )
    step(
        f"backfill: {backfill.rows_per_second:,.0f} rows/s, "
        f"{backfill.bridge_cpu_ms_per_1000_rows:.1f} ms CPU per 1,000 rows, "
        f"peak {backfill.peak_rss_mb:.0f} MB"
    )
    step(f"naive baseline: {ns.baseline_rows:,} rows")
    naive = asyncio.run(measure_naive(url, broker.bootstrap_servers, ns.baseline_rows))
    step(f"naive baseline: {naive.rows_per_second:,.0f} rows/s")
    load.append(os.getloadavg()[0])
    kafka = run_real_kafka(ns, procs, sim, url)
    load.append(os.getloadavg()[0])
    procs.stop(sim)  # frees the prefilled journal's memory before the freshness run

    _, live_url = start_simulator(
        procs, "freshness-simulator", "--prefill", "1000", "--rate", str(ns.rate), "--seed", "7"
    )

    def start_live_bridge(prefix: str) -> None:
        procs.start(
            "freshness-bridge",
            bridge_args(
                "run",
                "--pypi-url",
                live_url,
                "--bootstrap-servers",
                broker.bootstrap_servers,
                "--http-host",
                "127.0.0.1",
                "--http-port",
                "0",
                "--topic-prefix",
                prefix,
                *ns.bridge_arg,
            ),
        )

    step(f"freshness: {ns.freshness_seconds:g} s at {ns.rate:g} rows/s")
    fresh = asyncio.run(
        measure_freshness(start_live_bridge, broker, live_url, ns.freshness_seconds, ns.rate)
    )
    step(f"freshness: p50 {_seconds(fresh.p50)}, p99 {_seconds(fresh.p99)}")
    load.append(os.getloadavg()[0])
    procs.stop_all()

    rows = figures(backfill, naive, fresh, kafka)
    lines = notes(backfill, naive, fresh, kafka)
    lines.append(
        f"Noise: {info['cores']} cores shared by the bridge, the broker, the simulator and "
        "anything else running; one-minute load average "
        f"{', '.join(f'{x:.1f}' for x in load)} (before the backfill, after the baseline, after "
        "the real-Kafka part, after freshness). Single runs on a busy machine are noisy."
    )
    if ns.bridge_arg:
        lines.append(f"Not the defaults: every bridge ran with {' '.join(ns.bridge_arg)}.")
    startups = [
        Startup("first start, embedded (topics created)", "process start", backfill.phases),
        *kafka.startups,
    ]
    print()
    print(text_table(rows))
    print()
    print(f"machine: {describe_machine(info, date)}")
    for line in lines:
        print(f"- {line}")
    print()
    print(_text_grid(phase_cells(startups)))
    print(PHASES_NOTE)
    settings = {
        "rows": ns.rows,
        "baseline_rows": ns.baseline_rows,
        "freshness_seconds": ns.freshness_seconds,
        "rate": ns.rate,
        "seed": ns.seed,
        "quick": ns.quick,
        "poll_interval": POLL_INTERVAL,
        "min_request_interval": MIN_REQUEST_INTERVAL,
        "bridge_args": ns.bridge_arg,
        "real_kafka": ns.real_kafka,
        "leader_session_timeout": LEADER_SESSION_TIMEOUT,
    }
    details = {
        "backfill": asdict(backfill),
        "naive": asdict(naive),
        "freshness": asdict(fresh),
        "kafka": asdict(kafka),
        "startups": [{**asdict(s), "total": s.total} for s in startups],
    }
    json_path, md_path = write_results(
        ns.output_dir, info, date, settings, rows, details, lines, startups
    )
    print(f"\nwrote {json_path} and {md_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run every measurement once and report; returns the exit status."""
    ns = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pypi-bridge-bench-"))
    procs = Processes(workdir)
    ok = False
    try:
        with _terminate_on_sigterm():
            status = run(ns, procs)
            ok = True
            return status
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if ok and not ns.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"process logs: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
