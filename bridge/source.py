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
import math
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from types import TracebackType
from typing import TypeVar

import aiohttp

from bridge import __version__
from bridge.config import SourceSettings
from bridge.errors import ConfigError, SourceError, SourceFault, Throttled, TransientSourceError
from bridge.metrics import Health, Metrics
from bridge.parse import Row
from bridge.quota import Quota
from bridge.rows import Page, RefusedPage, check_listing, check_page
from bridge.xmlrpc import (
    XmlRpcFault,
    decode_changelog,
    decode_response,
    encode_call,
    one_line,
)

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
    return server_wait(found.group(1) if found else None)


def server_wait(text: str | None) -> float:
    """Seconds a server asked us to wait, from its number; 60 when absent or unreadable.

    At least 1 s. An HTTP date, a negative or non-finite number all fall back to 60 s; the caller
    caps the result by --max-backoff.
    """
    try:
        delay = float(text) if text is not None else 60.0
    except ValueError:
        return 60.0
    return max(1.0, delay) if math.isfinite(delay) else 60.0


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
        # The exponent stops growing once the cap is reached: 2.0**1024 would overflow, and a
        # long outage does reach a thousand attempts.
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 64))
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
        health: Health | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        #: Told when answers keep being refused, so `/readyz` turns red (None: nobody listens).
        self.health = health
        #: Answers refused in a row for breaking the journal's contract.
        self.refusals = 0
        self._sleep = sleep
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._last_call = float("-inf")
        # Calls may be started by concurrent tasks (the next page, the head lookup): one at a
        # time through the pacing gate, so they stay --min-request-interval apart.
        self._pacing = asyncio.Lock()
        self._backoff = Backoff(cap=settings.max_backoff)
        self.quota = Quota(settings.max_backoff, clock)
        #: Highest serial PyPI has shown us (from rows or from changelog_last_serial).
        self.head_serial: int | None = None

    async def __aenter__(self) -> PyPIClient:
        if self.settings.proxy is not None:
            log.info(
                "reaching %s through the proxy %s (%s)",
                self.settings.pypi_url,
                self.settings.shown_proxy,
                self.settings.proxy_origin,
            )
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": user_agent(self.settings.contact), "Content-Type": "text/xml"},
            timeout=aiohttp.ClientTimeout(total=self.settings.request_timeout),
            # A fresh connection per failure keeps a half-dead CDN socket from being reused.
            connector=aiohttp.TCPConnector(
                limit=1, enable_cleanup_closed=True, ssl=tls_context(self.settings)
            ),
            # The proxy was resolved once at start from --pypi-proxy or HTTPS_PROXY, HTTP_PROXY
            # and NO_PROXY (bridge.config.pypi_proxy says why not aiohttp's trust_env, which
            # stays off: it would read the variables again, and ~/.netrc). Credentials in the
            # proxy URL become the Proxy-Authorization header, on the CONNECT for https://.
            proxy=self.settings.proxy,
            trust_env=False,
            # A huge header is refused by aiohttp's parser before it is held in memory.
            max_line_size=_MAX_HEADER_BYTES,
            max_field_size=_MAX_HEADER_BYTES,
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
        page = await self._call(
            "changelog_since_serial",
            (serial,),
            lambda body: check_page(decode_changelog(body), serial),
            decode_after=decode_after,
        )
        if page.dropped:
            self._report_dropped(serial, page)
        if page.rows:
            self._note_head(page.rows[-1][4])
        return page.rows

    def _report_dropped(self, serial: int, page: Page) -> None:
        low, high = page.dropped_range or (serial, serial)
        log.warning(
            "PyPI returned %d rows at or below serial %d (serials %d..%d), which "
            "changelog_since_serial(%d) must not: dropped them (already published)",
            page.dropped,
            serial,
            low,
            high,
            serial,
        )
        if self.metrics is not None:
            self.metrics.source_rows_dropped.inc(page.dropped)

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
        """Every project's display name and last serial (slow; may lag the journal).

        PyPI's answer is about 60 MB (some 700,000 projects), so this one call may read a
        multiple of `--max-response-bytes` (`SourceSettings.response_cap`). An answer that is
        not a struct of names to serials in the journal's range is refused and asked for again.
        """
        while True:
            value = await self._call("list_packages_with_serial", (), decode_response)
            problem = check_listing(value)
            if problem is None:
                assert isinstance(value, dict)
                return value
            self._count("list_packages_with_serial", "refused")
            delay = self._backoff.next_delay()
            log.warning(
                "%s: list_packages_with_serial %s; asking again in %.1f s",
                self.settings.pypi_url,
                problem,
                delay,
            )
            await self._sleep(delay)

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
            # The quota's spacing counts from now (it is what is left of the window, spread
            # over the calls left), the minimum interval from the previous call.
            now = self._clock()
            wait = max(
                self._last_call + self.settings.min_request_interval - now,
                self.quota.spacing() - (now - self._last_call),
            )
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
        cap = self.settings.response_cap(method)
        while True:
            await self._pace()
            started = self._clock()
            try:
                payload = await self._post(body, cap)
                seconds = self._clock() - started
                if decode_after is not None:
                    await decode_after.wait()
                # In a worker thread: a big (or hostile) body must not stall the event loop,
                # which keeps the group heartbeats, /healthz and signals going meanwhile.
                result = await asyncio.to_thread(decode, payload)
            except XmlRpcFault as fault:
                error: SourceError = classify_fault(fault)
            except SourceError as exc:
                error = exc
            else:
                self._count(method, "ok", seconds)
                self._backoff.reset()
                self._note_refusal(None)
                return result
            if isinstance(error, RefusedPage):
                self._note_refusal(error)
            await self._handle_failure(method, error, self._clock() - started)

    def _note_refusal(self, error: RefusedPage | None) -> None:
        """Count refused answers in a row; after a few, `/readyz` says why."""
        if error is None:
            if self.refusals >= REFUSALS_UNTIL_UNREADY:
                log.info(
                    "PyPI's answers keep the journal's contract again, after %d refused: ready",
                    self.refusals,
                )
            if self.refusals and self.health is not None:
                self.health.source_problem = None
            self.refusals = 0
        else:
            self.refusals += 1
            if self.refusals >= REFUSALS_UNTIL_UNREADY and self.health is not None:
                self.health.source_problem = (
                    f"{self.refusals} answers in a row from {self.settings.pypi_url} broke the "
                    f"journal's contract; the last: {error}"
                )
        if self.metrics is not None:
            self.metrics.source_refusals.set(self.refusals)

    async def _handle_failure(self, method: str, error: SourceError, seconds: float) -> None:
        if isinstance(error, Throttled):
            self._count(method, "throttled", seconds)
            wait = min(error.retry_after, self.settings.max_backoff)
            if wait < error.retry_after:
                log.warning(
                    "PyPI is throttling %s and asks for %.0f s: waiting %.0f s (--max-backoff)",
                    method,
                    error.retry_after,
                    wait,
                )
            else:
                log.warning("PyPI is throttling %s: waiting %.0f s as it asks", method, wait)
            if self.metrics is not None:
                self.metrics.source_throttled_seconds.inc(wait)
                self.metrics.errors.labels("source").inc()
            # Jitter keeps several bridges behind one address from retrying in lockstep.
            await self._sleep(wait + random.uniform(0, 0.25))
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

    async def _post(self, body: bytes, cap: int) -> bytes:
        """POST one request; map every transport failure to a SourceError."""
        if self._session is None:
            raise RuntimeError("PyPIClient used outside `async with`")
        url = self.settings.pypi_url
        try:
            # Redirects are not followed: aiohttp would turn the POST into a GET.
            async with self._session.post(url, data=body, allow_redirects=False) as response:
                self._note_quota(response.headers)
                status = response.status
                if status != 200:
                    payload = await self._read_capped(
                        url, response, self.settings.max_response_bytes
                    )
                    return self._check_status(url, status, payload, response.headers)
                return await self._read_capped(url, response, cap)
        except TimeoutError:
            raise TransientSourceError(
                f"no answer from {url}{self._via} within {self.settings.request_timeout:g} s",
                "timeout",
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise self._untrusted(exc) from None
        except aiohttp.ClientProxyConnectionError as exc:
            raise TransientSourceError(
                f"cannot connect to the proxy {self.settings.shown_proxy} "
                f"({self.settings.proxy_origin}) to reach {url}: {exc.os_error}",
                "connection",
            ) from None
        except aiohttp.ClientHttpProxyError as exc:
            # Only a CONNECT (an https:// URL) fails this way: the proxy's own answer.
            target = exc.request_info.url
            raise self._proxy_refused(
                exc.status, exc.message, f"CONNECT {target.host_subcomponent}:{target.port}"
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise TransientSourceError(
                f"truncated response from {url}: {exc}", "malformed"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise TransientSourceError(
                f"cannot connect to {url}{self._via}: {exc.os_error}", "connection"
            ) from None
        except aiohttp.ClientResponseError as exc:
            # aiohttp's parser refused the answer itself (a header over the limit, bad framing).
            raise TransientSourceError(
                f"unreadable HTTP answer from {url}: {one_line(exc.message)}", "malformed"
            ) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientSourceError(
                f"connection to {url}{self._via} failed: {type(exc).__name__}: {exc}",
                "connection",
            ) from None

    @property
    def _via(self) -> str:
        """`through the proxy ...` for messages, when there is one."""
        if self.settings.proxy is None:
            return ""
        return f" through the proxy {self.settings.shown_proxy} ({self.settings.proxy_origin})"

    def _proxy_refused(self, status: int, reason: str, request: str) -> TransientSourceError:
        """The proxy said no: retried with backoff, since proxies and their users change."""
        proxy = f"the proxy {self.settings.shown_proxy} ({self.settings.proxy_origin})"
        if status in (401, 407):
            # 407 Proxy Authentication Required is the standard answer; tinyproxy 1.11 and a
            # few others answer 401 to a wrong or missing password.
            return TransientSourceError(
                f"{proxy} refused this client's credentials: HTTP {status} {one_line(reason)} "
                f"to {request}; check the user and password in the proxy URL",
                "http_error",
            )
        return TransientSourceError(
            f"{proxy} answered HTTP {status} {one_line(reason)} to {request}", "http_error"
        )

    def _untrusted(self, exc: aiohttp.ClientConnectorCertificateError) -> SourceError:
        """A certificate this client does not trust: no retry changes that, so one line."""
        reason = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        if self.settings.ca_file is not None:
            fix = f"check that --pypi-ca-file {self.settings.ca_file} holds the CA that signed it"
        else:
            fix = (
                "if a PyPI mirror or a TLS-inspecting proxy uses a private CA, pass its "
                "certificate with --pypi-ca-file"
            )
        return SourceError(
            f"the TLS certificate of {exc.host}:{exc.port}{self._via} is not trusted: {reason}",
            fix,
        )

    async def _read_capped(self, url: str, response: aiohttp.ClientResponse, cap: int) -> bytes:
        """The body, read in chunks and abandoned once over `cap` (`--max-response-bytes`)."""
        declared = response.content_length
        if declared is not None and declared > cap:
            raise _too_large(url, f"declares {declared} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > cap:
                raise _too_large(url, f"passed {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _note_quota(self, headers: Mapping[str, str]) -> None:
        limit = self.quota.update(headers)
        if limit is None or self.metrics is None:
            return
        self.metrics.source_quota_remaining.set(limit.remaining)
        self.metrics.source_quota_reset.set(self.quota.reset_in() or 0.0)
        self.metrics.source_quota_limit.set(float("nan") if limit.quota is None else limit.quota)

    def _check_status(
        self, url: str, status: int, payload: bytes, headers: Mapping[str, str]
    ) -> bytes:
        if status == 429:
            delay = server_wait(headers.get("Retry-After"))
            raise Throttled(delay, f"HTTP 429 from {url}")
        if status == 407 or (status == 401 and self.settings.proxy is not None):
            # Through a proxy a plain-HTTP request gets the proxy's refusal as its answer.
            reason = HTTPStatus(status).phrase
            if self.settings.proxy is not None:
                raise self._proxy_refused(status, reason, f"POST {url}")
            raise TransientSourceError(
                f"HTTP 407 {reason} from {url}: a proxy on the way wants credentials; pass "
                "--pypi-proxy http://user:password@host:port",
                "http_error",
            )
        if status >= 500 or status == 408:
            raise TransientSourceError(f"HTTP {status} from {url}{self._via}", "http_error")
        if status == 404:
            raise SourceError(
                f"HTTP 404 from {url}: no XML-RPC endpoint there",
                "check --pypi-url (PyPI's is https://pypi.org/pypi)",
            )
        if 300 <= status < 400:
            target = one_line(headers.get("Location", "nowhere"))
            raise SourceError(
                f"HTTP {status} from {url}: it redirects to {target}, and an XML-RPC call "
                "cannot follow a redirect (the POST would become a GET)",
                "set --pypi-url to the address the redirect names, if you trust it",
            )
        raise SourceError(
            f"HTTP {status} from {url}",
            "check --pypi-url and that this client is allowed to call it",
        )


#: Rows refused in a row before `/readyz` turns red (retrying goes on meanwhile).
REFUSALS_UNTIL_UNREADY = 3
#: aiohttp's own default limit for one header line, kept explicit.
_MAX_HEADER_BYTES = 8190


def tls_context(settings: SourceSettings) -> ssl.SSLContext | bool:
    """The trust for PyPI's certificate: the system store, plus `--pypi-ca-file`'s CA if set.

    In addition to the system store, not instead of it: a TLS-inspecting proxy usually lets
    some hosts through untouched (with their real, publicly signed certificates), and
    `--pypi-url` can go back from a private mirror to PyPI without removing the CA.
    """
    if settings.ca_file is None:
        return True  # aiohttp's default: the system store, host names checked
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=settings.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load --pypi-ca-file {settings.ca_file}: {exc}",
            "give a readable file of PEM certificates",
        ) from None
    return context


def _too_large(url: str, what: str) -> TransientSourceError:
    return TransientSourceError(
        f"the answer from {url} {what}, over --max-response-bytes "
        "(a real 50,000-row page is about 14 MB): not read",
        "too_large",
    )
