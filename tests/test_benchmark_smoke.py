"""The benchmark harness, run small: every figure is measured and reported, no process is left.

`python -m benchmarks.backfill --quick` starts the embedded broker, simulators and bridges as real
processes, and, with `--real-kafka yes`, an Apache Kafka node with its own backfill, two takeovers
(SIGTERM, SIGKILL) and a restart. These tests check that it reports every figure (in the printed
table, the JSON and the Markdown), not that the targets are met: a slow or busy machine must not
fail the suite. The real-Kafka tests need Java and the broker's jars: in CI they fail without them.
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

from benchmarks import backfill
from bridge.broker import broker_binary
from bridge.errors import EmbeddedBrokerError
from tests.conftest import ROOT, require
from tests.realkafka import (
    KafkaCluster,
    KafkaUnavailable,
    classpath,
    java_executable,
    newest_version,
)

EMBEDDED_FIGURES = {
    "backfill, process start to exit",
    "backfill, first to last commit",
    "backfill, start-up to first commit",
    "naive baseline",
    "speed-up over the naive baseline",
    "peak RSS during the backfill",
    "bridge CPU per 1,000 rows",
    "freshness p50",
    "freshness p99",
}
KAFKA_FIGURES = {
    "real Kafka: backfill, process start to exit",
    "real Kafka: backfill, first to last commit",
    "real Kafka: backfill, start-up to first commit",
    "real Kafka: peak RSS during the backfill",
    "real Kafka: bridge CPU per 1,000 rows",
    "real Kafka: takeover after SIGTERM, to the leader line",
    "real Kafka: takeover after SIGTERM, to the first commit",
    "real Kafka: takeover after SIGKILL, to the leader line",
    "real Kafka: takeover after SIGKILL, to the first commit",
}
FIGURES = EMBEDDED_FIGURES | KAFKA_FIGURES
TARGETED = {
    "backfill, process start to exit",
    "speed-up over the naive baseline",
    "peak RSS during the backfill",
    "freshness p99",
}
KAFKA_TARGETED = {
    "real Kafka: backfill, process start to exit",
    "real Kafka: peak RSS during the backfill",
    "real Kafka: takeover after SIGTERM, to the leader line",
    "real Kafka: takeover after SIGKILL, to the leader line",
}


@dataclass
class Run:
    returncode: int
    stdout: str
    output_dir: Path
    tag: str
    #: Whether the real-Kafka part ran (`--real-kafka yes`), else why not.
    kafka: bool
    kafka_missing: str


def _kafka_missing() -> str:
    """Why Apache Kafka cannot run here (no Java, no Maven to fetch the jars), or ""."""
    try:
        java_executable()
        classpath(newest_version())
    except KafkaUnavailable as exc:
        return str(exc)
    return ""


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
    missing = _kafka_missing()
    # With Kafka at hand the harness must run its part (yes); without, the embedded part still
    # runs (no) and the real-Kafka tests below fail in CI or skip elsewhere.
    done = subprocess.run(
        _harness("--output-dir", str(output_dir), "--real-kafka", "no" if missing else "yes"),
        cwd=ROOT,
        env=_environment(tag),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return Run(done.returncode, done.stdout + done.stderr, output_dir, tag, not missing, missing)


def _results(run: Run) -> dict[str, Any]:
    assert run.returncode == 0, run.stdout[-4000:]
    result: dict[str, Any] = json.loads((run.output_dir / "latest.json").read_text())
    return result


def _require_kafka(run: Run) -> None:
    require(run.kafka, f"Apache Kafka ({run.kafka_missing})")


def test_the_json_holds_every_figure_with_a_positive_value(quick_run: Run) -> None:
    figures = {f["name"]: f for f in _results(quick_run)["figures"]}
    assert set(figures) == FIGURES
    embedded = {name: f for name, f in figures.items() if name in EMBEDDED_FIGURES}
    assert all(f["value"] is not None and f["value"] > 0 for f in embedded.values()), embedded
    assert {name for name, f in embedded.items() if isinstance(f["met"], bool)} == TARGETED


def test_the_real_kafka_figures_are_measured(quick_run: Run) -> None:
    _require_kafka(quick_run)
    figures = {f["name"]: f for f in _results(quick_run)["figures"]}
    kafka = {name: f for name, f in figures.items() if name in KAFKA_FIGURES}
    assert all(f["value"] is not None and f["value"] > 0 for f in kafka.values()), kafka
    assert {name for name, f in kafka.items() if isinstance(f["met"], bool)} == KAFKA_TARGETED
    assert "NOT MEASURED" not in quick_run.stdout


def test_the_real_kafka_backfill_is_transactional_and_delivered_every_row_once(
    quick_run: Run,
) -> None:
    _require_kafka(quick_run)
    kafka = _results(quick_run)["details"]["kafka"]
    assert kafka["available"], kafka
    run = kafka["backfill"]
    assert run["broker"] == "kafka"
    assert run["delivery_mode"] == "transactional", run
    assert run["verified"], run
    assert run["delivered"] == run["distinct_serials"] == run["rows"] == 20_000
    assert run["bridge_cpu_seconds"] > 0
    assert run["bridge_cpu_ms_per_1000_rows"] > 0


def test_both_takeovers_hand_over_to_the_standby(quick_run: Run) -> None:
    _require_kafka(quick_run)
    takeovers = _results(quick_run)["details"]["kafka"]["takeovers"]
    assert set(takeovers) == {"SIGTERM", "SIGKILL"}
    for name, takeover in takeovers.items():
        assert takeover["signal"] == name
        assert takeover["session_timeout"] == 6.0
        leader, resumed, committed = (
            takeover["to_leader_line"],
            takeover["to_resumed"],
            takeover["to_first_commit"],
        )
        assert committed is not None, takeover
        assert 0 < leader <= resumed <= committed, takeover
        assert isinstance(takeover["met"], bool)
        assert [p["name"] for p in takeover["phases"]][-1] == backfill.FIRST_COMMIT
    # A graceful stop exits 0; a kill -9 is noticed only when the session times out (6 s, less
    # one heartbeat): a quicker takeover would mean the leader was not killed.
    assert takeovers["SIGTERM"]["old_leader_returncode"] == 0, takeovers["SIGTERM"]
    stopped = takeovers["SIGTERM"]["old_leader_stopped_seconds"]
    assert stopped is not None, takeovers["SIGTERM"]
    assert stopped <= takeovers["SIGTERM"]["to_leader_line"]
    assert takeovers["SIGKILL"]["old_leader_stopped_seconds"] is None
    assert takeovers["SIGKILL"]["old_leader_returncode"] == -signal.SIGKILL
    assert takeovers["SIGKILL"]["to_leader_line"] > 2.0, takeovers["SIGKILL"]


def test_the_start_up_phases_are_reported(quick_run: Run) -> None:
    results = _results(quick_run)
    startups = {s["scenario"]: s for s in results["details"]["startups"]}
    assert startups["first start, embedded (topics created)"]["total"] > 0
    markdown = (quick_run.output_dir / "latest.md").read_text()
    assert "## Start-up phases" in markdown
    assert "start-up phase" in quick_run.stdout
    if not quick_run.kafka:
        return
    assert len(startups) == 5, list(startups)
    restart = startups["restart, Kafka (existing topics, DEBUG log)"]
    names = [p["name"] for p in restart["phases"]]
    # The DEBUG log splits the topic check from the group join, and the join from what follows.
    assert "topic check (creation on a first start)" in names
    assert "leader group: connect, find the coordinator" in names
    assert "checkpoint read (and high-water recovery)" in names
    assert names[-1] == backfill.FIRST_COMMIT
    assert all(p["seconds"] >= 0 for p in restart["phases"])


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
    for name in EMBEDDED_FIGURES | (KAFKA_FIGURES if quick_run.kafka else set()):
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
            _harness("--output-dir", str(tmp_path), "--real-kafka", "no"),
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


# --- without Apache Kafka: said so, and the embedded part still runs ---------------------------


class _NoKafka(backfill.Processes):
    def kafka(self) -> KafkaCluster:
        raise KafkaUnavailable("no Java found: install Java 17 (Debian: openjdk-17-jre-headless)")


def _namespace(real_kafka: str) -> Any:
    return backfill.parse_args(["--quick", "--real-kafka", real_kafka])


def test_without_kafka_auto_says_so_and_reports_n_a(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    procs = _NoKafka(tmp_path)
    kafka = backfill.run_real_kafka(_namespace("auto"), procs, None, "")  # type: ignore[arg-type]
    assert not kafka.available
    assert (kafka.reason or "").startswith("no Java found")
    assert "REAL KAFKA NOT MEASURED: no Java found" in capsys.readouterr().out
    rows = backfill.kafka_figures(kafka)
    assert {f.name for f in rows} == KAFKA_FIGURES
    assert all(f.value is None and f.met is None for f in rows)
    (line,) = backfill.kafka_notes(kafka)
    assert line.startswith("Apache Kafka: NOT MEASURED (no Java found")


def test_without_kafka_yes_fails_and_no_skips(tmp_path: Path) -> None:
    procs = _NoKafka(tmp_path)
    with pytest.raises(backfill.BenchmarkError, match="Apache Kafka is unavailable: no Java"):
        backfill.run_real_kafka(_namespace("yes"), procs, None, "")  # type: ignore[arg-type]
    skipped = backfill.run_real_kafka(_namespace("no"), procs, None, "")  # type: ignore[arg-type]
    assert not skipped.available
    assert skipped.reason == "skipped with --real-kafka no"


def test_phases_come_from_the_log_timestamps(tmp_path: Path) -> None:
    log = tmp_path / "bridge.log"
    log.write_text(
        "2026-01-02 03:04:05,100 INFO    bridge: pypi-bridge 0.1.0 starting as replica c\n"
        "2026-01-02 03:04:05,110 INFO    bridge.metrics: metrics and health on http://x\n"
        "2026-01-02 03:04:05,300 INFO    aiokafka.consumer.consumer: Subscribed to topic(s): x\n"
        "2026-01-02 03:04:05,350 INFO    aiokafka.consumer.group_coordinator: (Re-)joining group\n"
        "2026-01-02 03:04:05,400 INFO    bridge.leadership: c is now the leader\n"
        "2026-01-02 03:04:05,600 INFO    bridge.sink: delivery mode: transactional (...)\n"
        "2026-01-02 03:04:05,900 INFO    bridge.pipeline: resuming after serial 7 (checkpoint)\n"
        "2026-01-02 03:04:06,000 INFO    bridge.pipeline: caught up at serial 7 (0 rows)\n"
    )
    lines = backfill.read_log(log)
    start = lines[0][0] - 1.0
    phases = backfill.startup_phases(lines, start, lines[-1][0] + 0.5)
    seconds = {p.name: round(p.seconds, 3) for p in phases}
    assert seconds == {
        "interpreter start and imports": 1.0,
        "HTTP endpoints": 0.01,
        "topic check (creation on a first start)": 0.19,
        "leader group: connect, find the coordinator": 0.05,
        "leader group: join and sync (takeover: from the signal)": 0.05,
        "producer start (InitProducerId when transactional)": 0.2,
        "checkpoint read (and high-water recovery)": 0.3,
        "PyPI head (changelog_last_serial)": 0.1,
        backfill.FIRST_COMMIT: 0.5,
    }
    # From a moment after the leader line (a takeover's signal), the earlier phases are gone.
    later = backfill.startup_phases(lines, lines[4][0] - 0.02, None)
    assert later[0].name == "leader group: join and sync (takeover: from the signal)"
    assert round(later[0].seconds, 3) == 0.02
