"""The typed events: one frozen dataclass per event type, all sharing the journal row's fields.

The parser (`bridge.parse`) turns a journal row into exactly one of these; the sink serializes
them as they are (orjson writes dataclass fields in declaration order); the consumer API turns
JSON back into the same classes with `event_from_json`. `schemas/` holds one JSON Schema per
class, and a test proves the two never drift.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from bridge.errors import ContractError

PACKAGE_TYPES = ("sdist", "wheel", "egg", "other")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every event carries: the journal row, plus its normalized name and its time."""

    TYPE: ClassVar[str] = ""
    DESCRIPTION: ClassVar[str] = ""

    serial: int
    type: str
    #: The row's name as the journal has it (display name at the time).
    project: str
    #: PEP 503 normalized project name; also the record key.
    project_normalized: str
    version: str | None
    #: Whole POSIX seconds (UTC): the journal transaction's start; may go backwards.
    timestamp: int
    #: `timestamp` as RFC 3339 UTC.
    time: str
    #: The raw action text, verbatim (escapes such as `&#233;` kept).
    action: str

    def to_json(self) -> bytes:
        return orjson.dumps(self)


def _event(type_name: str, description: str) -> Any:
    """Register a class under its event type name (the `type` field and the topic suffix)."""

    def register(cls: type[Event]) -> type[Event]:
        cls.TYPE = type_name
        cls.DESCRIPTION = description
        EVENT_TYPES[type_name] = cls
        return cls

    return register


EVENT_TYPES: dict[str, type[Event]] = {}


# --- projects -------------------------------------------------------------------------------


@_event("project.created", "A project was registered (`create`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectCreated(Event):
    pass


@_event("project.removed", "A project was deleted (`remove project`, or legacy `remove`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectRemoved(Event):
    pass


@_event("project.renamed", "A project was renamed (legacy `rename from {old}`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectRenamed(Event):
    previous_name: str


@_event("project.quarantined", "A project was quarantined for suspected malware.")
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectQuarantined(Event):
    pass


@_event("project.quarantine_cleared", "A project's quarantine was lifted.")
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectQuarantineCleared(Event):
    pass


@_event("project.hosting_mode_updated", "PEP 438 hosting mode changed (legacy).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectHostingModeUpdated(Event):
    pass


@_event(
    "project.alternate_repository_added",
    "A PEP 708 alternate repository was added; `project` is the project named in the action.",
)
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectAlternateRepositoryAdded(Event):
    repository: str


@_event(
    "project.alternate_repository_removed",
    "A PEP 708 alternate repository was removed; `project` is the project named in the action.",
)
@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectAlternateRepositoryRemoved(Event):
    repository: str


# --- releases -------------------------------------------------------------------------------


@_event("release.created", "A release was created (`new release`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseCreated(Event):
    pass


@_event("release.removed", "A release was deleted (`remove release`, or legacy `remove`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseRemoved(Event):
    pass


@_event("release.yanked", "A release was yanked (PEP 592).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseYanked(Event):
    pass


@_event("release.unyanked", "A release's yank was undone.")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseUnyanked(Event):
    pass


@_event("release.quarantined", "A release was quarantined for suspected malware.")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseQuarantined(Event):
    pass


@_event("release.quarantine_cleared", "A release's quarantine was lifted.")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseQuarantineCleared(Event):
    pass


@_event("release.metadata_updated", "Release metadata was edited (legacy `update {fields}`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseMetadataUpdated(Event):
    #: The metadata fields named by the action; empty for a bare `update`.
    fields: tuple[str, ...]


@_event("release.url_added", "An external download URL was added (legacy).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseUrlAdded(Event):
    url: str


@_event("release.url_removed", "An external download URL was removed (legacy).")
@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseUrlRemoved(Event):
    url: str


# --- files ----------------------------------------------------------------------------------


@_event("file.added", "A distribution file was uploaded.")
@dataclass(frozen=True, slots=True, kw_only=True)
class FileAdded(Event):
    filename: str
    #: What the uploading client sent: `source` for sdists, else `py3`, `cp311`, ...
    python_version: str
    #: sdist / wheel / egg / other, from the filename.
    package_type: str


@_event("file.removed", "A distribution file was deleted.")
@dataclass(frozen=True, slots=True, kw_only=True)
class FileRemoved(Event):
    filename: str


# --- roles ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleEvent(Event):
    #: `Owner` or `Maintainer` (the new role on `role.changed`).
    role: str
    #: A user name, or a team name (which may contain spaces).
    principal: str


@_event("role.added", "A role was granted to a user or team.")
@dataclass(frozen=True, slots=True, kw_only=True)
class RoleAdded(RoleEvent):
    pass


@_event("role.removed", "A role was taken from a user or team.")
@dataclass(frozen=True, slots=True, kw_only=True)
class RoleRemoved(RoleEvent):
    pass


@_event("role.changed", "A user's or team's role changed.")
@dataclass(frozen=True, slots=True, kw_only=True)
class RoleChanged(RoleEvent):
    old_role: str
    new_role: str


@_event("role.invited", "A user was invited to a role.")
@dataclass(frozen=True, slots=True, kw_only=True)
class RoleInvited(RoleEvent):
    pass


@_event("role.invite_accepted", "A user accepted a role invitation.")
@dataclass(frozen=True, slots=True, kw_only=True)
class RoleInviteAccepted(RoleEvent):
    pass


@_event("role.invite_revoked", "A role invitation was revoked.")
@dataclass(frozen=True, slots=True, kw_only=True)
class RoleInviteRevoked(RoleEvent):
    pass


# --- documentation, users, mirrors ----------------------------------------------------------


@_event("docs.updated", "Documentation was uploaded to pythonhosted.org (legacy `docupdate`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class DocsUpdated(Event):
    pass


@_event("docs.destroyed", "Hosted documentation was destroyed (`docdestroy`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class DocsDestroyed(Event):
    pass


@_event("user.removed", "A user was removed (`nuke user`; the row's name is `user:{username}`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class UserRemoved(Event):
    username: str


@_event("mirror.key_rotated", "The mirror signing key was rotated (legacy `keyrotate`).")
@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorKeyRotated(Event):
    pass


@_event("unknown", "An action text this bridge does not recognise; the raw row is kept whole.")
@dataclass(frozen=True, slots=True, kw_only=True)
class Unknown(Event):
    pass


def event_fields(cls: type[Event]) -> list[str]:
    """The JSON field names of an event class, in serialization order."""
    return [f.name for f in dataclasses.fields(cls)]


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild a typed event from its JSON object (extra fields from newer bridges are ignored)."""
    type_name = data.get("type")
    cls = EVENT_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ContractError(f"event has an unknown type {type_name!r}")
    try:
        values = {name: data[name] for name in event_fields(cls)}
    except KeyError as exc:
        raise ContractError(f"{type_name} event is missing the field {exc.args[0]!r}") from None
    if "fields" in values and isinstance(values["fields"], list):
        values["fields"] = tuple(values["fields"])
    return cls(**values)


def event_from_json(payload: bytes) -> Event:
    """Rebuild a typed event from a record value written by the bridge."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"record value is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ContractError("record value is not a JSON object")
    return event_from_dict(data)
