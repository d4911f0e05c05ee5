"""The PyPI journal simulator behind `pypi-bridge simulate`.

An aiohttp server speaking PyPI's XML-RPC mirroring protocol on `/pypi` exactly as JOURNAL.md
describes it (methods, row shape, silent page cap, faults, per-IP moving-window rate limit), fed
by `Journal`: a seeded generator of realistic journal traffic whose texts follow the era of the
serial (legacy PyPI before ~3.7 million, Warehouse after, with the texts each period wrote).

Rows are rendered to their XML-RPC bytes once, when generated, and kept back to back in one
buffer, so a 50,000-row page is a single slice of it: benchmarks read pages as fast as the bridge
can ask. Tests and demos steer the server through small JSON endpoints under `/_sim/`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime
import itertools
import logging
import math
import random
import re
import socket
import struct
import time
import xmlrpc.client
from array import array
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from xml.parsers.expat import ExpatError

from aiohttp import web

from bridge.config import (
    Flag,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
)
from bridge.errors import BridgeError, ConfigError

log = logging.getLogger(__name__)

#: A journal row as PyPI returns it: name, version, timestamp, action, serial.
Row = tuple[str, str | None, int, str, int]

FAULT_KINDS = ("502", "503", "timeout", "truncate", "malformed", "reset")
#: Kinds `POST /_sim/faults` accepts on top of `FAULT_KINDS`.
CONTROL_FAULT_KINDS = (*FAULT_KINDS, "throttle", "fault")
XMLRPC_PATH = "/pypi"


# --- flags and settings ----------------------------------------------------------------------


def probability(text: str) -> float:
    """A probability from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a probability from 0 to 1")
    return value


def fault_kinds(text: str) -> tuple[str, ...]:
    """A comma-separated list of fault kinds (see `FAULT_KINDS`)."""
    kinds = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"expected a comma list of {', '.join(FAULT_KINDS)}")
    return kinds


