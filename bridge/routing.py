"""Route: event -> Kafka record (topic, key, headers, value). Every topic name is made here.

One topic per event type, `{prefix}.{type}`; the key is the PEP 503 normalized project name so a
project's events stay in order on one partition; headers follow the CloudEvents Kafka binding in
binary mode, so a consumer can filter or trace without parsing the value.
"""

from __future__ import annotations

from typing import NamedTuple

from bridge.events import EVENT_TYPES, Event

CLOUDEVENTS_SPEC_VERSION = b"1.0"
CONTENT_TYPE = b"application/json"
CE_TYPE_PREFIX = "org.pypi.journal."
HEADER_NAMES = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type")

Headers = list[tuple[str, bytes]]


def topic_name(prefix: str, event_type: str) -> str:
    """The topic carrying one event type."""
    return f"{prefix}.{event_type}"


def event_topics(prefix: str) -> list[str]:
    """Every event topic, one per type, in a stable order."""
    return [topic_name(prefix, t) for t in sorted(EVENT_TYPES)]


def checkpoint_topic(prefix: str) -> str:
    """Compacted internal topic holding the committed serial; outside `{prefix}.*` on purpose."""
    return f"{prefix}-bridge.checkpoint"


def leadership_topic(prefix: str) -> str:
    """One-partition topic whose consumer-group owner is the leader."""
    return f"{prefix}-bridge.leader"


def type_of_topic(prefix: str, topic: str) -> str | None:
    """The event type a topic carries, or None if it is not one of ours."""
    head = prefix + "."
    if topic.startswith(head) and topic[len(head) :] in EVENT_TYPES:
        return topic[len(head) :]
    return None


def serial_of(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> int | None:
    """The journal serial a record carries in its `ce_id` header."""
    for name, value in headers:
        if name == "ce_id":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Record(NamedTuple):
    """One Kafka record, ready for the producer (a named tuple: a backfill makes one per row)."""

    topic: str
    key: bytes
    value: bytes
    headers: Headers
    serial: int
    type: str


class Router:
    """Maps events to records for one topic prefix and source URL."""

    def __init__(self, prefix: str, source_url: str) -> None:
        self.prefix = prefix
        self._source = source_url.encode()
        self._topics = {t: topic_name(prefix, t) for t in EVENT_TYPES}
        # The headers that do not vary per event are built once and shared by every record.
        self._ce_types = {t: ("ce_type", (CE_TYPE_PREFIX + t).encode()) for t in EVENT_TYPES}
        self._spec_version = ("ce_specversion", CLOUDEVENTS_SPEC_VERSION)
        self._ce_source = ("ce_source", self._source)
        self._content_type = ("content-type", CONTENT_TYPE)

    def route(self, event: Event) -> Record:
        return Record(
            self._topics[event.type],
            event.project_normalized.encode(),
            event.to_json(),
            [
                self._spec_version,
                ("ce_id", str(event.serial).encode()),
                self._ce_source,
                self._ce_types[event.type],
                ("ce_time", event.time.encode()),
                self._content_type,
            ],
            event.serial,
            event.type,
        )
