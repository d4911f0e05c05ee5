"""The leader's loop: source -> parse -> route -> sink, page after page, with progress.

Only the leader runs it. It resumes from the sink's checkpoint (or from `--start-serial` when there
is none), seeds the project index once if it never was, reads the journal page by page, publishes
each batch with its index records, checkpoint and watermark, and sleeps `--poll-interval` once
caught up, writing a watermark every `--heartbeat-interval` while the journal stays quiet. With
`--stop-at-serial N` it returns once every entry up to N is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from bridge.config import RunSettings
from bridge.parse import Row, parse_row
from bridge.sink import Sink
from bridge.source import PyPIClient

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Stopped(Exception):
    """Stopping was set while the term's first calls to PyPI were still being retried."""


@dataclass
class Progress:
    """Backfill progress: serials done, rate and ETA, logged at a steady interval."""

    interval: float
    started_at: float = 0.0
    start_serial: int = 0
    committed: int = 0
    head: int | None = None
    rows: int = 0
    _last_log: float = 0.0
    _window: tuple[float, int] = (0.0, 0)
    rate: float = 0.0

    def begin(self, serial: int, head: int | None) -> None:
        now = time.monotonic()
        self.started_at = self._last_log = now
        self.start_serial = self.committed = serial
        self.head = head
        self._window = (now, 0)

    def advance(self, serial: int, rows: int, head: int | None) -> None:
        self.committed = serial
        self.rows += rows
        if head is not None and (self.head is None or head > self.head):
            self.head = head
        now = time.monotonic()
        since, counted = self._window
        if now - since >= 1.0:
            self.rate = (self.rows - counted) / (now - since)
            self._window = (now, self.rows)
        if now - self._last_log >= self.interval:
            self._last_log = now
            log.info("%s", self.describe())

    @property
    def backlog(self) -> int:
        return max(0, (self.head or self.committed) - self.committed)

    @property
    def eta_seconds(self) -> float | None:
        if not self.backlog:
            return 0.0
        elapsed = time.monotonic() - self.started_at
        done = self.committed - self.start_serial
        if done <= 0 or elapsed <= 0:
            return None
        # Serials are gapped, so progress is measured in serials, not rows.
        return self.backlog / (done / elapsed)

    def describe(self) -> str:
        if not self.backlog:
            return f"caught up at serial {self.committed} ({self.rows} rows published so far)"
        eta = self.eta_seconds
        eta_text = "unknown" if eta is None else f"{eta:.0f} s"
        total = (self.head or 0) - self.start_serial
        done = self.committed - self.start_serial
        percent = 100.0 * done / total if total > 0 else 100.0
        return (
            f"backfill: serial {self.committed} of {self.head} ({percent:.1f}%), "
            f"{self.rows} rows published, {self.rate:.0f} rows/s, ETA {eta_text}"
        )


