"""The parser: each catalog form in JOURNAL.md maps to its type and fields; no row can raise."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from bridge import events as ev
from bridge.parse import ROLES, decode_text, normalize_name, package_type, parse_row, rfc3339
from tests.conftest import ROOT

TS = 1725534675


def parsed(name: str, version: str | None, action: str, serial: int = 100) -> ev.Event:
    return parse_row((name, version, TS, action, serial))


CATALOG: list[tuple[str, str | None, str, str, dict[str, Any]]] = [
    # Warehouse today
    ("Foo", None, "create", "project.created", {}),
    ("Foo", "1.0", "new release", "release.created", {}),
    (
        "Foo",
        "1.0",
        "add source file foo-1.0.tar.gz",
        "file.added",
        {"filename": "foo-1.0.tar.gz", "python_version": "source", "package_type": "sdist"},
    ),
    (
        "Foo",
        "1.0",
        "add cp311 file foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
        "file.added",
        {"python_version": "cp311", "package_type": "wheel"},
    ),
    ("Foo", "1.0", "add 2.7 file foo-1.0-py2.7.egg", "file.added", {"package_type": "egg"}),
    ("Foo", "1.0", "add any file foo-1.0.win32.exe", "file.added", {"package_type": "other"}),
    ("Foo", "1.0", "remove file foo-1.0.tar.gz", "file.removed", {"filename": "foo-1.0.tar.gz"}),
    ("Foo", "1.0", "remove release", "release.removed", {}),
    ("Foo", None, "remove project", "project.removed", {}),
    ("Foo", "1.0", "yank release", "release.yanked", {}),
    ("Foo", "1.0", "unyank release", "release.unyanked", {}),
    ("Foo", None, "add Owner alice", "role.added", {"role": "Owner", "principal": "alice"}),
    (
        "Foo",
        None,
        "add Maintainer Security Response Team",
        "role.added",
        {"role": "Maintainer", "principal": "Security Response Team"},
    ),
    (
        "Foo",
        None,
        "remove Maintainer bob",
        "role.removed",
        {"role": "Maintainer", "principal": "bob"},
    ),
    (
        "Foo",
        None,
        "change Maintainer bob to Owner",
        "role.changed",
        {"principal": "bob", "old_role": "Maintainer", "new_role": "Owner", "role": "Owner"},
    ),
    (
        "Foo",
        None,
        "change Owner Road to Nowhere to Maintainer",
        "role.changed",
        {"principal": "Road to Nowhere", "old_role": "Owner", "new_role": "Maintainer"},
    ),
    (
        "Foo",
        None,
        "invite Maintainer carol",
        "role.invited",
        {"role": "Maintainer", "principal": "carol"},
    ),
    ("Foo", None, "accepted Owner carol", "role.invite_accepted", {"principal": "carol"}),
    ("Foo", None, "revoke_invite Owner dave", "role.invite_revoked", {"principal": "dave"}),
    ("Foo", None, "project quarantined", "project.quarantined", {}),
    ("Foo", None, "project quarantine cleared", "project.quarantine_cleared", {}),
    ("Foo", "1.0", "release quarantined", "release.quarantined", {}),
    ("Foo", "1.0", "release quarantine cleared", "release.quarantine_cleared", {}),
    # retired Warehouse texts
    ("Foo", "1.0", "remove", "release.removed", {}),
    ("Foo", None, "remove", "project.removed", {}),
    ("Foo", None, "docdestroy", "docs.destroyed", {}),
    ("user:mallory", None, "nuke user", "user.removed", {"username": "mallory"}),
    (
        "internal-mirror",
        None,
        "add alternate repository internal-mirror to project Foo_Bar",
        "project.alternate_repository_added",
        {"repository": "internal-mirror", "project": "Foo_Bar", "project_normalized": "foo-bar"},
    ),
    (
        "internal-mirror",
        None,
        "deleted alternate repository internal-mirror from project Foo_Bar",
        "project.alternate_repository_removed",
        {"repository": "internal-mirror", "project": "Foo_Bar"},
    ),
    # legacy PyPI
    ("UFx", "1.0", "update classifiers", "release.metadata_updated", {"fields": ("classifiers",)}),
    (
        "UFx",
        "1.0",
        "update author_email, home_page, summary, description",
        "release.metadata_updated",
        {"fields": ("author_email", "home_page", "summary", "description")},
    ),
    ("UFx", "1.0", "update", "release.metadata_updated", {"fields": ()}),
    ("NewName", None, "rename from OldName", "project.renamed", {"previous_name": "OldName"}),
    ("Foo", None, "docupdate", "docs.updated", {}),
    (
        "Foo",
        "1.0",
        "add url http://x.org/foo.tgz",
        "release.url_added",
        {"url": "http://x.org/foo.tgz"},
    ),
    (
        "Foo",
        "1.0",
        "remove url http://x.org/foo.tgz",
        "release.url_removed",
        {"url": "http://x.org/foo.tgz"},
    ),
    ("Foo", None, "update hosting_mode", "project.hosting_mode_updated", {}),
    ("", "", "keyrotate ", "mirror.key_rotated", {"project": "", "project_normalized": ""}),
    # anything else
    ("Foo", "1.0", "frobnicate the widget", "unknown", {}),
    ("Foo", None, "add Admin eve", "unknown", {}),
    ("Foo", None, "change Owner eve to Wizard", "unknown", {}),
]

#: JOURNAL.md's three facts about `add ...` rows, and the ambiguous rows between them.
ADD_FACTS: list[tuple[str, str | None, str, str, dict[str, Any]]] = [
    # An upload label is free text that may hold spaces: split on the last " file ".
    (
        "Foo",
        "1.0",
        "add Python 3.11 file foo-1.0.tar.gz",
        "file.added",
        {"python_version": "Python 3.11", "filename": "foo-1.0.tar.gz", "package_type": "sdist"},
    ),
    (
        "Foo",
        "1.0",
        "add any file file foo-1.0-py3-none-any.whl",
        "file.added",
        {"python_version": "any file", "filename": "foo-1.0-py3-none-any.whl"},
    ),
    (
        "Foo",
        "1.0",
        "add CPython 3.12 file caf&#233;-1.0-cp312-cp312-win_amd64.whl",
        "file.added",
        {"python_version": "CPython 3.12", "filename": "café-1.0-cp312-cp312-win_amd64.whl"},
    ),
    # Legacy PyPI's uploads of March 2005 to July 2007 carry no version: still uploads.
    (
        "Foo",
        None,
        "add 2.4 file foo-1.0.win32.exe",
        "file.added",
        {"python_version": "2.4", "filename": "foo-1.0.win32.exe", "package_type": "other"},
    ),
    (
        "Foo",
        None,
        "add source file foo-1.0.tar.gz",
        "file.added",
        {"python_version": "source", "package_type": "sdist"},
    ),
    ("Foo", None, "add py 2.4 file foo-1.0.zip", "file.added", {"python_version": "py 2.4"}),
    # A team name may hold spaces, " file " and " to ": without a version, the role word decides.
    (
        "Foo",
        None,
        "add Maintainer core file team",
        "role.added",
        {"role": "Maintainer", "principal": "core file team"},
    ),
    ("Foo", None, "add Owner a file b", "role.added", {"role": "Owner", "principal": "a file b"}),
    (
        "Foo",
        None,
        "add Owner ops to infra team",
        "role.added",
        {"role": "Owner", "principal": "ops to infra team"},
    ),
    (
        "Foo",
        None,
        "remove Maintainer core file team",
        "role.removed",
        {"role": "Maintainer", "principal": "core file team"},
    ),
    (
        "Foo",
        None,
        "change Owner ops to infra team to Maintainer",
        "role.changed",
        {"principal": "ops to infra team", "old_role": "Owner", "new_role": "Maintainer"},
    ),
    (
        "Foo",
        None,
        "change Maintainer core file team to Owner",
        "role.changed",
        {"principal": "core file team", "old_role": "Maintainer", "new_role": "Owner"},
    ),
    # An empty version (as on `keyrotate `) names no release either.
    ("Foo", "", "add Owner a file b", "role.added", {"principal": "a file b"}),
    # A version names a release, and role rows never carry one: the upload shape decides.
    (
        "Foo",
        "1.0",
        "add Owner x file foo-1.0.tar.gz",
        "file.added",
        {"python_version": "Owner x", "filename": "foo-1.0.tar.gz"},
    ),
    # ...but a role text that is no upload is still a grant, version or not.
    ("Foo", "1.0", "add Owner alice", "role.added", {"role": "Owner", "principal": "alice"}),
    # Neither shape: unknown, never a guess.
    ("Foo", "1.0", "add py3 file foo 1.0.tar.gz", "unknown", {}),
    ("Foo", "1.0", "add py3 file ", "unknown", {}),
    ("Foo", None, "add Owner", "unknown", {}),
    ("Foo", None, "add 2.4 files foo-1.0.tar.gz", "unknown", {}),
]


@pytest.mark.parametrize(("name", "version", "action", "type_name", "fields"), CATALOG + ADD_FACTS)
def test_catalog_action_becomes_its_event(
    name: str, version: str | None, action: str, type_name: str, fields: dict[str, Any]
) -> None:
    event = parsed(name, version, action)
    assert event.type == type_name
    assert type(event) is ev.EVENT_TYPES[type_name]
    assert event.action == action
    assert event.version == version
    assert event.serial == 100
    for field, value in fields.items():
        assert getattr(event, field) == value, field


def test_every_event_type_is_reachable_from_the_catalog() -> None:
    assert {row[3] for row in CATALOG} == set(ev.EVENT_TYPES)


def test_real_rows_from_the_journal() -> None:
    event = parse_row(
        (
            "openllm",
            "0.4.33.dev3",
            1701280908,
            "add py3 file openllm-0.4.33.dev3-py3-none-any.whl",
            4601226,
        )
    )
    assert isinstance(event, ev.FileAdded)
    assert event.filename == "openllm-0.4.33.dev3-py3-none-any.whl"
    assert event.time == "2023-11-29T18:01:48Z"


def test_character_references_are_decoded_in_fields_but_kept_in_action() -> None:
    event = parsed("Foo", None, "add Maintainer caf&#233; cr&#232;me")
    assert isinstance(event, ev.RoleAdded)
    assert event.principal == "café crème"
    assert event.action == "add Maintainer caf&#233; cr&#232;me"


def test_invalid_character_reference_stays_literal() -> None:
    assert decode_text("a&#0;b&#99999999;c&#xD800;") == "a&#0;b&#99999999;c&#xD800;"
    assert decode_text("&#x41;&#66;") == "AB"


def test_hosting_mode_is_not_a_metadata_update() -> None:
    assert parsed("Foo", "1.0", "update hosting_mode").type == "project.hosting_mode_updated"


def test_role_row_whose_team_starts_with_file_is_a_grant() -> None:
    event = parsed("Foo", None, "add Maintainer file crew")
    assert isinstance(event, ev.RoleAdded)
    assert event.principal == "file crew"


def test_legacy_upload_from_2006_without_version_is_a_file_event_with_null_version() -> None:
    event = parse_row(("Foo", None, 1150000000, "add 2.4 file Foo-1.0.win32-py2.4.exe", 12345))
    assert isinstance(event, ev.FileAdded)
    assert (event.version, event.python_version, event.filename) == (
        None,
        "2.4",
        "Foo-1.0.win32-py2.4.exe",
    )
    assert orjson.loads(event.to_json())["version"] is None


def test_legacy_upload_with_null_version_validates_against_the_file_added_schema() -> None:
    schema = json.loads((ROOT / "schemas" / "events" / "file.added.json").read_text("utf-8"))
    event = parse_row(("Foo", None, 1150000000, "add source file Foo-1.0.tar.gz", 12345))
    errors = Draft202012Validator(schema).iter_errors(orjson.loads(event.to_json()))
    assert [error.message for error in errors] == []


def test_same_text_is_an_upload_in_2006_and_a_grant_when_the_first_word_is_a_role() -> None:
    # Both rows have a nil version: legacy PyPI's upload vs a team named "a file b".
    assert parsed("Foo", None, "add 2.4 file b").type == "file.added"
    assert parsed("Foo", None, "add Owner a file b").type == "role.added"


def test_display_name_variants_share_one_key() -> None:
    keys = {
        parsed(n, None, "create").project_normalized
        for n in ("Foo_Bar", "foo-bar", "foo.bar", "FOO--bar")
    }
    assert keys == {"foo-bar"}


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("x-1.0.tar.gz", "sdist"),
        ("x-1.0.zip", "sdist"),
        ("x-1.0.tar.bz2", "sdist"),
        ("x-1.0-py3-none-any.whl", "wheel"),
        ("x-1.0-py2.7.egg", "egg"),
        ("x-1.0.win-amd64.exe", "other"),
        ("x-1.0.msi", "other"),
    ],
)
def test_package_type_from_filename(filename: str, kind: str) -> None:
    assert package_type(filename) == kind


def test_normalize_name_follows_pep_503() -> None:
    assert normalize_name("Django_REST.framework") == "django-rest-framework"


def test_time_is_rfc3339_even_for_out_of_range_timestamps() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(10**15).endswith("Z")
    assert rfc3339(-(10**15)).endswith("Z")


names = st.text(max_size=40)
actions = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda w, r: f"{w} {r}",
        st.sampled_from(
            [
                "add",
                "remove",
                "change",
                "invite",
                "accepted",
                "revoke_invite",
                "update",
                "rename",
                "deleted",
            ]
        ),
        st.text(max_size=60),
    ),
    st.builds(
        lambda r, w: f"change {r} {w} to {r}",
        st.sampled_from(["Owner", "Maintainer"]),
        st.text(max_size=30),
    ),
)


# Free text without a space at either end keeps these properties about the separator alone.
labels = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
filenames = st.text(
    st.characters(codec="utf-8", exclude_characters=" \x00"), min_size=1, max_size=30
)
teams = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30)


@settings(max_examples=500, deadline=None)
@given(label=labels, filename=filenames, version=st.text(min_size=1, max_size=10))
def test_any_upload_label_splits_on_the_last_file(label: str, filename: str, version: str) -> None:
    assume(not label.startswith(("url ", "alternate repository ")))
    event = parsed("Foo", version, f"add {label} file {filename}")
    assert isinstance(event, ev.FileAdded)
    assert (event.python_version, event.filename) == (decode_text(label), decode_text(filename))


@settings(max_examples=500, deadline=None)
@given(label=labels, filename=filenames)
def test_any_nil_version_upload_without_a_role_word_is_an_upload(label: str, filename: str) -> None:
    assume(label.partition(" ")[0] not in ROLES)
    assume(not label.startswith(("url ", "alternate repository ")))
    event = parsed("Foo", None, f"add {label} file {filename}")
    assert isinstance(event, ev.FileAdded)
    assert event.version is None
    assert (event.python_version, event.filename) == (decode_text(label), decode_text(filename))


@settings(max_examples=500, deadline=None)
@given(role=st.sampled_from(sorted(ROLES)), team=teams)
def test_any_team_name_is_granted_whole(role: str, team: str) -> None:
    event = parsed("Foo", None, f"add {role} {team}")
    assert isinstance(event, ev.RoleAdded)
    assert (event.role, event.principal) == (role, decode_text(team))


@settings(max_examples=500, deadline=None)
@given(old=st.sampled_from(sorted(ROLES)), new=st.sampled_from(sorted(ROLES)), team=teams)
def test_any_team_name_keeps_its_to_in_a_role_change(old: str, new: str, team: str) -> None:
    event = parsed("Foo", None, f"change {old} {team} to {new}")
    assert isinstance(event, ev.RoleChanged)
    assert (event.old_role, event.principal, event.new_role) == (old, decode_text(team), new)


@settings(max_examples=3000, deadline=None)
@given(
    name=names,
    version=st.one_of(st.none(), st.text(max_size=20)),
    timestamp=st.integers(min_value=-(2**63), max_value=2**63),
    action=actions,
    serial=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_no_row_makes_the_parser_raise(
    name: str, version: str | None, timestamp: int, action: str, serial: int
) -> None:
    event = parse_row((name, version, timestamp, action, serial))
    assert event.serial == serial
    assert event.action == action
    assert event.type in ev.EVENT_TYPES
    assert event.to_json()  # always serializable
