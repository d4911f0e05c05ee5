"""The audit is the tests' oracle, so it must itself catch every kind of discrepancy."""

from __future__ import annotations

import dataclasses

from aiokafka import ConsumerRecord

from bridge.audit import compare
from bridge.parse import Row, parse_row
from bridge.routing import Record, Router

URL = "https://pypi.org/pypi"
ROWS: list[Row] = [
    ("Foo", None, 1700000000, "create", 11),
    ("Foo", None, 1700000000, "add Owner alice", 12),
    ("Foo", "1.0", 1700000000, "new release", 14),
    ("Foo", "1.0", 1700000000, "add source file foo-1.0.tar.gz", 15),
    ("Bar", "2.0", 1700000001, "yank release", 17),
]
ROUTER = Router("pypi", URL)


def kafka_record(
    record: Record, partition: int = 0, offset: int = 0
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=record.topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=record.key,
        value=record.value,
        checksum=None,
        serialized_key_size=len(record.key),
        serialized_value_size=len(record.value),
        headers=tuple(record.headers),
    )


def published(rows: list[Row]) -> list[ConsumerRecord[bytes, bytes]]:
    return [kafka_record(ROUTER.route(parse_row(r)), offset=i) for i, r in enumerate(rows)]


def audit(records: list[ConsumerRecord[bytes, bytes]], strict: bool = False) -> dict[str, object]:
    return compare(ROWS, records, ROUTER, 10, 17, strict).as_dict()


def test_complete_stream_is_clean() -> None:
    report = audit(published(ROWS))
    assert report["clean"] is True
    assert report["records"] == 5


def test_gap_is_reported() -> None:
    report = audit(published(ROWS[:2] + ROWS[3:]))
    assert report["clean"] is False
    assert report["missing"] == {"count": 1, "serials": [14]}


def test_duplicate_on_one_partition_is_dropped_by_consumers_and_fails_only_strict() -> None:
    records = published(ROWS)
    again = dataclasses.replace(records[2], offset=99)
    lenient = audit([*records, again])
    assert lenient["clean"] is True
    assert lenient["duplicates_dropped_by_consumers"] == {"count": 1, "serials": [14]}
    assert audit([*records, again], strict=True)["clean"] is False


def test_a_lenient_verdict_never_calls_duplicates_plain_clean() -> None:
    records = published(ROWS)
    again = dataclasses.replace(records[2], offset=99)
    report = compare(ROWS, [*records, again], ROUTER, 10, 17, False)
    verdict = report.describe().splitlines()[-1]
    assert verdict.startswith("CLEAN FOR CONSUMERS, WITH 1 DUPLICATES")
    assert report.as_dict()["exactly_once"] is False
    exact = compare(ROWS, records, ROUTER, 10, 17, False)
    assert exact.describe().splitlines()[-1] == "CLEAN: every entry exactly once"
    assert exact.as_dict()["exactly_once"] is True


def test_duplicate_on_another_partition_is_visible_and_fails() -> None:
    records = published(ROWS)
    elsewhere = dataclasses.replace(records[2], partition=1)
    report = audit([*records, elsewhere])
    assert report["clean"] is False
    assert report["duplicates_visible"] == {"count": 1, "serials": [14]}


def test_wrong_topic_key_headers_and_fields_are_each_reported() -> None:
    records = published(ROWS)
    records[0] = dataclasses.replace(records[0], topic="pypi.release.created")
    records[1] = dataclasses.replace(records[1], key=b"bar")
    records[2] = dataclasses.replace(records[2], headers=records[2].headers[:-1])
    records[3] = dataclasses.replace(records[3], value=records[3].value.replace(b"source", b"py3"))
    report = audit(records)
    assert report["clean"] is False
    assert report["wrong_topic"] == {"count": 1, "serials": [11]}
    assert report["wrong_key"] == {"count": 1, "serials": [12]}
    assert report["wrong_headers"] == {"count": 1, "serials": [14]}
    assert report["wrong_fields"] == {"count": 1, "serials": [15]}


def test_serial_not_in_the_journal_is_unexpected() -> None:
    ghost = ROUTER.route(parse_row(("Baz", None, 1700000002, "create", 16)))
    report = audit([*published(ROWS), kafka_record(ghost, partition=2)])
    assert report["unexpected"] == {"count": 1, "serials": [16]}


def test_broken_order_within_a_partition_is_reported() -> None:
    rows: list[Row] = [
        ("Foo", "1.0", 1700000000, "add source file foo-1.0.tar.gz", 21),
        ("Foo", "1.0", 1700000000, "add py3 file foo-1.0-py3-none-any.whl", 22),
    ]
    records = published(rows)
    swapped = [
        dataclasses.replace(records[1], offset=0),
        dataclasses.replace(records[0], offset=1),
    ]
    assert compare(rows, records, ROUTER, 20, 22).clean
    report = compare(rows, swapped, ROUTER, 20, 22)
    assert not report.clean
    assert report.out_of_order == [21]


def test_records_outside_the_range_are_ignored() -> None:
    early = ROUTER.route(parse_row(("Old", None, 1600000000, "create", 3)))
    assert audit([kafka_record(early), *published(ROWS)])["clean"] is True
