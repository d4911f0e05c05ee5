"""End-to-end benchmark of the bridge, with every component a real process (issue 7).

    python -m benchmarks.backfill [--rows 1000000] [--baseline-rows 50000]
                                  [--freshness-seconds 60] [--quick] [--output-dir DIR]

One run measures, against the embedded broker and the journal simulator:

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
  aiokafka consumer receives its event, with the bridge's default poll and request intervals.

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
import contextlib
import ctypes
import datetime
import itertools
import json
import math
import os
import platform
import resource
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
from bridge.broker import EmbeddedBroker, start_broker
from bridge.checkpoint import Checkpoint, checkpoint_key
from bridge.config import RUN_FLAGS, SOURCE_FLAGS, KafkaSettings
from bridge.errors import BrokerError
from bridge.kafka import consumer, partitions_of, read_ranges
from bridge.routing import checkpoint_topic, event_topics, serial_of

# --- the targets --------------------------------------------------------------------

TARGET_ROWS_PER_SECOND = 50_000
TARGET_SPEEDUP = 10.0
TARGET_PEAK_MB = 150.0
#: Freshness p99 may exceed the poll interval by this much.
FRESHNESS_SLACK = 0.25

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


async def checkpoint_history(bootstrap: str, prefix: str) -> list[Checkpoint]:
    """Every checkpoint the bridge wrote for `prefix`, oldest first (each carries its time)."""
    client = consumer(KafkaSettings(bootstrap_servers=bootstrap))
    await client.start()
    try:
        (tp,) = await partitions_of(client, [checkpoint_topic(prefix)])
        begin = (await client.beginning_offsets([tp]))[tp]
        records = await read_ranges(client, {tp: begin})
    finally:
        await client.stop()
    key = checkpoint_key(prefix)
    return [Checkpoint.decode(r.value) for r in records if r.key == key and r.value is not None]


def measure_backfill(
    procs: Processes,
    broker: EmbeddedBroker,
    sim: subprocess.Popen[bytes],
    url: str,
    rows: int,
    extra: Sequence[str] = (),
) -> Backfill:
    """Run the bridge over the whole prefilled journal and measure it."""
    state = _get_json(sim_base(url) + "/_sim/state")
    last = int(state["last_serial"])
    if int(state["rows"]) != rows:
        raise BenchmarkError(f"the simulator holds {state['rows']} rows, expected {rows}")
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    broker_cpu = cpu_seconds(broker.process.pid)
    sim_cpu = cpu_seconds(sim.pid)
    started_wall, started = time.time(), time.monotonic()
    popen, log_path = procs.start(
        "backfill-bridge",
        bridge_args(
            "run",
            "--pypi-url",
            url,
            "--bootstrap-servers",
            broker.bootstrap_servers,
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
    broker_after, sim_after = cpu_seconds(broker.process.pid), cpu_seconds(sim.pid)
    history = asyncio.run(checkpoint_history(broker.bootstrap_servers, prefix))
    final = history[-1] if history else None
    # The topics are new, so the offsets the last checkpoint records count every event sent.
    delivered = sum(sum(offsets) for offsets in final.offsets.values()) if final else 0
    startup = commit_seconds = after_first = None
    if history:
        startup = history[0].written_at - started_wall
        commit_seconds = history[-1].written_at - history[0].written_at
        if commit_seconds > 0:
            after_first = delivered / commit_seconds
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
        bridge_cpu_seconds=usage.ru_utime + usage.ru_stime,
        broker_cpu_seconds=_delta(broker_cpu, broker_after),
        simulator_cpu_seconds=_delta(sim_cpu, sim_after),
        delivered=delivered,
        checkpoint_serial=final.serial if final else None,
        verified=delivered == rows and final is not None and final.serial == last,
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


def figures(backfill: Backfill, naive: Naive, fresh: Freshness) -> list[Figure]:
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
        Figure("freshness p50", fresh.p50, "s", "", None, None),
        Figure(
            "freshness p99",
            fresh.p99,
            "s",
            f"<= {fresh_target:g}",
            None,
            fresh.p99 is not None and fresh.missing == 0 and fresh.p99 <= fresh_target,
        ),
    ]


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
    return f"{figure.value:.3f} {figure.unit}"


def _cells(figure: Figure) -> list[str]:
    ratio = "" if figure.ratio_to_baseline is None else f"{figure.ratio_to_baseline:.1f}x"
    met = "" if figure.met is None else ("yes" if figure.met else "NO")
    target = f"{figure.target} {figure.unit}".strip() if figure.target else ""
    if figure.unit == "x":
        target = figure.target
    return [figure.name, _value(figure), target, ratio, met]


HEADER = ["figure", "value", "target", "vs baseline", "met"]


def text_table(rows: list[Figure]) -> str:
    cells = [HEADER, *(_cells(f) for f in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: list[Figure]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(f)) + " |" for f in rows]
    return "\n".join(lines)


def describe_machine(info: dict[str, Any], date: str) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB RAM; "
        f"Python {info['python']}, {info['os']}; aiokafka {info['aiokafka']}; {date}"
    )


def notes(backfill: Backfill, naive: Naive, fresh: Freshness) -> list[str]:
    cpu = [f"bridge {backfill.bridge_cpu_seconds:.1f} s"]
    if backfill.broker_cpu_seconds is not None:
        cpu.append(f"broker {backfill.broker_cpu_seconds:.1f} s")
    if backfill.simulator_cpu_seconds is not None:
        cpu.append(f"simulator {backfill.simulator_cpu_seconds:.1f} s")
    resolution = (
        f", mean poll gap {fresh.visibility_resolution * 1000:.0f} ms"
        if fresh.visibility_resolution is not None
        else ""
    )
    return [
        f"Backfill: {backfill.rows:,} rows in {backfill.seconds:.1f} s: start-up "
        f"{_seconds(backfill.startup_seconds)}, {backfill.commits} commits over "
        f"{_seconds(backfill.commit_seconds)}; "
        f"{backfill.delivered:,} events in the topics, checkpoint at serial "
        f"{backfill.checkpoint_serial} of {backfill.last_serial} "
        f"({'verified' if backfill.verified else 'NOT VERIFIED'}).",
        f"CPU time during the backfill: {', '.join(cpu)} (wall {backfill.seconds:.1f} s).",
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
        description="Backfill throughput, peak memory, freshness and a naive baseline, "
        "with the simulator, the broker and the bridge as real processes.",
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
        help="extra argument for both bridges, repeatable (--bridge-arg=--batch-size=20000); "
        "the figures then describe that setting, not the defaults",
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
    backfill = measure_backfill(procs, broker, sim, url, ns.rows, ns.bridge_arg)
    step(f"backfill: {backfill.rows_per_second:,.0f} rows/s, peak {backfill.peak_rss_mb:.0f} MB")
    step(f"naive baseline: {ns.baseline_rows:,} rows")
    naive = asyncio.run(measure_naive(url, broker.bootstrap_servers, ns.baseline_rows))
    step(f"naive baseline: {naive.rows_per_second:,.0f} rows/s")
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
    procs.stop_all()

    rows = figures(backfill, naive, fresh)
    lines = notes(backfill, naive, fresh)
    if ns.bridge_arg:
        lines.append(f"Not the defaults: both bridges ran with {' '.join(ns.bridge_arg)}.")
    print()
    print(text_table(rows))
    print()
    print(f"machine: {describe_machine(info, date)}")
    for line in lines:
        print(f"- {line}")
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
    }
    details = {"backfill": asdict(backfill), "naive": asdict(naive), "freshness": asdict(fresh)}
    json_path, md_path = write_results(ns.output_dir, info, date, settings, rows, details, lines)
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
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()
        else:
            print(f"process logs: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
