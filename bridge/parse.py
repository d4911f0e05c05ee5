"""Parse: one journal row in, one typed event out. Here an action text becomes an event.

The catalog is JOURNAL.md's: today's Warehouse texts, retired Warehouse texts and the legacy PyPI
texts. Anything else becomes `unknown`, carrying the raw row: the journal is the source of truth
and a row the bridge does not understand must still be delivered. `parse_row` never raises on a
row of the right shape (a property-based test and the changelog fuzz target prove it).

`add ...` is the one ambiguous text: `add {python_version} file {filename}` (an upload) and
`add {role} {who}` (a grant) overlap, because an upload label is free text that may hold spaces,
legacy PyPI wrote upload rows with a nil version from March 2005 to July 2007, and a team name
may hold spaces and the word ` file `. The rules, right for every row of the catalog:

- an upload splits on the last ` file `: filenames hold no spaces, so whatever precedes it is the
  label (`add Python 3.11 file foo-1.0.tar.gz` has the label `Python 3.11`);
- a row with a version names a release, and role rows never do: it is an upload if it has that
  shape (`add Owner x file y.whl` at version 1.0 is an upload labelled `Owner x`);
- a row without one (nil, or empty) is a grant when its first word is a role word
  (`add Maintainer core file team` grants the team `core file team`), else an upload of legacy
  PyPI's, with a null version (`add 2.4 file foo-1.0.tar.gz` in 2006).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from bridge import events as ev
from bridge.xmlrpc import Row

__all__ = ["Row", "classify", "decode_text", "normalize_name", "package_type", "parse_row"]


ROLES = frozenset({"Owner", "Maintainer"})
_SDIST_SUFFIXES = (
    ".tar.gz",
    ".tgz",
    ".zip",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tar",
    ".tar.z",
)
_CHAR_REF = re.compile(r"&#(?:([0-9]{1,7})|[xX]([0-9a-fA-F]{1,6}));")
_NORMALIZE = re.compile(r"[-_.]+")
# datetime's range, so that a hostile timestamp still yields a valid RFC 3339 `time`.
_MIN_TS, _MAX_TS = -62135596800, 253402300799
_EPOCH_DAY = date(1970, 1, 1)


@lru_cache(maxsize=65536)
def normalize_name(name: str) -> str:
    """PEP 503 normalized project name: runs of `-`, `_`, `.` become one `-`, lower case."""
    return _NORMALIZE.sub("-", name).lower()


@lru_cache(maxsize=4096)
def rfc3339(timestamp: int) -> str:
    """POSIX seconds as RFC 3339 UTC (`2024-09-05T11:11:15Z`); clamped to datetime's range."""
    # Rows of one upload share a second (hence the cache); most timestamps are new, and for
    # those, arithmetic on the time of day costs a third of a datetime round trip.
    days, seconds = divmod(min(max(timestamp, _MIN_TS), _MAX_TS), 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_date(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}Z"


@lru_cache(maxsize=1024)
def _date(days: int) -> str:
    day = _EPOCH_DAY + timedelta(days=days)
    # Four-digit years whatever the platform's strftime does before the year 1000.
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def _char(match: re.Match[str]) -> str:
    decimal, hexadecimal = match.groups()
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return match.group(0)  # not a character: keep the text as it came
    return chr(code)


def decode_text(text: str) -> str:
    """Undo PyPI's `&#NNN;` escaping of non-ASCII characters in action texts."""
    return _CHAR_REF.sub(_char, text) if "&#" in text else text


def package_type(filename: str) -> str:
    """sdist / wheel / egg / other, from a distribution file's name."""
    lowered = filename.lower()
    if lowered.endswith(".whl"):
        return "wheel"
    if lowered.endswith(".egg"):
        return "egg"
    if lowered.endswith(_SDIST_SUFFIXES):
        return "sdist"
    return "other"


# --- one function per leading word; each returns (event class, type-specific fields) or None ---

_Match = tuple[type[ev.Event], dict[str, Any]] | None


def _role_parts(rest: str) -> tuple[str, str] | None:
    """`{role} {who}` where who may contain spaces (team names)."""
    role, _, who = rest.partition(" ")
    if role in ROLES and who:
        return role, decode_text(who)
    return None


def _upload(rest: str) -> _Match:
    """`{python_version} file {filename}`: the label is free text (spaces, even ` file `), the
    filename holds no space, so the last ` file ` is the separator."""
    at = rest.rfind(" file ")
    if at < 0:
        return None
    python_version, filename = rest[:at], rest[at + 6 :]
    if not filename or " " in filename:
        return None
    name = decode_text(filename)
    return ev.FileAdded, {
        "filename": name,
        "python_version": decode_text(python_version),
        "package_type": package_type(name),
    }


def _add(rest: str, version: str | None) -> _Match:
    if rest.startswith("url "):
        return ev.ReleaseUrlAdded, {"url": decode_text(rest[4:])}
    if rest.startswith("alternate repository "):
        return _alternate_repository(rest, " to project ", ev.ProjectAlternateRepositoryAdded)
    parts = _role_parts(rest)
    grant = None if parts is None else (ev.RoleAdded, {"role": parts[0], "principal": parts[1]})
    if grant is not None and not version:
        # Role rows carry no version; upload labels starting with a role word are not real.
        return grant
    # With a version, or without one and no role word (legacy PyPI's nil-version uploads).
    return _upload(rest) or grant


def _remove(rest: str, version: str | None) -> _Match:
    if rest.startswith("file "):
        filename = rest[5:]
        if filename and " " not in filename:
            return ev.FileRemoved, {"filename": decode_text(filename)}
        return None
    if rest.startswith("url "):
        return ev.ReleaseUrlRemoved, {"url": decode_text(rest[4:])}
    parts = _role_parts(rest)
    if parts is not None:
        return ev.RoleRemoved, {"role": parts[0], "principal": parts[1]}
    return None


def _change(rest: str, version: str | None) -> _Match:
    # `change {old_role} {who} to {new_role}`: who may contain " to ", so split on the last one.
    head, found, new_role = rest.rpartition(" to ")
    if not found or new_role not in ROLES:
        return None
    parts = _role_parts(head)
    if parts is None:
        return None
    old_role, who = parts
    return ev.RoleChanged, {
        "role": new_role,
        "principal": who,
        "old_role": old_role,
        "new_role": new_role,
    }


def _role_action(cls: type[ev.RoleEvent]) -> Callable[[str, str | None], _Match]:
    def parse(rest: str, version: str | None) -> _Match:
        parts = _role_parts(rest)
        return (cls, {"role": parts[0], "principal": parts[1]}) if parts else None

    return parse


def _update(rest: str, version: str | None) -> _Match:
    fields = tuple(f for f in (part.strip() for part in rest.split(",")) if f)
    if not fields:
        return None
    return ev.ReleaseMetadataUpdated, {"fields": tuple(decode_text(f) for f in fields)}


def _rename(rest: str, version: str | None) -> _Match:
    if rest.startswith("from ") and len(rest) > 5:
        return ev.ProjectRenamed, {"previous_name": decode_text(rest[5:])}
    return None


def _deleted(rest: str, version: str | None) -> _Match:
    if rest.startswith("alternate repository "):
        return _alternate_repository(rest, " from project ", ev.ProjectAlternateRepositoryRemoved)
    return None


def _alternate_repository(rest: str, separator: str, cls: type[ev.Event]) -> _Match:
    """`alternate repository {repo}{separator}{project}`: the event belongs to the project."""
    repository, found, project = rest[len("alternate repository ") :].rpartition(separator)
    if found and repository and project:
        return cls, {"repository": decode_text(repository), "project": decode_text(project)}
    return None


_BY_WORD: dict[str, Callable[[str, str | None], _Match]] = {
    "add": _add,
    "remove": _remove,
    "change": _change,
    "invite": _role_action(ev.RoleInvited),
    "accepted": _role_action(ev.RoleInviteAccepted),
    "revoke_invite": _role_action(ev.RoleInviteRevoked),
    "update": _update,
    "rename": _rename,
    "deleted": _deleted,
}

_EXACT: dict[str, type[ev.Event]] = {
    "create": ev.ProjectCreated,
    "new release": ev.ReleaseCreated,
    "remove release": ev.ReleaseRemoved,
    "remove project": ev.ProjectRemoved,
    "yank release": ev.ReleaseYanked,
    "unyank release": ev.ReleaseUnyanked,
    "project quarantined": ev.ProjectQuarantined,
    "project quarantine cleared": ev.ProjectQuarantineCleared,
    "release quarantined": ev.ReleaseQuarantined,
    "release quarantine cleared": ev.ReleaseQuarantineCleared,
    "docupdate": ev.DocsUpdated,
    "docdestroy": ev.DocsDestroyed,
    # PEP 438's hosting mode is a project setting, not release metadata.
    "update hosting_mode": ev.ProjectHostingModeUpdated,
    "keyrotate ": ev.MirrorKeyRotated,
    "keyrotate": ev.MirrorKeyRotated,
    "update": ev.ReleaseMetadataUpdated,
}


def classify(action: str, name: str, version: str | None) -> _Match:
    """The event class and type-specific fields for an action text, or None if unrecognised."""
    exact = _EXACT.get(action)
    if exact is not None:
        if exact is ev.ReleaseMetadataUpdated:
            return exact, {"fields": ()}
        return exact, {}
    if action == "remove":
        # Before May 2018 one text removed both: a release when a version is set, else the project.
        return (ev.ReleaseRemoved if version else ev.ProjectRemoved), {}
    if action == "nuke user":
        username = name[5:] if name.startswith("user:") else name
        return ev.UserRemoved, {"username": decode_text(username)}
    word, _, rest = action.partition(" ")
    handler = _BY_WORD.get(word)
    return handler(rest, version) if handler is not None and rest else None


def parse_row(row: Row) -> ev.Event:
    """Turn one journal row into its typed event (`unknown` when the action is not recognised)."""
    name, version, timestamp, action, serial = row
    found = classify(action, name, version)
    cls, extra = found if found is not None else (ev.Unknown, {})
    project = extra.pop("project", name)
    return cls(
        serial=serial,
        type=cls.TYPE,
        project=project,
        project_normalized=normalize_name(project),
        version=version,
        timestamp=timestamp,
        time=rfc3339(timestamp),
        action=action,
        **extra,
    )
