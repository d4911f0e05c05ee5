"""The dashboard and the alert rules against a real Prometheus scraping a real bridge.

One stack per module: the journal simulator, the bridge (`python -m bridge run`) on the
session's embedded broker, and a `prometheus` server scraping the bridge every second with the
chart's rule file loaded. Once the bridge has caught up with the simulator, every query of every
dashboard panel goes through Prometheus's HTTP API and must answer with data that makes sense
for what the stack is doing.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import pytest
import yaml

from bridge import __version__
from bridge.broker import EmbeddedBroker, free_port
from bridge.events import EVENT_TYPES
from bridge.metrics import SOURCE_OUTCOMES, STAGES
from tests.conftest import ROOT, require
from tests.test_alerts import RULES, load_dashboard, load_rules, panel_queries, promtool

pytestmark = pytest.mark.timeout(150)

JOB = "pypi-bridge"
REPLICA = "prometheus-it"
PREFILL = 300
RATE = 5
SEED = 7
#: Window substituted for Grafana's `$__rate_interval`: with a 1 s scrape, 30 s is 30 samples,
#: and the catch-up burst stays visible in rates for a while.
RATE_INTERVAL = "30s"
START_TIMEOUT = 20.0
CATCH_UP_TIMEOUT = 45.0
PANELS_TIMEOUT = 30.0
#: The journal began in 2002; a committed timestamp before that is not a journal time.
JOURNAL_EPOCH = 1_009_843_200
#: Alerts that must stay quiet (not even pending) while one healthy bridge leads.
QUIET_ON_A_HEALTHY_BRIDGE = {
    "PypiBridgeNoLeader",
    "PypiBridgeSplitBrain",
    "PypiBridgeNoProgress",
    "PypiBridgeDown",
    "PypiBridgeAllReplicasDown",
    "PypiBridgeNotScraped",
}
_URL = re.compile(r"http://127\.0\.0\.1:\d+/\S*")

T = TypeVar("T")


# --- processes -------------------------------------------------------------------------------


@dataclass
class Service:
    """A process this module started, in a session of its own, with its output in a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self) -> None:
        # The whole process group: `python -m bridge` may have children of its own.
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            return


def spawn(name: str, args: list[str], logs: Path) -> Service:
    """Start `args` with stdout and stderr in `logs/<name>.log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYPI_BRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
    return Service(name, process, log)


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float, services: list[Service]
) -> T:
    """Poll `probe` until it returns a value; fail early, with its log, if a service dies."""
    deadline = time.monotonic() + timeout
    while True:
        for service in services:
            if service.process.poll() is not None:
                pytest.fail(
                    f"{service.name} exited ({service.process.returncode}) while waiting for "
                    f"{what}:\n{service.tail()}",
                    pytrace=False,
                )
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {s.name}:\n{s.tail()}" for s in services)
            pytest.fail(
                f"timed out after {timeout:.0f} s waiting for {what}\n{logs}", pytrace=False
            )
        time.sleep(0.5)


# --- HTTP ------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes] | None:
    """Status and body of a GET, or None while nothing answers."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def answers_ok(url: str) -> bool | None:
    """True once `url` answers 200; None before (for `wait_for`)."""
    reply = http_get(url)
    return True if reply is not None and reply[0] == 200 else None


def get_json(url: str) -> Any:
    reply = http_get(url)
    assert reply is not None, f"no answer from {url}"
    status, body = reply
    assert status == 200, f"{url}: HTTP {status}: {body[:500]!r}"
    return json.loads(body)


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    """URLs of the running simulator, bridge and Prometheus."""

    simulator: str
    bridge: str
    prometheus: str
    config: Path
    services: list[Service]

    def simulator_last_serial(self) -> int:
        state = get_json(f"{self.simulator}/_sim/state")
        assert "last_serial" in state, f"/_sim/state has no last_serial: {sorted(state)}"
        return int(state["last_serial"])

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful Prometheus API answer."""
        query = f"?{urlencode(params)}" if params else ""
        reply = http_get(f"{self.prometheus}/api/v1/{path}{query}", timeout=10.0)
        assert reply is not None, f"Prometheus does not answer /api/v1/{path}"
        payload = json.loads(reply[1])
        assert payload.get("status") == "success", f"/api/v1/{path} {params}: {payload}"
        return payload["data"]

    def query(self, expr: str) -> list[Sample]:
        """An instant query at the current time."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            at, value = data["result"]
            return [Sample({}, float(value), float(at))]
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return [
            Sample(item["metric"], float(item["value"][1]), float(item["value"][0]))
            for item in data["result"]
        ]


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float
    at: float


