"""`python -m benchmarks.backfill`: its flags, one run of every scenario, then the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from benchmarks.backfill.harness import (
    LEADER_SESSION_TIMEOUT,
    MIN_REQUEST_INTERVAL,
    PHASES_NOTE,
    POLL_INTERVAL,
    BenchmarkError,
    Processes,
    Startup,
    bridge_args,
    seconds_text,
    start_simulator,
    step,
)
from benchmarks.backfill.report import (
    describe_machine,
    figures,
    machine,
    notes,
    phase_cells,
    text_grid,
    text_table,
    write_results,
)
from benchmarks.backfill.scenarios import (
    measure_backfill,
    measure_freshness,
    measure_naive,
    run_real_kafka,
)

# --- flags ----------------------------------------------------------------------------------------
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "results"
QUICK = {"rows": 20_000, "baseline_rows": 2_000, "freshness_seconds": 5.0}


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


# --- the run ----------------------------------------------------------------------------------


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
    step(f"freshness: p50 {seconds_text(fresh.p50)}, p99 {seconds_text(fresh.p99)}")
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
    print(text_grid(phase_cells(startups)))
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
