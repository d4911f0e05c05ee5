"""Exactly once and one leader, proven with faults on real processes.

The bridge, the simulator and the broker run as processes; the bridge is killed with SIGKILL at
random moments, its leader is killed or stopped while a standby waits, the broker is cut off
behind a proxy, and the source throttles and fails. After each, `pypi-bridge audit` must find
every journal entry exactly once.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.broker import EmbeddedBroker, free_port, start_broker
from tests.conftest import Figures
from tests.support import (
    Process,
    Simulator,
    fixed_journal,
    run_args,
    run_audit,
    start,
    start_simulator,
)
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.slow
LEADING = "is now the leader"


async def wait_for_line(process: Process, text: str, within: float, after: int = 0) -> float:
    """Wait until `text` appears in the process's log after offset `after`; returns the time."""
    deadline = time.monotonic() + within
    while text not in process.output()[after:]:
        if process.popen.poll() is not None:
            raise AssertionError(f"process exited early:\n{process.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} within {within} s:\n{process.output()[-3000:]}")
        await asyncio.sleep(0.05)
    return time.monotonic()


def readiness(port: int) -> tuple[int, dict[str, object]]:
    """Status and body of the replica's /readyz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


async def wait_for_readiness(port: int, status: int, within: float) -> dict[str, object]:
    deadline = time.monotonic() + within
    while True:
        try:
            code, body = await asyncio.to_thread(readiness, port)
        except OSError:
            code, body = 0, {}
        if code == status:
            return body
        assert time.monotonic() < deadline, f"/readyz stayed {code} {body}, wanted {status}"
        await asyncio.sleep(0.2)


async def finish(process: Process, within: float) -> int:
    return await asyncio.to_thread(process.wait, within)


@pytest.fixture(scope="module")
def big_journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    # Small pages and a little latency stretch the backfill over the many kills.
    with fixed_journal(
        tmp_path_factory.mktemp("big"), 200_000, seed=11, page_size=2000, latency=0.05
    ) as sim:
        yield sim


async def test_kill_9_at_random_moments_loses_and_repeats_nothing(
    broker: EmbeddedBroker, big_journal: Simulator, tmp_path: Path, figures: Figures
) -> None:
    last = big_journal.state()["last_serial"]
    log = tmp_path / "bridge.log"
    args = run_args(
        big_journal,
        broker.bootstrap_servers,
        "kill9",
        "--start-serial",
        "0",
        "--batch-size",
        "1500",
        # A 2 s session: each restart waits that long for the killed member to leave the group.
        "--leader-session-timeout",
        "2",
    )
    rng = random.Random(2026)
    kills = 0
    for _ in range(12):
        bridge = start(args, log)
        offset = len(bridge.output())
        await wait_for_line(bridge, LEADING, 60, offset)
        # Anywhere from recovery through the middle of a batch.
        await asyncio.sleep(rng.uniform(0.0, 1.2))
        bridge.stop(signal.SIGKILL)
        kills += 1
    final = start([*args, "--stop-at-serial", str(last)], log)
    assert await finish(final, 300) == 0, final.output()[-3000:]
    code, report = run_audit(big_journal, broker.bootstrap_servers, "kill9", "--strict")
    assert code == 0, report
    assert "200000 journal entries" in report
    assert "Traceback" not in final.output()
    figures.add("kill -9 restarts survived (200,000-row backfill)", kills)
    figures.add("rows audited after the kills", 200_000)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_standby_takes_over_when_the_leader_goes(
    broker: EmbeddedBroker,
    big_journal: Simulator,
    tmp_path: Path,
    figures: Figures,
    how: signal.Signals,
) -> None:
    last = big_journal.state()["last_serial"]
    prefix = f"failover-{how.name.lower()}"
    args = run_args(
        big_journal,
        broker.bootstrap_servers,
        prefix,
        "--start-serial",
        "0",
        "--stop-at-serial",
        str(last),
        "--batch-size",
        "1500",
    )
    ports = {"a": free_port(), "b": free_port()}
    a = start([*args, "--replica-id", "a", "--http-port", str(ports["a"])], tmp_path / "a.log")
    b = start([*args, "--replica-id", "b", "--http-port", str(ports["b"])], tmp_path / "b.log")
    try:
        leader_seen = await asyncio.wait_for(_first_leader(a, b), 60)
        leader, standby = leader_seen
        standby_port = ports["b"] if standby is b else ports["a"]
        # A standby is ready: Kubernetes must keep it, it is the failover.
        assert (await wait_for_readiness(standby_port, 200, 10))["role"] == "standby"
        await wait_for_line(leader, "backfill: serial", 30)
        await asyncio.sleep(1.0)
        assert standby.popen.poll() is None
        assert LEADING not in standby.output(), "two leaders at once"
        offset = len(standby.output())
        stopped_at = time.monotonic()
        leader.stop(how)
        took_over = await wait_for_line(standby, LEADING, 60, offset)
        takeover = took_over - stopped_at
        assert await finish(standby, 300) == 0, standby.output()[-3000:]
        if how == signal.SIGTERM:
            assert leader.popen.returncode == 0, leader.output()[-3000:]
    finally:
        a.stop(signal.SIGKILL)
        b.stop(signal.SIGKILL)
    code, report = run_audit(big_journal, broker.bootstrap_servers, prefix, "--strict")
    assert code == 0, report
    figures.add(
        f"takeover after the leader's {how.name} (default 6 s session)", f"{takeover:.1f} s"
    )
    if how == signal.SIGTERM:
        assert takeover < 6.0, "a graceful stop hands over without waiting for the session timeout"


async def _first_leader(a: Process, b: Process) -> tuple[Process, Process]:
    while True:
        if LEADING in a.output():
            return a, b
        if LEADING in b.output():
            return b, a
        await asyncio.sleep(0.05)


async def test_broker_outage_is_waited_out_and_nothing_is_lost(
    big_journal: Simulator, tmp_path: Path, figures: Figures
) -> None:
    proxy_port = free_port()
    hidden = start_broker(log_dir=str(tmp_path), advertised_port=proxy_port)
    proxy = TcpProxy("127.0.0.1", hidden.port)
    await proxy.start(proxy_port)
    bootstrap = f"127.0.0.1:{proxy_port}"
    last = big_journal.state()["last_serial"]
    http_port = free_port()
    bridge = start(
        run_args(
            big_journal,
            bootstrap,
            "outage",
            "--start-serial",
            "0",
            "--stop-at-serial",
            str(last),
            "--batch-size",
            "1500",
            "--http-port",
            str(http_port),
        ),
        tmp_path / "bridge.log",
    )
    try:
        await wait_for_line(bridge, "backfill: serial", 60)
        await wait_for_readiness(http_port, 200, 10)
        await asyncio.sleep(1.0)
        outage_started = time.monotonic()
        await proxy.cut()
        # A replica that cannot reach the broker is not ready.
        await wait_for_readiness(http_port, 503, 10)
        await asyncio.sleep(max(0.0, 8.0 - (time.monotonic() - outage_started)))
        outage = time.monotonic() - outage_started
        assert bridge.popen.poll() is None, "the bridge must wait for the broker, not exit"
        await proxy.restore()
        await wait_for_readiness(http_port, 200, 15)
        assert await finish(bridge, 300) == 0, bridge.output()[-3000:]
        output = bridge.output()
        assert "Traceback" not in output
        assert output.count("is unreachable") == 1, "one clear line when Kafka goes away"
        assert output.count("reachable again") == 1, "and one when it is back"
        # In a thread: the proxy it talks through runs on this test's event loop.
        code, report = await asyncio.to_thread(run_audit, big_journal, bootstrap, "outage")
        assert code == 0, report
        figures.add("broker outage survived", f"{outage:.0f} s, audit clean")
    finally:
        bridge.stop(signal.SIGKILL)
        await proxy.stop()
        hidden.stop()


async def test_source_throttling_and_failures_cost_time_not_data(
    broker: EmbeddedBroker, tmp_path: Path, figures: Figures
) -> None:
    # 4 calls per 2-second window: a bridge that ignored the limit would be throttled constantly.
    sim = start_simulator(
        tmp_path,
        "--prefill",
        "20000",
        "--rate",
        "0",
        "--page-size",
        "1000",
        "--rate-limit",
        "4",
        "--rate-limit-window",
        "2",
    )
    try:
        for _ in range(3):
            sim.post("/_sim/faults", {"kind": "503", "count": 1})
        last = sim.state()["last_serial"]
        started = time.monotonic()
        bridge = start(
            run_args(
                sim,
                broker.bootstrap_servers,
                "throttled",
                "--start-serial",
                "0",
                "--stop-at-serial",
                str(last),
                "--max-backoff",
                "2",
            ),
            tmp_path / "bridge.log",
        )
        assert await finish(bridge, 300) == 0, bridge.output()[-3000:]
        elapsed = time.monotonic() - started
        state = sim.state()
        # No busy loop: every throttled answer was waited out for the time PyPI asked.
        assert state["throttled"] <= elapsed / 1.0 + 2, state
        assert state["calls"] <= 4 * (elapsed / 2) + 10, state
        assert state["faults"].get("503") == 3
        code, report = run_audit(sim, broker.bootstrap_servers, "throttled", "--strict")
        assert code == 0, report
        figures.add(
            "20,000 rows behind a 4-calls-per-2-s limit and three 503s",
            f"{elapsed:.1f} s, {state['calls']} calls, {state['throttled']} throttled, audit clean",
        )
    finally:
        sim.stop()
