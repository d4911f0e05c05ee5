"""The traffic model: a seeded world of projects, users and teams writing PyPI-like transactions.

Texts follow the era of the serial (legacy PyPI before ~3.7 million, Warehouse after, with the
texts each period wrote), serials and timestamps follow JOURNAL.md's volume figures, and the
journal's oddities appear at their rates: bursts of one-second uploads, backwards timestamps,
serial gaps, `&#NNN;` escapes, free-text upload labels with spaces, legacy file rows without a
version, team names holding ` file ` or ` to `. `Traffic.transaction()` hands out one
transaction's rows at a time; the journal stores them.
"""

from __future__ import annotations

import bisect
import datetime
import random
import re
from collections.abc import Callable

# --- eras: serial -> time, from JOURNAL.md's volume figures ----------------------------------


def _utc(day: str) -> int:
    return int(datetime.datetime.fromisoformat(day + "T00:00:00+00:00").timestamp())


# (serial, POSIX time): the journal's start, two real rows, Warehouse's launch, late 2026.
_ANCHORS = (
    (1, _utc("2002-11-01")),
    (2_168_628, 1_465_998_124),
    (3_700_000, _utc("2018-04-16")),
    (24_891_358, 1_725_534_675),
    (41_000_000, _utc("2026-11-15")),
)
_ANCHOR_SERIALS = [serial for serial, _ in _ANCHORS]


def era_timestamp(serial: int) -> int:
    """When PyPI wrote `serial`: piecewise linear between known points, extrapolated after."""
    i = bisect.bisect_right(_ANCHOR_SERIALS, serial)
    i = min(max(i, 1), len(_ANCHORS) - 1)
    (s0, t0), (s1, t1) = _ANCHORS[i - 1], _ANCHORS[i]
    return int(t0 + (serial - s0) * (t1 - t0) / (s1 - s0))


def era_serial(timestamp: int) -> int:
    """The inverse of `era_timestamp`: the serial PyPI had reached at `timestamp`."""
    times = [t for _, t in _ANCHORS]
    i = min(max(bisect.bisect_right(times, timestamp), 1), len(_ANCHORS) - 1)
    (s0, t0), (s1, t1) = _ANCHORS[i - 1], _ANCHORS[i]
    return int(s0 + (timestamp - t0) * (s1 - s0) / (t1 - t0))


#: Serials below this are legacy PyPI's (2002 to April 2018).
LEGACY_END = 3_700_000
_WHEELS_FROM = era_serial(_utc("2013-01-01"))
_TEAMS_FROM = era_serial(_utc("2023-04-01"))
_PROJECT_QUARANTINE_FROM = era_serial(_utc("2024-08-01"))
_ALTERNATE_FROM = era_serial(_utc("2024-09-01"))
_ALTERNATE_ADD_END = era_serial(_utc("2024-10-01"))
_ALTERNATE_DELETE_END = era_serial(_utc("2024-12-01"))
_RETIRED_END = era_serial(_utc("2024-09-01"))  # docdestroy, nuke user
_RELEASE_QUARANTINE_FROM = era_serial(_utc("2026-01-01"))
# Legacy PyPI wrote file rows without the release's version from March 2005 to July 2007.
_NIL_FILE_VERSION_FROM = era_serial(_utc("2005-03-01"))
_NIL_FILE_VERSION_END = era_serial(_utc("2007-08-01"))
_ERA_BOUNDARIES = sorted(
    {
        LEGACY_END,
        _TEAMS_FROM,
        _PROJECT_QUARANTINE_FROM,
        _ALTERNATE_FROM,
        _ALTERNATE_ADD_END,
        _ALTERNATE_DELETE_END,
        _RETIRED_END,
        _RELEASE_QUARANTINE_FROM,
    }
)


# --- names ---------------------------------------------------------------------------------