def bridge_command(command: str, options: Mapping[str, str]) -> list[str]:
    """`python -m bridge <command> --flag value ...` with this interpreter."""
    return [sys.executable, "-m", "bridge", command, *(x for kv in options.items() for x in kv)]


def prometheus_config(bridge_port: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{bridge_port}"]}]}
        ],
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, broker: EmbeddedBroker) -> Iterator[Stack]:
    """Simulator, bridge and Prometheus, all on loopback, stopped at the end of the module."""
    prometheus = shutil.which("prometheus")
    require(prometheus is not None, "prometheus (Debian package prometheus)")
    assert prometheus is not None
    work = tmp_path_factory.mktemp("prometheus-it")
    sim_port, bridge_port, prometheus_port = free_port(), free_port(), free_port()
    config = work / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(bridge_port)))
    services: list[Service] = []
    try:
        simulator_options = {
            "--port": str(sim_port),
            "--prefill": str(PREFILL),
            "--rate": str(RATE),
            "--seed": str(SEED),
        }
        simulator = spawn("simulator", bridge_command("simulate", simulator_options), work)
        services.append(simulator)

        def printed_url() -> str | None:
            found = _URL.search(simulator.output())
            return found.group(0) if found else None

        pypi_url = wait_for("the simulator's URL", printed_url, START_TIMEOUT, services)
        parts = urlsplit(pypi_url)
        simulator_base = f"{parts.scheme}://{parts.netloc}"

        # Prometheus first, so its scrapes see the bridge's catch-up.
        services.append(
            spawn(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                work,
            )
        )
        prometheus_base = f"http://127.0.0.1:{prometheus_port}"
        wait_for(
            "Prometheus to be ready",
            lambda: answers_ok(f"{prometheus_base}/-/ready"),
            START_TIMEOUT,
            services,
        )

        bridge_args = {
            "--pypi-url": pypi_url,
            "--bootstrap-servers": broker.bootstrap_servers,
            "--start-serial": "0",
            "--http-host": "127.0.0.1",
            "--http-port": str(bridge_port),
            "--min-request-interval": "0",
            "--poll-interval": "0.5",
            "--topic-prefix": f"prom-it-{uuid.uuid4().hex[:8]}",
            "--replica-id": REPLICA,
        }
        services.append(spawn("bridge", bridge_command("run", bridge_args), work))
        bridge_base = f"http://127.0.0.1:{bridge_port}"
        wait_for(
            "the bridge's /healthz",
            lambda: answers_ok(f"{bridge_base}/healthz"),
            START_TIMEOUT,
            services,
        )
        yield Stack(simulator_base, bridge_base, prometheus_base, config, services)
    finally:
        for service in reversed(services):
            service.stop()


@pytest.fixture(scope="module")
def caught_up(stack: Stack) -> int:
    """Waits until Prometheus shows the bridge committed the simulator's head as of now.

    Returns that serial; the simulator keeps appending, so later heads are higher.
    """
    target = stack.simulator_last_serial()
    expr = f'max(pypi_bridge_committed_serial{{job="{JOB}"}})'

    def reached() -> int | None:
        samples = stack.query(expr)
        return target if samples and samples[0].value >= target else None

    return wait_for(
        f"Prometheus to show committed serial {target}", reached, CATCH_UP_TIMEOUT, stack.services
    )


# --- what each panel must show ---------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """What a check may compare with: the head when we started waiting, and the head now."""

    caught_up_serial: int
    simulator_last_serial: int


Check = Callable[[list[Sample], Round], str | None]


def _values(samples: list[Sample]) -> list[float]:
    return [sample.value for sample in samples]


def exactly(expected: float) -> Check:
    def check(samples: list[Sample], _: Round) -> str | None:
        if _values(samples) != [expected]:
            return f"expected one series worth {expected}, got {_values(samples)}"
        return None

    return check


def within(low: float, high: float) -> Check:
    def check(samples: list[Sample], _: Round) -> str | None:
        outside = [v for v in _values(samples) if not low <= v <= high]
        return f"values outside [{low}, {high}]: {outside}" if outside else None

    return check


def serial_seen(samples: list[Sample], now: Round) -> str | None:
    """A serial the bridge has reached: at least the head we waited for, at most today's head."""
    low, high = now.caught_up_serial, now.simulator_last_serial
    if len(samples) != 1 or not low <= samples[0].value <= high:
        return f"expected one serial in [{low}, {high}], got {_values(samples)}"
    return None


