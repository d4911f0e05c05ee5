"""The benchmark harness, run small: every figure is measured and reported, no process is left.

`python -m benchmarks.backfill --quick` starts the embedded broker, two simulators and two bridges
as real processes. These tests check that it reports every figure (in the printed table, the JSON
and the Markdown), not that the targets are met: a slow or busy machine must not fail the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.broker import broker_binary
from bridge.errors import EmbeddedBrokerError
from tests.conftest import ROOT, require

FIGURES = {
    "backfill, process start to exit",
    "backfill, first to last commit",
    "backfill, start-up to first commit",
    "naive baseline",
    "speed-up over the naive baseline",
    "peak RSS during the backfill",
    "freshness p50",
    "freshness p99",
}
TARGETED = {
    "backfill, process start to exit",
    "speed-up over the naive baseline",
    "peak RSS during the backfill",
    "freshness p99",
}


@dataclass
class Run:
    returncode: int
    stdout: str
    output_dir: Path
    tag: str


def _environment(tag: str) -> dict[str, str]:
    """The harness's environment, with a tag its children inherit so leftovers can be found."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYPI_BRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["BENCH_SMOKE_TAG"] = tag
    return env


def _tagged_processes(tag: str) -> list[int]:
    """Processes whose environment carries `tag`: the harness's children, if any are left."""
    found = []
    needle = f"BENCH_SMOKE_TAG={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.backfill", "--quick", *args]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    try:
        broker_binary()
    except EmbeddedBrokerError as exc:
        require(False, f"the embedded broker ({exc})")
    output_dir = tmp_path_factory.mktemp("bench")
    tag = uuid.uuid4().hex
    done = subprocess.run(
        _harness("--output-dir", str(output_dir)),
        cwd=ROOT,
        env=_environment(tag),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    return Run(done.returncode, done.stdout + done.stderr, output_dir, tag)


def _results(run: Run) -> dict[str, Any]:
    assert run.returncode == 0, run.stdout[-4000:]
    result: dict[str, Any] = json.loads((run.output_dir / "latest.json").read_text())
    return result


def test_the_json_holds_every_figure_with_a_positive_value(quick_run: Run) -> None:
    figures = {f["name"]: f for f in _results(quick_run)["figures"]}
    assert set(figures) == FIGURES
    assert all(f["value"] is not None and f["value"] > 0 for f in figures.values()), figures
    assert {name for name, f in figures.items() if isinstance(f["met"], bool)} == TARGETED


def test_the_json_names_the_machine_and_the_date(quick_run: Run) -> None:
    results = _results(quick_run)
    machine = results["machine"]
    assert machine["cores"] >= 1
    assert machine["cpu"]
    assert machine["python"]
    assert results["date"]


def test_the_backfill_delivered_every_row(quick_run: Run) -> None:
    backfill = _results(quick_run)["details"]["backfill"]
    assert backfill["verified"], backfill
    assert backfill["delivered"] == backfill["rows"] == 20_000


def test_the_printed_and_markdown_tables_list_every_figure(quick_run: Run) -> None:
    markdown = (quick_run.output_dir / "latest.md").read_text()
    assert "| figure | value | target | vs baseline | met |" in markdown
    for name in FIGURES:
        assert f"| {name} |" in markdown
        assert any(line.startswith(name) for line in quick_run.stdout.splitlines()), name
    assert "machine:" in quick_run.stdout


def test_no_process_outlives_the_run(quick_run: Run) -> None:
    _results(quick_run)
    assert _tagged_processes(quick_run.tag) == []


def test_ctrl_c_stops_every_process_it_started(tmp_path: Path) -> None:
    try:
        broker_binary()
    except EmbeddedBrokerError as exc:
        require(False, f"the embedded broker ({exc})")
    tag = uuid.uuid4().hex
    log_path = tmp_path / "harness.log"
    with log_path.open("wb") as log:
        harness = subprocess.Popen(
            _harness("--output-dir", str(tmp_path)),
            cwd=ROOT,
            env=_environment(tag),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Interrupt once the harness, the broker, the simulator and the bridge all run.
        deadline = time.monotonic() + 60
        while len(_tagged_processes(tag)) < 4:
            assert harness.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        harness.send_signal(signal.SIGINT)
        assert harness.wait(60) == 130, log_path.read_text()
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
    assert _tagged_processes(tag) == []
