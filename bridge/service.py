"""One replica of `pypi-bridge run`: HTTP endpoints, leadership, and the pipeline while leading.

Every replica serves `/metrics`, `/healthz` and `/readyz`, creates missing topics and joins the
leader group; the leader runs the pipeline. A broker outage ends the term: the replica backs off,
recovers from the checkpoint and carries on (no data is lost, nothing is sent twice). A fence (the
broker fenced its producer, or its own lease on the group session ran out) ends the term too: the
replica steps down, rejoins the group as a standby and leads again only when elected. Rejected
credentials stop the replica at start; once it has been connected they are taken for a rotation
in progress and retried for `--credentials-grace` seconds (`_check_rotation`). SIGTERM
finishes the batch in flight, leaves the group so a standby takes over at once, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable

from aiokafka.errors import KafkaConnectionError, KafkaError

from bridge.broker import EmbeddedBroker, start_broker
from bridge.checkpoint import WarmReader
from bridge.config import RunSettings
from bridge.errors import BrokerError, Fenced
from bridge.kafka import (
    AUTHORIZATION_ERRORS,
    CredentialsRejected,
    admin,
    bridge_prefixes,
    ensure_topics,
    failure,
    refusal,
)
from bridge.leadership import Leadership
from bridge.metrics import Health, Metrics, start_http
from bridge.pipeline import Pipeline, Progress
from bridge.routing import Router
from bridge.sink import Sink
from bridge.source import Backoff, PyPIClient

log = logging.getLogger(__name__)
GRACEFUL_STOP_SECONDS = 10.0
#: Cancels sent to a term that outlives its graceful stop, a second apart (see `_end_term`).
CANCEL_ROUNDS = 10


class Replica:
    """A bridge replica; `await Replica(settings).run(stop)` returns the exit status."""

    def __init__(self, settings: RunSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.replica_id)
        self.health = Health()
        self.progress = Progress(settings.progress_interval)
        self.http_port: int | None = None
        self.broker: EmbeddedBroker | None = None
        self._pipeline: Pipeline | None = None
        self._term: asyncio.Task[int] | None = None
        self._leadership: Leadership | None = None
        self._warm: WarmReader | None = None
        self._warming: asyncio.Task[None] | None = None
        #: The rejected credentials (digest, since) already announced by a warning line.
        self._announced: tuple[str, float | None] | None = None
        #: Set once rejected credentials are no longer taken for a rotation: the replica stops.
        self.rejected = asyncio.Event()
        self._rejection: CredentialsRejected | None = None
        self.finished = False
        #: Set once the HTTP endpoints answer and once this replica has joined the leader group.
        self.serving = asyncio.Event()
        self.joined = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> int:
        runner, self.http_port = await start_http(
            self.metrics, self.health, self.settings.http_host, self.settings.http_port
        )
        self.serving.set()
        settings = self.settings
        try:
            if settings.kafka.bootstrap_servers is None:
                self.broker = await asyncio.to_thread(start_broker)
                log.warning(
                    "no --bootstrap-servers given: started the embedded broker at %s "
                    "(memory only: its data is gone when the bridge exits)",
                    self.broker.bootstrap_servers,
                )
                settings = self.settings = _with_bootstrap(settings, self.broker.bootstrap_servers)
            return await self._serve(stop)
        finally:
            await runner.cleanup()
            if self.broker is not None:
                await asyncio.to_thread(self.broker.stop)

    async def _serve(self, stop: asyncio.Event) -> int:
        settings = self.settings
        leadership = Leadership(
            settings.kafka,
            settings.topics.prefix,
            settings.replica_id,
            self.metrics,
            session_timeout=settings.leader_session_timeout,
        )
        leadership.on_lose = self._end_term
        self._leadership = leadership
        # What does not need the lead runs beside the topic check and the join: connecting the
        # group member and finding its coordinator, connecting the recovery reader.
        topics_exist = asyncio.Event()
        self._warm = WarmReader(
            settings.kafka, settings.topics.prefix, committed_only=settings.delivery != "high-water"
        )
        self._warming = asyncio.create_task(self._warm.start(topics_exist), name="warm-reader")
        connecting = asyncio.create_task(leadership.connect(), name="leadership-connect")
        try:
            if not await self._check_topics(stop):
                return 0
            topics_exist.set()
            try:
                await _connected(connecting, leadership)
                await leadership.join()
            except AUTHORIZATION_ERRORS as exc:
                prefixes = bridge_prefixes(settings.topics.prefix)
                problem = "cannot join the leader group"
                raise await failure(settings.kafka, exc, problem, "Read", prefixes) from None
            self.health.role = "standby"
            self.health.detail = "standing by"
            self.joined.set()
            watcher = asyncio.create_task(self._watch_broker(stop), name="broker-watch")
            try:
                return await self._lead_when_elected(leadership, stop)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                await self._end_term()
        finally:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connecting  # its failure, if any, was reported or is beside the point
            await self._stop_warm_reader()
            await leadership.stop()

    async def _check_topics(self, stop: asyncio.Event) -> bool:
        """Create the missing topics, retrying while Kafka is away; False if stopped first."""
        backoff = Backoff(base=1.0, cap=30.0)
        while not stop.is_set():
            try:
                await ensure_topics(self.settings.kafka, self.settings.topics)
            except BrokerError as exc:
                self.health.broker_reachable = False
                self.health.detail = str(exc)
                self.metrics.errors.labels("sink").inc()
                delay = backoff.next_delay()
                log.warning("%s; retrying in %.0f s", exc, delay)
                await _sleep_or_stop(stop, delay)
            else:
                self.health.broker_reachable = True
                return True
        return False

    async def _stop_warm_reader(self) -> None:
        # A reader still connecting (Kafka away) is cancelled: a stop does not wait for it.
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
        if self._warm is not None:
            with contextlib.suppress(KafkaError):
                await self._warm.stop()
        self._warm = self._warming = None

    async def _lead_when_elected(self, leadership: Leadership, stop: asyncio.Event) -> int:
        backoff = Backoff(base=1.0, cap=30.0)
        #: Between attempts with rejected credentials: reading the files again costs nothing.
        rotation = Backoff(base=1.0, cap=10.0)
        while not stop.is_set():
            await _first(
                leadership.became_leader.wait(),
                stop.wait(),
                leadership.refusal.wait(),
                self.rejected.wait(),
            )
            if leadership.refused is not None:
                raise leadership.refused
            if self._rejection is not None:
                raise self._rejection
            if stop.is_set():
                break
            self.health.role = "leader"
            self.health.detail = "leading"
            self._term = asyncio.create_task(self._lead(), name="leader-term")
            stopper = asyncio.create_task(stop.wait())
            rejecter = asyncio.create_task(self.rejected.wait())
            await asyncio.wait({self._term, stopper, rejecter}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            rejecter.cancel()
            if self._rejection is not None:
                raise self._rejection  # the term ends on the way out
            if stop.is_set():
                break
            term, self._term = self._term, None
            error = None if term is None or term.cancelled() else term.exception()
            if isinstance(error, Fenced):
                # Another leader may be writing: stop, rejoin as a standby, lead only if elected
                # again. One line says why (none if a rebalance already took the lead away).
                if leadership.leading:
                    self.metrics.errors.labels("leadership").inc()
                    log.warning("%s", error)
                leadership.step_down()
                self._stand_by()
                continue
            if term is None or term.cancelled() or not leadership.leading:
                self._stand_by()
                continue  # leadership was revoked; wait to be elected again
            if error is None:
                self.finished = True
                return 0  # --stop-at-serial reached
            if isinstance(error, BrokerError) and error.retriable:
                self.metrics.errors.labels("sink").inc()
                delay = backoff.next_delay()
                log.warning("%s; recovering from the checkpoint in %.0f s", error, delay)
                await _sleep_or_stop(stop, delay)
            elif isinstance(error, CredentialsRejected):
                self.metrics.errors.labels("sink").inc()
                self._check_rotation(error)
                await _sleep_or_stop(stop, rotation.next_delay())
            else:
                raise error
        return 0

    async def _credentials_still_valid(self) -> bool:
        """Whether Kafka, unreachable for this replica's clients, does not reject its credentials
        beyond the rotation rule; else the replica stops (`rejected`).

        A rejection seen here (the clients retry their connections on their own, a term may be
        waiting on them) is a rotation until the rule says otherwise, as for a term's error.
        """
        if self.settings.kafka.credentials() is None:
            return True  # PLAINTEXT: there is nothing Kafka could reject
        found = await refusal(self.settings.kafka)
        if not isinstance(found, CredentialsRejected):
            return True
        self.health.detail = f"Kafka rejects this replica's credentials: {found.problem}"
        try:
            self._check_rotation(found)
        except CredentialsRejected as exc:
            self._rejection = exc
            self.rejected.set()
            return False
        return True

    def _check_rotation(self, error: CredentialsRejected) -> None:
        """Retry a rejected login or certificate while it may be a rotation in progress, else
        raise it (exit status 1, one line).

        The rule (README, "Rotating credentials"): a rejection is retried only once Kafka has
        accepted this process's credentials (at start it is a mistake to fix now), and only until
        the same unchanged files have been rejected for `--credentials-grace` seconds. Every
        attempt opens new clients, which read the files again; files that changed get a fresh
        count.
        """
        credentials = self.settings.kafka.credentials()
        grace = self.settings.credentials_grace
        if credentials is None or not credentials.ever_accepted or grace <= 0:
            raise error
        material = credentials.current()  # read again: a change resets the count
        rejected = credentials.rejected_for()
        if rejected is not None and rejected >= grace:
            raise CredentialsRejected(
                f"{error.problem} (rejected for {rejected:.0f} s with unchanged credential files)",
                error.fix,
            )
        if rejected is not None and self._announced != (
            material.digest,
            credentials.rejected_since,
        ):
            self._announced = (material.digest, credentials.rejected_since)
            log.warning(
                "%s. Kafka accepted this replica's credentials before, so a rotation may be in "
                "progress: retrying, with the credential files read again at each attempt, for "
                "up to %.0f s while they stay unchanged",
                error,
                grace,
            )

    async def _lead(self) -> int:
        settings = self.settings
        if self._warming is not None:
            await asyncio.shield(self._warming)
        router = Router(settings.topics.prefix, settings.source.pypi_url)
        sink = Sink(
            settings.kafka,
            settings.topics,
            router,
            self.metrics,
            delivery=settings.delivery,
            transactional_id=settings.effective_transactional_id,
            replica_id=settings.replica_id,
            lease=self._leadership.lease if self._leadership is not None else None,
            warm=self._warm,
        )
        try:
            async with PyPIClient(settings.source, self.metrics, health=self.health) as client:
                self._pipeline = Pipeline(settings, client, sink, self.progress)
                return await self._pipeline.run()
        except KafkaError as exc:
            raise BrokerError(
                f"Kafka failed while publishing: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            self._pipeline = None
            await sink.stop()

    async def _end_term(self) -> None:
        """Stop producing: let the batch in flight finish briefly, then cancel it."""
        term = self._term
        if term is None or term.done():
            return
        if self._pipeline is not None:
            self._pipeline.stopping.set()
        done, _ = await asyncio.wait({term}, timeout=GRACEFUL_STOP_SECONDS)
        # A cancel interrupts one await. A term whose connections Kafka refuses (rejected
        # credentials) waits on Kafka again in its clean-up (the transaction's abort, then the
        # producer's close, each waiting for requests it cannot send): cancel until it ends.
        for _ in range(CANCEL_ROUNDS):
            if done:
                break
            term.cancel()
            done, _ = await asyncio.wait({term}, timeout=1.0)
        if not done:
            log.warning("the leader term did not end when cancelled; leaving it behind")
            self._stand_by()
            return
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await term
        if (
            self._leadership is not None
            and not term.cancelled()
            and isinstance(term.exception(), Fenced)
        ):
            # Fenced while the group revoked the lead: claim nothing in the rejoin.
            self._leadership.disclaim()
        self._stand_by()

    def _stand_by(self) -> None:
        self.health.role = "standby"
        self.health.detail = "standing by"

    async def _watch_broker(self, stop: asyncio.Event) -> None:
        """Keep `/readyz` honest: a replica that cannot reach Kafka is not ready."""
        client = admin(self.settings.kafka)
        servers = self.settings.kafka.bootstrap_servers
        lost_at: float | None = None
        try:
            await client.start()
            while not stop.is_set():
                try:
                    # Any broker answering Metadata will do (aiokafka tries each known broker).
                    # `list_topics` asked one broker picked at random, so a cluster that had
                    # lost one of three brokers was reported unreachable, and /readyz failed,
                    # whenever the dead one was picked (tests/test_kafka_failures.py).
                    if not await asyncio.wait_for(client._client.force_metadata_update(), 5.0):
                        raise KafkaConnectionError("no broker answered a Metadata request")
                except (KafkaError, TimeoutError) as exc:
                    self.health.broker_reachable = False
                    self.health.detail = f"cannot reach Kafka: {type(exc).__name__}"
                    if not await self._credentials_still_valid():
                        return
                    if lost_at is None:
                        lost_at = time.monotonic()
                        self.metrics.errors.labels("sink").inc()
                        log.warning(
                            "Kafka at %s is unreachable (%s): not ready; publishing waits and "
                            "retries, nothing is lost",
                            servers,
                            type(exc).__name__,
                        )
                else:
                    self.health.broker_reachable = True
                    if lost_at is not None:
                        log.warning(
                            "Kafka at %s is reachable again after %.0f s",
                            servers,
                            time.monotonic() - lost_at,
                        )
                        lost_at = None
                await _sleep_or_stop(stop, 2.0)
        except KafkaError as exc:
            self.health.broker_reachable = False
            log.warning("broker health check could not start: %s", exc)
        finally:
            await client.close()


def _with_bootstrap(settings: RunSettings, servers: str) -> RunSettings:
    import dataclasses

    return dataclasses.replace(settings, kafka=settings.kafka.with_bootstrap(servers))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _connected(connecting: asyncio.Task[None], leadership: Leadership) -> None:
    """The group member's connection made beside the topic check, or made again now.

    Kafka may have been away while it was made (the topic check waited for it then), so a
    connection that failed is made once more; a second failure is the caller's.
    """
    try:
        await connecting
    except AUTHORIZATION_ERRORS:
        raise
    except KafkaError as exc:
        log.debug("connecting to the leader group failed (%s); connecting again", exc)
        await leadership.connect()


async def _first(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
