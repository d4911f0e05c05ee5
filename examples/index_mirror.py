"""Mirror the project index into SQLite, exactly once, whatever kills the mirror.

A mirror, an index or a dependency bot keeps state of its own; this is the smallest honest way to
keep it in step with the bridge. The database holds one row per project (the same fields as the
`{prefix}.projects` topic) and the serial of the last event applied. Every event is applied in
one SQLite transaction together with that serial, so after a kill at any moment the database
holds either the event's effect and its serial, or neither. A restart reads the serial back and
resumes with `EventStream(from_serial=serial, ordered=True)`: the events after it, in journal
order across every type, so each event is applied exactly once.

    python examples/index_mirror.py --bootstrap-servers localhost:9092 --database index.db

On its first start (an empty database) it copies the project index topic, which also holds the
projects that have no journal row since the index was seeded, and then follows the events after
the newest watermark seen before the copy. The copy may hold entries newer than that watermark
(the bridge kept writing); the events after the watermark are applied all the same, in journal
order, just as the bridge applied them, so an entry may step back for a moment and then ends as
the bridge's own.

The rules that turn an event into an entry are the bridge's own (`bridge.index.ProjectIndex`),
so once both are caught up the table equals the topic.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from bridge.config import KafkaSettings
from bridge.consumer import EventStream, read_watermark
from bridge.errors import BridgeError
from bridge.events import Event
from bridge.index import QUARANTINED, ProjectIndex
from bridge.kafka import consumer, partitions_of, read_ranges, started
from bridge.parse import normalize_name
from bridge.routing import projects_topic

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    project_normalized TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    last_serial INTEGER NOT NULL,
    last_type TEXT,
    last_action TEXT,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    serial INTEGER NOT NULL
);
-- One row per event applied; its primary key makes a second application of a serial fail.
CREATE TABLE IF NOT EXISTS applied (
    serial INTEGER PRIMARY KEY,
    type TEXT NOT NULL
);
"""
FIELDS = ("project", "last_serial", "last_type", "last_action", "status")


class Mirror:
    """The database side: read the serial, copy the index, apply one event per transaction."""

    def __init__(self, path: Path) -> None:
        # Autocommit off by hand: each `with self.db:` block is one transaction.
        self.db = sqlite3.connect(path, isolation_level=None)
        # WAL with synchronous=NORMAL survives any kill of this process; use FULL to survive a
        # power cut as well (an fsync per event).
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @property
    def serial(self) -> int | None:
        row = self.db.execute("SELECT serial FROM progress WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def copy(self, entries: dict[str, bytes], serial: int) -> None:
        """The first start: the index topic's entries and the watermark serial, at once."""
        self.db.execute("BEGIN")
        try:
            for key, value in entries.items():
                self._put(key, value)
            self.db.execute("INSERT INTO progress (id, serial) VALUES (1, ?)", (serial,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def apply(self, event: Event) -> None:
        """One event's effect, its serial and its trace, in one transaction."""
        # The index's state that this event may read: whether its projects are quarantined.
        keys = {event.project_normalized, normalize_name(getattr(event, "previous_name", ""))}
        quarantined = {
            key
            for key in keys
            if self.db.execute(
                "SELECT 1 FROM projects WHERE project_normalized = ? AND status = ?",
                (key, QUARANTINED),
            ).fetchone()
        }
        updates = ProjectIndex(quarantined).updates([event])
        self.db.execute("BEGIN")
        try:
            for key, value in updates.items():
                if value is None:
                    self.db.execute("DELETE FROM projects WHERE project_normalized = ?", (key,))
                else:
                    self._put(key, value)
            self.db.execute(
                "INSERT INTO applied (serial, type) VALUES (?, ?)", (event.serial, event.type)
            )
            self.db.execute(
                "INSERT INTO progress (id, serial) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET serial = excluded.serial",
                (event.serial,),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _put(self, key: str, value: bytes) -> None:
        entry = orjson.loads(value)
        self.db.execute(
            "INSERT INTO projects (project_normalized, project, last_serial, last_type, "
            "last_action, status) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (project_normalized) DO UPDATE SET project = excluded.project, "
            "last_serial = excluded.last_serial, last_type = excluded.last_type, "
            "last_action = excluded.last_action, status = excluded.status",
            (key, *(entry[field] for field in FIELDS)),
        )


async def read_index(kafka: KafkaSettings, prefix: str) -> tuple[int, dict[str, bytes]]:
    """The newest watermark's serial (0 if none), then the index topic read to its end."""
    watermark = await read_watermark(kafka, prefix)
    async with started(kafka, consumer(kafka, isolation_level="read_committed")) as client:
        partitions = await partitions_of(client, [projects_topic(prefix)])
        begins = await client.beginning_offsets(partitions)
        records = await read_ranges(client, begins)
    entries: dict[str, bytes | None] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        entries[(record.key or b"").decode()] = record.value
    kept = {key: value for key, value in entries.items() if value is not None}
    return (watermark.serial if watermark is not None else 0), kept


async def follow(
    kafka: KafkaSettings,
    mirror: Mirror,
    *,
    prefix: str,
    until_caught_up: bool,
    idle: float | None,
) -> int:
    """Apply events until caught up (or `idle` seconds of quiet); returns how many."""
    serial = mirror.serial
    if serial is None:
        started = time.monotonic()
        serial, entries = await read_index(kafka, prefix)
        mirror.copy(entries, serial)
        print(
            f"index_mirror: copied {len(entries)} projects from {projects_topic(prefix)} "
            f"in {time.monotonic() - started:.1f} s; following the journal after serial {serial}",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"index_mirror: resuming after serial {serial}", file=sys.stderr, flush=True)
    applied = 0
    async with EventStream(
        kafka, prefix=prefix, from_serial=serial, ordered=True, until_caught_up=until_caught_up
    ) as stream:
        quiet_since = time.monotonic()
        while not stream.finished:
            event = await stream.get(0.5)
            if event is None:
                if idle is not None and time.monotonic() - quiet_since >= idle:
                    break
                continue
            mirror.apply(event)
            applied += 1
            quiet_since = time.monotonic()
    return applied


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Mirror the project index into SQLite.")
    parser.add_argument("--bootstrap-servers", default="localhost:9092", help="Kafka host:port")
    parser.add_argument("--topic-prefix", default="pypi", help="the bridge's --topic-prefix")
    parser.add_argument("--database", type=Path, required=True, help="the SQLite file")
    parser.add_argument(
        "--until-caught-up",
        action="store_true",
        help="exit once everything up to the watermark seen at start is applied",
    )
    parser.add_argument("--timeout", type=float, help="exit after this many seconds of quiet")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mirror = Mirror(args.database)
    try:
        applied = asyncio.run(
            follow(
                KafkaSettings(bootstrap_servers=args.bootstrap_servers),
                mirror,
                prefix=args.topic_prefix,
                until_caught_up=args.until_caught_up,
                idle=args.timeout,
            )
        )
        serial = mirror.serial
    except BridgeError as exc:
        print(f"index_mirror: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        mirror.close()
    print(f"index_mirror: applied {applied} events; at serial {serial}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