class Pipeline:
    """One leadership term's loop."""

    def __init__(
        self,
        settings: RunSettings,
        client: PyPIClient,
        sink: Sink,
        progress: Progress,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.client = client
        self.sink = sink
        self.progress = progress
        self._sleep = sleep
        #: Set to finish the batch in flight and return (graceful stop).
        self.stopping = asyncio.Event()

    async def _starting_serial(self) -> int:
        checkpoint = await self.sink.start()
        if checkpoint is not None:
            log.info(
                "resuming after serial %d (checkpoint by %s, %s mode)",
                checkpoint.serial,
                checkpoint.replica or "?",
                checkpoint.mode or "?",
            )
            return checkpoint.serial
        start = self.settings.start_serial
        if start is None:
            start = await self._asked(self.client.last_serial()) or 0
            log.info("no checkpoint: starting at the journal's head, serial %d", start)
        else:
            log.info("no checkpoint: starting after serial %d (--start-serial)", start)
        # Record the starting point at once, so a crash before the first batch cannot move it.
        await self.sink.publish([], start, None, self.client.head_serial)
        return start

    async def _seed_index(self) -> None:
        """Seed the project index once, ever, from `list_packages_with_serial` (one paced call)."""
        log.info(
            "the project index is not seeded yet: asking PyPI for list_packages_with_serial "
            "(one call; PyPI takes 10 to 15 s to answer it)"
        )
        started = time.monotonic()
        listing = await self._asked(self.client.list_packages_with_serial())
        asked = time.monotonic() - started
        written = await self.sink.seed_index(listing, self.client.head_serial)
        log.info(
            "seeded the project index with %d projects (listing %.1f s, writing %.1f s); "
            "from now on it follows the journal",
            written,
            asked,
            time.monotonic() - started - asked,
        )

    async def run(self) -> int:
        """Publish until stopped (or until --stop-at-serial); returns the committed serial."""
        try:
            cursor = await self._starting_serial()
            if not self.sink.index_seeded:
                await self._seed_index()
        except _Stopped:
            return self.progress.committed
        stop_at = self.settings.stop_at_serial
        self.progress.begin(cursor, self.client.head_serial)
        # The journal's head (for the backlog and ETA) is asked for once the first page is in,
        # beside its publishing: a new leader's first commit does not wait for a paced extra call.
        need_head = self.client.head_serial is None and (stop_at is None or cursor < stop_at)
        head_lookup: asyncio.Task[int | None] | None = None
        prefetch: asyncio.Task[list[Row]] | None = None
        published = asyncio.Event()
        try:
            while not self.stopping.is_set():
                if stop_at is not None and cursor >= stop_at:
                    log.info(
                        "reached --stop-at-serial %d: everything up to it is committed", stop_at
                    )
                    break
                fetched = await self._unless_stopping(
                    prefetch or asyncio.create_task(self.client.changelog_since(cursor))
                )
                prefetch = None
                if fetched is None:
                    break  # stopping: the page in flight is not committed, so nothing is lost
                rows = fetched
                if not rows:
                    need_head = False
                    self.sink.metrics.mark_progress()
                    self.progress.advance(cursor, 0, self.client.head_serial)
                    await self._heartbeat(cursor)
                    # Caught up: poll no faster than the quota allows in the long run.
                    interval = max(self.settings.poll_interval, self.client.quota.steady_interval())
                    await self._wait(interval)
                    continue
                if need_head:
                    need_head = False
                    head_lookup = asyncio.create_task(self._look_up_head())
                # Reading the next page overlaps with publishing this one. Decoding it waits
                # until this one is published and dropped: two decoded 50,000-row pages at once
                # would double the bridge's peak memory.
                if stop_at is None or rows[-1][4] < stop_at:
                    published = asyncio.Event()
                    prefetch = asyncio.create_task(
                        self.client.changelog_since(rows[-1][4], decode_after=published)
                    )
                with _collector_paused():
                    cursor = await self._publish(rows, stop_at)
                del rows
                published.set()
        finally:
            for task in (prefetch, head_lookup):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        return cursor

    async def _look_up_head(self) -> int | None:
        head = await self.client.last_serial()
        self.progress.advance(self.progress.committed, 0, head)
        log.info("%s", self.progress.describe())
        return head

    async def _unless_stopping(self, task: asyncio.Task[T]) -> T | None:
        """What `task` (a call to PyPI) returns, or None (and the call cancelled) once stopping
        is set: a graceful stop does not wait for a source that keeps failing."""
        stopper = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return None

    async def _publish(self, rows: list[Row], stop_at: int | None) -> int:
        reached = False
        if stop_at is not None and rows[-1][4] > stop_at:
            rows = [r for r in rows if r[4] <= stop_at]
            reached = True
        size = self.settings.batch_size
        cursor = self.progress.committed
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            events = [parse_row(row) for row in chunk]
            last = chunk[-1]
            await self.sink.publish(events, last[4], last[2], self.client.head_serial)
            cursor = last[4]
            self.progress.advance(cursor, len(chunk), self.client.head_serial)
        if reached and stop_at is not None and cursor < stop_at:
            # A later row was seen, so nothing up to stop_at is missing: commit that fact.
            await self.sink.publish(
                [], stop_at, rows[-1][2] if rows else None, self.client.head_serial
            )
            cursor = stop_at
        return cursor

    async def _asked(self, call: Coroutine[Any, Any, T]) -> T:
        task = asyncio.ensure_future(call)
        await self._unless_stopping(task)
        if task.cancelled():
            raise _Stopped()
        return task.result()

    async def _heartbeat(self, cursor: int) -> None:
        """A watermark every --heartbeat-interval while the journal is quiet (batches carry one)."""
        if time.monotonic() - self.sink.watermark_at >= self.settings.heartbeat_interval:
            # The journal just answered "nothing after the cursor": the cursor is its head.
            await self.sink.heartbeat(max(cursor, self.client.head_serial or 0))

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a page is parsed and published.

    A page allocates hundreds of thousands of short-lived objects that form no cycles (reference
    counting frees them), yet every few hundred allocations the collector would walk them all
    again: about a tenth of a backfill's CPU. It runs as usual between pages.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
