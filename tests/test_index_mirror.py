"""examples/index_mirror.py, killed again and again, applies every event exactly once.

The bridge backfills half a journal; the mirror copies the index and then follows while the bridge
publishes the rest, and is SIGKILLed at random moments and restarted each time. At the end the
SQLite table equals the project index topic, and the `applied` table (one row per event, its
serial the primary key) holds exactly the journal's serials after the copy's watermark.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.broker import EmbeddedBroker
from tests.conftest import ROOT
from tests.support import (
    Process,
    Simulator,
    child_env,
    fixed_journal,
    index_entries,
    run_args,
    start,
)

MIRROR = ROOT / "examples" / "index_mirror.py"
KILLS = 8


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with fixed_journal(
        tmp_path_factory.mktemp("mirror-sim"), 40_000, seed=23, page_size=2000, latency=0.05
    ) as simulator:
        yield simulator


def mirror_args(broker: EmbeddedBroker, prefix: str, database: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(MIRROR),
        *("--bootstrap-servers", broker.bootstrap_servers),
        *("--topic-prefix", prefix, "--database", str(database)),
        *extra,
    ]


def table(database: Path) -> dict[str, dict[str, Any]]:
    db = sqlite3.connect(database)
    try:
        rows = db.execute(
            "SELECT project_normalized, project, last_serial, last_type, last_action, status "
            "FROM projects"
        ).fetchall()
    finally:
        db.close()
    fields = ("project_normalized", "project", "last_serial", "last_type", "last_action")
    return {row[0]: dict(zip((*fields, "status"), row, strict=True)) for row in rows}


def applied_serials(database: Path) -> list[int]:
    db = sqlite3.connect(database)
    try:
        return [serial for (serial,) in db.execute("SELECT serial FROM applied ORDER BY serial")]
    finally:
        db.close()


async def test_a_mirror_killed_at_random_moments_applies_every_event_once(
    sim: Simulator, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"mirror-{time.monotonic_ns()}"
    rows = sim.rows()
    half, last = rows[len(rows) // 2][4], rows[-1][4]
    args = run_args(sim, broker.bootstrap_servers, prefix, "--start-serial", "0")
    args += ["--partitions", "3", "--batch-size", "1000"]
    first = start([*args, "--stop-at-serial", str(half)], tmp_path / "bridge-1.log")
    assert await asyncio.to_thread(first.wait, 180) == 0, first.output()[-3000:]

    database = tmp_path / "index.db"
    log = tmp_path / "mirror.log"
    rest = start([*args, "--stop-at-serial", str(last)], tmp_path / "bridge-2.log")
    rng = random.Random(2027)
    try:
        for kill in range(KILLS):
            mirror = start(mirror_args(broker, prefix, database), log)
            offset = len(mirror.output())
            deadline = time.monotonic() + 60
            while "index_mirror: " not in mirror.output()[offset:]:
                assert mirror.popen.poll() is None, mirror.output()[-3000:]
                assert time.monotonic() < deadline, mirror.output()[-3000:]
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            mirror.stop(signal.SIGKILL)
            if kill == 0:
                assert "copied" in mirror.output()[offset:], mirror.output()[-3000:]
            else:
                assert "resuming after serial" in mirror.output()[offset:]
        assert await asyncio.to_thread(rest.wait, 300) == 0, rest.output()[-3000:]
    finally:
        rest.stop()
    final: Process = start(mirror_args(broker, prefix, database, "--until-caught-up"), log)
    assert await asyncio.to_thread(final.wait, 300) == 0, final.output()[-3000:]
    assert "Traceback" not in final.output()

    copied = int(final.output().split("following the journal after serial ")[1].split()[0])
    assert half <= copied < last  # the copy was taken while the bridge was publishing the rest
    assert applied_serials(database) == [r[4] for r in rows if r[4] > copied]
    mirrored, index = table(database), await index_entries(broker.bootstrap_servers, prefix)
    assert mirrored.keys() == index.keys()
    differing = {k: (mirrored[k], index[k]) for k in index if mirrored[k] != index[k]}
    assert not differing, repr(list(differing.items())[:2])


def test_the_mirror_without_a_broker_says_so_in_one_line(tmp_path: Path) -> None:
    import subprocess

    completed = subprocess.run(
        [
            sys.executable,
            str(MIRROR),
            *("--bootstrap-servers", "127.0.0.1:1", "--database", str(tmp_path / "x.db")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
    )
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.startswith("index_mirror:")]
    assert len(lines) == 1, completed.stderr
    assert "127.0.0.1:1" in lines[0]
