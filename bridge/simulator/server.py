"""The XML-RPC server: PyPI's three mirroring methods on `/pypi`, with its faults and rate limit.

It answers as JOURNAL.md says PyPI does: POST only, the silent page cap, nil for an empty journal,
faults with PyPI's codes and texts, and a per-client-IP moving-window limit whose refusals are
HTTP 200 with fault -32500 `HTTPTooManyRequests: ... Limit may reset in N seconds.`. Every
answer advertises the limit in the rate-limit headers of draft-ietf-httpapi-ratelimit-headers-10,
as PyPI does since June 2026:

    RateLimit-Policy: "pypi-xmlrpc";q=3600;w=3600
    RateLimit: "pypi-xmlrpc";r=3599;t=3600

(`q` the quota, `w` the window in seconds, `r` the calls remaining, `t` the seconds until the
oldest counted call leaves the window), or in the older `RateLimit-Limit`, `RateLimit-Remaining`
and `RateLimit-Reset` fields, or not at all (`--rate-limit-headers`). Faults can be injected at
random (`--fault-rate`) or queued through the control API (`bridge.simulator.control`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import struct
import time
import xmlrpc.client
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from xml.parsers.expat import ExpatError

from aiohttp import web

from bridge.errors import BridgeError
from bridge.simulator.control import add_control_routes
from bridge.simulator.journal import NIL_VALUE, Journal, xml_escape
from bridge.simulator.settings import SimulatorSettings

log = logging.getLogger("bridge.simulator")

XMLRPC_PATH = "/pypi"
#: The name of the one quota policy, as the draft-10 fields carry it.
RATE_LIMIT_POLICY = "pypi-xmlrpc"


# --- XML-RPC encoding ------------------------------------------------------------------------

_RESPONSE_HEAD = b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
_RESPONSE_TAIL = b"</param>\n</params>\n</methodResponse>\n"
_XML_TYPE = "text/xml; charset=utf-8"
# What xmlrpc.client.loads raises on a body that is not an XML-RPC call.
_UNPARSABLE = (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError, KeyError, IndexError)


def _response_body(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return b"".join((_RESPONSE_HEAD, value, _RESPONSE_TAIL))


_ROWS_HEAD = _RESPONSE_HEAD + b"<value><array><data>\n"
_ROWS_TAIL = b"</data></array></value>\n" + _RESPONSE_TAIL


def _fault_body(code: int, message: str) -> bytes:
    return (
        "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n"
        f"<name>faultCode</name>\n<value><int>{code}</int></value>\n</member>\n<member>\n"
        f"<name>faultString</name>\n<value><string>{xml_escape(message)}</string></value>\n"
        "</member>\n</struct></value>\n</fault>\n</methodResponse>\n"
    ).encode()


def _struct_body(members: dict[str, int]) -> bytes:
    parts = ["<value><struct>\n"]
    for name, serial in members.items():
        parts.append(
            f"<member>\n<name>{xml_escape(name)}</name>\n<value><int>{serial}</int></value>\n"
            "</member>\n"
        )
    parts.append("</struct></value>\n")
    return _response_body("".join(parts))


class _Fault(BridgeError):
    """Answer the call with an XML-RPC fault (internal control flow, never leaves the module)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- the rate limit --------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """A client's quota as one answer advertises it."""

    #: Calls allowed per window, and the window in whole seconds; None when no limit is set.
    limit: int | None
    window: int | None
    #: Calls left in the window after this one, and whole seconds until one more is allowed.
    remaining: int
    reset: int


