"""Watermark: the public record that says how far the event topics are complete.

`{prefix}.watermark` (one partition, a history kept by retention, key = the prefix) carries, with
every batch and every `--heartbeat-interval` seconds while the journal is quiet, a record meaning:
every journal entry up to `serial` is committed, and every event record with a serial up to it
sits below `offsets[topic][partition]`. A topic or partition missing from `offsets` holds no such
record. In transactional mode the record is part of the batch's transaction; in high-water mode
it is written once the batch is acknowledged. Unlike the checkpoint (an internal topic, readable
by the bridge only), consumers may read it: it is the contract for "caught up" and for serial
order across types. Fields are versioned by `version`; new fields may be added, none removed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

from bridge.errors import ContractError

WATERMARK_VERSION = 1


@dataclass(frozen=True)
class Watermark:
    """Every journal entry up to `serial` is committed, below `offsets`."""

    serial: int
    #: Journal timestamp of entry `serial` (None before anything was committed).
    timestamp: int | None
    #: Event topic -> next offset of each partition (index = partition).
    offsets: dict[str, list[int]] = field(default_factory=dict)
    #: The journal's newest serial the bridge knew when writing (None: not asked yet).
    head: int | None = None
    written_at: float = 0.0

    @property
    def lag(self) -> int | None:
        return None if self.head is None else max(0, self.head - self.serial)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "version": WATERMARK_VERSION,
                "serial": self.serial,
                "timestamp": self.timestamp,
                "offsets": self.offsets,
                "head": self.head,
                "lag": self.lag,
                "written_at": self.written_at or time.time(),
            }
        )

    @classmethod
    def decode(cls, payload: bytes) -> Watermark:
        try:
            data = orjson.loads(payload)
            head = data.get("head")
            timestamp = data.get("timestamp")
            return cls(
                serial=int(data["serial"]),
                timestamp=None if timestamp is None else int(timestamp),
                offsets={str(k): [int(o) for o in v] for k, v in data.get("offsets", {}).items()},
                head=None if head is None else int(head),
                written_at=float(data.get("written_at", 0.0)),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ContractError(
                f"a watermark record is unreadable ({exc})",
                "it was not written by pypi-bridge; check what else writes to the watermark topic",
            ) from None

    def offset(self, topic: str, partition: int) -> int:
        """The offset below which partition `partition` of `topic` holds serials up to `serial`."""
        offsets = self.offsets.get(topic, ())
        return offsets[partition] if partition < len(offsets) else 0
