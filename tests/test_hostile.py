"""A hostile or broken PyPI never makes the bridge lose, repeat or crash.

Each test puts `tests/hostile.py`'s proxy between a real bridge process and the simulator, lets
it lie in one way (a page out of order, a serial past XML-RPC's range, a 500 MB body, a lying
`Retry-After`...), and then proves three things: the bridge said so in one line of its log and
no traceback, it exited as documented, and `pypi-bridge audit --strict` against the simulator
itself finds every valid row exactly once. The row rule is in bridge/rows.py, the caps in
bridge/source.py and bridge/xmlrpc.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.broker import EmbeddedBroker, free_port
from bridge.parse import Row
from tests.hostile import Answer, HostileProxy, fault_answer, repeated, rows_answer
from tests.support import (
    Process,
    Simulator,
    bridge_command,
    fixed_journal,
    metric,
    metrics_text,
    run_audit,
    start,
)
from tests.test_faults import wait_for_readiness

pytestmark = pytest.mark.slow
JOURNAL_ROWS = 3000
PAGE = 500
#: Under the chart's memory limit (512 Mi) with room to spare.
CHART_MEMORY_LIMIT = 512 * 1024 * 1024


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with fixed_journal(
        tmp_path_factory.mktemp("hostile"), JOURNAL_ROWS, seed=11, page_size=PAGE
    ) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def journal(sim: Simulator) -> list[Row]:
    return sim.rows()


def bridge(
    proxy: HostileProxy,
    broker: EmbeddedBroker,
    prefix: str,
    last: int,
    log: Path,
    *extra: str,
    http_port: int = 0,
) -> Process:
    return start(
        bridge_command(
            "run",
            "--pypi-url",
            proxy.url,
            "--bootstrap-servers",
            broker.bootstrap_servers,
            "--topic-prefix",
            prefix,
            "--min-request-interval",
            "0",
            "--poll-interval",
            "0.2",
            "--http-port",
            str(http_port),
            "--start-serial",
            "0",
            "--stop-at-serial",
            str(last),
            "--max-backoff",
            "1",
            *extra,
        ),
        log,
    )


def finished_cleanly(
    process: Process, proxy: HostileProxy, broker: EmbeddedBroker, prefix: str
) -> str:
    """Wait for exit 0, then audit: every row of the simulator's journal exactly once."""
    code = process.wait(120)
    output = process.output()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    audit_clean(proxy, broker, prefix)
    return output


def audit_clean(proxy: HostileProxy, broker: EmbeddedBroker, prefix: str) -> None:
    """`audit --strict` through the proxy (the events name it as their source), its rules
    spent or cleared so that it tells the truth."""
    proxy.clear()
    journal = Simulator(process=None, url=proxy.url)  # type: ignore[arg-type]
    audited, report = run_audit(journal, broker.bootstrap_servers, prefix, "--strict")
    assert audited == 0, report
    assert "CLEAN: every entry exactly once" in report, report


def lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def run_against(
    sim: Simulator,
    journal: list[Row],
    broker: EmbeddedBroker,
    tmp_path: Path,
    prefix: str,
    method: str,
    make: object,
    times: int | None = 1,
    *extra: str,
) -> tuple[str, HostileProxy]:
    with HostileProxy(sim.url) as proxy:
        proxy.add(method, make, times)  # type: ignore[arg-type]
        process = bridge(proxy, broker, prefix, journal[-1][4], tmp_path / "bridge.log", *extra)
        return finished_cleanly(process, proxy, broker, prefix), proxy


