"""Memory of `pypi-bridge consume --ordered` over a backlog: it stays flat as the backlog grows.

    python -m benchmarks.ordered_memory [--rows 200000] [--small 20000]

Starts the embedded broker and the journal simulator, lets a real bridge publish each backlog
(three partitions per topic), then runs `consume --ordered --from-beginning --until-caught-up`
over all types with its output counted and thrown away, sampling the consumer's resident memory
as it goes. Prints, for the small and the large backlog: events, seconds, events per second,
peak RSS, and RSS at each quarter of the way. By hand only: figures, not a timed test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.broker import EmbeddedBroker, start_broker
from tests.support import bridge_command, child_env, run_args, start, start_simulator


@dataclass
class Figures:
    rows: int
    events: int = 0
    seconds: float = 0.0
    peak_mib: float = 0.0
    #: (events printed so far, RSS in MiB) samples.
    samples: list[tuple[int, float]] = field(default_factory=list)

    def at_quarters(self) -> list[float]:
        found = []
        for quarter in (0.25, 0.5, 0.75, 1.0):
            wanted = quarter * self.events
            found.append(next((rss for n, rss in self.samples if n >= wanted), self.peak_mib))
        return found


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def publish(broker: EmbeddedBroker, log_dir: Path, rows: int) -> str:
    """A backlog of `rows` journal entries on a fresh prefix; returns the prefix."""
    sim = start_simulator(log_dir, "--prefill", str(rows), "--rate", "0", "--seed", "2026")
    try:
        last = sim.state()["last_serial"]
        prefix = f"ordered-memory-{uuid.uuid4().hex[:8]}"
        args = run_args(
            sim, broker.bootstrap_servers, prefix, "--start-serial", "0", "--partitions", "3"
        )
        bridge = start([*args, "--stop-at-serial", str(last)], log_dir / f"bridge-{prefix}.log")
        if bridge.wait(900) != 0:
            raise SystemExit(f"the bridge failed:\n{bridge.output()[-3000:]}")
    finally:
        sim.stop()
    return prefix


def measure(broker: EmbeddedBroker, prefix: str, rows: int) -> Figures:
    figures = Figures(rows)
    command = bridge_command(
        "consume",
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--topic-prefix",
        prefix,
        "--ordered",
        "--from-beginning",
        "--until-caught-up",
    )
    started = time.monotonic()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=child_env()
    )
    assert process.stdout is not None
    stdout = process.stdout
    done = threading.Event()

    def count() -> None:
        for _ in stdout:
            figures.events += 1
        done.set()

    reader = threading.Thread(target=count, daemon=True)
    reader.start()
    while not done.wait(0.2):
        rss = _rss_mib(process.pid)
        if rss is not None:
            figures.samples.append((figures.events, rss))
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    figures.seconds = time.monotonic() - started
    figures.peak_mib = usage.ru_maxrss / 1024
    if process.returncode != 0:
        raise SystemExit(f"consume --ordered exited {process.returncode}")
    return figures


def report(figures: Figures) -> None:
    quarters = ", ".join(f"{rss:.0f}" for rss in figures.at_quarters())
    print(
        f"ordered consume of a {figures.rows:,}-row backlog: {figures.events:,} events in "
        f"{figures.seconds:.1f} s ({figures.events / max(figures.seconds, 1e-9):,.0f} events/s), "
        f"peak RSS {figures.peak_mib:.0f} MiB; RSS at 1/4, 1/2, 3/4, end: {quarters} MiB",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200_000, help="the large backlog")
    parser.add_argument("--small", type=int, default=20_000, help="the backlog to compare with")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ordered-memory-") as scratch:
        log_dir = Path(scratch)
        broker = start_broker(log_dir=str(log_dir))
        try:
            results = []
            for rows in (ns.small, ns.rows):
                prefix = publish(broker, log_dir, rows)
                results.append(measure(broker, prefix, rows))
                report(results[-1])
        finally:
            broker.stop()
    small, large = results
    print(
        f"peak RSS grew {large.peak_mib - small.peak_mib:+.0f} MiB for "
        f"{large.rows / max(small.rows, 1):.0f}x the backlog",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
