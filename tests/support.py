"""Helpers for tests that drive real processes: the simulator, the bridge, the broker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import xmlrpc.client
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from bridge.kafka import partitions_of, read_ranges
from bridge.parse import Row
from bridge.routing import event_topics, projects_topic

ROOT = Path(__file__).resolve().parent.parent


def bridge_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bridge", *args]


_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


def child_env() -> dict[str, str]:
    """This environment for a child process: the project importable, no PYPI_BRIDGE_* flags,
    and no proxy variables (the simulator is on loopback; tests/test_proxy.py sets its own)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYPI_BRIDGE_") and k.lower() not in _PROXY_VARIABLES
    }
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Process:
    """A subprocess with its output captured in a log file."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(signal.SIGKILL)
            raise AssertionError(
                f"process did not finish in {timeout} s; output:\n{self.output()[-3000:]}"
            ) from None


def start(args: list[str], log_path: Path) -> Process:
    out: IO[bytes] = log_path.open("ab")
    try:
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env()
        )
    finally:
        out.close()
    return Process(popen, log_path)


@dataclass
class Simulator:
    process: Process
    url: str

    @property
    def base(self) -> str:
        return self.url.rsplit("/pypi", 1)[0]

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/_sim/state", timeout=10) as response:  # noqa: S310
            result: dict[str, Any] = json.load(response)
        return result

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - loopback only
            self.base + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            result: dict[str, Any] = json.load(response)
        return result

    def rows(self, after: int = 0) -> list[Row]:
        """The journal as PyPI would page it out: the test's oracle."""
        proxy = xmlrpc.client.ServerProxy(self.url, allow_none=True)
        found: list[Row] = []
        cursor = after
        while True:
            answer: Any = proxy.changelog_since_serial(cursor)
            page: list[Row] = [tuple(r) for r in answer]
            if not page:
                return found
            found.extend(page)
            cursor = page[-1][4]

    def stop(self) -> None:
        self.process.stop()


def start_simulator(log_dir: Path, *args: str) -> Simulator:
    log_path = log_dir / f"simulator-{time.monotonic_ns()}.log"
    # Without PyPI's 3,600-calls-an-hour limit unless the test asks for one (`--rate-limit N`).
    process = start(bridge_command("simulate", "--port", "0", "--rate-limit", "0", *args), log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in process.output().splitlines():
            if line.startswith("http://"):
                return Simulator(process, line.strip())
        if process.popen.poll() is not None:
            break
        time.sleep(0.1)
    process.stop()
    raise AssertionError(f"simulator did not start:\n{process.output()[-3000:]}")


@contextlib.contextmanager
def fixed_journal(
    log_dir: Path,
    rows: int,
    *,
    seed: int,
    page_size: int | None = None,
    latency: float | None = None,
) -> Iterator[Simulator]:
    """A simulator holding `rows` rows and no live traffic, stopped on the way out.

    Small pages and a little latency stretch a backfill long enough to kill or pause it in the
    middle; the seed makes the journal the same at every run.
    """
    args = ["--prefill", str(rows), "--rate", "0", "--seed", str(seed)]
    if page_size is not None:
        args += ["--page-size", str(page_size)]
    if latency is not None:
        args += ["--latency", str(latency)]
    sim = start_simulator(log_dir, *args)
    try:
        yield sim
    finally:
        sim.stop()


@contextlib.asynccontextmanager
async def loopback_server(
    path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> AsyncIterator[str]:
    """A real HTTP server on loopback answering POSTs to `path` with `handler`; yields its URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}{path}"
    finally:
        await runner.cleanup()


def _pointed(command: str, sim: Simulator, bootstrap: str, prefix: str) -> list[str]:
    """`pypi-bridge COMMAND` aimed at the simulator, the broker and one topic prefix, unpaced."""
    return bridge_command(
        command,
        "--pypi-url",
        sim.url,
        "--bootstrap-servers",
        bootstrap,
        "--topic-prefix",
        prefix,
        "--min-request-interval",
        "0",
    )


def run_args(sim: Simulator, bootstrap: str, prefix: str, *extra: str) -> list[str]:
    return [
        *_pointed("run", sim, bootstrap, prefix),
        "--http-port",
        "0",
        "--poll-interval",
        "0.2",
        *extra,
    ]


async def read_topics(
    bootstrap: str, topics: list[str], isolation: str = "read_uncommitted", **options: Any
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topics` up to their current end, with a plain aiokafka consumer.

    `options` go to the consumer (`check_crcs=False` for librdkafka's mock cluster).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation,
        **options,
    )
    await consumer.start()
    try:
        partitions = await partitions_of(consumer, topics)
        begins = await consumer.beginning_offsets(partitions)
        return await read_ranges(consumer, begins)
    finally:
        await consumer.stop()


async def read_events(bootstrap: str, prefix: str) -> list[ConsumerRecord[bytes, bytes]]:
    return await read_topics(bootstrap, event_topics(prefix))


async def index_entries(
    bootstrap: str, prefix: str, isolation: str = "read_uncommitted"
) -> dict[str, dict[str, Any]]:
    """The project index topic read to its end: the latest value per key, tombstones applied."""
    records = await read_topics(bootstrap, [projects_topic(prefix)], isolation)
    state: dict[str, dict[str, Any] | None] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        key = (record.key or b"").decode()
        value = None if record.value is None else orjson.loads(record.value)
        if value is not None:
            assert value["project_normalized"] == key
            assert value["status"] in ("active", "quarantined")
        state[key] = value
    return {key: value for key, value in state.items() if value is not None}


async def index_of(
    bootstrap: str, prefix: str, isolation: str = "read_uncommitted"
) -> dict[str, tuple[str, int]]:
    """The project index as `list_packages_with_serial` has it: name and last serial per key."""
    entries = await index_entries(bootstrap, prefix, isolation)
    return {key: (value["project"], value["last_serial"]) for key, value in entries.items()}


def audit_args(sim: Simulator, bootstrap: str, prefix: str, *extra: str) -> list[str]:
    return [*_pointed("audit", sim, bootstrap, prefix), *extra]


def run_audit(sim: Simulator, bootstrap: str, prefix: str, *extra: str) -> tuple[int, str]:
    """Run `pypi-bridge audit`; returns the exit status and the report."""
    completed = subprocess.run(
        audit_args(sim, bootstrap, prefix, *extra),
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
        check=False,
    )
    return completed.returncode, completed.stdout + completed.stderr


def metrics_text(port: int) -> str:
    """A replica's /metrics, as Prometheus would scrape it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text: str = r.read().decode()
    return text


def metric(port: int, name: str) -> float:
    """The value of the unlabelled series `name` on a replica's /metrics."""
    for line in metrics_text(port).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exported")