# --- the row rule: refused pages ----------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("serial beyond 2^31", "has serial 1099511627776, outside 1..2147483647"),
        ("negative serial", "has serial -5, outside 1..2147483647"),
        ("out of order", "serials must strictly increase"),
        ("repeated serial", "serials must strictly increase"),
        ("timestamp beyond 64 bits", "has timestamp about 2^70, outside"),
    ],
)
def test_a_page_that_breaks_the_contract_is_refused_whole_and_retried(
    sim: Simulator,
    journal: list[Row],
    broker: EmbeddedBroker,
    tmp_path: Path,
    case: str,
    expected: str,
) -> None:
    def lie(serial: int | None, truth: list[Row] | None) -> Answer:
        rows = list(truth or [])
        name, version, timestamp, action, _ = rows[-1]
        if case == "serial beyond 2^31":
            rows.append((name, version, timestamp, action, 2**40))
        elif case == "negative serial":
            rows.append((name, version, timestamp, action, -5))
        elif case == "out of order":
            rows[0], rows[2] = rows[2], rows[0]  # [s+2, s+1, s] as the issue saw it
        elif case == "repeated serial":
            rows.insert(1, rows[0])
        else:
            rows[3] = (rows[3][0], rows[3][1], 2**70, rows[3][3], rows[3][4])
        return rows_answer(rows)

    prefix = "refused-" + case.replace(" ", "-").replace("^", "")
    output, _ = run_against(
        sim, journal, broker, tmp_path, prefix, "changelog_since_serial", lie, 2
    )
    refused = lines_with(output, "refused a changelog page")
    assert len(refused) == 2, output[-3000:]
    assert all(expected in line for line in refused), refused
    assert "retrying in" in refused[0]


