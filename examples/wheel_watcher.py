"""Print new wheels built for the platforms you care about, as PyPI publishes them.

Subscribes to `file.added`, keeps the wheels, and prints those with a platform tag matching one
of the `--platform` patterns (shell-style: `manylinux*x86_64`, `win_amd64`, `macosx_*_arm64`):

    python examples/wheel_watcher.py --bootstrap-servers localhost:9092 \\
        --platform 'manylinux*x86_64' --platform win_amd64

With `--group` it resumes where its last run stopped; without it, it starts at new events
(or at the oldest kept one with `--from-beginning`).
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import sys
import time
from collections.abc import Sequence

from bridge.config import KafkaSettings
from bridge.consumer import EventStream
from bridge.errors import BridgeError
from bridge.events import FileAdded


def platform_tags(filename: str) -> list[str]:
    """The platform tags of a wheel file name, or [] if it is not one.

    A wheel is `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`, and each tag may be
    a dot-separated set, as in `manylinux_2_17_x86_64.manylinux2014_x86_64`.
    """
    if not filename.lower().endswith(".whl"):
        return []
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return []
    return parts[-1].split(".")


def wanted(event: FileAdded, patterns: Sequence[str]) -> bool:
    """Whether `event` added a wheel with a platform tag matching one of `patterns`."""
    if event.package_type != "wheel":
        return False
    tags = platform_tags(event.filename)
    return any(fnmatch.fnmatchcase(tag, pattern) for tag in tags for pattern in patterns)


def line(event: FileAdded) -> str:
    return f"{event.time}  {event.project} {event.version}  {event.filename}"


async def watch(
    kafka: KafkaSettings,
    patterns: Sequence[str],
    *,
    prefix: str,
    group: str | None,
    from_beginning: bool,
    max_events: int | None,
    idle: float | None,
) -> None:
    """Print matching wheels until `max_events` are printed or the stream is quiet `idle` s."""
    printed = 0
    async with EventStream(
        kafka, ["file.added"], prefix=prefix, group=group, from_beginning=from_beginning
    ) as stream:
        # Counted from here: joining a consumer group can take a few seconds.
        quiet_since = time.monotonic()
        while max_events is None or printed < max_events:
            event = await stream.get(0.5)
            if event is None:
                if idle is not None and time.monotonic() - quiet_since >= idle:
                    return
                continue
            quiet_since = time.monotonic()
            if isinstance(event, FileAdded) and wanted(event, patterns):
                print(line(event), flush=True)
                printed += 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print new wheels for the given platforms.")
    parser.add_argument("--bootstrap-servers", default="localhost:9092", help="Kafka host:port")
    parser.add_argument("--topic-prefix", default="pypi", help="the bridge's --topic-prefix")
    parser.add_argument(
        "--platform",
        action="append",
        required=True,
        help="platform tag pattern, e.g. 'manylinux*x86_64' or win_amd64 (repeatable)",
    )
    parser.add_argument("--group", help="consumer group: resume where the last run stopped")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest event kept"
    )
    parser.add_argument("--max-events", type=int, help="exit after printing this many wheels")
    parser.add_argument("--timeout", type=float, help="exit after this many seconds of quiet")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(
            watch(
                KafkaSettings(bootstrap_servers=args.bootstrap_servers),
                args.platform,
                prefix=args.topic_prefix,
                group=args.group,
                from_beginning=args.from_beginning,
                max_events=args.max_events,
                idle=args.timeout,
            )
        )
    except BridgeError as exc:
        print(f"wheel_watcher: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