_WORDS = (  # noqa: SIM905 - a word list reads best as text
    "py async auth cache cli cloud config crypto data django fast flask geo graph http img io "
    "json kit lib log math ml net pdf plot queue redis sql stream test text tool web yaml zen "
    "api app aws azure bio cython dash db doc env event form git grpc hash jinja jwt kafka "
    "lambda lint mock model nlp numpy orm pandas parse path pipe proto pytest rest rpc schema "
    "scrape search shell slack sphinx spark stats tensor time torch type ui units uri util "
    "vector vision wasm xml zip core extra mini tiny open smart quick deep bright"
).split()
_FIRST_NAMES = (  # noqa: SIM905 - a word list reads best as text
    "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert "
    "sybil trent victor walter xena yusuf zoe amir bea chen dmitri emeka fatima gita hiro "
    "ines jonas kofi lena marek noor oskar priya quentin rosa sami tomas uma vera wei ximena"
).split()
_NON_ASCII_USERS = ("jürgen", "zoë", "andré", "søren", "łukasz", "müller", "josé", "renée")
_TEAMS = (
    "Security Team",
    "Core Developers",
    "Release Managers",
    "Data Platform",
    "ML Infra Team",
    "core file team",  # team names may hold " file " and " to ": parsers split on the last
    "Open Source Office",
    "ops to infra team",
    "Équipe Sécurité",
    "Café Devs",
    "東京 Python",
    "Data 🐍 Team",
)
_PLATFORMS = (
    "manylinux_2_17_x86_64.manylinux2014_x86_64",
    "manylinux_2_17_aarch64.manylinux2014_aarch64",
    "musllinux_1_2_x86_64",
    "macosx_11_0_arm64",
    "macosx_10_9_x86_64",
    "win_amd64",
    "win32",
)
_LEGACY_FIELDS = (
    "author_email",
    "home_page",
    "summary",
    "description",
    "keywords",
    "license",
    "author",
    "download_url",
    "platform",
    "maintainer",
)
_UNKNOWN_ACTIONS = ("frobnicate", "frobnicate widgets", "transmogrify release")
#: Upload labels are free text from the client: now and then one with spaces (even " file ").
_SPACED_LABELS = ("Python 3.11", "py3 none any", "CPython 3.12", "3.x and later", "any file")
_SPACED_LABEL_RATE = 0.01


def _ncr(text: str) -> str:
    """Non-ASCII as `&#NNN;`, as PyPI writes it before the XML layer escapes `&` once more."""
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")


def normalize(name: str) -> str:
    """PEP 503 normalized project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _dist(name: str) -> str:
    """A file name's distribution part (PEP 427 / PEP 625 style)."""
    return re.sub(r"[-_.]+", "_", name).lower()


# --- the generator -----------------------------------------------------------------------------


class _Project:
    """One project's state in the generated world; just enough to write plausible rows."""

    __slots__ = (
        "alternates",
        "big",
        "binary",
        "display",
        "dist",
        "files",
        "index",
        "invites",
        "key",
        "later",
        "members",
        "quarantined",
        "releases",
        "urls",
        "variants",
        "version",
        "yanked",
    )

    def __init__(self, display: str, variants: tuple[str, ...], big: bool, binary: bool) -> None:
        self.display = display
        self.variants = variants
        self.key = normalize(display)
        self.dist = _dist(display)
        self.big = big
        self.binary = binary
        self.version = [0, 1, 0]
        self.releases: list[str] = []
        self.files: list[tuple[str, str]] = []
        #: (version, python_version, filename) uploaded after the release's first files.
        self.later: list[tuple[str, str, str]] = []
        self.yanked: list[str] = []
        self.quarantined = False
        self.members: dict[str, str] = {}
        self.invites: dict[str, str] = {}
        self.alternates: list[str] = []
        self.urls: list[tuple[str, str]] = []
        self.index = -1


# A row before it has a serial: name, version, action, listing key set, listing key deleted.
_Spec = tuple[str, str | None, str, str | None, str | None]
#: A generated row on its way to the journal: name, version, timestamp, action, serial, and the
#: project listing key it sets and the one it deletes (list_packages_with_serial).
PendingRow = tuple[str, str | None, int, str, int, str | None, str | None]
_Handler = Callable[["_World", int], list[_Spec] | None]


def _file_version(serial: int, version: str) -> str | None:
    """The version a file row carries: none in legacy PyPI's 2005 to 2007 rows."""
    return None if _NIL_FILE_VERSION_FROM <= serial < _NIL_FILE_VERSION_END else version


