"""`pypi-bridge consume` against the real broker, after a real bridge published a simulated journal.

Its JSON Lines are what a plain aiokafka consumer reads from the type's topic; `--max-events`,
`--timeout` and `--group` end and resume it; bad flags end it with one line and exit status 2.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from bridge.broker import EmbeddedBroker
from bridge.routing import topic_name
from tests.support import bridge_command, child_env, read_topics
from tests.test_consumer import Published, publish


@pytest.fixture(scope="module")
def published(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish(broker, tmp_path_factory.mktemp("consume-cli"), "cli")


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.splitlines()]


async def consume(published: Published, *args: str, limit: float = 60.0) -> Run:
    """Run `pypi-bridge consume` on the published topics until it exits by itself."""
    process = await asyncio.create_subprocess_exec(
        *bridge_command(
            "consume",
            "--bootstrap-servers",
            published.bootstrap,
            "--topic-prefix",
            published.prefix,
            *args,
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"consume {args} did not exit within {limit} s") from None
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def run_sync(*args: str) -> Run:
    done = subprocess.run(
        bridge_command("consume", *args),
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def serials(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["serial"]) for e in events]


async def test_output_for_a_type_is_what_a_plain_consumer_reads_from_its_topic(
    published: Published,
) -> None:
    run = await consume(
        published, "--type", "release.created", "--from-beginning", "--timeout", "3"
    )
    assert run.code == 0, run.err
    printed = run.events
    records = await read_topics(
        published.bootstrap,
        [topic_name(published.prefix, "release.created")],
        isolation="read_committed",
    )
    assert len(records) == len(published.of("release.created"))
    partitions: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        assert record.value is not None
        partitions.setdefault(record.partition, []).append(orjson.loads(record.value))
    assert len(partitions) > 1, "the comparison of orders needs several partitions"
    assert sorted(printed, key=lambda e: e["serial"]) == sorted(
        (value for values in partitions.values() for value in values),
        key=lambda e: e["serial"],
    )
    for partition, values in partitions.items():
        mine = set(serials(values))
        in_output = [e for e in printed if e["serial"] in mine]
        assert in_output == values, f"partition {partition} came out in another order"


async def test_max_events_prints_that_many_lines_and_exits_0(published: Published) -> None:
    run = await consume(published, "--type", "file.added", "--from-beginning", "--max-events", "7")
    assert run.code == 0, run.err
    assert len(run.out.splitlines()) == 7
    expected = {e.serial for e in published.of("file.added")}
    assert len(set(serials(run.events))) == 7
    assert set(serials(run.events)) <= expected


async def test_timeout_counts_from_when_the_group_has_joined(published: Published) -> None:
    # Joining a group takes seconds (5 on the embedded broker): longer than this --timeout.
    group = f"cli-{uuid.uuid4().hex[:8]}"
    args = ("--type", "release.yanked", "--from-beginning", "--group", group, "--timeout", "2")
    run = await consume(published, *args)
    assert run.code == 0, run.err
    assert sorted(serials(run.events)) == [e.serial for e in published.of("release.yanked")]


async def test_a_group_resumes_where_its_last_run_stopped(published: Published) -> None:
    expected = [e.serial for e in published.of("release.removed", "project.removed")]
    group = f"cli-{uuid.uuid4().hex[:8]}"
    common = ("--type", "release.removed", "--type", "project.removed", "--group", group)
    first = await consume(published, *common, "--from-beginning", "--max-events", "5")
    assert first.code == 0, first.err
    assert len(first.events) == 5
    second = await consume(published, *common, "--from-beginning", "--timeout", "2")
    assert second.code == 0, second.err
    assert not set(serials(first.events)) & set(serials(second.events)), "events came twice"
    assert sorted(serials(first.events) + serials(second.events)) == expected


def test_an_unknown_type_exits_2_with_one_line_and_no_traceback() -> None:
    run = run_sync("--bootstrap-servers", "127.0.0.1:9", "--type", "nope")
    assert run.code == 2
    assert run.out == ""
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    assert "'nope'" in lines[0]
    assert "release.created" in lines[0]
    assert "Traceback" not in run.err


def test_missing_bootstrap_servers_exits_2_with_one_line() -> None:
    run = run_sync("--type", "release.created")
    assert run.code == 2
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    assert "--bootstrap-servers" in lines[0]
    assert "Traceback" not in run.err


def test_a_bad_from_time_exits_2_with_one_line_naming_the_format() -> None:
    run = run_sync("--bootstrap-servers", "127.0.0.1:9", "--from-time", "yesterday")
    assert run.code == 2
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    assert "--from-time" in lines[0]
    assert "RFC 3339" in lines[0]


def test_two_starting_points_exit_2_with_one_line() -> None:
    run = run_sync(
        "--bootstrap-servers", "127.0.0.1:9", "--from-serial", "5", "--from-time", "1796299200"
    )
    assert run.code == 2
    lines = run.err.splitlines()
    assert len(lines) == 1, run.err
    assert "--from-serial" in lines[0]
    assert "Traceback" not in run.err
