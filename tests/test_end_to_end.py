"""The whole path with real processes: simulator -> `pypi-bridge run` -> broker -> aiokafka.

Every journal row must arrive exactly once, on its type's topic, with the right key, headers,
fields and schema; a restart resumes from the checkpoint; source faults are waited out.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord
from jsonschema import Draft202012Validator

from bridge.broker import EmbeddedBroker
from bridge.parse import Row, normalize_name
from bridge.routing import HEADER_NAMES
from tests.support import Simulator, fixed_journal, read_events, run_args, start, start_simulator

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas" / "events"


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with fixed_journal(tmp_path_factory.mktemp("sim"), 25_000, seed=7) as sim:
        yield sim


@pytest.fixture(scope="module")
def rows(journal: Simulator) -> list[Row]:
    found = journal.rows()
    assert len(found) == 25000
    return found


def validators() -> dict[str, Draft202012Validator]:
    return {
        path.name.removesuffix(".json"): Draft202012Validator(json.loads(path.read_text()))
        for path in SCHEMAS.glob("*.json")
    }


def check_exactly_once(
    records: list[ConsumerRecord[bytes, bytes]], expected: list[Row], prefix: str
) -> None:
    """Each expected row once, on the right topic, key, headers, fields, schema and order."""
    by_serial = {row[4]: row for row in expected}
    seen = Counter(int(dict(r.headers)["ce_id"]) for r in records)
    duplicates = [s for s, n in seen.items() if n > 1]
    assert not duplicates, f"{len(duplicates)} duplicated serials, e.g. {duplicates[:5]}"
    missing = sorted(set(by_serial) - set(seen))
    assert not missing, f"{len(missing)} serials missing, e.g. {missing[:5]}"
    extra = sorted(set(seen) - set(by_serial))
    assert not extra, f"{len(extra)} unexpected serials, e.g. {extra[:5]}"
    schema = validators()
    last_in_partition: dict[tuple[str, int], int] = defaultdict(lambda: -1)
    for record in records:
        assert record.value is not None
        value: dict[str, Any] = orjson.loads(record.value)
        headers = {k: v.decode() for k, v in record.headers}
        name, version, timestamp, action, serial = by_serial[value["serial"]]
        assert record.topic == f"{prefix}.{value['type']}"
        assert list(headers) == list(HEADER_NAMES)
        assert headers["ce_specversion"] == "1.0"
        assert headers["ce_id"] == str(serial)
        assert headers["ce_type"] == f"org.pypi.journal.{value['type']}"
        assert headers["ce_time"] == value["time"]
        assert headers["content-type"] == "application/json"
        assert (value["version"], value["timestamp"], value["action"]) == (
            version,
            timestamp,
            action,
        )
        if not value["type"].startswith("project.alternate_repository"):
            assert value["project"] == name
        assert record.key == normalize_name(value["project"]).encode()
        errors = sorted(schema[value["type"]].iter_errors(value), key=str)
        assert not errors, f"serial {serial}: {errors[0].message}"
        place = (record.topic, record.partition)
        assert serial > last_in_partition[place], f"serial order broken on {place}"
        last_in_partition[place] = serial


async def test_backfill_delivers_every_row_exactly_once(
    broker: EmbeddedBroker, journal: Simulator, rows: list[Row], tmp_path: Path
) -> None:
    stop_at = rows[22_000][4]
    bridge = start(
        run_args(
            journal,
            broker.bootstrap_servers,
            "e2e",
            "--start-serial",
            "0",
            "--stop-at-serial",
            str(stop_at),
        ),
        tmp_path / "bridge.log",
    )
    assert bridge.wait(180) == 0, bridge.output()[-3000:]
    records = await read_events(broker.bootstrap_servers, "e2e")
    expected = [r for r in rows if r[4] <= stop_at]
    assert len(expected) == 22_001
    check_exactly_once(records, expected, "e2e")
    assert "Traceback" not in bridge.output()


async def test_restart_resumes_from_the_checkpoint(
    broker: EmbeddedBroker, journal: Simulator, rows: list[Row], tmp_path: Path
) -> None:
    first_stop, final_stop = rows[4_000][4], rows[12_000][4]
    log = tmp_path / "bridge.log"
    common = ("--batch-size", "700")
    first = start(
        run_args(
            journal,
            broker.bootstrap_servers,
            "restart",
            "--start-serial",
            "0",
            "--stop-at-serial",
            str(first_stop),
            *common,
        ),
        log,
    )
    assert first.wait(120) == 0, first.output()[-3000:]
    # --start-serial is ignored from now on: the checkpoint decides where to resume.
    second = start(
        run_args(
            journal,
            broker.bootstrap_servers,
            "restart",
            "--start-serial",
            "0",
            "--stop-at-serial",
            str(final_stop),
            *common,
        ),
        log,
    )
    assert second.wait(120) == 0, second.output()[-3000:]
    assert f"resuming after serial {first_stop}" in second.output()
    records = await read_events(broker.bootstrap_servers, "restart")
    check_exactly_once(records, [r for r in rows if r[4] <= final_stop], "restart")


async def test_sigterm_mid_backfill_then_restart_loses_and_repeats_nothing(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    # Small pages and some latency make the backfill last long enough to interrupt it.
    sim = start_simulator(
        tmp_path, "--prefill", "20000", "--rate", "0", "--page-size", "1000", "--latency", "0.1"
    )
    try:
        rows = sim.rows()
        log = tmp_path / "bridge.log"
        args = run_args(
            sim, broker.bootstrap_servers, "sigterm", "--start-serial", "0", "--batch-size", "300"
        )
        bridge = start(args, log)
        deadline = time.monotonic() + 60
        while "backfill: serial" not in bridge.output().split("is now the leader")[-1]:
            assert time.monotonic() < deadline, bridge.output()[-3000:]
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        assert bridge.stop(signal.SIGTERM) == 0, bridge.output()[-3000:]
        interrupted = await read_events(broker.bootstrap_servers, "sigterm")
        assert 0 < len(interrupted) < len(rows), "the stop should land mid-backfill"
        again = start([*args, "--stop-at-serial", str(rows[-1][4])], log)
        assert again.wait(180) == 0, again.output()[-3000:]
        check_exactly_once(await read_events(broker.bootstrap_servers, "sigterm"), rows, "sigterm")
    finally:
        sim.stop()


FAULT_LINES = {
    "throttle": "PyPI is throttling",
    "503": "HTTP 503",
    "502": "HTTP 502",
    "malformed": "malformed",
    "truncate": "truncated",
    "timeout": "no answer from",
    "reset": "connection to",
}


async def test_source_faults_are_waited_out_with_one_line_each_and_nothing_lost(
    broker: EmbeddedBroker, journal: Simulator, rows: list[Row], tmp_path: Path
) -> None:
    for kind in FAULT_LINES:
        payload: dict[str, Any] = {"kind": kind, "count": 1}
        if kind == "throttle":
            payload["retry_after"] = 1
        journal.post("/_sim/faults", payload)
    stop_at = rows[3_000][4]
    bridge = start(
        run_args(
            journal,
            broker.bootstrap_servers,
            "faults",
            "--start-serial",
            "0",
            "--stop-at-serial",
            str(stop_at),
            "--request-timeout",
            "1.5",
            "--max-backoff",
            "1",
        ),
        tmp_path / "bridge.log",
    )
    assert bridge.wait(120) == 0, bridge.output()[-3000:]
    output = bridge.output()
    for kind, line in FAULT_LINES.items():
        hits = [x for x in output.splitlines() if line in x and "WARNING" in x]
        assert len(hits) == 1, f"{kind}: expected one clear line with {line!r}, got {hits}"
    assert "Traceback" not in output
    check_exactly_once(
        await read_events(broker.bootstrap_servers, "faults"),
        [r for r in rows if r[4] <= stop_at],
        "faults",
    )


@pytest.mark.parametrize(
    ("code", "message", "hint"),
    [
        (-32601, "method not found: changelog_since_serial", "--pypi-url"),
        (-32700, "parse error. not well formed", "--pypi-url"),
    ],
)
async def test_unfixable_fault_stops_with_one_line_and_no_traceback(
    broker: EmbeddedBroker,
    journal: Simulator,
    tmp_path: Path,
    code: int,
    message: str,
    hint: str,
) -> None:
    journal.post("/_sim/faults", {"kind": "fault", "count": 1, "code": code, "message": message})
    bridge = start(
        run_args(journal, broker.bootstrap_servers, f"fatal{-code}", "--start-serial", "0"),
        tmp_path / "bridge.log",
    )
    assert bridge.wait(60) == 1
    output = bridge.output()
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("pypi-bridge: error:")]
    assert len(errors) == 1
    assert str(code) in errors[0]
    assert hint in errors[0]