def test_rows_at_or_below_the_cursor_are_dropped_and_counted(
    sim: Simulator, journal: list[Row], broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A stale answer repeats rows already published: dropped, with one warning per page."""
    by_serial = [r[4] for r in journal]

    def stale(serial: int | None, truth: list[Row] | None) -> Answer:
        assert serial is not None
        at = by_serial.index(serial) + 1 if serial in by_serial else 0
        return rows_answer(journal[max(0, at - 40) : at] + list(truth or []))

    output, _ = run_against(
        sim, journal, broker, tmp_path, "stale", "changelog_since_serial", stale, 4
    )
    dropped = lines_with(output, "at or below serial")
    # The first call (from serial 0) has nothing below the cursor to repeat.
    assert len(dropped) == 3, output[-3000:]
    assert "40 rows at or below serial" in dropped[-1]
    assert "dropped them" in dropped[-1]


def test_a_page_entirely_below_the_request_does_not_loop(
    sim: Simulator, journal: list[Row], broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """It is the old code's endless loop: now the rows are dropped and the poll goes on."""

    def behind(serial: int | None, truth: list[Row] | None) -> Answer:
        below = [r for r in journal if serial is not None and r[4] <= serial][-100:]
        return rows_answer(below or truth or [])  # the first page (from 0) is the truth

    output, proxy = run_against(
        sim, journal, broker, tmp_path, "behind", "changelog_since_serial", behind, 6
    )
    assert len(lines_with(output, "at or below serial")) >= 4, output[-3000:]
    pages = sum(1 for method, _ in proxy.calls if method == "changelog_since_serial")
    assert pages < 30, f"{pages} pages for a {JOURNAL_ROWS}-row journal"


# --- malformed and oversized answers --------------------------------------------------------


def test_a_deeply_nested_value_is_one_line_not_a_recursion_error(
    sim: Simulator, journal: list[Row], broker: EmbeddedBroker, tmp_path: Path
) -> None:
    depth = 100_000
    body = (
        b"<?xml version='1.0'?><methodResponse><params><param><value><array><data>"
        + b"<value><array><data>" * depth
        + b"</data></array></value>" * depth
        + b"</data></array></value></param></params></methodResponse>"
    )
    output, _ = run_against(
        sim,
        journal,
        broker,
        tmp_path,
        "nested",
        "changelog_since_serial",
        lambda s, t: Answer(body),
        2,
    )
    assert len(lines_with(output, "elements nested more than 64 deep")) == 2, output[-3000:]
    assert "RecursionError" not in output


def peak_rss(process: Process, within: float) -> tuple[int, int]:
    """Wait for the process; its exit status and peak resident memory (bytes, VmHWM).

    Not wait4's ru_maxrss: a child started by vfork and exec counts the high-water mark of the
    address space it left at exec, the test process's own, so a big pytest process made every
    bridge look big (found by a CI run). VmHWM is the bridge's own address space's mark.
    """
    deadline = time.monotonic() + within
    peak = 0
    while True:
        peak = max(peak, _vm_hwm(process.popen.pid))
        pid, status, _ = os.wait4(process.popen.pid, os.WNOHANG)
        if pid:
            process.popen.returncode = os.waitstatus_to_exitcode(status)
            assert peak, "the bridge exited before its peak memory could be read"
            return process.popen.returncode, peak
        if time.monotonic() > deadline:
            process.stop(signal.SIGKILL)
            raise AssertionError(f"no exit within {within} s:\n{process.output()[-3000:]}")
        time.sleep(0.1)


def _vm_hwm(pid: int) -> int:
    """The peak resident memory of a live process, in bytes (0 once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.parametrize(
    ("shape", "declared"),
    [("xml", True), ("xml", False), ("no markup", False)],
    ids=["declared-length", "streamed", "no-markup"],
)
def test_a_500_mb_answer_is_abandoned_while_reading(
    sim: Simulator,
    journal: list[Row],
    broker: EmbeddedBroker,
    tmp_path: Path,
    shape: str,
    declared: bool,
    figures: object,
) -> None:
    size = 500 * 1024 * 1024
    head = b"<?xml version='1.0'?><methodResponse><params><param><value><array><data>"

    def huge(serial: int | None, truth: list[Row] | None) -> Answer:
        if shape == "xml":
            row = b"<value><array><data><value><string>x</string></value></data></array></value>"
            body = repeated(head + row * 10_000, size)
        else:
            body = repeated(b"a" * 65536, size)
        headers = {"Content-Length": str(size)} if declared else {}
        return Answer(body, headers=headers)

    with HostileProxy(sim.url) as proxy:
        proxy.add("changelog_since_serial", huge, 2)
        prefix = f"huge-{shape.replace(' ', '-')}-{declared}"
        process = bridge(proxy, broker, prefix, journal[-1][4], tmp_path / "bridge.log")
        code, peak = peak_rss(process, 180)
        output = process.output()
        assert code == 0, output[-3000:]
        assert "Traceback" not in output
        over = lines_with(output, "over --max-response-bytes")
        assert len(over) == 2, output[-3000:]
        assert ("declares 524288000 bytes" in over[0]) == declared, over[0]
        assert peak < CHART_MEMORY_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"
        audit_clean(proxy, broker, prefix)
        figures.add(  # type: ignore[attr-defined]
            f"peak RSS with 500 MB answers ({shape}, {'declared' if declared else 'streamed'})",
            f"{peak / 2**20:.0f} MiB",
        )


def test_a_big_answer_without_markup_does_not_stall_the_event_loop(
    sim: Simulator, journal: list[Row], broker: EmbeddedBroker, tmp_path: Path, figures: object
) -> None:
    """60 MB of junk (under the cap) is decoded in a worker thread, in slices: /healthz
    answers meanwhile, and SIGTERM stops the bridge."""
    body = b"a" * (60 * 1024 * 1024)
    with HostileProxy(sim.url) as proxy:
        proxy.add("changelog_since_serial", lambda s, t: Answer(body), None)
        port = free_port()
        process = bridge(
            proxy, broker, "junk", journal[-1][4], tmp_path / "bridge.log", http_port=port
        )
        asyncio.run(wait_for_readiness(port, 200, 60))
        slowest = 0.0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            started = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
                assert r.status == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.05)
        malformed = lines_with(process.output(), "malformed XML-RPC response")
        assert len(malformed) >= 3, process.output()[-3000:]
        process.popen.send_signal(signal.SIGTERM)
        code, peak = peak_rss(process, 20)
        output = process.output()
        assert code == 0, output[-3000:]
        assert "Traceback" not in output
        assert slowest < 2.0, f"/healthz took {slowest:.2f} s while junk was decoded"
        assert peak < CHART_MEMORY_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"
        figures.add(  # type: ignore[attr-defined]
            "slowest /healthz while 60 MB of junk is decoded", f"{slowest * 1000:.0f} ms"
        )


# --- lying waits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lie",
    [
        "retry-after 999999999",
        "retry-after inf",
        "fault reset 999999999",
        "fault reset huge",
    ],
)
def test_a_lying_wait_is_capped_by_max_backoff(
    sim: Simulator, journal: list[Row], broker: EmbeddedBroker, tmp_path: Path, lie: str
) -> None:
    def throttle(serial: int | None, truth: list[Row] | None) -> Answer:
        if lie.startswith("retry-after"):
            return Answer(b"", status=429, headers={"Retry-After": lie.split()[-1]})
        seconds = "9" * 400 if lie == "fault reset huge" else "999999999"
        return fault_answer(
            -32500, f"HTTPTooManyRequests: rate limited. Limit may reset in {seconds} seconds."
        )

    started = time.monotonic()
    output, _ = run_against(
        sim,
        journal,
        broker,
        tmp_path,
        "wait-" + lie.replace(" ", "-"),
        "changelog_since_serial",
        throttle,
        3,
    )
    throttled = lines_with(output, "PyPI is throttling")
    assert len(throttled) == 3, output[-3000:]
    assert all("waiting 1 s" in line for line in throttled), throttled
    assert time.monotonic() - started < 60


# --- answers no retry can fix -----------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_named_and_stops_the_bridge(
    sim: Simulator, journal: list[Row], broker: EmbeddedBroker, tmp_path: Path, status: int
) -> None:
    def moved(serial: int | None, truth: list[Row] | None) -> Answer:
        return Answer(b"", status=status, headers={"Location": "https://elsewhere.invalid/pypi"})

    with HostileProxy(sim.url) as proxy:
        proxy.add("changelog_last_serial", moved, None)
        proxy.add("changelog_since_serial", moved, None)
        process = bridge(proxy, broker, f"moved-{status}", journal[-1][4], tmp_path / "b.log")
        code = process.wait(60)
    output = process.output()
    assert code == 1, output[-3000:]
    assert "Traceback" not in output
    named = lines_with(output, f"HTTP {status} from {proxy.url}")
    assert len(named) == 1, output[-3000:]
    assert "redirects to https://elsewhere.invalid/pypi" in named[0]
    # the POST must not have become a GET that the server answers 405 (the port may hold "405")
    assert "HTTP 405" not in output


# --- a source that keeps lying turns /readyz red --------------------------------------------


def test_a_source_that_keeps_breaking_the_contract_is_not_ready(
    sim: Simulator, journal: list[Row], broker: EmbeddedBroker, tmp_path: Path
) -> None:
    def disorder(serial: int | None, truth: list[Row] | None) -> Answer:
        rows = list(truth or [])
        return rows_answer(rows[1:2] + rows[:1] + rows[2:])

    with HostileProxy(sim.url) as proxy:
        proxy.add("changelog_since_serial", disorder, None)
        port = free_port()
        process = bridge(
            proxy, broker, "unready", journal[-1][4], tmp_path / "bridge.log", http_port=port
        )
        try:
            # A replica is also 503 while it starts: wait for the reason this test is about.
            deadline = time.monotonic() + 60
            while True:
                body = asyncio.run(wait_for_readiness(port, 503, 60))
                if "broke the journal's contract" in str(body["detail"]):
                    break
                assert time.monotonic() < deadline, body
                time.sleep(0.2)
            assert metric(port, "pypi_bridge_source_consecutive_refusals") >= 3
            assert 'outcome="refused"' in metrics_text(port)
            proxy.clear()
            # The backfill may finish (and the bridge exit) before /readyz is polled again.
            output = finished_cleanly(process, proxy, broker, "unready")
            assert "keep the journal's contract again" in output, output[-3000:]
        finally:
            process.stop(signal.SIGKILL)
