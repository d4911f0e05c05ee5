"""Route: event -> Kafka record (topic, key, headers, value). Every topic name is made here.

One topic per event type, `{prefix}.{type}`; the key is the PEP 503 normalized project name so a
project's events stay in order on one partition; headers follow the CloudEvents Kafka binding in
binary mode, so a consumer can filter or trace without parsing the value.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from aiokafka.partitioner import murmur2

from bridge.events import EVENT_TYPES, Event

CLOUDEVENTS_SPEC_VERSION = b"1.0"
CONTENT_TYPE = b"application/json"
CE_TYPE_PREFIX = "org.pypi.journal."
HEADER_NAMES = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type")

Headers = list[tuple[str, bytes]]
PROJECTS_SUFFIX = "projects"
WATERMARK_SUFFIX = "watermark"
# Event types hold a dot (`release.created`), these two do not: no event topic can collide.
assert not {PROJECTS_SUFFIX, WATERMARK_SUFFIX} & set(EVENT_TYPES)


def topic_name(prefix: str, event_type: str) -> str:
    """The topic carrying one event type."""
    return f"{prefix}.{event_type}"


def event_topics(prefix: str) -> list[str]:
    """Every event topic, one per type, in a stable order."""
    return [topic_name(prefix, t) for t in sorted(EVENT_TYPES)]


def projects_topic(prefix: str) -> str:
    """Compacted project index: key = normalized name, value = the project's latest state."""
    return f"{prefix}.{PROJECTS_SUFFIX}"


def watermark_topic(prefix: str) -> str:
    """One-partition history of watermarks: how far the event topics are complete."""
    return f"{prefix}.{WATERMARK_SUFFIX}"


def public_topics(prefix: str) -> list[str]:
    """Every topic consumers read: the event topics, the project index and the watermark."""
    return [*event_topics(prefix), projects_topic(prefix), watermark_topic(prefix)]


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


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition the default partitioner gives `key` among `partitions` (murmur2, as Java's).

    `key` is a record key: the PEP 503 normalized project name. A consumer that wants one
    project's events reads only this partition of each type's topic.
    """
    return key_hash(key.encode() if isinstance(key, str) else key) % partitions


@lru_cache(maxsize=65536)
def key_hash(key: bytes) -> int:
    """The default partitioner's hash of a record key (murmur2, as Java's); names repeat."""
    return int(murmur2(key)) & 0x7FFFFFFF


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
