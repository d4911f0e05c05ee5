"""The project index (`{prefix}.projects`) and the watermark (`{prefix}.watermark`).

Unit tests of the index rules, then real bridge processes: on the embedded broker (high-water
mode) and on Apache Kafka (transactional), the index read to its end equals the simulator's
`list_packages_with_serial`, a restart neither seeds it again nor loses it, and watermarks come
with every batch and on a heartbeat while the journal is quiet.
"""

from __future__ import annotations

import asyncio
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.broker import EmbeddedBroker
from bridge.checkpoint import Checkpoint
from bridge.errors import ContractError
from bridge.index import ProjectIndex
from bridge.parse import normalize_name, parse_row
from bridge.routing import event_topics, projects_topic, public_topics, watermark_topic
from bridge.rows import check_listing
from bridge.watermark import Watermark
from tests.realkafka import KafkaCluster
from tests.support import (
    Process,
    Simulator,
    fixed_journal,
    index_of,
    read_topics,
    run_args,
    start,
)

Row = tuple[str, str | None, int, str, int]


# --- the rules, one function at a time --------------------------------------------------------


def _events(*rows: tuple[str, str | None, str]) -> list[Any]:
    return [
        parse_row((name, version, 1_700_000_000 + i, action, 100 + i))
        for i, (name, version, action) in enumerate(rows)
    ]


def test_every_row_about_a_project_moves_its_entry_and_a_removal_is_a_tombstone() -> None:
    index = ProjectIndex()
    updates = index.updates(
        _events(
            ("Foo_Bar", None, "create"),
            ("Foo_Bar", "1.0", "new release"),
            ("gone", None, "remove project"),
            ("foo-bar", "1.0", "add py3 file foo_bar-1.0-py3-none-any.whl"),
        )
    )
    assert list(updates) == ["gone", "foo-bar"]
    assert updates["gone"] is None
    value = orjson.loads(updates["foo-bar"] or b"")
    assert value == {
        "project": "foo-bar",
        "project_normalized": "foo-bar",
        "last_serial": 103,
        "last_type": "file.added",
        "last_action": "add py3 file foo_bar-1.0-py3-none-any.whl",
        "status": "active",
    }


def test_a_rename_removes_the_old_name_and_quarantine_sets_the_status_until_cleared() -> None:
    index = ProjectIndex()
    updates = index.updates(
        _events(
            ("old-name", None, "project quarantined"), ("New.Name", None, "rename from old-name")
        )
    )
    assert updates["old-name"] is None
    assert orjson.loads(updates["new-name"] or b"")["status"] == "quarantined"
    assert index.quarantined == {"new-name"}
    # A later batch, from the state the checkpoint carries.
    later = ProjectIndex(index.quarantined).updates(
        _events(("new.name", None, "project quarantine cleared"))
    )
    assert orjson.loads(later["new-name"] or b"")["status"] == "active"


def test_rows_that_name_no_project_leave_the_index_alone() -> None:
    updates = ProjectIndex().updates(
        _events(
            ("user:someone", None, "nuke user"),
            ("", "", "keyrotate "),
            ("foo-mirror", None, "add alternate repository foo-mirror to project foo"),
        )
    )
    assert updates == {}


def test_a_project_removed_and_created_again_in_one_batch_ends_as_an_entry() -> None:
    updates = ProjectIndex().updates(
        _events(("reborn", None, "remove project"), ("reborn", None, "create"))
    )
    assert list(updates) == ["reborn"]
    assert updates["reborn"] is not None


def test_the_seed_marks_known_quarantines_and_leaves_type_and_action_empty() -> None:
    seeded = ProjectIndex({"bad"}).seed([("Bad", 7), ("Good.One", 9)])
    assert orjson.loads(seeded["bad"] or b"")["status"] == "quarantined"
    good = orjson.loads(seeded["good-one"] or b"")
    assert good == {
        "project": "Good.One",
        "project_normalized": "good-one",
        "last_serial": 9,
        "last_type": None,
        "last_action": None,
        "status": "active",
    }


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ([], "returned list, not a struct"),
        ({"": 3}, "names a project ''"),
        ({"foo": "3"}, "a serial of type str"),
        ({"foo": True}, "a serial of type bool"),
        ({"foo": 2**40}, "outside 1..2147483647"),
        ({"foo": 0}, "outside 1..2147483647"),
    ],
)
def test_a_listing_that_breaks_the_contract_is_named(answer: object, problem: str) -> None:
    found = check_listing(answer)
    assert found is not None
    assert problem in found


def test_the_checkpoint_carries_the_index_state_and_old_checkpoints_read_as_unseeded() -> None:
    checkpoint = Checkpoint(serial=5, timestamp=None, quarantined=("a", "b"), index_seeded=True)
    again = Checkpoint.decode(checkpoint.encode())
    assert again.quarantined == ("a", "b")
    assert again.index_seeded
    old = Checkpoint.decode(b'{"version": 1, "serial": 5, "timestamp": null}')
    assert old.quarantined == ()
    assert not old.index_seeded


def test_the_watermark_round_trips_and_names_a_foreign_record() -> None:
    mark = Watermark(serial=9, timestamp=1_700_000_000, offsets={"p.x": [3, 0]}, head=12)
    data = orjson.loads(mark.encode())
    assert data["version"] == 1
    assert data["lag"] == 3
    assert data["head"] == 12
    again = Watermark.decode(mark.encode())
    assert (again.serial, again.offset("p.x", 0), again.offset("p.x", 5)) == (9, 3, 0)
    with pytest.raises(ContractError, match="watermark record is unreadable"):
        Watermark.decode(b'{"serial": "nine"}')


