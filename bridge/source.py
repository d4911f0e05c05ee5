"""Source: the one place that talks to PyPI (XML-RPC over aiohttp).

Keeps PyPI's rules: a minimum interval between calls, a User-Agent naming the project and the
operator's contact, throttling faults (HTTP 200, fault -32500 `HTTPTooManyRequests ... Limit may
reset in N seconds`) answered by waiting N seconds, transient failures (5xx, time-outs, resets,
truncated or malformed bodies) retried with exponential backoff and full jitter, and faults that
no retry can fix (-32601, -32602, -32700) raised at once as one clear line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import TypeVar

import aiohttp

from bridge import __version__
from bridge.config import SourceSettings
from bridge.errors import SourceError, SourceFault, Throttled, TransientSourceError
from bridge.metrics import Metrics
from bridge.parse import Row
from bridge.xmlrpc import XmlRpcFault, decode_changelog, decode_response, encode_call

log = logging.getLogger(__name__)

#: PyPI's cap on rows per `changelog_since_serial` call; nothing in a reply says it was reached.
PAGE_CAP = 50_000
_RESET_IN = re.compile(r"Limit may reset in (\d+(?:\.\d+)?) seconds?")
_FIXES = {
    -32601: "the server does not offer this method: check that --pypi-url is PyPI's /pypi endpoint",
    -32602: "the call's arguments were refused: this is a bridge bug, please report it",
    -32700: "the server could not read the request: check that --pypi-url is an XML-RPC endpoint",
}
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


def user_agent(contact: str) -> str:
    """PyPI asks heavy clients to say who they are and how to reach them."""
    agent = f"pypi-kafka-bridge/{__version__} aiohttp/{aiohttp.__version__}"
    return f"{agent} (contact: {contact})" if contact else agent


def throttle_delay(message: str) -> float | None:
    """Seconds to wait from a throttling fault's message, or None if it is not one."""
    if "HTTPTooManyRequests" not in message:
        return None
    found = _RESET_IN.search(message)
    return max(1.0, float(found.group(1))) if found else 60.0


def classify_fault(fault: XmlRpcFault) -> SourceError:
    """Turn an XML-RPC fault into the error that says what to do about it."""
    delay = throttle_delay(fault.message)
    if delay is not None:
        return Throttled(delay, fault.message)
    if fault.code in _FIXES:
        return SourceFault(fault.code, fault.message, _FIXES[fault.code])
    # -32500 wraps server-side errors (`ValueError: ...`, `RuntimeError: ...`): often passing.
    return TransientSourceError(f"PyPI answered with fault {fault.code}: {fault.message}", "fault")