def lag_in_serials(samples: list[Sample], now: Round) -> str | None:
    high = now.simulator_last_serial - now.caught_up_serial
    if len(samples) != 1 or not 0 <= samples[0].value <= high:
        return f"expected one lag in [0, {high}], got {_values(samples)}"
    return None


def lag_in_seconds(samples: list[Sample], _: Round) -> str | None:
    if len(samples) != 1:
        return f"expected one series, got {len(samples)}"
    committed_at = samples[0].at - samples[0].value
    if samples[0].value < 0 or committed_at < JOURNAL_EPOCH:
        return f"lag {samples[0].value} s puts the last entry at {committed_at}, not a journal time"
    return None


def events_by_type(samples: list[Sample], _: Round) -> str | None:
    unknown = {s.labels.get("type") for s in samples} - set(EVENT_TYPES)
    if unknown:
        return f"unknown event types {unknown}"
    return None if sum(_values(samples)) > 0 else "no events per second"


def requests_by_outcome(samples: list[Sample], _: Round) -> str | None:
    outcomes = {s.labels.get("outcome"): s.value for s in samples}
    if set(outcomes) - set(SOURCE_OUTCOMES):
        return f"unknown outcomes {set(outcomes) - set(SOURCE_OUTCOMES)}"
    return None if outcomes.get("ok", 0) > 0 else f"no successful calls per second: {outcomes}"


def errors_by_stage(samples: list[Sample], _: Round) -> str | None:
    stages = {s.labels.get("stage") for s in samples}
    if stages != set(STAGES):
        return f"expected every stage {sorted(STAGES)}, got {stages}"
    negative = [v for v in _values(samples) if v < 0]
    return f"negative error rates {negative}" if negative else None


def high_water_mode(samples: list[Sample], _: Round) -> str | None:
    # The embedded broker has no transactions, so detection must pick high-water.
    modes = [s.labels.get("mode") for s in samples]
    return None if modes == ["high-water"] else f"expected mode high-water alone, got {modes}"


def this_version(samples: list[Sample], _: Round) -> str | None:
    versions = [(s.labels.get("version"), s.value) for s in samples]
    return None if versions == [(__version__, 1.0)] else f"expected {__version__} once: {versions}"


def this_replica_leads(samples: list[Sample], _: Round) -> str | None:
    leaders = [(s.labels.get("replica"), s.value) for s in samples]
    return None if leaders == [(REPLICA, 1.0)] else f"expected {REPLICA} leading: {leaders}"


def at_least(low: float) -> Check:
    def check(samples: list[Sample], _: Round) -> str | None:
        below = [v for v in _values(samples) if not v >= low]
        return f"values below {low}: {below}" if below else None

    return check


def positive(samples: list[Sample], _: Round) -> str | None:
    return None if samples and all(v > 0 for v in _values(samples)) else f"{_values(samples)}"


LATENCY = within(0.0, 30.0)
PANEL_CHECKS: dict[tuple[str, str], Check] = {
    ("Leaders / replicas", "A"): exactly(1.0),
    ("Leaders / replicas", "B"): exactly(1.0),
    ("Delivery mode", "A"): high_water_mode,
    ("Version", "A"): this_version,
    ("Committed serial", "A"): serial_seen,
    ("Events per second by type", "A"): events_by_type,
    ("Committed vs. source head serial", "A"): serial_seen,
    ("Committed vs. source head serial", "B"): serial_seen,
    ("Lag in serials", "A"): lag_in_serials,
    ("Lag in seconds", "A"): lag_in_seconds,
    ("Source requests by outcome", "A"): requests_by_outcome,
    ("Source request latency", "A"): LATENCY,
    ("Source request latency", "B"): LATENCY,
    ("Source request latency", "C"): LATENCY,
    ("Commit latency", "A"): LATENCY,
    ("Commit latency", "B"): LATENCY,
    ("Commit latency", "C"): LATENCY,
    # Quantiles interpolate inside the first bucket (0, 1], so a batch of one may read below 1.
    ("Batch size", "A"): within(1e-9, 50_000.0),
    ("Batch size", "B"): within(1e-9, 50_000.0),
    ("Batch size", "C"): positive,
    ("Errors by stage", "A"): errors_by_stage,
    ("Time spent throttled", "A"): within(0.0, 1.0),
    ("Leader by replica", "A"): this_replica_leads,
    ("Leader by replica", "B"): at_least(0.0),
    # A fresh bridge on fresh topics has nothing to skip.
    ("Rows skipped on recovery", "A"): exactly(0.0),
    # The leader stamps progress on every commit and every empty poll (0.2 s apart here).
    ("No progress: time since the last commit or empty poll", "A"): within(0.0, 30.0),
    # The simulator advertises PyPI's quota in RateLimit headers.
    ("PyPI quota", "A"): at_least(0.0),
    ("PyPI quota", "B"): positive,
    ("PyPI quota", "C"): at_least(0.0),
    ("CPU by replica", "A"): within(0.0, 4.0),
    ("Resident memory by replica", "A"): within(1e6, 2e9),
    ("Open file descriptors by replica", "A"): positive,
    ("Open file descriptors by replica", "B"): positive,
}