def test_the_new_topics_collide_with_no_event_topic() -> None:
    names = public_topics("pypi")
    assert len(names) == len(set(names))
    assert {projects_topic("pypi"), watermark_topic("pypi")}.isdisjoint(event_topics("pypi"))


# --- against real processes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with fixed_journal(tmp_path_factory.mktemp("index-sim"), 30_000, seed=21) as simulator:
        yield simulator


def listing(sim: Simulator) -> dict[str, tuple[str, int]]:
    """The simulator's list_packages_with_serial, by normalized name."""
    answer: Any = xmlrpc.client.ServerProxy(sim.url).list_packages_with_serial()
    return {normalize_name(name): (name, int(serial)) for name, serial in answer.items()}


async def watermarks(bootstrap: str, prefix: str, isolation: str) -> list[Watermark]:
    records = await read_topics(bootstrap, [watermark_topic(prefix)], isolation)
    return [Watermark.decode(r.value) for r in sorted(records, key=lambda r: r.offset) if r.value]


async def run_to(
    sim: Simulator, bootstrap: str, prefix: str, serial: int, log: Path, *extra: str
) -> str:
    args = run_args(sim, bootstrap, prefix, "--start-serial", "0", *extra)
    process: Process = start([*args, "--stop-at-serial", str(serial)], log)
    try:
        code = await asyncio.to_thread(process.wait, 240)
    finally:
        process.stop()
    output = process.output()
    assert code == 0, output[-3000:]
    return output


def _seed_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "seeded the project index with" in line]


async def _index_follows_the_listing(
    sim: Simulator, bootstrap: str, prefix: str, tmp_path: Path, isolation: str, *extra: str
) -> None:
    rows: list[Row] = sim.rows()
    actions = " | ".join(r[3] for r in rows)
    for needed in ("create", "remove project", "project quarantined"):
        assert needed in actions, f"the journal lacks a {needed!r} row: use more rows"
    first = await run_to(sim, bootstrap, prefix, rows[-1][4], tmp_path / "first.log", *extra)
    assert len(_seed_lines(first)) == 1, first[-3000:]
    expected = listing(sim)
    assert await index_of(bootstrap, prefix, isolation) == expected
    # The journal grows; a restart follows it without seeding again, and nothing is lost.
    sim.post("/_sim/append", {"rows": 3000})
    grown = sim.rows(rows[-1][4])
    second = await run_to(sim, bootstrap, prefix, grown[-1][4], tmp_path / "second.log", *extra)
    assert "resuming after serial" in second
    assert not _seed_lines(second), second[-3000:]
    assert "list_packages_with_serial" not in second
    assert await index_of(bootstrap, prefix, isolation) == listing(sim)
    # Every batch wrote a watermark: the last covers the last serial, below the end offsets.
    marks = await watermarks(bootstrap, prefix, isolation)
    assert marks
    assert marks[-1].serial == grown[-1][4]
    assert [m.serial for m in marks] == sorted(m.serial for m in marks)
    events = await read_topics(bootstrap, event_topics(prefix), isolation)
    for record in events:
        assert record.offset < marks[-1].offset(record.topic, record.partition)


async def test_the_index_equals_list_packages_with_serial_in_high_water_mode(
    sim: Simulator, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    await _index_follows_the_listing(
        sim,
        broker.bootstrap_servers,
        f"index-hw-{time.monotonic_ns()}",
        tmp_path,
        "read_uncommitted",
    )


async def test_the_index_equals_list_packages_with_serial_in_transactional_mode(
    sim: Simulator, kafka: KafkaCluster, tmp_path: Path
) -> None:
    await _index_follows_the_listing(
        sim,
        kafka.bootstrap_servers,
        f"index-tx-{time.monotonic_ns()}",
        tmp_path,
        "read_committed",
        "--delivery",
        "transactional",
    )


async def test_a_quiet_journal_gets_a_watermark_every_heartbeat_interval(
    sim: Simulator, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"heartbeat-{time.monotonic_ns()}"
    args = run_args(sim, broker.bootstrap_servers, prefix, "--heartbeat-interval", "0.5")
    # No --start-serial: the bridge starts at the head, and the journal stays quiet.
    process = start(args, tmp_path / "bridge.log")
    try:
        deadline = time.monotonic() + 60
        while "caught up" not in process.output() and "the project index with" not in (
            process.output()
        ):
            assert time.monotonic() < deadline, process.output()[-3000:]
            assert process.popen.poll() is None, process.output()[-3000:]
            await asyncio.sleep(0.2)
        await asyncio.sleep(3.0)
        marks = await watermarks(broker.bootstrap_servers, prefix, "read_uncommitted")
    finally:
        process.stop()
    head = sim.state()["last_serial"]
    assert len(marks) >= 4, process.output()[-3000:]
    assert all(m.serial == head and m.head == head and m.lag == 0 for m in marks[-3:])
    gaps = [b.written_at - a.written_at for a, b in zip(marks[-4:-1], marks[-3:], strict=True)]
    assert all(0.3 < gap < 2.0 for gap in gaps), gaps