class MovingWindow:
    """Per-client moving-window limiter; refused calls do not use up the window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def hit(self, client: str) -> tuple[bool, Quota]:
        """Count a call by `client` if the window has room: (allowed, what the quota is now)."""
        now = time.monotonic()
        hits = self._hits.setdefault(client, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        allowed = len(hits) < self.limit
        if allowed:
            hits.append(now)
        reset = max(1, math.ceil(hits[0] + self.window - now))
        return allowed, self.refusal(self.limit - len(hits), reset)

    def refusal(self, remaining: int, reset: int) -> Quota:
        """The quota with `remaining` calls left for `reset` seconds (the window rounded up)."""
        return Quota(self.limit, math.ceil(self.window), remaining, reset)


def rate_limit_headers(style: str, quota: Quota) -> dict[str, str]:
    """The header fields that advertise `quota` in `style` (see `RATE_LIMIT_HEADERS`).

    draft-10 sends two structured-field lists of one item each, the policy named by a string
    with the quota (`q`) and window (`w`), and the service limit with the calls remaining (`r`)
    and the seconds until more are allowed (`t`); legacy sends the three integer fields of the
    draft's revisions 00 to 06.
    """
    headers: dict[str, str] = {}
    if style == "draft-10":
        item = f'"{RATE_LIMIT_POLICY}"'
        if quota.limit is not None:
            headers["RateLimit-Policy"] = f"{item};q={quota.limit};w={quota.window}"
        headers["RateLimit"] = f"{item};r={quota.remaining};t={quota.reset}"
    elif style == "legacy":
        if quota.limit is not None:
            headers["RateLimit-Limit"] = str(quota.limit)
        headers["RateLimit-Remaining"] = str(quota.remaining)
        headers["RateLimit-Reset"] = str(quota.reset)
    return headers


# --- faults ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Injected:
    """One fault to answer a call with (queued through the control API or drawn at random)."""

    kind: str
    retry_after: int = 1
    code: int = -32500
    message: str = "RuntimeError: simulated failure"


_THROTTLE_TEXT = (
    "HTTPTooManyRequests: The action could not be performed because there were too many "
    "requests by the client. Limit may reset in {} seconds."
)
_HTML_ERRORS = {
    "502": (502, "Bad Gateway"),
    "503": (503, "Service Unavailable"),
}


def _no_arguments(params: tuple[Any, ...]) -> None:
    if params:
        raise _Fault(-32602, "client error; this method takes no arguments")


def _drop(request: web.Request, *, reset: bool) -> None:
    """Close the client's connection now: after what was written, or at once with a TCP RST."""
    transport = request.transport
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


# --- the server ------------------------------------------------------------------------------


