"""`pypi-bridge audit`: re-read a serial range from the source and from every type topic.

It reports gaps, duplicates, events on the wrong topic or with the wrong key, headers or fields,
and broken order within a partition.

It is the operator's proof that the stream is whole, and the tests' oracle. Reading is
`read_committed`, as consumers read. On a broker without transactions a retried send can leave a
duplicate record on a partition, which the project's consumer API drops; such duplicates are
reported separately and fail the audit only with `--strict`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from bridge.checkpoint import read_checkpoint
from bridge.config import (
    KAFKA_FLAGS,
    SOURCE_FLAGS,
    Flag,
    KafkaSettings,
    boolean,
    choice,
    kafka_settings,
    non_negative_int,
    source_settings,
    topic_prefix,
)
from bridge.errors import BridgeError, ConfigError
from bridge.kafka import bridge_prefixes, consumer, failure, partitions_of, read_ranges
from bridge.parse import Row, parse_row
from bridge.routing import Router, event_topics, serial_of
from bridge.source import PyPIClient

log = logging.getLogger(__name__)

AUDIT_FLAGS = (
    *SOURCE_FLAGS,
    *KAFKA_FLAGS,
    Flag("topic-prefix", topic_prefix, "pypi", "topics are named {prefix}.{event type}"),
    Flag("from-serial", non_negative_int, 0, "audit entries after this serial"),
    Flag(
        "to-serial", non_negative_int, None, "audit entries up to this serial (default: checkpoint)"
    ),
    Flag(
        "strict",
        boolean,
        False,
        "also fail on duplicates the consumer API would drop",
        is_switch=True,
    ),
    Flag("format", choice("text", "json"), "text", "report as text or JSON"),
    Flag("log-level", str, "WARNING", "log verbosity"),
)
_SHOWN = 10


@dataclass
class AuditReport:
    """What the audit found; `clean` is what the exit status reflects."""

    from_serial: int
    to_serial: int
    strict: bool
    source_rows: int = 0
    records: int = 0
    missing: list[int] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)
    #: Serials stored more than once on one partition (the consumer API drops the extra copies).
    duplicates_dropped_by_consumers: list[int] = field(default_factory=list)
    #: Serials a deduplicating consumer would still see twice (on two partitions or topics).
    duplicates_visible: list[int] = field(default_factory=list)
    wrong_topic: list[int] = field(default_factory=list)
    wrong_key: list[int] = field(default_factory=list)
    wrong_headers: list[int] = field(default_factory=list)
    wrong_fields: list[int] = field(default_factory=list)
    out_of_order: list[int] = field(default_factory=list)
    by_type: Counter[str] = field(default_factory=Counter)

    PROBLEMS = (
        "missing",
        "unexpected",
        "duplicates_visible",
        "wrong_topic",
        "wrong_key",
        "wrong_headers",
        "wrong_fields",
        "out_of_order",
    )

    @property
    def clean(self) -> bool:
        if any(getattr(self, name) for name in self.PROBLEMS):
            return False
        return not (self.strict and self.duplicates_dropped_by_consumers)

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "clean": self.clean,
            "exactly_once": self.clean and not self.duplicates_dropped_by_consumers,
            "from_serial": self.from_serial,
            "to_serial": self.to_serial,
            "source_rows": self.source_rows,
            "records": self.records,
            "by_type": dict(sorted(self.by_type.items())),
            "strict": self.strict,
        }
        for name in (*self.PROBLEMS, "duplicates_dropped_by_consumers"):
            values: list[int] = getattr(self, name)
            result[name] = {"count": len(values), "serials": sorted(values)[:_SHOWN]}
        return result

    def describe(self) -> str:
        lines = [
            f"audit of serials {self.from_serial + 1}..{self.to_serial}: "
            f"{self.source_rows} journal entries, {self.records} records read",
        ]
        for name in (*self.PROBLEMS, "duplicates_dropped_by_consumers"):
            values: list[int] = getattr(self, name)
            if values:
                shown = ", ".join(str(s) for s in sorted(values)[:_SHOWN])
                lines.append(f"  {name.replace('_', ' ')}: {len(values)} (serials {shown})")
        dropped = len(self.duplicates_dropped_by_consumers)
        if not self.clean:
            verdict = "DISCREPANCIES FOUND"
        elif dropped:
            verdict = (
                f"CLEAN FOR CONSUMERS, WITH {dropped} DUPLICATES: every entry present, and the "
                "consumer API drops the extra copies (--strict fails on them)"
            )
        else:
            verdict = "CLEAN: every entry exactly once"
        lines.append(verdict)
        return "\n".join(lines)


def compare(
    rows: list[Row],
    records: list[ConsumerRecord[bytes, bytes]],
    router: Router,
    from_serial: int,
    to_serial: int,
    strict: bool = False,
) -> AuditReport:
    """Check `records` (every event topic, read in partition order) against the source `rows`."""
    report = AuditReport(from_serial, to_serial, strict, source_rows=len(rows))
    expected = {row[4]: row for row in rows}
    copies: Counter[int] = Counter()
    places: dict[int, set[tuple[str, int]]] = {}
    last_on_partition: dict[tuple[str, int], int] = {}
    for record in records:
        serial = serial_of(record.headers)
        if serial is None or not from_serial < serial <= to_serial:
            continue
        report.records += 1
        place = (record.topic, record.partition)
        previous = last_on_partition.get(place)
        if previous is not None and serial <= previous:
            if serial in places and place in places[serial]:
                report.duplicates_dropped_by_consumers.append(serial)
            else:
                report.out_of_order.append(serial)
            continue
        last_on_partition[place] = serial
        copies[serial] += 1
        places.setdefault(serial, set()).add(place)
        row = expected.get(serial)
        if row is None:
            report.unexpected.append(serial)
            continue
        wanted = router.route(parse_row(row))
        report.by_type[wanted.type] += 1
        if record.topic != wanted.topic:
            report.wrong_topic.append(serial)
        if record.key != wanted.key:
            report.wrong_key.append(serial)
        if list(record.headers) != wanted.headers:
            report.wrong_headers.append(serial)
        if record.value is None or orjson.loads(record.value) != orjson.loads(wanted.value):
            report.wrong_fields.append(serial)
    report.duplicates_visible = sorted(s for s, n in copies.items() if n > 1)
    report.missing = sorted(set(expected) - set(copies))
    return report


async def read_event_records(
    kafka: KafkaSettings, prefix: str
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every committed record of every event topic, in partition order."""
    client = consumer(kafka, isolation_level="read_committed")
    try:
        await client.start()
        partitions = await partitions_of(client, event_topics(prefix))
        begins: dict[TopicPartition, int] = await client.beginning_offsets(partitions)
        return await read_ranges(client, begins)
    except KafkaError as exc:
        problem = "cannot read the event topics"
        raise await failure(kafka, exc, problem, "Read", bridge_prefixes(prefix)) from None
    finally:
        await client.stop()