class Backoff:
    """Exponential backoff with full jitter: 0..min(cap, base * 2**attempt) seconds."""

    def __init__(self, base: float = 0.5, cap: float = 60.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class PyPIClient:
    """Async client for PyPI's three mirroring methods; use as `async with PyPIClient(...)`."""

    def __init__(
        self,
        settings: SourceSettings,
        metrics: Metrics | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._sleep = sleep
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._last_call = float("-inf")
        # Calls may be started by concurrent tasks (the next page, the head lookup): one at a
        # time through the pacing gate, so they stay --min-request-interval apart.
        self._pacing = asyncio.Lock()
        self._backoff = Backoff(cap=settings.max_backoff)
        #: Highest serial PyPI has shown us (from rows or from changelog_last_serial).
        self.head_serial: int | None = None

    async def __aenter__(self) -> PyPIClient:
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": user_agent(self.settings.contact), "Content-Type": "text/xml"},
            timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout),
            # A fresh connection per failure keeps a half-dead CDN socket from being reused.
            connector=aiohttp.TCPConnector(limit=1, enable_cleanup_closed=True),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the three methods ------------------------------------------------------------------

    async def last_serial(self) -> int | None:
        """The journal's newest serial (`changelog_last_serial`), None on an empty journal."""
        value = await self._call("changelog_last_serial", (), decode_response)
        if value is not None and not isinstance(value, int):
            raise TransientSourceError(f"changelog_last_serial returned {value!r}", "malformed")
        self._note_head(value)
        return value

    async def changelog_since(
        self, serial: int, *, decode_after: asyncio.Event | None = None
    ) -> list[Row]:
        """One page (at most 50,000 rows) of journal rows with serial greater than `serial`.

        With `decode_after`, the response is read at once but decoded only once the event is
        set, so a page read ahead holds its body (~14 MB), not its decoded rows, meanwhile.
        """
        rows = await self._call(
            "changelog_since_serial", (serial,), decode_changelog, decode_after=decode_after
        )
        if rows:
            self._note_head(rows[-1][4])
        return rows

    async def pages_since(
        self, serial: int, stop_at: int | None = None
    ) -> AsyncIterator[list[Row]]:
        """Every row after `serial`, page by page, until a call returns nothing new."""
        cursor = serial
        while stop_at is None or cursor < stop_at:
            page = await self.changelog_since(cursor)
            if not page:
                return
            yield page
            cursor = page[-1][4]

    async def list_packages_with_serial(self) -> dict[str, int]:
        """Every project's display name and last serial (slow; may lag the journal)."""
        value = await self._call("list_packages_with_serial", (), decode_response)
        if not isinstance(value, dict):
            raise TransientSourceError(
                "list_packages_with_serial did not return a struct", "malformed"
            )
        return value

    # --- one call, with pacing, retries and metrics -----------------------------------------

    def _note_head(self, serial: int | None) -> None:
        if serial is not None and (self.head_serial is None or serial > self.head_serial):
            self.head_serial = serial
            if self.metrics is not None:
                self.metrics.source_head_serial.set(serial)

    def _count(self, method: str, outcome: str, seconds: float | None = None) -> None:
        if self.metrics is None:
            return
        self.metrics.source_requests.labels(method, outcome).inc()
        if seconds is not None:
            self.metrics.source_request_duration.labels(method).observe(seconds)

    async def _pace(self) -> None:
        async with self._pacing:
            wait = self._last_call + self.settings.min_request_interval - self._clock()
            if wait > 0:
                await self._sleep(wait)
            self._last_call = self._clock()

    async def _call(
        self,
        method: str,
        params: Sequence[int | str],
        decode: Callable[[bytes], T],
        *,
        decode_after: asyncio.Event | None = None,
    ) -> T:
        """Call `method` until it succeeds or fails in a way retrying cannot fix."""
        body = encode_call(method, params)
        while True:
            await self._pace()
            started = self._clock()
            try:
                payload = await self._post(body)
                seconds = self._clock() - started
                if decode_after is not None:
                    await decode_after.wait()
                result = decode(payload)
            except XmlRpcFault as fault:
                error: SourceError = classify_fault(fault)
            except SourceError as exc:
                error = exc
            else:
                self._count(method, "ok", seconds)
                self._backoff.reset()
                return result
            await self._handle_failure(method, error, self._clock() - started)

    async def _handle_failure(self, method: str, error: SourceError, seconds: float) -> None:
        if isinstance(error, Throttled):
            self._count(method, "throttled", seconds)
            log.warning(
                "PyPI is throttling %s: waiting %.0f s as it asks", method, error.retry_after
            )
            if self.metrics is not None:
                self.metrics.source_throttled_seconds.inc(error.retry_after)
                self.metrics.errors.labels("source").inc()
            # Jitter keeps several bridges behind one address from retrying in lockstep.
            await self._sleep(error.retry_after + random.uniform(0, 0.25))
            return
        if isinstance(error, TransientSourceError):
            self._count(method, error.outcome, seconds)
            if self.metrics is not None:
                self.metrics.errors.labels("source").inc()
            delay = self._backoff.next_delay()
            log.warning(
                "%s failed (%s, attempt %d): retrying in %.1f s",
                method,
                error,
                self._backoff.attempt,
                delay,
            )
            await self._sleep(delay)
            return
        self._count(method, "fault", seconds)
        if self.metrics is not None:
            self.metrics.errors.labels("source").inc()
        raise error

    async def _post(self, body: bytes) -> bytes:
        """POST one request; map every transport failure to a SourceError."""
        if self._session is None:
            raise RuntimeError("PyPIClient used outside `async with`")
        url = self.settings.pypi_url
        try:
            async with self._session.post(url, data=body) as response:
                payload = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            raise TransientSourceError(
                f"no answer from {url} within {self.settings.request_timeout:g} s", "timeout"
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise TransientSourceError(
                f"truncated response from {url}: {exc}", "malformed"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise TransientSourceError(
                f"cannot connect to {url}: {exc.os_error}", "connection"
            ) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientSourceError(
                f"connection to {url} failed: {type(exc).__name__}: {exc}", "connection"
            ) from None
        return self._check_status(url, status, payload, retry_after)

    @staticmethod
    def _check_status(url: str, status: int, payload: bytes, retry_after: str | None) -> bytes:
        if status == 200:
            return payload
        if status == 429:
            try:
                delay = max(1.0, float(retry_after or 60))
            except ValueError:
                delay = 60.0
            raise Throttled(delay, f"HTTP 429 from {url}")
        if status >= 500 or status == 408:
            raise TransientSourceError(f"HTTP {status} from {url}", "http_error")
        if status == 404:
            raise SourceError(
                f"HTTP 404 from {url}: no XML-RPC endpoint there",
                "check --pypi-url (PyPI's is https://pypi.org/pypi)",
            )
        raise SourceError(
            f"HTTP {status} from {url}",
            "check --pypi-url and that this client is allowed to call it",
        )
