"""Kafka plumbing shared by the sink, the checkpoint, leadership and the consumers.

Client construction (with the operator's TLS/SASL settings, read again from their files for each
new connection), topic creation, reading the tail of partitions, and what a refusal means (a
missing ACL: one line naming the fix, never retried; a rejected login or certificate: the same
line, `CredentialsRejected`, which `Replica` retries only while a rotation may be in progress),
so those details live in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalArgumentError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    KafkaConnectionError,
    KafkaError,
    PolicyViolationError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.protocol.metadata import MetadataRequest

from bridge.config import KafkaSettings, TopicSettings
from bridge.errors import AccessDenied, BridgeError, BrokerError, ConfigError
from bridge.routing import (
    checkpoint_topic,
    event_topics,
    leadership_topic,
    projects_topic,
    watermark_topic,
)

log = logging.getLogger(__name__)
# Refusals that no retry cures: the operator must change a setting or an ACL.
_REFUSED = (
    IllegalArgumentError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    PolicyViolationError,
)


def producer(kafka: KafkaSettings, **options: Any) -> AIOKafkaProducer:
    """A producer tuned for throughput: batches fill while the previous one is in flight."""
    defaults: dict[str, Any] = {
        "acks": "all",
        # The sink fills whole record batches itself; lingering would only hold back the last,
        # partly filled batch of every commit.
        "linger_ms": 0,
        "max_batch_size": 256 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "request_timeout_ms": 30_000,
    }
    made = AIOKafkaProducer(**{**kafka.client_options(), **defaults, **options})
    fresh_credentials(made.client, kafka)
    return made


def consumer(kafka: KafkaSettings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    defaults: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 16 * 1024 * 1024,
        # librdkafka's default too. Brokers verify every batch's CRC when it is produced, and
        # librdkafka's mock cluster writes transaction markers with no CRC at all.
        "check_crcs": False,
    }
    made = AIOKafkaConsumer(*topics, **{**kafka.client_options(), **defaults, **options})
    fresh_credentials(made._client, kafka)
    return made


def admin(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    made = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=30_000)
    fresh_credentials(made._client, kafka)
    return made


def fresh_credentials(client: AIOKafkaClient, kafka: KafkaSettings) -> None:
    """Make every new connection of `client` use the credentials its files hold at that time.

    aiokafka builds each connection (the bootstrap one, and one per broker and group as needed)
    from the SSL context and SASL password it keeps on the client, so a long-lived client
    would present the credentials of its start for ever, after a rotation too. Here they are
    set again from `KafkaSettings.credentials()` right before a connection is made (a stat of
    the files when nothing changed); a connection made tells the credentials they were accepted.
    """
    credentials = kafka.credentials()
    if credentials is None:
        return
    get_conn, bootstrap = client._get_conn, client.bootstrap

    def load() -> None:
        material = credentials.current()
        client._ssl_context = material.ssl_context
        client._sasl_plain_password = material.sasl_password

    async def connection(
        node_id: Any, *, group: ConnectionGroup = ConnectionGroup.DEFAULT, no_hint: bool = False
    ) -> Any:
        existing = client._conns.get((node_id, group))
        new = existing is None or not existing.connected()
        if new:
            load()
        made = await get_conn(node_id, group=group, no_hint=no_hint)
        if new and made is not None:
            credentials.accepted()
        return made

    async def bootstrapping() -> None:
        load()
        await bootstrap()
        credentials.accepted()

    client._get_conn = connection
    client.bootstrap = bootstrapping


def unreachable(kafka: KafkaSettings, exc: BaseException) -> BrokerError:
    return BrokerError(
        f"cannot reach Kafka at {kafka.bootstrap_servers}: {type(exc).__name__}: {exc}",
        "check --bootstrap-servers and the network",
    )


@contextlib.asynccontextmanager
async def started(
    kafka: KafkaSettings, client: AIOKafkaConsumer
) -> AsyncIterator[AIOKafkaConsumer]:
    """`client` started, and stopped on the way out; a broker that cannot be reached, or that
    refuses the credentials, is one line naming the fix."""
    try:
        try:
            await client.start()
        except KafkaConnectionError as exc:
            raise await refusal(kafka) or unreachable(kafka, exc) from None
        yield client
    finally:
        await client.stop()


# --- refusals: credentials, certificates and ACLs, each as one line naming the fix ----------

#: Authorization errors: the resource type as messages name it and as kafka-acls.sh flags it.
_AUTHORIZATION: dict[type[KafkaError], tuple[str, str]] = {
    TopicAuthorizationFailedError: ("topic", "--topic"),
    GroupAuthorizationFailedError: ("group", "--group"),
    TransactionalIdAuthorizationFailed: ("transactional id", "--transactional-id"),
    ClusterAuthorizationFailedError: ("cluster", "--cluster"),
}
AUTHORIZATION_ERRORS = tuple(_AUTHORIZATION)
_ACL_DOCS = "the README lists every ACL (ACLs for the bridge and its consumers)"


def principal(kafka: KafkaSettings) -> str:
    """The principal this client most likely has on the broker, as ACLs name it."""
    if kafka.security_protocol.startswith("SASL") and kafka.sasl_username:
        return f"User:{kafka.sasl_username}"
    if kafka.ssl_certfile:
        certificate = read_certificate(kafka.ssl_certfile)
        if certificate is not None and certificate.common_name:
            # What `ssl.principal.mapping.rules` usually makes of a certificate: its CN.
            return f"User:{certificate.common_name}"
        return "the principal of the client certificate"
    return "User:ANONYMOUS"


def denied(
    kafka: KafkaSettings, exc: BaseException, operation: str, prefixes: Sequence[str] = ()
) -> AccessDenied | None:
    """An authorization error as the ACL it lacks, else None.

    `operation` is what the failed call needed on a topic or the cluster (Create, Write, Read,
    IdempotentWrite); a group always needs Read, a transactional id Write. `prefixes` are the
    resource prefixes to suggest a prefixed ACL for (the longest that matches wins).
    """
    found = [names for error, names in _AUTHORIZATION.items() if isinstance(exc, error)]
    if not found:
        return None
    kind, flag = found[0]
    if kind == "group":
        operation = "Read"
    elif kind == "transactional id":
        operation = "Write"
    names = _resource_names(exc)
    who = principal(kafka)
    grant = f"kafka-acls.sh --add --allow-principal {who} --operation {operation}"
    if kind == "cluster":
        subject, grant = "the cluster", f"{grant} --cluster"
    else:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        subject = f"{kind} {shown or '(unnamed)'}"
        matching = [p for p in prefixes if names and all(n.startswith(p) for n in names)]
        if matching:
            grant += f" {flag} {max(matching, key=len)} --resource-pattern-type prefixed"
        else:
            grant += f" {flag} {names[0] if names else '...'}"
    return AccessDenied(
        f"Kafka at {kafka.bootstrap_servers} denies {who} {operation} on {subject}",
        f"grant it ({grant}); {_ACL_DOCS}",
    )


def _resource_names(exc: BaseException) -> list[str]:
    """The topics, group or transactional id aiokafka put in an authorization error."""
    if not exc.args:
        return []
    named = exc.args[0]
    if isinstance(named, str):
        return [named]
    if isinstance(named, set | frozenset | list | tuple):
        return sorted(str(n) for n in named)
    return []


async def failure(
    kafka: KafkaSettings,
    exc: KafkaError,
    problem: str,
    operation: str = "Read",
    prefixes: Sequence[str] = (),
) -> BridgeError:
    """What a failed Kafka call means: a missing ACL, a refused login or certificate (both
    `AccessDenied`: no retry cures them), or a broker error (`problem: exc`) worth retrying."""
    found = denied(kafka, exc, operation, prefixes)
    if found is None and isinstance(exc, KafkaConnectionError):
        found = await refusal(kafka)
    return found or BrokerError(f"{problem}: {exc}")


class CredentialsRejected(AccessDenied):
    """Kafka rejected this client's login or certificate, or this client its certificate:
    what a credential rotation in progress also looks like (see `Replica`'s rule)."""


async def refusal(kafka: KafkaSettings) -> AccessDenied | None:
    """Why Kafka refuses this client's connections, if it does; None if it does not.

    aiokafka's clients log why a bootstrap failed and raise only "Unable to bootstrap", which
    reads like an outage. One connection made as theirs are (TLS, ApiVersions, SASL) shows the
    cause: a rejected password, a broker certificate this client does not trust, or a client
    certificate the broker refused (expired, say). A broker that accepts it, or that cannot be
    reached at all, is not refusing anything.
    """
    if kafka.bootstrap_servers is None:
        return None
    options = kafka.client_options()
    found = await _probe(kafka, options)
    credentials = kafka.credentials()
    if credentials is not None and isinstance(found, CredentialsRejected):
        credentials.rejected()
    return found


async def _probe(kafka: KafkaSettings, options: dict[str, Any]) -> AccessDenied | None:
    """One connection to each bootstrap server, as `refusal` describes."""
    assert kafka.bootstrap_servers is not None
    credentials = kafka.credentials()
    for host, port, _ in collect_hosts(kafka.bootstrap_servers, randomize=False):
        server = f"{host}:{port}"
        try:
            connection = await create_conn(
                host,
                port,
                client_id=kafka.client_id,
                request_timeout_ms=5_000,
                ssl_context=options.get("ssl_context"),
                security_protocol=kafka.security_protocol,
                sasl_mechanism=kafka.sasl_mechanism,
                sasl_plain_username=kafka.sasl_username,
                sasl_plain_password=options.get("sasl_plain_password"),
            )
        except (SaslAuthenticationFailed, AuthenticationFailedError) as exc:
            return CredentialsRejected(
                f"Kafka at {server} rejected the {kafka.sasl_mechanism} login of user "
                f"{kafka.sasl_username!r}: {_broker_message(exc)}",
                "check --sasl-username and the password in --sasl-password-file "
                "(or PYPI_BRIDGE_SASL_PASSWORD_FILE)",
            )
        except UnsupportedSaslMechanismError:
            return AccessDenied(
                f"Kafka at {server} does not offer SASL mechanism {kafka.sasl_mechanism}",
                "set --sasl-mechanism to one its listener enables (sasl.enabled.mechanisms)",
            )
        except ssl.SSLCertVerificationError as exc:
            untrusted = (
                AccessDenied if exc.verify_code == _HOSTNAME_MISMATCH else CredentialsRejected
            )
            return untrusted(
                f"the TLS certificate of Kafka at {server} is not trusted: {exc.verify_message}",
                "pass --ssl-cafile with the CA (PEM) that signed the brokers' certificates"
                if exc.verify_code != _HOSTNAME_MISMATCH
                else "connect by a name the broker's certificate lists (subjectAltName)",
            )
        except KafkaConnectionError as exc:
            alert = exc.__cause__
            if isinstance(alert, ssl.SSLError) and "ALERT" in str(alert.reason):
                return _certificate_refused(kafka, server, alert)
        except (OSError, TimeoutError, KafkaError):
            pass  # unreachable, or a failure that is not a refusal: let the caller say so
        else:
            connection.close()
            if credentials is not None:
                credentials.accepted()
            return None
    return None


#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH.
_HOSTNAME_MISMATCH = 62


def _broker_message(exc: KafkaError) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.rstrip(".") or type(exc).__name__


def _certificate_refused(kafka: KafkaSettings, server: str, alert: ssl.SSLError) -> AccessDenied:
    """The broker ended the TLS handshake with an alert: it does not accept this client."""
    reason = str(alert.reason).lower().replace("_", " ")
    if not kafka.ssl_certfile:
        return AccessDenied(
            f"Kafka at {server} requires a client certificate (mutual TLS) and ended the "
            f"handshake ({reason})",
            "pass --ssl-certfile and --ssl-keyfile",
        )
    certificate = read_certificate(kafka.ssl_certfile)
    now = datetime.now(UTC)
    if certificate is not None and certificate.not_after < now:
        return CredentialsRejected(
            f"Kafka at {server} refused the client certificate {kafka.ssl_certfile}: it expired "
            f"on {certificate.not_after:%Y-%m-%d %H:%M:%S} UTC",
            "renew it: pass a current certificate (--ssl-certfile) and its key (--ssl-keyfile)",
        )
    if certificate is not None and certificate.not_before > now:
        return CredentialsRejected(
            f"Kafka at {server} refused the client certificate {kafka.ssl_certfile}: it is "
            f"valid only from {certificate.not_before:%Y-%m-%d %H:%M:%S} UTC",
            "check this machine's clock, or use a certificate valid now",
        )
    return CredentialsRejected(
        f"Kafka at {server} refused the client certificate {kafka.ssl_certfile} ({reason})",
        "use a certificate signed by a CA in the broker's truststore (ssl.truststore.*)",
    )


@dataclass(frozen=True)
class Certificate:
    """What the messages need of a certificate: its subject's CN and its validity."""

    common_name: str | None
    not_before: datetime
    not_after: datetime


def read_certificate(path: str) -> Certificate | None:
    """The first certificate of a PEM file, or None if there is none to read.

    The standard library loads certificates but does not show a local one's fields, so this
    walks the DER itself: tbsCertificate is [version], serial, signature, issuer, validity,
    subject (RFC 5280, 4.1).
    """
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")
        start = text.index(begin)
        der = ssl.PEM_cert_to_DER_cert(text[start : text.index(end, start) + len(end)])
        _, inside, stop = _der_element(der, 0)
        _, inside, stop = _der_element(der, inside)
        fields = _der_children(der, inside, stop)
        if fields[0][0] == 0xA0:  # the explicit [0] version
            fields = fields[1:]
        validity, subject = fields[3], fields[4]
        times = [_der_time(der[a:b], tag) for tag, a, b in _der_children(der, *validity[1:])]
        common_name = None
        for _, rdn_start, rdn_end in _der_children(der, *subject[1:]):
            for _, pair_start, pair_end in _der_children(der, rdn_start, rdn_end):
                (_, oid_start, oid_end), (_, value_start, value_end) = _der_children(
                    der, pair_start, pair_end
                )
                if der[oid_start:oid_end] == b"\x55\x04\x03":  # 2.5.4.3, commonName
                    common_name = der[value_start:value_end].decode("utf-8", "replace")
        return Certificate(common_name, times[0], times[1])
    except (OSError, ValueError, IndexError):
        return None


def _der_element(der: bytes, at: int) -> tuple[int, int, int]:
    """Tag, start and end of the contents of the DER element at `at`."""
    tag, length = der[at], der[at + 1]
    at += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(der[at : at + size], "big")
        at += size
    return tag, at, at + length


def _der_children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    found = []
    while start < end:
        element = _der_element(der, start)
        found.append(element)
        start = element[2]
    return found


def _der_time(value: bytes, tag: int) -> datetime:
    """UTCTime (tag 0x17) or GeneralizedTime, as RFC 5280 writes them (UTC, seconds)."""
    layout = "%y%m%d%H%M%SZ" if tag == 0x17 else "%Y%m%d%H%M%SZ"
    return datetime.strptime(value.decode("ascii"), layout).replace(tzinfo=UTC)


async def ensure_topics(kafka: KafkaSettings, topics: TopicSettings) -> None:
    """Create the event, index, watermark, checkpoint and leadership topics that are missing."""
    client = admin(kafka)
    try:
        await client.start()
        existing = set(await client.list_topics())
        replicas = topics.replication_factor
        if replicas == -1:
            # "Broker default": three copies where the cluster has three brokers, else one each.
            brokers = len(client._client.cluster.brokers()) or 1
            replicas = min(3, brokers)
        wanted = [
            NewTopic(name, topics.partitions, replicas) for name in event_topics(topics.prefix)
        ]
        wanted.append(
            NewTopic(
                checkpoint_topic(topics.prefix),
                1,
                replicas,
                topic_configs={"cleanup.policy": "compact"},
            )
        )
        wanted.append(NewTopic(leadership_topic(topics.prefix), 1, replicas))
        wanted.append(
            NewTopic(
                projects_topic(topics.prefix),
                topics.partitions,
                replicas,
                topic_configs={"cleanup.policy": "compact"},
            )
        )
        # A history (kept by the broker's retention), so that replay can find old watermarks.
        wanted.append(NewTopic(watermark_topic(topics.prefix), 1, replicas))
        missing = [t for t in wanted if t.name not in existing]
        if missing and not await _can_create_topics(client):
            log.warning(
                "Kafka at %s cannot create topics (its metadata names no controller); "
                "create the %d missing topics of prefix %r (the checkpoint, leadership and "
                "watermark topics with one partition each; checkpoint and projects compacted)",
                kafka.bootstrap_servers,
                len(missing),
                topics.prefix,
            )
        elif missing:
            response = await client.create_topics(missing)
            for name, code, *message in getattr(response, "topic_errors", ()):
                error = for_code(code)
                if error in _AUTHORIZATION:
                    raise error(name)
                # Another replica may have created it first: that is fine.
                if code and error is not TopicAlreadyExistsError:
                    raise error(f"topic {name}: {message[0] if message else ''}")
            log.info("created %d topics with prefix %r", len(missing), topics.prefix)
    except AUTHORIZATION_ERRORS as exc:
        found = denied(kafka, exc, "Create", bridge_prefixes(topics.prefix))
        raise found or BrokerError(str(exc)) from None
    except KafkaConnectionError as exc:
        raise await refusal(kafka) or unreachable(kafka, exc) from None
    except _REFUSED as exc:
        raise ConfigError(
            f"Kafka at {kafka.bootstrap_servers} refused to create the topics: "
            f"{type(exc).__name__}: {exc}",
            "check --partitions/--replication-factor against the cluster, and the ACLs",
        ) from None
    except KafkaError as exc:
        raise BrokerError(
            f"cannot create topics on {kafka.bootstrap_servers}: {type(exc).__name__}: {exc}",
            "the bridge keeps retrying",
        ) from None
    finally:
        await client.close()


def bridge_prefixes(prefix: str) -> tuple[str, str]:
    """The resource prefixes of the bridge's ACLs: its event topics, its own topics and groups."""
    return f"{prefix}.", f"{prefix}-bridge."


def always_leave_group(member: AIOKafkaConsumer) -> None:
    """Make the consumer send LeaveGroup on close even in generation 0.

    aiokafka skips LeaveGroup while the group generation is 0, assuming Kafka's numbering from 1;
    some Kafka-protocol brokers (the embedded one) start at 0. Without LeaveGroup a graceful stop
    would hand over only after the session time-out, like a crash. Call before `stop()`.
    """
    coordinator = getattr(member, "_coordinator", None)
    if coordinator is None:
        return

    async def leave() -> None:
        if coordinator.member_id and coordinator._group_instance_id is None:
            request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
            try:
                await coordinator._send_req(request)
            except KafkaError as exc:
                log.warning(
                    "could not leave the leader group (a standby waits for the "
                    "session time-out instead): %s",
                    exc,
                )
        coordinator.reset_generation()

    coordinator._maybe_leave_group = leave


async def _can_create_topics(client: AIOKafkaAdminClient) -> bool:
    """Whether the cluster names a controller, where CreateTopics requests go.

    librdkafka's mock cluster names none (and answers no CreateTopics); it creates topics on
    first use instead.
    """
    if client._client.cluster.controller is None:
        await client._client.force_metadata_update()
    return client._client.cluster.controller is not None


async def partitions_of(client: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics` (refreshing metadata until each topic is known)."""
    found: list[TopicPartition] = []
    for topic in topics:
        for attempt in range(50):
            parts = client.partitions_for_topic(topic)
            if parts:
                found.extend(TopicPartition(topic, p) for p in sorted(parts))
                break
            if attempt == 0 and await _hidden(client, topic):
                raise TopicAuthorizationFailedError(topic)
            await client._client.force_metadata_update()
            await asyncio.sleep(0.1)
        else:
            raise BrokerError(f"topic {topic} does not exist", "start the bridge once to create it")
    return found


async def _hidden(client: AIOKafkaConsumer, topic: str) -> bool:
    """Whether the broker hides `topic` from this principal (no Describe ACL on it).

    A metadata refresh of all topics leaves such a topic out, as if it did not exist; asked
    for by name (and without creating it), the broker says it is not authorized.
    """
    node = client._client.get_random_node()
    if node is None:
        return False
    request = MetadataRequest([topic], allow_auto_topic_creation=False)
    try:
        response = await client._client.send(node, request)
    except KafkaError:
        return False
    return any(entry[0] == TopicAuthorizationFailedError.errno for entry in response.topics)


async def read_ranges(
    client: AIOKafkaConsumer, starts: dict[TopicPartition, int]
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record from each partition's start offset up to its end at the time of reading.

    The end is the high watermark carried by fetch responses, not a ListOffsets answer: some
    Kafka-protocol brokers (the embedded one among them) answer ListOffsets with the base offset
    of the last record batch, which would hide that batch's later records.
    """
    if not starts:
        return []
    client.assign(list(starts))
    for tp, offset in starts.items():
        client.seek(tp, offset)
    records: list[ConsumerRecord[bytes, bytes]] = []
    pending = set(starts)
    # A read_committed reader cannot pass a partition's last stable offset, so it waits while a
    # transaction there is open: right (what follows may yet commit or abort), but not in
    # silence. Kafka can leave a transaction hanging for good, e.g. after an unclean election
    # on a single broker killed mid-commit (see tests/test_kafka_failures.py).
    loop = asyncio.get_running_loop()
    warn_at: float | None = loop.time() + OPEN_TRANSACTION_WARNING_SECONDS
    while pending:
        batch = await client.getmany(*pending, timeout_ms=200)
        for messages in batch.values():
            records.extend(messages)
        for tp in list(pending):
            highwater = client.highwater(tp)
            if highwater is not None and await client.position(tp) >= highwater:
                pending.discard(tp)
        if pending and warn_at is not None and loop.time() >= warn_at:
            warn_at = None
            _warn_open_transactions(client, pending)
    return records


#: Seconds a read_committed read waits on an open transaction before it says so (a live
#: transaction of the bridge lasts about a second; aiokafka's transaction time-out is 60 s).
OPEN_TRANSACTION_WARNING_SECONDS = 30.0


def _warn_open_transactions(client: AIOKafkaConsumer, pending: Iterable[TopicPartition]) -> None:
    stuck = []
    for tp in sorted(pending):
        stable, highwater = client.last_stable_offset(tp), client.highwater(tp)
        if stable is not None and highwater is not None and 0 <= stable < highwater:
            stuck.append(f"{tp.topic}[{tp.partition}] at offset {stable} of {highwater}")
    if stuck:
        log.warning(
            "a transaction has stayed open for %.0f s on %d partition(s) (%s%s); reading waits "
            "for it to end. If it never does, Kafka left it hanging: find it with "
            "`kafka-transactions.sh find-hanging` and end it with `kafka-transactions.sh abort`",
            OPEN_TRANSACTION_WARNING_SECONDS,
            len(stuck),
            ", ".join(stuck[:3]),
            ", ..." if len(stuck) > 3 else "",
        )