class _World:
    """Projects, users and teams, and one handler per kind of transaction PyPI writes."""

    def __init__(self, rng: random.Random, facts: random.Random, first_serial: int) -> None:
        self.rng = rng
        # Draws for the rarer facts come from their own stream, so that adding one leaves every
        # other row of a seed's journal as it was.
        self.facts = facts
        self.projects: list[_Project] = []
        self.taken: set[str] = set()
        self.quarantined: list[_Project] = []
        self.quarantined_releases: list[tuple[_Project, str]] = []
        #: Projects with files of their newest release still to upload.
        self.later: list[_Project] = []
        self.users = [self._username(i) for i in range(4000)]
        self.plain_users = [u for u in self.users if "&#" not in u]
        self.teams = [_ncr(team) for team in _TEAMS]
        # Projects that exist before the journal's first row, so that the first rows are not
        # all first uploads; they have no rows but are listed, as on PyPI.
        self.preexisting: list[_Project] = []
        for _ in range(min(3000, first_serial // 20)):
            project = self._new_project()
            for _ in range(rng.randint(1, 4)):
                project.releases.append(self._bump(project))
            project.members[rng.choice(self.users)] = "Owner"
            self._add(project)
            self.preexisting.append(project)

    # ---- helpers

    def _username(self, i: int) -> str:
        rng = self.rng
        if rng.random() < 0.02:
            return _ncr(rng.choice(_NON_ASCII_USERS) + str(i))
        base = rng.choice(_FIRST_NAMES)
        style = rng.random()
        if style < 0.4:
            return f"{base}{i}"
        if style < 0.7:
            return f"{base}-{rng.choice(_WORDS)}{i % 97}"
        return f"{base.capitalize()}{rng.choice(_WORDS).capitalize()}{i}"

    def _new_project(self) -> _Project:
        rng = self.rng
        words = [rng.choice(_WORDS) for _ in range(rng.choice((1, 2, 2, 2, 3)))]
        if rng.random() < 0.6:
            words[-1] = f"{words[-1]}{rng.randint(0, 999)}"
        variants: tuple[str, ...] = ()
        shape = rng.random()
        if len(words) > 1 and shape < 0.06:
            # One project, several display names over time (PEP 503 makes them one).
            variants = (
                "_".join(w.capitalize() for w in words),
                "-".join(words),
                ".".join(words),
                "-".join(w.capitalize() for w in words),
            )
            display = variants[0]
        elif shape < 0.2:
            display = "".join(w.capitalize() for w in words)
        else:
            display = rng.choice(("-", "-", "_", ".")).join(words)
        key = normalize(display)
        while key in self.taken:
            display = f"{display}{rng.randint(0, 9)}"
            variants = tuple(f"{v}{display[-1]}" for v in variants)
            key = normalize(display)
        self.taken.add(key)
        big = rng.random() < 0.04
        binary = big or rng.random() < 0.15
        return _Project(display, variants, big, binary)

    def _add(self, project: _Project) -> None:
        project.index = len(self.projects)
        self.projects.append(project)

    def _drop(self, project: _Project) -> None:
        last = self.projects.pop()
        if last is not project:
            self.projects[project.index] = last
            last.index = project.index
        project.index = -1
        if project.quarantined:
            self.quarantined.remove(project)

    def _pick(self, need: Callable[[_Project], bool] | None = None) -> _Project | None:
        projects = self.projects
        if not projects:
            return None
        for _ in range(8):
            if self.rng.random() < 0.3:
                # Recent projects are the busy ones.
                project = projects[-1 - int(self.rng.random() * min(300, len(projects)))]
            else:
                project = projects[int(self.rng.random() * len(projects))]
            if need is None or need(project):
                return project
        return None

    def _bump(self, project: _Project) -> str:
        rng = self.rng
        v = project.version
        roll = rng.random()
        if roll < 0.6:
            v[2] += 1
        elif roll < 0.9:
            v[1] += 1
            v[2] = 0
        else:
            v[0] += 1
            v[1] = v[2] = 0
        text = f"{v[0]}.{v[1]}.{v[2]}"
        roll = rng.random()
        if roll < 0.04:
            text += f"rc{rng.randint(1, 3)}"
        elif roll < 0.07:
            text += f".dev{rng.randint(0, 40)}"
        elif roll < 0.08:
            text += f"b{rng.randint(1, 3)}"
        elif roll < 0.09:
            text += ".post1"
        return text

    def _files(self, project: _Project, version: str, serial: int) -> list[tuple[str, str]]:
        """(python_version, filename) of one release's uploads, in the style of its era."""
        return self._labelled(self._era_files(project, version, serial))

    def _labelled(self, files: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The same files, a few of them with a free-text label holding spaces."""
        facts = self.facts
        labelled = []
        for py, filename in files:
            if py != "source" and facts.random() < _SPACED_LABEL_RATE:
                py = facts.choice(_SPACED_LABELS)
            labelled.append((py, filename))
        return labelled

    def _era_files(self, project: _Project, version: str, serial: int) -> list[tuple[str, str]]:
        rng = self.rng
        if serial < LEGACY_END:
            name = project.display
            files = [("source", f"{name}-{version}{rng.choice(('.tar.gz', '.tar.gz', '.zip'))}")]
            roll = rng.random()
            wheels = serial >= _WHEELS_FROM
            if roll < 0.25:
                py = rng.choice(("2.6", "2.7", "3.4") if wheels else ("2.4", "2.5", "2.6"))
                files.append((py, f"{name}-{version}-py{py}.egg"))
            elif roll < 0.45 and wheels:
                files.append(("py2.py3", f"{project.dist}-{version}-py2.py3-none-any.whl"))
            elif roll < 0.5:
                files.append(("any", f"{name}-{version}.win32.exe"))
            if project.binary and wheels and rng.random() < 0.5:
                for cp in ("cp27", "cp35", "cp36"):
                    files.append((cp, f"{project.dist}-{version}-{cp}-{cp}m-win_amd64.whl"))
            return files
        dist = project.dist
        files = [("source", f"{dist}-{version}.tar.gz")]
        if project.binary:
            if serial < _TEAMS_FROM:
                pythons = ("cp36", "cp37", "cp38", "cp39", "cp310")
            else:
                pythons = ("cp310", "cp311", "cp312", "cp313", "cp314")
            platforms = _PLATFORMS if project.big else _PLATFORMS[:3]
            count = len(pythons) if project.big else rng.randint(1, 3)
            for cp in pythons[-count:]:
                for plat in platforms:
                    files.append((cp, f"{dist}-{version}-{cp}-{cp}-{plat}.whl"))
        else:
            roll = rng.random()
            if roll < 0.8:
                files.append(("py3", f"{dist}-{version}-py3-none-any.whl"))
            elif roll < 0.95:
                files.append(("py2.py3", f"{dist}-{version}-py2.py3-none-any.whl"))
            else:
                # The client's label is not checked against the file name.
                files.append((rng.choice(("3.7", "any")), f"{dist}-{version}-py3-none-any.whl"))
        return files

    def _release_rows(self, project: _Project, serial: int, version: str) -> list[_Spec]:
        name, key = project.display, project.key
        files = self._files(project, version, serial)
        if len(files) > 1 and self.rng.random() < 0.5:
            # Each file is its own upload: the rest arrive in later transactions.
            cut = self.rng.randint(1, len(files) - 1)
            project.later = [(version, py, fn) for py, fn in files[cut:]]
            files = files[:cut]
            self.later.append(project)
        project.files = [(version, filename) for _, filename in files]
        rows: list[_Spec] = [(name, version, "new release", key, None)]
        at = _file_version(serial, version)
        rows += [(name, at, f"add {py} file {fn}", key, None) for py, fn in files]
        return rows

    def _who(self, serial: int, members: dict[str, str]) -> str:
        rng = self.rng
        for _ in range(4):
            if serial >= _TEAMS_FROM and rng.random() < 0.25:
                who = rng.choice(self.teams)
            else:
                who = rng.choice(self.users)
            if who not in members:
                return who
        return rng.choice(self.users)

    # ---- transactions, shared by the eras

    def first_upload(self, serial: int) -> list[_Spec]:
        project = self._new_project()
        self._add(project)
        owner = self.rng.choice(self.users)
        project.members[owner] = "Owner"
        name, key = project.display, project.key
        version = self._bump(project)
        project.releases.append(version)
        return [
            (name, None, "create", key, None),
            (name, None, f"add Owner {owner}", key, None),
            *self._release_rows(project, serial, version),
        ]

    def release(self, serial: int) -> list[_Spec] | None:
        project = self._pick()
        if project is None:
            return None
        if project.variants and self.rng.random() < 0.3:
            project.display = self.rng.choice(project.variants)
        version = self._bump(project)
        project.releases.append(version)
        return self._release_rows(project, serial, version)

    def late_file(self, serial: int) -> list[_Spec] | None:
        """The next file of a release whose upload is still going on."""
        later = self.later
        while later:
            i = len(later) - 1 if self.rng.random() < 0.7 else self.rng.randrange(len(later))
            project = later[i]
            if project.index < 0 or not project.later:
                later.pop(i)
                continue
            version, py, filename = project.later.pop(0)
            if not project.later:
                later.pop(i)
            project.files.append((version, filename))
            at = _file_version(serial, version)
            return [(project.display, at, f"add {py} file {filename}", project.key, None)]
        return self.release(serial)

    def remove_file(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: bool(p.files))
        if project is None:
            return None
        version, filename = project.files.pop(self.rng.randrange(len(project.files)))
        return [(project.display, version, f"remove file {filename}", project.key, None)]

    def add_role(self, serial: int) -> list[_Spec] | None:
        project = self._pick()
        if project is None:
            return None
        who = self._who(serial, project.members)
        role = "Owner" if self.rng.random() < 0.3 else "Maintainer"
        project.members[who] = role
        return [(project.display, None, f"add {role} {who}", project.key, None)]

    def remove_role(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: len(p.members) > 1)
        if project is None:
            return None
        who = self.rng.choice(list(project.members))
        role = project.members.pop(who)
        return [(project.display, None, f"remove {role} {who}", project.key, None)]

    # ---- Warehouse (2018 on)

    def change_role(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: len(p.members) > 1)
        if project is None:
            return None
        who = self.rng.choice(list(project.members))
        old = project.members[who]
        new = "Maintainer" if old == "Owner" else "Owner"
        project.members[who] = new
        return [(project.display, None, f"change {old} {who} to {new}", project.key, None)]

    def invite(self, serial: int) -> list[_Spec] | None:
        project = self._pick()
        if project is None:
            return None
        user = self.rng.choice(self.users)
        role = "Owner" if self.rng.random() < 0.3 else "Maintainer"
        project.invites[user] = role
        return [(project.display, None, f"invite {role} {user}", project.key, None)]

    def accepted(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: bool(p.invites))
        if project is None:
            return self.invite(serial)
        user, role = project.invites.popitem()
        project.members[user] = role
        return [(project.display, None, f"accepted {role} {user}", project.key, None)]

    def revoke_invite(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: bool(p.invites))
        if project is None:
            return self.invite(serial)
        user, role = project.invites.popitem()
        return [(project.display, None, f"revoke_invite {role} {user}", project.key, None)]

    def remove_release(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: len(p.releases) > 1)
        if project is None:
            return None
        version = project.releases.pop(self.rng.randrange(len(project.releases) - 1))
        action = "remove" if serial < LEGACY_END else "remove release"
        return [(project.display, version, action, project.key, None)]

    def remove_project(self, serial: int) -> list[_Spec] | None:
        project = self._pick()
        if project is None:
            return None
        self._drop(project)
        action = "remove" if serial < LEGACY_END else "remove project"
        return [(project.display, None, action, None, project.key)]

    def yank(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: bool(p.releases))
        if project is None:
            return None
        version = self.rng.choice(project.releases)
        project.yanked.append(version)
        return [(project.display, version, "yank release", project.key, None)]

    def unyank(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: bool(p.yanked))
        if project is None:
            return self.yank(serial)
        version = project.yanked.pop()
        return [(project.display, version, "unyank release", project.key, None)]

    def quarantine_project(self, serial: int) -> list[_Spec] | None:
        if self.quarantined and self.rng.random() < 0.5:
            cleared = self.quarantined.pop(self.rng.randrange(len(self.quarantined)))
            cleared.quarantined = False
            return [(cleared.display, None, "project quarantine cleared", cleared.key, None)]
        project = self._pick(lambda p: not p.quarantined)
        if project is None:
            return None
        project.quarantined = True
        self.quarantined.append(project)
        return [(project.display, None, "project quarantined", project.key, None)]

    def quarantine_release(self, serial: int) -> list[_Spec] | None:
        held = self.quarantined_releases
        if held and self.rng.random() < 0.5:
            cleared, version = held.pop(self.rng.randrange(len(held)))
            if cleared.index >= 0:
                return [(cleared.display, version, "release quarantine cleared", cleared.key, None)]
        project = self._pick(lambda p: bool(p.releases))
        if project is None:
            return None
        version = project.releases[-1]
        held.append((project, version))
        return [(project.display, version, "release quarantined", project.key, None)]

    def docdestroy(self, serial: int) -> list[_Spec] | None:
        project = self._pick()
        if project is None:
            return None
        return [(project.display, None, "docdestroy", project.key, None)]

    def nuke_user(self, serial: int) -> list[_Spec]:
        """An admin removes a user: each of their projects goes, then the user."""
        user = self.rng.choice(self.plain_users)
        rows: list[_Spec] = []
        for _ in range(self.rng.choice((0, 1, 1, 2))):
            project = self._pick()
            if project is not None:
                self._drop(project)
                rows.append((project.display, None, "remove project", None, project.key))
        rows.append((f"user:{user}", None, "nuke user", None, None))
        return rows

    def alternate_add(self, serial: int) -> list[_Spec] | None:
        project = self._pick()
        if project is None:
            return None
        repo = f"{project.dist.replace('_', '-')}-{self.rng.choice(('mirror', 'index', 'cpu'))}"
        project.alternates.append(repo)
        action = f"add alternate repository {repo} to project {project.display}"
        return [(repo, None, action, None, None)]

    def alternate_delete(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: bool(p.alternates))
        if project is None:
            return self.alternate_add(serial) if serial < _ALTERNATE_ADD_END else None
        repo = project.alternates.pop()
        action = f"deleted alternate repository {repo} from project {project.display}"
        return [(repo, None, action, None, None)]

    # ---- legacy PyPI (2002 to 2018)

    def update(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: bool(p.releases))
        if project is None:
            return None
        roll = self.rng.random()
        if roll < 0.4:
            action = "update classifiers"
        elif roll < 0.9:
            fields = self.rng.sample(_LEGACY_FIELDS, self.rng.randint(1, 4))
            action = "update " + ", ".join(fields)
        else:
            action = "update"
        return [(project.display, project.releases[-1], action, project.key, None)]

    def rename(self, serial: int) -> list[_Spec] | None:
        project = self._pick()
        if project is None:
            return None
        old, old_key = project.display, project.key
        fresh = self._new_project()
        project.display, project.key, project.dist = fresh.display, fresh.key, fresh.dist
        project.variants = ()
        return [(project.display, None, f"rename from {old}", project.key, old_key)]

    def docupdate(self, serial: int) -> list[_Spec] | None:
        project = self._pick()
        if project is None:
            return None
        return [(project.display, None, "docupdate", project.key, None)]

    def url(self, serial: int) -> list[_Spec] | None:
        project = self._pick(lambda p: bool(p.releases))
        if project is None:
            return None
        if project.urls and self.rng.random() < 0.4:
            version, link = project.urls.pop()
            return [(project.display, version, f"remove url {link}", project.key, None)]
        version = project.releases[-1]
        host = self.rng.choice(("example.org", "downloads.example.net", "code.example.com"))
        link = f"http://{host}/{project.dist}/{project.display}-{version}.tar.gz"
        project.urls.append((version, link))
        return [(project.display, version, f"add url {link}", project.key, None)]

    def hosting_mode(self, serial: int) -> list[_Spec] | None:
        project = self._pick()
        if project is None:
            return None
        return [(project.display, None, "update hosting_mode", project.key, None)]

    def keyrotate(self, serial: int) -> list[_Spec]:
        return [("", "", "keyrotate ", None, None)]

    def unknown(self, serial: int) -> list[_Spec]:
        project = self._pick()
        action = self.rng.choice(_UNKNOWN_ACTIONS)
        if project is None:
            return [("", None, action, None, None)]
        version = project.releases[-1] if project.releases and "release" in action else None
        return [(project.display, version, action, project.key, None)]

    # ---- which transactions each era writes, and how often

    def table(self, serial: int) -> tuple[list[float], list[_Handler]]:
        """Cumulative weights and handlers of the transactions written at `serial`."""
        cls = _World
        weighted: list[tuple[float, _Handler]]
        if serial < LEGACY_END:
            weighted = [
                (10, cls.first_upload),
                (25, cls.release),
                (10, cls.late_file),
                (12, cls.update),
                (0.6, cls.rename),
                (2, cls.docupdate),
                (2, cls.url),
                (0.8, cls.hosting_mode),
                (0.06, cls.keyrotate),
                (1.5, cls.remove_file),
                (1, cls.remove_release),
                (0.5, cls.remove_project),
                (2, cls.add_role),
                (0.7, cls.remove_role),
            ]
        else:
            weighted = [
                (9, cls.first_upload),
                (30, cls.release),
                (15, cls.late_file),
                (2, cls.remove_file),
                (1.2, cls.remove_release),
                (0.6, cls.remove_project),
                (1.5, cls.yank),
                (0.4, cls.unyank),
                (3, cls.add_role),
                (1, cls.remove_role),
                (1, cls.change_role),
                (2, cls.invite),
                (1.5, cls.accepted),
                (0.4, cls.revoke_invite),
            ]
            if serial >= _PROJECT_QUARANTINE_FROM:
                weighted.append((0.2, cls.quarantine_project))
            if serial >= _RELEASE_QUARANTINE_FROM:
                weighted.append((0.25, cls.quarantine_release))
            if serial < _RETIRED_END:
                weighted += [(0.3, cls.docdestroy), (0.15, cls.nuke_user)]
            if _ALTERNATE_FROM <= serial < _ALTERNATE_ADD_END:
                weighted.append((0.8, cls.alternate_add))
            if _ALTERNATE_FROM <= serial < _ALTERNATE_DELETE_END:
                weighted.append((0.4, cls.alternate_delete))
        total = 0.0
        cumulative: list[float] = []
        for weight, _ in weighted:
            total += weight
            cumulative.append(total)
        return [c / total for c in cumulative], [handler for _, handler in weighted]


# --- transactions in serial order ------------------------------------------------------------


class Traffic:
    """The seeded stream of transactions: each one's rows with their serials and timestamps.

    The same seed, first serial and unknown rate always give the same transactions.
    """

    def __init__(self, seed: int, first_serial: int, unknown_rate: float) -> None:
        self._rng = random.Random(seed)
        self._world = _World(self._rng, random.Random(f"facts-{seed}"), first_serial)
        self._unknown_rate = unknown_rate
        self._next_serial = first_serial
        self._last_timestamp = era_timestamp(first_serial)
        self._era_end = -1
        self._era_start = 0
        self._cumulative: list[float] = []
        self._handlers: list[_Handler] = []
        #: (listing key, display name, last serial) of the projects older than the first row.
        self.preexisting: list[tuple[str, str, int]] = []
        for project in self._world.preexisting:
            before = self._rng.randint(max(1, first_serial - 2_000_000), max(1, first_serial - 1))
            self.preexisting.append((project.key, project.display, before))

    def transaction(self) -> list[PendingRow]:
        """The rows of the next transaction, in serial order."""
        rng = self._rng
        world = self._world
        serial = self._next_serial
        if not self._era_start <= serial < self._era_end:
            self._cumulative, self._handlers = world.table(serial)
            i = bisect.bisect_right(_ERA_BOUNDARIES, serial)
            self._era_start = _ERA_BOUNDARIES[i - 1] if i else 0
            self._era_end = _ERA_BOUNDARIES[i] if i < len(_ERA_BOUNDARIES) else 2**63
        specs: list[_Spec] | None
        if rng.random() < self._unknown_rate:
            specs = world.unknown(serial)
        else:
            handler = self._handlers[bisect.bisect_right(self._cumulative, rng.random())]
            specs = handler(world, serial) or world.first_upload(serial)
        timestamp = era_timestamp(serial)
        if rng.random() < 0.004:
            # The transaction began before the previous one committed.
            timestamp = self._last_timestamp - rng.randint(1, 3)
        elif timestamp < self._last_timestamp:
            timestamp = self._last_timestamp
        rows: list[PendingRow] = []
        random_ = rng.random
        for i, (name, version, action, set_key, del_key) in enumerate(specs):
            # A long upload (dozens of wheels) spans a few seconds.
            row_time = timestamp + i // 12
            rows.append((name, version, row_time, action, serial, set_key, del_key))
            serial += 1 if random_() < 0.97 else rng.randint(2, 3)
        self._last_timestamp = max(self._last_timestamp, timestamp + (len(specs) - 1) // 12)
        roll = random_()
        self._next_serial = serial + (0 if roll < 0.9 else rng.randint(1, 3 if roll < 0.99 else 40))
        return rows