def _serial(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 2**31 - 1:
        raise ValueError("expected a serial from 1 to 2147483647 (32-bit on the wire)")
    return value


SIMULATE_FLAGS = (
    Flag("host", str, "127.0.0.1", "address the simulator listens on"),
    Flag("port", port, 8800, "port the simulator listens on (0 picks a free one)"),
    Flag("seed", int, 0, "seed of the generated traffic (same seed, same journal)"),
    Flag("prefill", non_negative_int, 0, "journal rows generated before serving"),
    Flag(
        "first-serial",
        _serial,
        40_000_000,
        "serial of the first row; it sets the era (below ~3.7 million: legacy PyPI's texts)",
    ),
    Flag(
        "rate",
        non_negative_float,
        0.25,
        "live rows per second appended while serving, in bursts (0.25 is PyPI's ~20k a day)",
    ),
    Flag("page-size", positive_int, 50_000, "most rows one changelog_since_serial returns"),
    Flag("rate-limit", non_negative_int, 0, "calls allowed per window and client IP (0: off)"),
    Flag("rate-limit-window", positive_float, 60.0, "seconds of the moving rate-limit window"),
    Flag("fault-rate", probability, 0.0, "probability that a call fails (kinds from --faults)"),
    Flag("faults", fault_kinds, FAULT_KINDS, "comma list of fault kinds --fault-rate draws from"),
    Flag("latency", non_negative_float, 0.0, "seconds added to every call"),
    Flag(
        "stop-after-rows",
        non_negative_int,
        None,
        "stop appending live rows once the journal holds this many",
    ),
    Flag(
        "unknown-rate",
        probability,
        0.001,
        "share of generated transactions with an action text no catalog knows",
    ),
    Flag(
        "hang",
        positive_float,
        300.0,
        "seconds a 'timeout' fault holds a call before dropping the connection",
    ),
)


@dataclass(frozen=True)
class SimulatorSettings:
    """Everything `pypi-bridge simulate` needs, validated together."""

    host: str = "127.0.0.1"
    port: int = 8800
    seed: int = 0
    prefill: int = 0
    first_serial: int = 40_000_000
    rate: float = 0.25
    page_size: int = 50_000
    rate_limit: int = 0
    rate_limit_window: float = 60.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    latency: float = 0.0
    stop_after_rows: int | None = None
    unknown_rate: float = 0.001
    hang: float = 300.0

    def new_journal(self) -> Journal:
        """An empty journal generating this configuration's traffic."""
        return Journal(
            seed=self.seed, first_serial=self.first_serial, unknown_rate=self.unknown_rate
        )


def simulator_settings(ns: argparse.Namespace) -> SimulatorSettings:
    """The validated settings of `pypi-bridge simulate`, from flags parsed with SIMULATE_FLAGS."""
    if ns.stop_after_rows is not None and ns.stop_after_rows < ns.prefill:
        raise ConfigError(
            f"--stop-after-rows {ns.stop_after_rows} is below --prefill {ns.prefill}",
            "give a row count at or above the prefill",
        )
    return SimulatorSettings(
        host=ns.host,
        port=ns.port,
        seed=ns.seed,
        prefill=ns.prefill,
        first_serial=ns.first_serial,
        rate=ns.rate,
        page_size=ns.page_size,
        rate_limit=ns.rate_limit,
        rate_limit_window=ns.rate_limit_window,
        fault_rate=ns.fault_rate,
        faults=tuple(ns.faults),
        latency=ns.latency,
        stop_after_rows=ns.stop_after_rows,
        unknown_rate=ns.unknown_rate,
        hang=ns.hang,
    )


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
    "Docs and Tooling",
    "Open Source Office",
    "Build Infra",
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
# A row waiting to be appended: name, version, timestamp, action, serial, set key, deleted key.
_Pending = tuple[str, str | None, int, str, int, str | None, str | None]
_Handler = Callable[["_World", int], list[_Spec] | None]


class _World:
    """Projects, users and teams, and one handler per kind of transaction PyPI writes."""

    def __init__(self, rng: random.Random, first_serial: int) -> None:
        self.rng = rng
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
        rows += [(name, version, f"add {py} file {fn}", key, None) for py, fn in files]
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
            return [(project.display, version, f"add {py} file {filename}", project.key, None)]
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


# --- the journal -----------------------------------------------------------------------------

_NIL = "<value><nil/></value>\n"
#: Rows rendered per batch by `append` (bounds the transient strings of a large prefill).
_STORE_CHUNK = 20_000
_ROW_RE = re.compile(
    rb"<value><array><data>\n<value><string>(.*?)</string></value>\n"
    rb"(?:<value><string>(.*?)</string></value>|<value><nil/></value>)\n"
    rb"<value><int>(-?\d+)</int></value>\n<value><string>(.*?)</string></value>\n"
    rb"<value><int>(\d+)</int></value>\n</data></array></value>\n",
    re.S,
)


def _escape(text: str) -> str:
    if "&" in text or "<" in text or ">" in text:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


def _unescape(raw: bytes) -> str:
    return raw.decode("ascii").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class Journal:
    """A seeded, append-only journal: generates PyPI-like rows and stores them compactly.

    Each row is kept only as its XML-RPC `<value>` bytes, back to back in one buffer, with the
    serials and end offsets in arrays; `page()` is therefore one slice, and `since()` decodes.
    The same seed, first serial and unknown rate always give the same rows, however `append`
    calls are split.
    """

    def __init__(
        self, seed: int = 0, first_serial: int = 40_000_000, unknown_rate: float = 0.001
    ) -> None:
        self._rng = random.Random(seed)
        self._world = _World(self._rng, first_serial)
        self._unknown_rate = unknown_rate
        self._data = bytearray()
        self._serials = array("q")
        #: When each row became visible (POSIX seconds), for freshness measurements.
        self._visible_at = array("d")
        self._ends = array("q", [0])
        self._pending: deque[_Pending] = deque()
        self._next_serial = first_serial
        self._last_timestamp = era_timestamp(first_serial)
        self._era_end = -1
        self._era_start = 0
        self._cumulative: list[float] = []
        self._handlers: list[_Handler] = []
        # Project key -> (display name, last serial): what list_packages_with_serial reports.
        self._listing: dict[str, tuple[str, int]] = {}
        for project in self._world.preexisting:
            before = self._rng.randint(max(1, first_serial - 2_000_000), max(1, first_serial - 1))
            self._listing[project.key] = (project.display, before)

    # ---- reading

    @property
    def rows(self) -> int:
        """How many rows the journal holds."""
        return len(self._serials)

    @property
    def last_serial(self) -> int | None:
        """The newest serial, or None while the journal is empty."""
        return self._serials[-1] if self._serials else None

    def _index_after(self, serial: int) -> int:
        return bisect.bisect_right(self._serials, serial)

    def page(self, serial: int, limit: int, prefix: bytes = b"", suffix: bytes = b"") -> bytes:
        """The XML-RPC `<value>`s of at most `limit` rows with a serial above `serial`.

        `prefix` and `suffix` are joined on in the same copy, so a response costs one copy.
        """
        start = self._index_after(serial)
        stop = min(start + limit, len(self._serials))
        with memoryview(self._data) as data:
            return b"".join((prefix, data[self._ends[start] : self._ends[stop]], suffix))

    def since(self, serial: int, limit: int) -> list[Row]:
        """At most `limit` rows with a serial above `serial`, ascending (what PyPI returns)."""
        return list(self._decode(self.page(serial, limit)))

    def all_rows(self) -> Iterator[Row]:
        """Every row, ascending by serial."""
        step = 50_000
        for start in range(0, len(self._serials), step):
            stop = min(start + step, len(self._serials))
            yield from self._decode(self._data[self._ends[start] : self._ends[stop]])

    @staticmethod
    def _decode(data: bytes | bytearray) -> Iterator[Row]:
        for match in _ROW_RE.finditer(data):
            name, version, timestamp, action, serial = match.groups()
            yield (
                _unescape(name),
                None if version is None else _unescape(version),
                int(timestamp),
                _unescape(action),
                int(serial),
            )

    def visible_since(self, serial: int) -> list[tuple[int, float]]:
        """(serial, POSIX time it became visible) of every row with a serial above `serial`."""
        start = self._index_after(serial)
        return list(zip(self._serials[start:], self._visible_at[start:], strict=True))

    def packages(self) -> dict[str, int]:
        """Each existing project's display name and last serial (list_packages_with_serial)."""
        return dict(self._listing.values())

    # ---- writing

    def append(self, n: int) -> int:
        """Append exactly `n` rows (a transaction may be split across calls); returns `n`."""
        pending = self._pending
        added = 0
        while added < n:
            while len(pending) < min(n - added, _STORE_CHUNK):
                self._generate()
            take = min(n - added, _STORE_CHUNK)
            self._store([pending.popleft() for _ in range(take)])
            added += take
        return added

    def append_burst(self, limit: int | None = None) -> int:
        """Append the rest of the current transaction, or the next one; at most `limit` rows."""
        if limit is not None and limit <= 0:
            return 0
        if not self._pending:
            self._generate()
        pending = self._pending
        take = len(pending) if limit is None else min(limit, len(pending))
        self._store([pending.popleft() for _ in range(take)])
        return take

    def _generate(self) -> None:
        """Queue the rows of one more transaction, with their serials and timestamp."""
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
        pending = self._pending
        random_ = rng.random
        for i, (name, version, action, set_key, del_key) in enumerate(specs):
            # A long upload (dozens of wheels) spans a few seconds.
            row_time = timestamp + i // 12
            pending.append((name, version, row_time, action, serial, set_key, del_key))
            serial += 1 if random_() < 0.97 else rng.randint(2, 3)
        self._last_timestamp = max(self._last_timestamp, timestamp + (len(specs) - 1) // 12)
        roll = random_()
        self._next_serial = serial + (0 if roll < 0.9 else rng.randint(1, 3 if roll < 0.99 else 40))

    def _store(self, rows: Sequence[_Pending]) -> None:
        parts: list[str] = []
        add = parts.append
        listing = self._listing
        # Names and versions are generated from [A-Za-z0-9._:-] only; actions may hold `&#NNN;`.
        for name, version, timestamp, action, serial, set_key, del_key in rows:
            if "&" in action:
                action = _escape(action)
            if version is None:
                add(
                    f"<value><array><data>\n<value><string>{name}</string></value>\n{_NIL}"
                    f"<value><int>{timestamp}</int></value>\n<value><string>{action}"
                    f"</string></value>\n<value><int>{serial}</int></value>\n"
                    "</data></array></value>\n"
                )
            else:
                add(
                    f"<value><array><data>\n<value><string>{name}</string></value>\n"
                    f"<value><string>{version}</string></value>\n"
                    f"<value><int>{timestamp}</int></value>\n<value><string>{action}"
                    f"</string></value>\n<value><int>{serial}</int></value>\n"
                    "</data></array></value>\n"
                )
            if del_key is not None:
                listing.pop(del_key, None)
            if set_key is not None:
                listing[set_key] = (name, serial)
        self._serials.extend([row[4] for row in rows])
        self._visible_at.extend(itertools.repeat(time.time(), len(rows)))
        ends = self._ends
        ends.extend(
            itertools.islice(itertools.accumulate(map(len, parts), initial=ends[-1]), 1, None)
        )
        # ASCII only (non-ASCII was written as &#NNN;), so str length is byte length.
        self._data += "".join(parts).encode("ascii")


# --- XML-RPC encoding ------------------------------------------------------------------------

_RESPONSE_HEAD = b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n"
_RESPONSE_TAIL = b"</param>\n</params>\n</methodResponse>\n"
_XML_TYPE = "text/xml; charset=utf-8"
# What xmlrpc.client.loads raises on a body that is not an XML-RPC call.
_UNPARSABLE = (ExpatError, xmlrpc.client.ResponseError, ValueError, TypeError, KeyError, IndexError)


def _response_body(value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return b"".join((_RESPONSE_HEAD, value, _RESPONSE_TAIL))


_ROWS_HEAD = _RESPONSE_HEAD + b"<value><array><data>\n"
_ROWS_TAIL = b"</data></array></value>\n" + _RESPONSE_TAIL


def _fault_body(code: int, message: str) -> bytes:
    return (
        "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n"
        f"<name>faultCode</name>\n<value><int>{code}</int></value>\n</member>\n<member>\n"
        f"<name>faultString</name>\n<value><string>{_escape(message)}</string></value>\n"
        "</member>\n</struct></value>\n</fault>\n</methodResponse>\n"
    ).encode()


def _struct_body(members: dict[str, int]) -> bytes:
    parts = ["<value><struct>\n"]
    for name, serial in members.items():
        parts.append(
            f"<member>\n<name>{_escape(name)}</name>\n<value><int>{serial}</int></value>\n"
            "</member>\n"
        )
    parts.append("</struct></value>\n")
    return _response_body("".join(parts))


class _Fault(BridgeError):
    """Answer the call with an XML-RPC fault (internal control flow, never leaves the module)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- the server ------------------------------------------------------------------------------


class _MovingWindow:
    """Per-client moving-window limiter; refused calls do not use up the window."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def hit(self, client: str) -> tuple[bool, int, int]:
        """(allowed, calls remaining, whole seconds until the oldest call leaves the window)."""
        now = time.monotonic()
        hits = self._hits.setdefault(client, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        allowed = len(hits) < self.limit
        if allowed:
            hits.append(now)
        reset = max(1, math.ceil(hits[0] + self.window - now))
        return allowed, self.limit - len(hits), reset


@dataclass(frozen=True)
class _Injected:
    kind: str
    retry_after: int = 1
    code: int = -32500
    message: str = "RuntimeError: simulated failure"


_THROTTLE_TEXT = (
    "HTTPTooManyRequests: The action could not be performed because there were too many "
    "requests by the client. Limit may reset in {} seconds."
)
_HTML_ERRORS = {
    "502": (502, "Bad Gateway"),
    "503": (503, "Service Unavailable"),
}


class _Simulator:
    """The running server's state: journal, limiter, counters, queued faults, live rate."""

    def __init__(self, settings: SimulatorSettings, journal: Journal) -> None:
        self.settings = settings
        self.journal = journal
        self.limiter = (
            _MovingWindow(settings.rate_limit, settings.rate_limit_window)
            if settings.rate_limit
            else None
        )
        self.rate = settings.rate
        self.rate_changed = asyncio.Event()
        self.calls = 0
        self.throttled = 0
        self.faults: dict[str, int] = {}
        self.queued: deque[_Injected] = deque()
        self._chaos = random.Random(f"faults-{settings.seed}")
        self._timing = random.Random(f"timing-{settings.seed}")

    # ---- XML-RPC

    async def xmlrpc(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        body = await request.read()
        if self.settings.latency:
            await asyncio.sleep(self.settings.latency)
        headers: dict[str, str] = {}
        if self.queued:
            return await self._inject(request, self.queued.popleft(), headers)
        if self.limiter is not None:
            allowed, remaining, reset = self.limiter.hit(request.remote or "")
            name = '"pypi-xmlrpc"'
            window = math.ceil(self.limiter.window)
            headers["RateLimit-Policy"] = f"{name};q={self.limiter.limit};w={window}"
            headers["RateLimit"] = f"{name};r={remaining};t={reset}"
            if not allowed:
                return self._throttle(reset, headers)
        if self.settings.fault_rate and self._chaos.random() < self.settings.fault_rate:
            kind = self._chaos.choice(self.settings.faults)
            return await self._inject(request, _Injected(kind), headers)
        try:
            answer = self._call(request, body)
        except _Fault as fault:
            answer = _fault_body(fault.code, fault.message)
        return web.Response(body=answer, headers=headers, content_type="text/xml", charset="utf-8")

    def _call(self, request: web.Request, body: bytes) -> bytes:
        if request.method != "POST" or request.content_type != "text/xml":
            raise _Fault(-32500, "application error")
        if b"<!DOCTYPE" in body.upper():
            # Entity tricks have no place in XML-RPC; refuse them before the parser sees them.
            raise _Fault(-32700, "parse error. not well formed")
        try:
            # Requests come from test and demo clients; DOCTYPEs were refused above.
            params, method = xmlrpc.client.loads(body)
        except _UNPARSABLE as exc:
            raise _Fault(-32700, "parse error. not well formed") from exc
        if method is None:
            raise _Fault(-32700, "parse error. not well formed")
        journal = self.journal
        if method == "changelog_last_serial":
            _no_arguments(params)
            last = journal.last_serial
            return _response_body(_NIL if last is None else f"<value><int>{last}</int></value>\n")
        if method == "changelog_since_serial":
            if len(params) != 1:
                problem = "Missing required argument" if not params else "Unexpected argument"
                raise _Fault(-32602, f"client error; serial: {problem}")
            serial = params[0]
            if not isinstance(serial, int) or isinstance(serial, bool):
                raise _Fault(-32602, "client error; serial: Input should be a valid integer")
            return journal.page(serial, self.settings.page_size, _ROWS_HEAD, _ROWS_TAIL)
        if method == "list_packages_with_serial":
            _no_arguments(params)
            return _struct_body(journal.packages())
        raise _Fault(-32601, "server error; requested method not found")

    def _throttle(self, retry_after: int, headers: dict[str, str]) -> web.Response:
        self.throttled += 1
        body = _fault_body(-32500, _THROTTLE_TEXT.format(max(1, retry_after)))
        return web.Response(body=body, headers=headers, content_type="text/xml", charset="utf-8")

    async def _inject(
        self, request: web.Request, fault: _Injected, headers: dict[str, str]
    ) -> web.StreamResponse:
        kind = fault.kind
        self.faults[kind] = self.faults.get(kind, 0) + 1
        log.debug("injecting fault %s", kind)
        if kind == "throttle":
            headers.setdefault("RateLimit", f'"pypi-xmlrpc";r=0;t={fault.retry_after}')
            return self._throttle(fault.retry_after, headers)
        if kind == "fault":
            body = _fault_body(fault.code, fault.message)
            return web.Response(body=body, content_type="text/xml", charset="utf-8")
        if kind in _HTML_ERRORS:
            status, reason = _HTML_ERRORS[kind]
            page = (
                f"<html><head><title>{status} {reason}</title></head><body>"
                f"<h1>Error {status} {reason}</h1><p>{reason}</p><hr>"
                "<p>pypi-bridge simulator cache server</p></body></html>\n"
            )
            return web.Response(status=status, text=page, content_type="text/html")
        if kind == "malformed":
            garbage = b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<par\xff\xfe\x00am><v"
            return web.Response(body=garbage, content_type="text/xml", charset="utf-8")
        if kind == "truncate":
            full = self.journal.page(-1, min(self.settings.page_size, 200), _ROWS_HEAD, _ROWS_TAIL)
            response = web.StreamResponse(headers={"Content-Type": _XML_TYPE})
            response.content_length = len(full)
            await response.prepare(request)
            await response.write(full[: len(full) // 2])
            _drop(request, reset=False)
            return response
        if kind == "timeout":
            await asyncio.sleep(self.settings.hang)
        _drop(request, reset=True)
        return web.Response()

    # ---- control API

    async def state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "last_serial": self.journal.last_serial,
                "rows": self.journal.rows,
                "calls": self.calls,
                "throttled": self.throttled,
                "faults": self.faults,
                "pending_faults": len(self.queued),
                "rate": self.rate,
                "page_size": self.settings.page_size,
                "projects": len(self.journal.packages()),
            }
        )

    async def visibility(self, request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise _bad_request("after must be a serial") from None
        return web.json_response({"rows": self.journal.visible_since(after)})

    async def add_faults(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        kind = str(payload.get("kind", ""))
        if kind not in CONTROL_FAULT_KINDS:
            raise _bad_request(f"kind must be one of {', '.join(CONTROL_FAULT_KINDS)}")
        count = _number(payload, "count", 1, int)
        fault = _Injected(
            kind,
            retry_after=_number(payload, "retry_after", 1, int),
            code=_number(payload, "code", -32500, int),
            message=str(payload.get("message", "RuntimeError: simulated failure")),
        )
        self.queued.extend([fault] * count)
        return web.json_response({"pending_faults": len(self.queued)})

    async def append(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        added = self.journal.append(_number(payload, "rows", 1, int))
        return web.json_response({"added": added, "last_serial": self.journal.last_serial})

    async def set_rate(self, request: web.Request) -> web.Response:
        payload = await _json_object(request)
        rate = _number(payload, "rate", None, float)
        if rate is None or rate < 0:
            raise _bad_request("rate must be a number of rows per second, 0 or more")
        self.rate = rate
        self.rate_changed.set()
        return web.json_response({"rate": self.rate})

    # ---- live traffic

    async def live(self) -> None:
        """Append transactions at `rate` rows per second on average, each one a burst."""
        stop = self.settings.stop_after_rows
        burst = 1
        while True:
            self.rate_changed.clear()
            if self.rate <= 0 or (stop is not None and self.journal.rows >= stop):
                await self.rate_changed.wait()
                continue
            # Poisson arrivals of transactions: the mean gap keeps the mean row rate.
            delay = burst / self.rate * self._timing.expovariate(1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.rate_changed.wait(), delay)
            if self.rate_changed.is_set():
                continue  # start over at the new rate
            remaining = None if stop is None else stop - self.journal.rows
            burst = max(1, self.journal.append_burst(remaining))


def _no_arguments(params: tuple[Any, ...]) -> None:
    if params:
        raise _Fault(-32602, "client error; this method takes no arguments")


def _drop(request: web.Request, *, reset: bool) -> None:
    """Close the client's connection now: after what was written, or at once with a TCP RST."""
    transport = request.transport
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message + "\n")


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        payload = await request.json() if request.can_read_body else {}
    except ValueError:
        raise _bad_request("the body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise _bad_request("the body must be a JSON object")
    return payload


def _number(payload: dict[str, Any], key: str, default: Any, kind: type[Any]) -> Any:
    value = payload.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_request(f"{key} must be a number")
    if kind is int and value != int(value):
        raise _bad_request(f"{key} must be a whole number")
    return kind(value)


SIMULATOR = web.AppKey("simulator", _Simulator)


def prefilled_journal(settings: SimulatorSettings) -> Journal:
    """A new journal holding `settings.prefill` rows (a million take a few seconds)."""
    journal = settings.new_journal()
    started = time.perf_counter()
    journal.append(settings.prefill)
    if settings.prefill:
        log.info(
            "prefilled %d rows (serials %s to %s) in %.1f s",
            journal.rows,
            settings.first_serial,
            journal.last_serial,
            time.perf_counter() - started,
        )
    return journal


def simulator_app(settings: SimulatorSettings, journal: Journal | None = None) -> web.Application:
    """The simulator as an aiohttp application; prefills a new journal if none is given.

    Serves XML-RPC on `/pypi` and the JSON control API under `/_sim/`, and appends live rows
    at `settings.rate` while it runs.
    """
    if journal is None:
        journal = prefilled_journal(settings)
    simulator = _Simulator(settings, journal)
    app = web.Application()
    app[SIMULATOR] = simulator
    app.router.add_route("*", XMLRPC_PATH, simulator.xmlrpc)
    app.router.add_get("/_sim/state", simulator.state)
    app.router.add_get("/_sim/visibility", simulator.visibility)
    app.router.add_post("/_sim/faults", simulator.add_faults)
    app.router.add_post("/_sim/append", simulator.append)
    app.router.add_post("/_sim/rate", simulator.set_rate)

    async def live_rows(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(simulator.live())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(live_rows)
    return app


@dataclass(frozen=True)
class RunningSimulator:
    """A simulator serving on a real socket."""

    url: str
    journal: Journal
    app: web.Application


@contextlib.asynccontextmanager
async def running_simulator(
    settings: SimulatorSettings, journal: Journal | None = None
) -> AsyncIterator[RunningSimulator]:
    """Serve the simulator on `settings.host`/`port` until the block exits."""
    if journal is None:
        # In a thread: whatever else shares this event loop keeps running during a long prefill.
        journal = await asyncio.to_thread(prefilled_journal, settings)
    app = simulator_app(settings, journal)
    # Cancel a handler whose client went away (a hung 'timeout' call must not outlive it),
    # and do not wait long for calls in flight at shutdown.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        bound = runner.addresses[0]
        host = settings.host
        if host in ("0.0.0.0", ""):  # noqa: S104 - mapping a wildcard to a reachable address
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        yield RunningSimulator(
            f"http://{host}:{bound[1]}{XMLRPC_PATH}", app[SIMULATOR].journal, app
        )
    finally:
        await runner.cleanup()


async def serve(settings: SimulatorSettings, on_ready: Callable[[str], None] | None = None) -> None:
    """Run the simulator until cancelled; `on_ready` gets the XML-RPC URL once it listens."""
    async with running_simulator(settings) as running:
        journal = running.journal
        log.info(
            "PyPI simulator serving %s (%d rows, last serial %s, %.2f live rows/s)",
            running.url,
            journal.rows,
            journal.last_serial,
            settings.rate,
        )
        if on_ready is not None:
            on_ready(running.url)
        await asyncio.Event().wait()