class Simulator:
    """The running server's state: journal, limiter, counters, queued faults, live rate."""

    def __init__(self, settings: SimulatorSettings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal
        self.limiter = (
            MovingWindow(settings.rate_limit, settings.rate_limit_window)
            if settings.rate_limit
            else None
        )
        self.rate = settings.rate
        self.rate_changed = asyncio.Event()
        self.calls = 0
        self.throttled = 0
        self.faults: dict[str, int] = {}
        self.queued: deque[Injected] = deque()
        self._chaos = random.Random(f"faults-{settings.seed}")
        self._timing = random.Random(f"timing-{settings.seed}")

    def queue(self, count: int, kind: str, retry_after: int, code: int, message: str) -> int:
        """Answer the next `count` calls with a fault of `kind`; returns how many are queued.

        A throttle says to retry after `retry_after` seconds; a fault carries `code` and
        `message`.
        """
        self.queued.extend([Injected(kind, retry_after, code, message)] * count)
        return len(self.queued)

    def set_rate(self, rate: float) -> None:
        """Append live rows at `rate` a second from now on."""
        self.rate = rate
        self.rate_changed.set()

    # ---- XML-RPC

    async def xmlrpc(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.read()
        if self.settings.latency:
            await asyncio.sleep(self.settings.latency)
        injected = self.queued.popleft() if self.queued else None
        allowed, quota = self._count(request.remote or "", injected)
        headers = (
            {} if quota is None else rate_limit_headers(self.settings.rate_limit_headers, quota)
        )
        if injected is not None:
            return await self._inject(request, injected, headers)
        if not allowed and quota is not None:
            return self._throttle(quota.reset, headers)
        if self.settings.fault_rate and self._chaos.random() < self.settings.fault_rate:
            kind = self._chaos.choice(self.settings.faults)
            return await self._inject(request, Injected(kind), headers)
        try:
            answer = self._call(request, body)
        except _Fault as fault:
            answer = _fault_body(fault.code, fault.message)
        return web.Response(body=answer, headers=headers, content_type="text/xml", charset="utf-8")

    def _count(self, client: str, injected: Injected | None) -> tuple[bool, Quota | None]:
        """Count the call against the client's window: (allowed, the quota to advertise)."""
        limiter = self.limiter
        if injected is not None and injected.kind == "throttle":
            # A forced refusal uses nothing up, and says to come back when it was told to.
            if limiter is None:
                return False, Quota(None, None, 0, injected.retry_after)
            return False, limiter.refusal(0, injected.retry_after)
        if limiter is None:
            return True, None
        return limiter.hit(client)

    def _call(self, request: web.Request, body: bytes) -> bytes:
        if request.method != "POST" or request.content_type != "text/xml":
            raise _Fault(-32500, "application error")
        if b"<!DOCTYPE" in body.upper():
            # Entity tricks have no place in XML-RPC; refuse them before the parser sees them.
            raise _Fault(-32700, "parse error. not well formed")
        try:
            # Requests come from test and demo clients; DOCTYPEs were refused above.
            params, method = xmlrpc.client.loads(body)
        except _UNPARSABLE as exc:
            raise _Fault(-32700, "parse error. not well formed") from exc
        if method is None:
            raise _Fault(-32700, "parse error. not well formed")
        journal = self.journal
        if method == "changelog_last_serial":
            _no_arguments(params)
            last = journal.last_serial
            value = NIL_VALUE if last is None else f"<value><int>{last}</int></value>\n"
            return _response_body(value)
        if method == "changelog_since_serial":
            if len(params) != 1:
                problem = "Missing required argument" if not params else "Unexpected argument"
                raise _Fault(-32602, f"client error; serial: {problem}")
            serial = params[0]
            if not isinstance(serial, int) or isinstance(serial, bool):
                raise _Fault(-32602, "client error; serial: Input should be a valid integer")
            return journal.page(serial, self.settings.page_size, _ROWS_HEAD, _ROWS_TAIL)
        if method == "list_packages_with_serial":
            _no_arguments(params)
            return _struct_body(journal.packages())
        raise _Fault(-32601, "server error; requested method not found")

    def _throttle(self, retry_after: int, headers: dict[str, str]) -> web.Response:
        self.throttled += 1
        body = _fault_body(-32500, _THROTTLE_TEXT.format(max(1, retry_after)))
        return web.Response(body=body, headers=headers, content_type="text/xml", charset="utf-8")

    async def _inject(
        self, request: web.Request, fault: Injected, headers: dict[str, str]
    ) -> web.StreamResponse:
        kind = fault.kind
        self.faults[kind] = self.faults.get(kind, 0) + 1
        log.debug("injecting fault %s", kind)
        if kind == "throttle":
            return self._throttle(fault.retry_after, headers)
        if kind == "fault":
            body = _fault_body(fault.code, fault.message)
            return web.Response(
                body=body, headers=headers, content_type="text/xml", charset="utf-8"
            )
        if kind in _HTML_ERRORS:
            status, reason = _HTML_ERRORS[kind]
            page = (
                f"<html><head><title>{status} {reason}</title></head><body>"
                f"<h1>Error {status} {reason}</h1><p>{reason}</p><hr>"
                "<p>pypi-bridge simulator cache server</p></body></html>\n"
            )
            return web.Response(status=status, text=page, headers=headers, content_type="text/html")
        if kind == "malformed":
            garbage = b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<par\xff\xfe\x00am><v"
            return web.Response(
                body=garbage, headers=headers, content_type="text/xml", charset="utf-8"
            )
        if kind == "truncate":
            full = self.journal.page(-1, min(self.settings.page_size, 200), _ROWS_HEAD, _ROWS_TAIL)
            response = web.StreamResponse(headers={**headers, "Content-Type": _XML_TYPE})
            response.content_length = len(full)
            await response.prepare(request)
            await response.write(full[: len(full) // 2])
            _drop(request, reset=False)
            return response
        if kind == "timeout":
            await asyncio.sleep(self.settings.hang)
        _drop(request, reset=True)
        return web.Response()

    # ---- live traffic

    async def live(self) -> None:
        """Append transactions at `rate` rows per second on average, each one a burst."""
        stop = self.settings.stop_after_rows
        burst = 1
        while True:
            self.rate_changed.clear()
            if self.rate <= 0 or (stop is not None and self.journal.rows >= stop):
                await self.rate_changed.wait()
                continue
            # Poisson arrivals of transactions: the mean gap keeps the mean row rate.
            delay = burst / self.rate * self._timing.expovariate(1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.rate_changed.wait(), delay)
            if self.rate_changed.is_set():
                continue  # start over at the new rate
            remaining = None if stop is None else stop - self.journal.rows
            burst = max(1, self.journal.append_burst(remaining))


SIMULATOR = web.AppKey("simulator", Simulator)


def prefilled_journal(settings: SimulatorSettings) -> Journal:
    """A new journal holding `settings.prefill` rows (a million take a few seconds)."""
    journal = settings.new_journal()
    started = time.perf_counter()
    journal.append(settings.prefill)
    if settings.prefill:
        log.info(
            "prefilled %d rows (serials %s to %s) in %.1f s",
            journal.rows,
            settings.first_serial,
            journal.last_serial,
            time.perf_counter() - started,
        )
    return journal


def simulator_app(settings: SimulatorSettings, journal: Journal | None = None) -> web.Application:
    """The simulator as an aiohttp application; prefills a new journal if none is given.

    Serves XML-RPC on `/pypi` and the JSON control API under `/_sim/`, and appends live rows
    at `settings.rate` while it runs.
    """
    if journal is None:
        journal = prefilled_journal(settings)
    simulator = Simulator(settings, journal)
    app = web.Application()
    app[SIMULATOR] = simulator
    app.router.add_route("*", XMLRPC_PATH, simulator.xmlrpc)
    add_control_routes(app, simulator)

    async def live_rows(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(simulator.live())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(live_rows)
    return app


@dataclass(frozen=True)
class RunningSimulator:
    """A simulator serving on a real socket."""

    url: str
    journal: Journal
    app: web.Application


@contextlib.asynccontextmanager
async def running_simulator(
    settings: SimulatorSettings, journal: Journal | None = None
) -> AsyncIterator[RunningSimulator]:
    """Serve the simulator on `settings.host`/`port` until the block exits."""
    if journal is None:
        # In a thread: whatever else shares this event loop keeps running during a long prefill.
        journal = await asyncio.to_thread(prefilled_journal, settings)
    app = simulator_app(settings, journal)
    # Cancel a handler whose client went away (a hung 'timeout' call must not outlive it),
    # and do not wait long for calls in flight at shutdown.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        bound = runner.addresses[0]
        host = settings.host
        if host in ("0.0.0.0", ""):  # noqa: S104 - mapping a wildcard to a reachable address
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        yield RunningSimulator(
            f"http://{host}:{bound[1]}{XMLRPC_PATH}", app[SIMULATOR].journal, app
        )
    finally:
        await runner.cleanup()


async def serve(settings: SimulatorSettings, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the simulator until cancelled; `on_ready` gets the XML-RPC URL once it listens."""
    async with running_simulator(settings) as running:
        journal = running.journal
        log.info(
            "PyPI simulator serving %s (%d rows, last serial %s, %.2f live rows/s)",
            running.url,
            journal.rows,
            journal.last_serial,
            settings.rate,
        )
        if on_ready is not None:
            on_ready(running.url)
        await asyncio.Event().wait()
