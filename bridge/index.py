"""Index: events -> the project index, `{prefix}.projects` (compacted, key = normalized name).

For every project the index holds its display name, its last serial, the type and action of its
last event, and its status (`active` or `quarantined`); a removed project gets a tombstone. The
rules follow what PyPI's `list_packages_with_serial` reports, so that once the bridge is caught
up the topic read to its end equals that listing:

- every row about a project moves its entry to that row (display name, serial, type, action);
- `project.removed` deletes the entry (tombstone), `project.renamed` deletes the old name's entry
  and moves the new name's;
- `project.quarantined` and `project.quarantine_cleared` set the status; other events keep it;
- rows that are not about a project leave the index alone: a removed user (`user:{name}`), a
  mirror key rotation (empty name), alternate repository rows (their name is the repository's),
  and unknown actions without a name.

The sink writes the index records of a batch with the batch's events; the set of quarantined
projects travels in the checkpoint, so a new leader resumes it without reading the topic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from bridge.events import Event
from bridge.parse import normalize_name

#: Event types whose rows do not name a project (see the module docstring).
NOT_ABOUT_A_PROJECT = frozenset(
    {
        "user.removed",
        "mirror.key_rotated",
        "project.alternate_repository_added",
        "project.alternate_repository_removed",
    }
)
ACTIVE = "active"
QUARANTINED = "quarantined"

#: Normalized name -> the entry's JSON value, or None for a tombstone.
Updates = dict[str, bytes | None]


def entry(
    project: str,
    serial: int,
    *,
    last_type: str | None,
    last_action: str | None,
    status: str,
    key: str | None = None,
) -> bytes:
    """One index value (`last_type` and `last_action` are None for an entry seeded from the
    listing and not touched since).

    Copied to a bytes object of its own size: orjson's result keeps the buffer it was built in
    (about 4 KB), which the 700,000 entries of a seed would hold all at once.
    """
    return _exact(
        orjson.dumps(
            {
                "project": project,
                "project_normalized": key if key is not None else normalize_name(project),
                "last_serial": serial,
                "last_type": last_type,
                "last_action": last_action,
                "status": status,
            }
        )
    )


def _exact(data: bytes) -> bytes:
    return memoryview(data).tobytes()


class ProjectIndex:
    """Turns batches of events into index updates; holds the quarantined projects between them."""

    def __init__(self, quarantined: Iterable[str] = ()) -> None:
        self.quarantined: set[str] = set(quarantined)

    def updates(self, events: Sequence[Event]) -> Updates:
        """The index records a batch produces, one per project touched: its final state."""
        found: Updates = {}
        for event in events:
            kind = event.type
            if kind in NOT_ABOUT_A_PROJECT or not event.project:
                continue
            key = event.project_normalized
            if kind == "project.removed":
                self.quarantined.discard(key)
                found[key] = None
                continue
            if kind == "project.renamed":
                previous = normalize_name(getattr(event, "previous_name", "") or "")
                if previous and previous != key:
                    if previous in self.quarantined:
                        self.quarantined.discard(previous)
                        self.quarantined.add(key)
                    found[previous] = None
            elif kind == "project.quarantined":
                self.quarantined.add(key)
            elif kind == "project.quarantine_cleared":
                self.quarantined.discard(key)
            status = QUARANTINED if key in self.quarantined else ACTIVE
            # Insertion order is the order the records are written in: a key seen again moves
            # to the end, so a tombstone never follows the entry that replaced it.
            found.pop(key, None)
            found[key] = entry(
                event.project,
                event.serial,
                last_type=kind,
                last_action=event.action,
                status=status,
                key=key,
            )
        return found

    def seed(self, listing: Iterable[tuple[str, int]]) -> Updates:
        """The entries of (part of) `list_packages_with_serial`'s answer: (display name, last
        serial) pairs."""
        seeded: Updates = {}
        for project, serial in listing:
            key = normalize_name(project)
            status = QUARANTINED if key in self.quarantined else ACTIVE
            seeded[key] = entry(
                project, serial, last_type=None, last_action=None, status=status, key=key
            )
        return seeded
