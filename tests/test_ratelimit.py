"""PyPI's rate-limit headers, followed by a real bridge against the simulator's real limiter.

The simulator counts every call per client over a moving window and answers the throttling
fault once the quota is used, exactly as PyPI does; its answers carry the draft-10 headers
(or the older triple). The quotas here are PyPI's rate, 3,600 an hour, scaled down to
seconds so that the window turns over within the test.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.broker import EmbeddedBroker, free_port
from tests.conftest import Figures
from tests.support import (
    Process,
    Simulator,
    bridge_command,
    metric,
    run_audit,
    start,
    start_simulator,
)

pytestmark = pytest.mark.slow
#: The steady poll's quota and window, and how long it runs (two and a half windows).
QUOTA = 10
WINDOW = 8
RUN_SECONDS = 20


def limited_simulator(tmp_path: Path, quota: int, window: int, *extra: str) -> Simulator:
    # support.py turns the limiter off by default; the last --rate-limit given wins.
    return start_simulator(
        tmp_path, "--rate-limit", str(quota), "--rate-limit-window", str(window), *extra
    )


def run_bridge(
    sim: Simulator, broker: EmbeddedBroker, prefix: str, log: Path, *extra: str
) -> tuple[Process, int]:
    port = free_port()
    process = start(
        bridge_command(
            "run",
            "--pypi-url",
            sim.url,
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--topic-prefix",
            prefix,
            "--http-port",
            str(port),
            "--start-serial",
            "0",
            *extra,
        ),
        log,
    )
    return process, port


@pytest.mark.parametrize("headers", ["draft-10", "legacy"])
def test_a_long_steady_poll_never_meets_the_throttling_fault(
    broker: EmbeddedBroker, tmp_path: Path, figures: Figures, headers: str
) -> None:
    """10 calls per 8 s (PyPI's 3,600 an hour, faster): a bridge told to poll 5 times a
    second would run out in 2 s; following the headers it polls for 20 s (two and a half
    windows) and is never throttled."""
    sim = limited_simulator(
        tmp_path, QUOTA, WINDOW, "--prefill", "500", "--rate", "1", "--rate-limit-headers", headers
    )
    try:
        process, port = run_bridge(
            sim,
            broker,
            f"steady-{headers}",
            tmp_path / "bridge.log",
            "--min-request-interval",
            "0.2",
            "--poll-interval",
            "0.2",
        )
        time.sleep(RUN_SECONDS)
        remaining = metric(port, "pypi_bridge_source_quota_remaining")
        assert process.stop(signal.SIGTERM) == 0, process.output()[-3000:]
        state = sim.state()
    finally:
        sim.stop()
    output = process.output()
    assert state["throttled"] == 0, output[-3000:]
    assert "throttling" not in output
    # It kept polling through more than a whole window, its whole quota and then some.
    assert state["calls"] >= QUOTA + 2, state
    assert remaining >= 0
    figures.add(
        f"steady poll, {QUOTA} calls per {WINDOW} s quota, {headers} headers",
        f"{state['calls']} calls in {RUN_SECONDS} s, 0 throttled",
    )


def limited_backfill(
    broker: EmbeddedBroker, tmp_path: Path, prefix: str, quota: int, window: int, rows: int
) -> tuple[float, dict[str, Any]]:
    """Backfill `rows` rows (500-row pages) against `quota` calls per `window` seconds; the
    seconds it took and the simulator's state once it exited 0 and audited clean."""
    sim = limited_simulator(
        tmp_path, quota, window, "--prefill", str(rows), "--rate", "0", "--page-size", "500"
    )
    try:
        last = sim.state()["last_serial"]  # the control API is not rate-limited
        started = time.monotonic()
        process, _ = run_bridge(
            sim,
            broker,
            prefix,
            tmp_path / "bridge.log",
            "--min-request-interval",
            "0",
            "--stop-at-serial",
            str(last),
        )
        code = process.wait(180)
        elapsed = time.monotonic() - started
        state = sim.state()
        audited, report = run_audit(sim, broker.bootstrap_servers, prefix, "--strict")
    finally:
        sim.stop()
    assert code == 0, process.output()[-3000:]
    assert audited == 0, report
    assert state["throttled"] == 0, process.output()[-3000:]
    return elapsed, state


def test_a_backfill_uses_the_quota_it_has(
    broker: EmbeddedBroker, tmp_path: Path, figures: Figures
) -> None:
    """61 pages against a quota of 200 a minute: no call waits on the quota."""
    elapsed, _ = limited_backfill(broker, tmp_path, "quota-to-spare", 200, 60, 30_000)
    # Spread evenly over the window, 62 calls would take 62 * 60 / 200 = 18.6 s at least.
    assert elapsed < 18, f"{elapsed:.1f} s: the backfill was slowed with quota to spare"
    figures.add("backfill with quota to spare (30,000 rows, 61 pages)", f"{elapsed:.1f} s")


def test_a_backfill_bigger_than_the_quota_is_spread_and_never_throttled(
    broker: EmbeddedBroker, tmp_path: Path, figures: Figures
) -> None:
    """20 pages against 15 calls per 10 s: the last tenth of each window is spread over
    what is left of it, and the moving window lets calls back in as old ones age out."""
    elapsed, state = limited_backfill(broker, tmp_path, "quota-spread", 15, 10, 10_000)
    figures.add(
        "backfill over the quota (20 pages, 15 calls per 10 s)",
        f"{elapsed:.1f} s, {state['calls']} calls, 0 throttled",
    )
