"""Prometheus metrics and the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`).

All names start with `pypi_bridge_`; counters end in `_total`; times are in seconds. Every
replica exports them, leader and standbys alike, so a dashboard sees the whole deployment.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from bridge import __version__
from bridge.errors import BridgeError, ConfigError

log = logging.getLogger(__name__)

#: Outcomes of one call to PyPI, the `outcome` label of `pypi_bridge_source_requests_total`.
SOURCE_OUTCOMES = (
    "ok",
    "throttled",
    "http_error",
    "timeout",
    "connection",
    "malformed",
    "refused",
    "too_large",
    "fault",
)
#: Stages of the data path, the `stage` label of `pypi_bridge_errors_total`.
STAGES = ("source", "parse", "sink", "checkpoint", "leadership")
DELIVERY_MODES = ("transactional", "high-water")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The bridge's metrics, on a registry of their own (so tests can run several bridges)."""

    def __init__(self, replica_id: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # CPU, resident memory and open file descriptors of this process (process_*), and the
        # Python runtime (python_info): the dashboard charts them beside the bridge's own.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.events_published = Counter(
            "pypi_bridge_events_published_total",
            "Events committed to Kafka, by event type.",
            ["type"],
            registry=r,
        )
        self.committed_serial = Gauge(
            "pypi_bridge_committed_serial",
            "Highest journal serial whose event is committed to Kafka.",
            registry=r,
        )
        self.source_head_serial = Gauge(
            "pypi_bridge_source_head_serial",
            "Highest journal serial PyPI has shown this replica.",
            registry=r,
        )
        self.committed_timestamp = Gauge(
            "pypi_bridge_committed_timestamp_seconds",
            "Journal timestamp (POSIX seconds) of the last committed entry.",
            registry=r,
        )
        self.last_commit_time = Gauge(
            "pypi_bridge_last_commit_time_seconds",
            "Wall-clock time (POSIX seconds) of the last commit, or of the last poll that "
            "found nothing new.",
            registry=r,
        )
        self.leader = Gauge(
            "pypi_bridge_leader",
            "1 while this replica is the leader, 0 while it stands by.",
            ["replica"],
            registry=r,
        )
        self.leader_transitions = Counter(
            "pypi_bridge_leader_transitions_total",
            "Times this replica became leader.",
            registry=r,
        )
        self.delivery_mode = Gauge(
            "pypi_bridge_delivery_mode",
            "1 for the exactly-once mechanism in use (transactional or high-water).",
            ["mode"],
            registry=r,
        )
        self.source_requests = Counter(
            "pypi_bridge_source_requests_total",
            "Calls to PyPI's XML-RPC API, by method and outcome.",
            ["method", "outcome"],
            registry=r,
        )
        self.source_request_duration = Histogram(
            "pypi_bridge_source_request_duration_seconds",
            "Time taken by one call to PyPI, by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.source_throttled_seconds = Counter(
            "pypi_bridge_source_throttled_seconds_total",
            "Seconds spent waiting because PyPI throttled this client.",
            registry=r,
        )
        self.source_rows_dropped = Counter(
            "pypi_bridge_source_rows_dropped_total",
            "Rows PyPI returned at or below the serial asked for (dropped, never published).",
            registry=r,
        )
        self.source_refusals = Gauge(
            "pypi_bridge_source_consecutive_refusals",
            "Answers in a row refused for breaking the journal's contract (0 after a good one).",
            registry=r,
        )
        self.source_quota_limit = Gauge(
            "pypi_bridge_source_quota_limit",
            "Calls PyPI allows per window (RateLimit-Policy), the tightest policy; "
            "NaN until PyPI says.",
            registry=r,
        )
        self.source_quota_remaining = Gauge(
            "pypi_bridge_source_quota_remaining",
            "Calls PyPI still allows in its current window (RateLimit); NaN until PyPI says.",
            registry=r,
        )
        self.source_quota_reset = Gauge(
            "pypi_bridge_source_quota_reset_seconds",
            "Seconds until PyPI's current rate-limit window resets, as of the last answer.",
            registry=r,
        )
        self.commit_duration = Histogram(
            "pypi_bridge_commit_duration_seconds",
            "Time to publish one batch of events with its checkpoint.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "pypi_bridge_batch_rows",
            "Journal rows per committed batch.",
            buckets=(1, 10, 100, 1000, 5000, 10000, 25000, 50000),
            registry=r,
        )
        self.duplicates_skipped = Counter(
            "pypi_bridge_recovery_skipped_total",
            "Rows not re-sent on recovery because their event had already landed.",
            registry=r,
        )
        self.errors = Counter(
            "pypi_bridge_errors_total",
            "Errors by stage of the data path (each one logged).",
            ["stage"],
            registry=r,
        )
        self.build_info = Gauge(
            "pypi_bridge_build_info",
            "Always 1; labels carry the version and runtime.",
            ["version", "python", "replica"],
            registry=r,
        )
        self.replica_id = replica_id
        self.build_info.labels(__version__, platform.python_version(), replica_id).set(1)
        self.leader.labels(replica_id).set(0)
        for stage in STAGES:
            self.errors.labels(stage)
        for mode in DELIVERY_MODES:
            self.delivery_mode.labels(mode).set(0)
        for gauge in (self.source_quota_limit, self.source_quota_remaining):
            gauge.set(float("nan"))
        self.source_quota_reset.set(float("nan"))

    def set_leader(self, leading: bool) -> None:
        self.leader.labels(self.replica_id).set(1 if leading else 0)
        if leading:
            self.leader_transitions.inc()

    def set_delivery_mode(self, mode: str) -> None:
        for known in DELIVERY_MODES:
            self.delivery_mode.labels(known).set(1 if known == mode else 0)

    def mark_progress(self) -> None:
        self.last_commit_time.set(time.time())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Health:
    """What `/healthz` and `/readyz` report; the run loop keeps it current.

    `/healthz` answers 200 while the process's event loop turns (a hung loop cannot answer).
    `/readyz` answers 200 once this replica has reached Kafka and is leading or standing by,
    and 503 while it cannot reach the broker, or while the source keeps sending answers that
    break the journal's contract (`source_problem`).
    """

    broker_reachable: bool = False
    role: str = "starting"
    detail: str = "starting"
    #: Set while PyPI's answers keep being refused (see bridge/rows.py); None when all is well.
    source_problem: str | None = None

    @property
    def ready(self) -> bool:
        return (
            self.broker_reachable
            and self.role in ("leader", "standby")
            and self.source_problem is None
        )