async def audit(ns: argparse.Namespace) -> AuditReport:
    kafka = kafka_settings(ns)
    if kafka.bootstrap_servers is None:
        raise ConfigError("audit needs a broker", "pass --bootstrap-servers host:port")
    to_serial = ns.to_serial
    if to_serial is None:
        checkpoint = await read_checkpoint(kafka, ns.topic_prefix, committed_only=False)
        if checkpoint is None:
            raise BridgeError(
                f"no checkpoint for prefix {ns.topic_prefix!r}: nothing was committed yet",
                "pass --to-serial, or check --topic-prefix",
            )
        to_serial = checkpoint.serial
    if to_serial < ns.from_serial:
        raise ConfigError(f"--to-serial {to_serial} is before --from-serial {ns.from_serial}")
    settings = source_settings(ns)
    rows: list[Row] = []
    async with PyPIClient(settings) as client:
        async for page in client.pages_since(ns.from_serial, stop_at=to_serial):
            rows.extend(r for r in page if r[4] <= to_serial)
    records = await read_event_records(kafka, ns.topic_prefix)
    router = Router(ns.topic_prefix, settings.pypi_url)
    return compare(rows, records, router, ns.from_serial, to_serial, ns.strict)


async def run_audit(ns: argparse.Namespace, stop: asyncio.Event) -> int:
    report = await audit(ns)
    if ns.format == "json":
        print(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.describe())
    return 0 if report.clean else 1
