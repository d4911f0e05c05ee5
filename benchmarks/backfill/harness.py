"""The harness: the processes a run starts, the brokers it reads back, and what it measures
them with (resource use, log timestamps, metrics), plus the targets the figures are held to."""

from __future__ import annotations

import calendar
import contextlib
import ctypes
import json
import logging
import math
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import bridge
from bridge.broker import EmbeddedBroker, start_broker
from bridge.checkpoint import Checkpoint, checkpoint_key
from bridge.config import RUN_FLAGS, SOURCE_FLAGS, KafkaSettings
from bridge.kafka import consumer, partitions_of, read_ranges
from bridge.routing import checkpoint_topic, event_topics, serial_of
from tests.realkafka import KafkaCluster, newest_version, start_kafka

# --- the targets ----------------------------------------------------------------------

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


# --- settings every part shares ---------------------------------------------------------------

ROOT = Path(bridge.__file__).resolve().parent.parent
SAMPLE_SECONDS = 0.05
#: The consumer asks the broker to answer a fetch within this time even with nothing new; the
#: default (500 ms) would add up to half a second of consumer-side wait to every figure.
CONSUMER_FETCH_WAIT_MS = 100


def _default(flags: Sequence[Any], name: str) -> Any:
    return next(flag.default for flag in flags if flag.name == name)


POLL_INTERVAL = float(_default(RUN_FLAGS, "poll-interval"))
MIN_REQUEST_INTERVAL = float(_default(SOURCE_FLAGS, "min-request-interval"))


class BenchmarkError(Exception):
    """A measurement could not be taken (a process failed or did not finish in time)."""


def step(message: str) -> None:
    """Print one progress line, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def seconds_text(value: float | None) -> str:
    """Seconds to the millisecond, or n/a."""
    return "n/a" if value is None else f"{value:.3f} s"


def verdict(met: bool | None) -> str:
    """A target's verdict: yes, NO, or nothing when it has none."""
    return "" if met is None else ("yes" if met else "NO")


# --- processes --------------------------------------------------------------------------------


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
    """Start `pypi-bridge simulate` and return it with its XML-RPC URL once it serves.

    Without PyPI's rate limit (the simulator's default): the figures are the bridge's own.
    """
    popen, log_path = procs.start(
        name,
        bridge_args(
            "simulate", "--port", "0", "--log-level", "WARNING", "--rate-limit", "0", *args
        ),
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


def get_json(url: str, timeout: float = 10.0) -> Any:
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


# --- brokers: warming up, reading back --------------------------------------------------------


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


# --- replicas: their metrics, their log, a steady feed ----------------------------------------


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