def dashboard_variables(stack: Stack) -> dict[str, str]:
    """Values for the dashboard's own variables: this job and this bridge, as Grafana would
    write a single selected value into a regex matcher."""
    instance = urlsplit(stack.bridge).netloc
    return {
        "datasource": "unused",
        "job": re.escape(JOB).replace("\\", "\\\\"),
        "instance": re.escape(instance).replace("\\", "\\\\"),
        "__rate_interval": RATE_INTERVAL,
    }


# --- tests -----------------------------------------------------------------------------------


def test_every_dashboard_query_has_a_plausibility_check() -> None:
    queries = panel_queries(load_dashboard(), {"job": ".*", "instance": ".*"})
    assert {(q.panel, q.ref_id) for q in queries} == set(PANEL_CHECKS)


def test_prometheus_config_with_the_rule_file_passes_promtool_check(stack: Stack) -> None:
    result = subprocess.run(
        [promtool(), "check", "config", str(stack.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_committed_serial_reaches_the_simulator_head(stack: Stack, caught_up: int) -> None:
    samples = stack.query(f'max(pypi_bridge_committed_serial{{job="{JOB}"}})')
    now = Round(caught_up, stack.simulator_last_serial())
    assert serial_seen(samples, now) is None, serial_seen(samples, now)


def test_prometheus_scrapes_the_bridge_without_error(stack: Stack, caught_up: int) -> None:
    targets = [t for t in stack.api("targets")["activeTargets"] if t["labels"]["job"] == JOB]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]


def test_every_dashboard_query_answers_plausibly(stack: Stack, caught_up: int) -> None:
    queries = panel_queries(load_dashboard(), dashboard_variables(stack))
    deadline = time.monotonic() + PANELS_TIMEOUT
    while True:
        answers = {(q.panel, q.ref_id): (q.expr, stack.query(q.expr)) for q in queries}
        # The head after the queries, so it bounds every serial they returned.
        now = Round(caught_up, stack.simulator_last_serial())
        problems = []
        for key, (expr, answer) in answers.items():
            samples = answer
            if "histogram_quantile" in expr:
                # A quantile is NaN for a series without observations in the window (a method
                # not called lately); Grafana leaves a gap. The others must be numbers.
                samples = [s for s in answer if not math.isnan(s.value)]
            if not samples:
                problem: str | None = "no data" if not answer else f"only NaN: {_values(answer)}"
            elif not all(math.isfinite(s.value) for s in samples):
                problem = f"not a number: {_values(samples)}"
            else:
                problem = PANEL_CHECKS[key](samples, now)
            if problem is not None:
                problems.append(f"{key[0]} [{key[1]}]: {problem}\n    {expr}")
        if not problems:
            return
        if time.monotonic() > deadline:
            pytest.fail("implausible panels:\n" + "\n".join(problems), pytrace=False)
        time.sleep(1.0)


def test_prometheus_evaluates_every_alert_rule_without_error(stack: Stack, caught_up: int) -> None:
    expected = {rule["alert"] for rule in load_rules()}

    def evaluated() -> dict[str, tuple[str, str]] | None:
        rules = {
            rule["name"]: (rule["health"], rule.get("lastError", ""))
            for group in stack.api("rules", type="alert")["groups"]
            for rule in group["rules"]
        }
        return rules if all(health != "unknown" for health, _ in rules.values()) else None

    rules = wait_for("every rule's first evaluation", evaluated, 10.0, stack.services)
    assert set(rules) == expected
    assert {name: state for name, state in rules.items() if state != ("ok", "")} == {}


def test_no_availability_alert_is_active_on_a_healthy_bridge(stack: Stack, caught_up: int) -> None:
    active = {alert["labels"]["alertname"] for alert in stack.api("alerts")["alerts"]}
    assert active & QUIET_ON_A_HEALTHY_BRIDGE == set()
