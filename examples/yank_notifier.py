"""Tell a webhook (or the terminal) when something on PyPI is yanked, removed or quarantined.

Subscribes to the events that take software away from users and sends one JSON notification
per event: POSTed to `--webhook` if given (Slack-style incoming webhooks, a chat bot, a ticket
system), else printed as a JSON line:

    python examples/yank_notifier.py --bootstrap-servers localhost:9092 \\
        --group yank-notifier --webhook https://hooks.example.org/pypi

With `--group`, an event is committed only once its notification was accepted: if the webhook
keeps failing the notifier exits with status 1, and the next run sends that event again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson

from bridge.config import KafkaSettings
from bridge.consumer import EventStream
from bridge.errors import BridgeError
from bridge.events import Event, FileRemoved

TYPES = (
    "release.yanked",
    "release.removed",
    "release.quarantined",
    "project.removed",
    "project.quarantined",
    "file.removed",
)
WHAT_HAPPENED = {
    "release.yanked": "was yanked on PyPI",
    "release.removed": "was removed from PyPI",
    "release.quarantined": "was quarantined on PyPI",
    "project.removed": "was removed from PyPI",
    "project.quarantined": "was quarantined on PyPI",
    "file.removed": "was removed from PyPI",
}
ATTEMPTS = 3


class WebhookFailed(Exception):
    """The webhook refused or did not answer, `ATTEMPTS` times in a row."""


def notification(event: Event) -> dict[str, Any]:
    """The JSON body sent for one event."""
    subject = event.project
    if event.version is not None:
        subject += f" {event.version}"
    url = f"https://pypi.org/project/{event.project_normalized}/"
    if event.version is not None and event.type.startswith("release."):
        url += f"{event.version}/"
    body: dict[str, Any] = {
        "text": f"{subject} {WHAT_HAPPENED[event.type]}",
        "type": event.type,
        "serial": event.serial,
        "time": event.time,
        "project": event.project,
        "version": event.version,
        "url": url,
    }
    if isinstance(event, FileRemoved):
        body["filename"] = event.filename
        body["text"] = f"{event.filename} ({subject}) {WHAT_HAPPENED[event.type]}"
    return body


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    """POST `body`, retrying a few times; raises WebhookFailed if it never gets a 2xx."""
    problem = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(attempt)
        try:
            async with session.post(
                url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
            ) as response:
                if response.status < 300:
                    return
                problem = f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
    raise WebhookFailed(f"{url} failed {ATTEMPTS} times, last with {problem}")


async def notify(
    kafka: KafkaSettings,
    webhook: str | None,
    *,
    prefix: str,
    group: str | None,
    from_beginning: bool,
    max_events: int | None,
    idle: float | None,
) -> None:
    """Send one notification per event until `max_events`, or until `idle` seconds of quiet."""
    sent = 0
    client_timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as session,
        EventStream(
            kafka, TYPES, prefix=prefix, group=group, from_beginning=from_beginning
        ) as stream,
    ):
        # Counted from here: joining a consumer group can take a few seconds.
        quiet_since = time.monotonic()
        while max_events is None or sent < max_events:
            event = await stream.get(0.5)
            if event is None:
                if idle is not None and time.monotonic() - quiet_since >= idle:
                    return
                continue
            body = notification(event)
            if webhook is None:
                print(orjson.dumps(body).decode(), flush=True)
            else:
                # If this raises, the stream closes without committing this event.
                await post(session, webhook, body)
            sent += 1
            quiet_since = time.monotonic()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Notify about yanked or removed software.")
    parser.add_argument("--bootstrap-servers", default="localhost:9092", help="Kafka host:port")
    parser.add_argument("--topic-prefix", default="pypi", help="the bridge's --topic-prefix")
    parser.add_argument("--webhook", help="URL to POST each notification to (default: print)")
    parser.add_argument("--group", help="consumer group: resume where the last run stopped")
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest event kept"
    )
    parser.add_argument("--max-events", type=int, help="exit after this many notifications")
    parser.add_argument("--timeout", type=float, help="exit after this many seconds of quiet")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(
            notify(
                KafkaSettings(bootstrap_servers=args.bootstrap_servers),
                args.webhook,
                prefix=args.topic_prefix,
                group=args.group,
                from_beginning=args.from_beginning,
                max_events=args.max_events,
                idle=args.timeout,
            )
        )
    except (BridgeError, WebhookFailed) as exc:
        print(f"yank_notifier: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
