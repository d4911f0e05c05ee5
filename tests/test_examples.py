"""The example consumers in examples/, run as a user runs them, against a real bridge's output."""

from __future__ import annotations

import asyncio
import fnmatch
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bridge.broker import EmbeddedBroker
from bridge.events import FileAdded
from tests.support import ROOT, child_env, loopback_server
from tests.test_consumer import Published, publish

EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def published(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish(broker, tmp_path_factory.mktemp("examples"), "examples")


async def run_example(published: Published, script: str, *args: str) -> tuple[int, str, str]:
    """Run one example script to its end; (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / script),
        "--bootstrap-servers",
        published.bootstrap,
        "--topic-prefix",
        published.prefix,
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{script} did not exit within 60 s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_wheel_watcher_prints_exactly_the_wheels_for_the_platforms(
    published: Published,
) -> None:
    patterns = ("manylinux*x86_64", "win_amd64")
    code, out, err = await run_example(
        published,
        "wheel_watcher.py",
        *("--platform", patterns[0], "--platform", patterns[1]),
        *("--from-beginning", "--timeout", "2"),
    )
    assert code == 0, err
    wheels = [
        e.filename
        for e in published.of("file.added")
        if isinstance(e, FileAdded) and e.filename.endswith(".whl")
    ]
    # The platform tag is the wheel name's last dash-separated part, maybe a dotted set of tags.
    expected = sorted(
        name
        for name in wheels
        if any(
            fnmatch.fnmatchcase(tag, pattern)
            for tag in name.removesuffix(".whl").rsplit("-", 1)[1].split(".")
            for pattern in patterns
        )
    )
    assert any("manylinux" in name for name in expected)
    assert any("win_amd64" in name for name in expected)
    assert len(expected) < len(wheels), "the patterns should leave some wheels out"
    assert sorted(line.split()[-1] for line in out.splitlines()) == expected


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server collecting the JSON bodies POSTed to `/hook`."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    async with loopback_server("/hook", hook) as url:
        yield url, received


async def test_yank_notifier_posts_one_notification_per_matching_event(
    published: Published, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    code, out, err = await run_example(
        published, "yank_notifier.py", "--webhook", url, "--from-beginning", "--timeout", "2"
    )
    assert code == 0, err
    assert out == ""
    expected = published.of(
        "release.yanked",
        "release.removed",
        "release.quarantined",
        "project.removed",
        "project.quarantined",
        "file.removed",
    )
    assert sorted(body["serial"] for body in received) == [e.serial for e in expected]
    by_serial = {e.serial: e for e in expected}
    for body in received:
        event = by_serial[body["serial"]]
        assert (body["type"], body["project"], body["version"]) == (
            event.type,
            event.project,
            event.version,
        )
        assert event.project in body["text"]