def http_app(metrics: Metrics, health: Health | Callable[[], Health]) -> web.Application:
    """The aiohttp application serving the three endpoints."""

    def current() -> Health:
        return health() if callable(health) else health

    async def metrics_handler(_: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "role": current().role})

    async def readyz(_: web.Request) -> web.Response:
        state = current()
        detail = state.detail if state.source_problem is None else state.source_problem
        body = {"ready": state.ready, "role": state.role, "detail": detail}
        return web.json_response(body, status=200 if state.ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_http(
    metrics: Metrics, health: Health | Callable[[], Health], host: str, port: int
) -> tuple[web.AppRunner, int]:
    """Serve the endpoints; returns the runner (to clean up) and the port actually bound.

    A port already in use raises `BridgeError`; a host that is not an address of this machine
    (or does not resolve) raises `ConfigError`: one line each, naming the fix.
    """
    runner = web.AppRunner(http_app(metrics, health), access_log=None, logger=_http_log)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise _cannot_serve(host, port, exc) from None
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    log.info("metrics and health on http://%s:%d (/metrics, /healthz, /readyz)", host, bound)
    return runner, bound


def _cannot_serve(host: str, port: int, exc: OSError) -> BridgeError:
    """Why the endpoints could not be bound, as one line naming the flag to change."""
    # aiohttp rewrites strerror into a sentence of its own; the errno says it shorter (a
    # resolver error has a negative errno and its own strerror).
    reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror or str(exc)
    if isinstance(exc, socket.gaierror):
        return ConfigError(
            f"--http-host {host!r} does not resolve to an address ({reason})",
            "pass an address of this machine, e.g. 0.0.0.0 (every interface) or 127.0.0.1",
        )
    if exc.errno == errno.EADDRINUSE:
        return BridgeError(
            f"cannot serve /metrics, /healthz and /readyz: port {port} on {host} is already in "
            "use (by another replica or program)",
            "stop that process, or pass another --http-port (0 picks a free one)",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            f"--http-host {host!r} is not an address of this machine ({reason})",
            "pass an address of this machine, e.g. 0.0.0.0 (every interface) or 127.0.0.1",
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"not allowed to listen on port {port} of {host} ({reason})",
            "pass an --http-port of 1024 or more",
        )
    return BridgeError(
        f"cannot serve /metrics, /healthz and /readyz on {host}:{port}: {reason}",
        "check --http-host and --http-port",
    )


class _QuietBadRequests(logging.Filter):
    """Malformed requests are one DEBUG line each, never a traceback.

    aiohttp answers them 400 (garbage, a huge header, TLS or another protocol on this port) and
    logs each with its traceback at ERROR; anyone who reaches the port could flood the log. An
    error raised inside a handler (a bug) keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError | ConnectionError):
            return True
        detail = error.message if isinstance(error, HttpProcessingError) else str(error)
        # repr: the request's own bytes may be in the message, control characters included.
        record.args = (record.getMessage(), type(error).__name__, detail)
        record.msg = "%s: %s %.200r"
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return _http_log.isEnabledFor(logging.DEBUG)


#: The logger aiohttp's server writes to for the endpoints (instead of `aiohttp.server`).
_http_log = logging.getLogger(f"{__name__}.http")
_http_log.addFilter(_QuietBadRequests())
