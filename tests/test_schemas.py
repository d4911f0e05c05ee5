"""The published event contract: `schemas/` and the code never drift.

Three things must agree: the event classes (`bridge/events.py`), the JSON Schemas
(`schemas/events/{type}.json`, draft 2020-12) and the AsyncAPI 3 document (`schemas/asyncapi.yaml`).
These tests prove it from the class side (fields and annotations), from the parser side (one row
for every catalog form in JOURNAL.md, and a large simulated journal) and from the routing side
(topics, key and CloudEvents headers).
"""

from __future__ import annotations

import json
import types
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

import orjson
import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from bridge import parse
from bridge.config import TopicSettings
from bridge.events import EVENT_TYPES, PACKAGE_TYPES, Event, event_fields, event_from_json
from bridge.index import ProjectIndex
from bridge.parse import Row, parse_row
from bridge.routing import (
    CE_TYPE_PREFIX,
    HEADER_NAMES,
    Router,
    projects_topic,
    topic_name,
    watermark_topic,
)
from bridge.simulator import LEGACY_END, SimulatorSettings, era_serial
from bridge.watermark import Watermark
from tests.conftest import ROOT

SCHEMAS = ROOT / "schemas"
EVENT_SCHEMAS = SCHEMAS / "events"
ASYNCAPI = SCHEMAS / "asyncapi.yaml"
JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"
PAYLOAD_FORMAT = "application/schema+json;version=2020-12"
PYPI_URL = "https://pypi.org/pypi"
#: The record headers the bridge writes (CloudEvents Kafka binding, binary mode), by contract.
CONTRACT_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type")
COMMON_FIELDS = tuple(event_fields(Event))
TYPE_NAMES = sorted(EVENT_TYPES)


def schema_id(type_name: str) -> str:
    """The stable `$id` of an event type's schema."""
    return f"urn:pypi-kafka-bridge:event:{type_name}"


@cache
def event_schemas() -> dict[str, dict[str, Any]]:
    """Every event schema file, by file name without `.json`."""
    return {
        path.name.removesuffix(".json"): json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(EVENT_SCHEMAS.glob("*.json"))
    }


@cache
def schema_registry() -> Registry[Any]:
    """All event schemas under their `$id`, so a `$ref` between them resolves offline."""
    return Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in event_schemas().values()
    )


@cache
def validator(type_name: str) -> Draft202012Validator:
    """A validator for one event type's schema, format assertions switched on."""
    return Draft202012Validator(
        event_schemas()[type_name],
        registry=schema_registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def validation_errors(event: Event) -> list[str]:
    """Why the event's record value fails its type's schema (empty if it validates)."""
    value = orjson.loads(orjson.dumps(event))
    return [error.message for error in validator(event.type).iter_errors(value)]


@cache
def asyncapi() -> dict[str, Any]:
    loaded = yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def resolve_local(pointer: str) -> Any:
    """Follow a `#/...` JSON pointer inside the AsyncAPI document."""
    assert pointer.startswith("#/"), pointer
    node: Any = asyncapi()
    for part in pointer[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def asyncapi_validator(pointer: str) -> Draft7Validator:
    """A validator for a schema inside the AsyncAPI document (AsyncAPI Schema Objects are a
    superset of draft 7), with the document's own `#/components/...` references resolvable."""
    base = ASYNCAPI.as_uri()
    registry: Registry[Any] = Registry().with_resource(base, DRAFT7.create_resource(asyncapi()))
    return Draft7Validator(
        {"$ref": f"{base}{pointer}"},
        registry=registry,
        format_checker=Draft7Validator.FORMAT_CHECKER,
    )


def row_of(example: dict[str, Any]) -> Row:
    """The journal row an event was made from (alternate repository rows are named after the
    repository, and their event after the project the action names)."""
    name = example["project"]
    if example["type"].startswith("project.alternate_repository_"):
        name = example["repository"]
    return (name, example["version"], example["timestamp"], example["action"], example["serial"])


# --- the schemas mirror the event classes ---------------------------------------------------


def test_every_event_type_has_a_schema_and_every_schema_an_event_type() -> None:
    assert sorted(event_schemas()) == TYPE_NAMES


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_schema_is_valid_json_schema_2020_12(type_name: str) -> None:
    schema = event_schemas()[type_name]
    assert schema["$schema"] == JSON_SCHEMA_2020_12
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_schema_id_and_title_name_the_event_class(type_name: str) -> None:
    schema, cls = event_schemas()[type_name], EVENT_TYPES[type_name]
    assert (schema["$id"], schema["title"], schema["description"]) == (
        schema_id(type_name),
        cls.__name__,
        cls.DESCRIPTION,
    )


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_schema_properties_are_the_dataclass_fields(type_name: str) -> None:
    assert set(event_schemas()[type_name]["properties"]) == set(
        event_fields(EVENT_TYPES[type_name])
    )


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_schema_requires_every_field(type_name: str) -> None:
    required = event_schemas()[type_name]["required"]
    assert len(required) == len(set(required))
    assert set(required) == set(event_fields(EVENT_TYPES[type_name]))


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_schema_is_a_closed_object(type_name: str) -> None:
    schema = event_schemas()[type_name]
    assert (schema["type"], schema["additionalProperties"]) == ("object", False)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_schema_pins_the_type_field_to_the_type_name(type_name: str) -> None:
    assert event_schemas()[type_name]["properties"]["type"]["const"] == type_name


@dataclass(frozen=True)
class Shape:
    """The JSON types a value may take, and for arrays the shape of the items."""

    types: frozenset[str]
    items: Shape | None = None


_SCALARS: dict[object, str] = {int: "integer", str: "string", float: "number", type(None): "null"}


def annotation_shape(annotation: object) -> Shape:
    """The JSON shape orjson writes for a value of this (dataclass field) annotation."""
    if annotation in _SCALARS:
        return Shape(frozenset({_SCALARS[annotation]}))
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return Shape(frozenset({"array"}), annotation_shape(args[0]))
    if origin is list and len(args) == 1:
        return Shape(frozenset({"array"}), annotation_shape(args[0]))
    if origin in (Union, types.UnionType):
        members = [annotation_shape(arg) for arg in args]
        assert all(member.items is None for member in members), annotation
        return Shape(frozenset().union(*(member.types for member in members)))
    raise AssertionError(f"no JSON mapping known for the annotation {annotation!r}")


def schema_shape(prop: dict[str, Any]) -> Shape:
    declared = prop["type"]
    kinds = frozenset([declared] if isinstance(declared, str) else declared)
    return Shape(kinds, schema_shape(prop["items"]) if "array" in kinds else None)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_schema_json_types_agree_with_the_annotations(type_name: str) -> None:
    cls = EVENT_TYPES[type_name]
    hints = get_type_hints(cls)
    properties = event_schemas()[type_name]["properties"]
    expected = {name: annotation_shape(hints[name]) for name in event_fields(cls)}
    assert {name: schema_shape(properties[name]) for name in expected} == expected


def test_common_fields_are_described_alike_in_every_schema() -> None:
    shared = [field for field in COMMON_FIELDS if field != "type"]
    first, *others = (event_schemas()[t]["properties"] for t in TYPE_NAMES)
    for properties in others:
        assert {f: properties[f] for f in shared} == {f: first[f] for f in shared}


def test_package_type_enum_is_the_parsers() -> None:
    prop = event_schemas()["file.added"]["properties"]["package_type"]
    assert prop["enum"] == list(PACKAGE_TYPES)


@pytest.mark.parametrize(
    ("type_name", "field"),
    [
        (t, f)
        for t in TYPE_NAMES
        for f in ("role", "old_role", "new_role")
        if f in event_fields(EVENT_TYPES[t])
    ],
)
def test_role_enums_are_the_roles_the_parser_accepts(type_name: str, field: str) -> None:
    assert set(event_schemas()[type_name]["properties"][field]["enum"]) == parse.ROLES


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_schema_example_is_what_the_parser_makes_of_its_row(type_name: str) -> None:
    (example,) = event_schemas()[type_name]["examples"]
    assert orjson.loads(orjson.dumps(parse_row(row_of(example)))) == example


def test_schema_rejects_an_event_of_another_type() -> None:
    created = parse_row(("wordsmith", "0.1", 1465998123, "new release", 2168629))
    value = orjson.loads(orjson.dumps(created))
    assert not validator("release.removed").is_valid(value)


def test_schema_rejects_a_field_it_does_not_declare() -> None:
    created = parse_row(("wordsmith", "0.1", 1465998123, "new release", 2168629))
    value = orjson.loads(orjson.dumps(created)) | {"filename": "wordsmith-0.1.tar.gz"}
    assert not validator("release.created").is_valid(value)


def test_schema_rejects_a_time_that_is_not_rfc3339_utc() -> None:
    created = parse_row(("wordsmith", "0.1", 1465998123, "new release", 2168629))
    value = orjson.loads(orjson.dumps(created)) | {"time": "2016-06-15 13:42:03+02:00"}
    assert not validator("release.created").is_valid(value)


# --- every catalog form of JOURNAL.md parses to its event, and the event validates -----------


@dataclass(frozen=True)
class Case:
    """A journal row and what the parser must make of it (type-specific fields only)."""

    id: str
    row: Row
    type: str
    fields: dict[str, Any]


TS, V = 1700000000, "1.0"
CATALOG = [
    # Written by Warehouse today.
    Case("create", ("Foo_Bar", None, TS, "create", 101), "project.created", {}),
    Case("new release", ("Foo_Bar", V, TS, "new release", 102), "release.created", {}),
    Case(
        "add source file",
        ("Foo_Bar", V, TS, "add source file Foo_Bar-1.0.tar.gz", 103),
        "file.added",
        {"filename": "Foo_Bar-1.0.tar.gz", "python_version": "source", "package_type": "sdist"},
    ),
    Case(
        "add cp311 file wheel",
        ("numpy", "2.1.0", TS, "add cp311 file numpy-2.1.0-cp311-cp311-win_amd64.whl", 104),
        "file.added",
        {
            "filename": "numpy-2.1.0-cp311-cp311-win_amd64.whl",
            "python_version": "cp311",
            "package_type": "wheel",
        },
    ),
    Case(
        "add py2.py3 file zip",
        ("six", "1.4.0", TS, "add py2.py3 file six-1.4.0.zip", 105),
        "file.added",
        {"filename": "six-1.4.0.zip", "python_version": "py2.py3", "package_type": "sdist"},
    ),
    Case(
        "add 2.7 file egg",
        ("Foo_Bar", V, TS, "add 2.7 file Foo_Bar-1.0-py2.7.egg", 106),
        "file.added",
        {"filename": "Foo_Bar-1.0-py2.7.egg", "python_version": "2.7", "package_type": "egg"},
    ),
    Case(
        "add any file exe",
        ("Foo_Bar", V, TS, "add any file Foo_Bar-1.0.win32.exe", 107),
        "file.added",
        {"filename": "Foo_Bar-1.0.win32.exe", "python_version": "any", "package_type": "other"},
    ),
    Case(
        "remove file",
        ("Foo_Bar", V, TS, "remove file Foo_Bar-1.0.tar.gz", 108),
        "file.removed",
        {"filename": "Foo_Bar-1.0.tar.gz"},
    ),
    Case("remove release", ("Foo_Bar", V, TS, "remove release", 109), "release.removed", {}),
    Case("remove project", ("Foo_Bar", None, TS, "remove project", 110), "project.removed", {}),
    Case("yank release", ("Foo_Bar", V, TS, "yank release", 111), "release.yanked", {}),
    Case("unyank release", ("Foo_Bar", V, TS, "unyank release", 112), "release.unyanked", {}),
    Case(
        "add Owner user",
        ("Foo_Bar", None, TS, "add Owner alice", 113),
        "role.added",
        {"role": "Owner", "principal": "alice"},
    ),
    Case(
        "add Maintainer team with spaces",
        ("Foo_Bar", None, TS, "add Maintainer Security Response Team", 114),
        "role.added",
        {"role": "Maintainer", "principal": "Security Response Team"},
    ),
    Case(
        "remove Owner user",
        ("Foo_Bar", None, TS, "remove Owner alice", 115),
        "role.removed",
        {"role": "Owner", "principal": "alice"},
    ),
    Case(
        "remove Maintainer team with spaces",
        ("Foo_Bar", None, TS, "remove Maintainer Release Managers", 116),
        "role.removed",
        {"role": "Maintainer", "principal": "Release Managers"},
    ),
    Case(
        "change role",
        ("Foo_Bar", None, TS, "change Owner alice to Maintainer", 117),
        "role.changed",
        {"role": "Maintainer", "principal": "alice", "old_role": "Owner", "new_role": "Maintainer"},
    ),
    Case(
        "change role of a team with ' to ' in its name",
        ("Foo_Bar", None, TS, "change Maintainer Road to Release to Owner", 118),
        "role.changed",
        {
            "role": "Owner",
            "principal": "Road to Release",
            "old_role": "Maintainer",
            "new_role": "Owner",
        },
    ),
    Case(
        "invite",
        ("Foo_Bar", None, TS, "invite Maintainer bob", 119),
        "role.invited",
        {"role": "Maintainer", "principal": "bob"},
    ),
    Case(
        "accepted",
        ("Foo_Bar", None, TS, "accepted Maintainer bob", 120),
        "role.invite_accepted",
        {"role": "Maintainer", "principal": "bob"},
    ),
    Case(
        "revoke_invite",
        ("Foo_Bar", None, TS, "revoke_invite Owner carol", 121),
        "role.invite_revoked",
        {"role": "Owner", "principal": "carol"},
    ),
    Case(
        "project quarantined",
        ("Foo_Bar", None, TS, "project quarantined", 122),
        "project.quarantined",
        {},
    ),
    Case(
        "project quarantine cleared",
        ("Foo_Bar", None, TS, "project quarantine cleared", 123),
        "project.quarantine_cleared",
        {},
    ),
    Case(
        "release quarantined",
        ("Foo_Bar", V, TS, "release quarantined", 124),
        "release.quarantined",
        {},
    ),
    Case(
        "release quarantine cleared",
        ("Foo_Bar", V, TS, "release quarantine cleared", 125),
        "release.quarantine_cleared",
        {},
    ),
    # Retired Warehouse texts.
    Case("legacy remove with version", ("Foo_Bar", V, TS, "remove", 201), "release.removed", {}),
    Case(
        "legacy remove without version", ("Foo_Bar", None, TS, "remove", 202), "project.removed", {}
    ),
    Case("docdestroy", ("Foo_Bar", None, TS, "docdestroy", 203), "docs.destroyed", {}),
    Case(
        "nuke user",
        ("user:mallory", None, TS, "nuke user", 204),
        "user.removed",
        {"username": "mallory", "project": "user:mallory"},
    ),
    Case(
        "add alternate repository",
        (
            "Example Mirror",
            None,
            TS,
            "add alternate repository Example Mirror to project Foo_Bar",
            205,
        ),
        "project.alternate_repository_added",
        {"repository": "Example Mirror", "project": "Foo_Bar", "project_normalized": "foo-bar"},
    ),
    Case(
        "deleted alternate repository",
        (
            "Example Mirror",
            None,
            TS,
            "deleted alternate repository Example Mirror from project Foo_Bar",
            206,
        ),
        "project.alternate_repository_removed",
        {"repository": "Example Mirror", "project": "Foo_Bar", "project_normalized": "foo-bar"},
    ),
    # Legacy PyPI (2002-2018).
    Case(
        "update one field",
        ("Foo_Bar", V, 1300000000, "update classifiers", 301),
        "release.metadata_updated",
        {"fields": ("classifiers",)},
    ),
    Case(
        "bare update",
        ("Foo_Bar", V, 1300000000, "update", 302),
        "release.metadata_updated",
        {"fields": ()},
    ),
    Case(
        "rename from",
        ("Foo_Bar", None, 1300000000, "rename from FooBar", 303),
        "project.renamed",
        {"previous_name": "FooBar"},
    ),
    Case("docupdate", ("Foo_Bar", None, 1300000000, "docupdate", 304), "docs.updated", {}),
    Case(
        "add url",
        ("Foo_Bar", V, 1300000000, "add url http://example.org/Foo_Bar-1.0.tar.gz", 305),
        "release.url_added",
        {"url": "http://example.org/Foo_Bar-1.0.tar.gz"},
    ),
    Case(
        "remove url",
        ("Foo_Bar", V, 1300000000, "remove url http://example.org/Foo_Bar-1.0.tar.gz", 306),
        "release.url_removed",
        {"url": "http://example.org/Foo_Bar-1.0.tar.gz"},
    ),
    Case(
        "update hosting_mode is not a metadata update",
        ("Foo_Bar", None, 1370000000, "update hosting_mode", 307),
        "project.hosting_mode_updated",
        {},
    ),
    Case(
        "keyrotate with empty name and version",
        ("", "", 1363000000, "keyrotate ", 308),
        "mirror.key_rotated",
        {"project": "", "project_normalized": ""},
    ),
    # The real rows JOURNAL.md lists.
    Case(
        "real remove release",
        ("py-pcapplusplus", "1.0.0", 1725534675, "remove release", 24891358),
        "release.removed",
        {},
    ),
    Case(
        "real add py3 file",
        (
            "openllm",
            "0.4.33.dev3",
            1701280908,
            "add py3 file openllm-0.4.33.dev3-py3-none-any.whl",
            4601226,
        ),
        "file.added",
        {
            "filename": "openllm-0.4.33.dev3-py3-none-any.whl",
            "python_version": "py3",
            "package_type": "wheel",
        },
    ),
    Case(
        "real add Owner",
        ("wordsmith", None, 1465998124, "add Owner DoublePlusAwks", 2168628),
        "role.added",
        {"role": "Owner", "principal": "DoublePlusAwks"},
    ),
    Case(
        "real new release",
        ("wordsmith", "0.1", 1465998123, "new release", 2168629),
        "release.created",
        {},
    ),
    Case(
        "real update of several fields",
        ("UFx", "1.0", 1465998207, "update author_email, home_page, summary, description", 2168631),
        "release.metadata_updated",
        {"fields": ("author_email", "home_page", "summary", "description")},
    ),
    # `&#NNN;` escapes are decoded in parsed fields; the raw action keeps them.
    Case(
        "escaped user name",
        ("Foo_Bar", None, TS, "add Owner Ren&#233;", 401),
        "role.added",
        {"role": "Owner", "principal": "René"},
    ),
    Case(
        "escaped team name with spaces",
        ("Foo_Bar", None, TS, "add Maintainer &#201;quipe S&#233;curit&#233;", 402),
        "role.added",
        {"role": "Maintainer", "principal": "Équipe Sécurité"},
    ),
    Case(
        "escaped filename",
        ("Foo_Bar", V, TS, "add source file Caf&#233;-1.0.tar.gz", 403),
        "file.added",
        {"filename": "Café-1.0.tar.gz", "python_version": "source", "package_type": "sdist"},
    ),
    Case(
        "escaped previous name",
        ("Foo_Bar", None, 1300000000, "rename from Caf&#233;", 404),
        "project.renamed",
        {"previous_name": "Café"},
    ),
    Case(
        "escaped nuked user",
        ("user:j&#246;rg", None, TS, "nuke user", 405),
        "user.removed",
        {"username": "jörg"},
    ),
    # Anything else still becomes an event.
    Case("unknown text", ("Foo_Bar", V, TS, "frobnicate release", 501), "unknown", {}),
    Case(
        "unknown role name",
        ("Foo_Bar", None, TS, "change Owner alice to Admin", 502),
        "unknown",
        {},
    ),
]
CATALOG_IDS = [case.id for case in CATALOG]


def test_catalog_covers_every_event_type() -> None:
    assert {case.type for case in CATALOG} == set(EVENT_TYPES)


@pytest.mark.parametrize("case", CATALOG, ids=CATALOG_IDS)
def test_catalog_row_parses_to_its_event_type_and_fields(case: Case) -> None:
    event = parse_row(case.row)
    assert event.type == case.type
    assert {name: getattr(event, name) for name in case.fields} == case.fields


@pytest.mark.parametrize("case", CATALOG, ids=CATALOG_IDS)
def test_catalog_event_keeps_the_row(case: Case) -> None:
    name, version, timestamp, action, serial = case.row
    event = parse_row(case.row)
    time = datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
    assert (event.serial, event.version, event.timestamp, event.time, event.action) == (
        serial,
        version,
        timestamp,
        time,
        action,
    )
    assert event.project == case.fields.get("project", name)


@pytest.mark.parametrize("case", CATALOG, ids=CATALOG_IDS)
def test_catalog_event_validates_against_its_schema(case: Case) -> None:
    assert validation_errors(parse_row(case.row)) == []


@pytest.mark.parametrize("case", CATALOG, ids=CATALOG_IDS)
def test_catalog_event_survives_its_json(case: Case) -> None:
    event = parse_row(case.row)
    assert event_from_json(orjson.dumps(event)) == event


# --- a large simulated journal ----------------------------------------------------------------

#: Event types the simulator cannot produce (it can produce every one).
SIMULATOR_CANNOT_PRODUCE: frozenset[str] = frozenset()
#: (first serial, rows) of each simulated slice; the first serial sets the era and its texts:
#: legacy PyPI, the weeks around September 2024 (the last `docdestroy` and `nuke user` rows, the
#: PEP 708 alternate repositories), and 2026 (release quarantines).
CORPUS_SLICES = (
    (2_000_000, 22_000),
    (era_serial(int(datetime(2024, 9, 1, tzinfo=UTC).timestamp())) - 6_000, 16_000),
    (era_serial(int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())), 12_000),
)
CORPUS_ROWS = 50_000
# `release.quarantine_cleared`, `project.alternate_repository_removed`, `release.url_removed` and
# `user.removed` come out 0 to 2 times in 50,000 simulated rows, so the seed is one with which
# every type appears; any seed will do once the simulator makes those rows more often.
CORPUS_SEED = 2


@cache
def simulated_events() -> tuple[Event, ...]:
    """CORPUS_ROWS parsed events from a seeded simulated journal, across the eras."""
    events: list[Event] = []
    for first_serial, rows in CORPUS_SLICES:
        journal = SimulatorSettings(seed=CORPUS_SEED, first_serial=first_serial).new_journal()
        journal.append(rows)
        events.extend(parse_row(row) for row in journal.all_rows())
    return tuple(events)


def test_simulated_journal_is_large_and_spans_legacy_and_recent_serials() -> None:
    serials = [event.serial for event in simulated_events()]
    assert len(serials) >= CORPUS_ROWS
    assert min(serials) < LEGACY_END < max(serials)


def test_simulated_journal_events_validate_against_their_schemas() -> None:
    invalid = Counter(
        event.type
        for event in simulated_events()
        if not validator(event.type).is_valid(orjson.loads(orjson.dumps(event)))
    )
    assert invalid == Counter()


def test_simulated_journal_produces_every_event_type() -> None:
    produced = {event.type for event in simulated_events()}
    assert set(EVENT_TYPES) - produced == SIMULATOR_CANNOT_PRODUCE


# --- the AsyncAPI document ---------------------------------------------------------------------


def test_asyncapi_document_is_version_3_0_0() -> None:
    assert asyncapi()["asyncapi"] == "3.0.0"


# What this document uses of AsyncAPI 3.0.0, each object closed to unknown keys: no JSON Schema of
# AsyncAPI 3 ships in a PyPI package, so the structure is checked against this subset of the spec.
_REF: dict[str, Any] = {
    "type": "object",
    "required": ["$ref"],
    "properties": {"$ref": {"type": "string"}},
    "additionalProperties": False,
}
_TEXT = {"type": "string", "minLength": 1}
ASYNCAPI_SUBSET: dict[str, Any] = {
    "type": "object",
    "required": ["asyncapi", "info", "servers", "channels", "operations", "components"],
    "additionalProperties": False,
    "properties": {
        "asyncapi": {"const": "3.0.0"},
        "id": {"type": "string", "format": "uri"},
        "defaultContentType": {"type": "string"},
        "info": {
            "type": "object",
            "required": ["title", "version"],
            "additionalProperties": False,
            "properties": {
                "title": _TEXT,
                "version": _TEXT,
                "description": _TEXT,
                "license": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"name": _TEXT, "url": {"type": "string", "format": "uri"}},
                },
            },
        },
        "servers": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["host", "protocol"],
                "additionalProperties": False,
                "properties": {
                    "host": _TEXT,
                    "protocol": _TEXT,
                    "title": _TEXT,
                    "description": _TEXT,
                    "variables": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"default": _TEXT, "description": _TEXT},
                        },
                    },
                },
            },
        },
        "channels": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["address", "messages"],
                "additionalProperties": False,
                "properties": {
                    "address": _TEXT,
                    "title": _TEXT,
                    "summary": _TEXT,
                    "description": _TEXT,
                    "messages": {"type": "object", "additionalProperties": _REF},
                    "bindings": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "kafka": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "topic": _TEXT,
                                    "partitions": {"type": "integer", "minimum": 1},
                                    "replicas": {"type": "integer", "minimum": 1},
                                    "topicConfiguration": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {
                                            "cleanup.policy": {
                                                "type": "array",
                                                "items": {"enum": ["delete", "compact"]},
                                            }
                                        },
                                    },
                                    "bindingVersion": {"const": "0.5.0"},
                                },
                            }
                        },
                    },
                },
            },
        },
        "operations": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["action", "channel"],
                "additionalProperties": False,
                "properties": {
                    "action": {"enum": ["send", "receive"]},
                    "channel": _REF,
                    "messages": {"type": "array", "items": _REF},
                    "title": _TEXT,
                    "summary": _TEXT,
                },
            },
        },
        "components": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "schemas": {"type": "object"},
                "messageBindings": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "kafka": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "key": {"type": "object"},
                                    "bindingVersion": {"const": "0.5.0"},
                                },
                            }
                        },
                    },
                },
                "messages": {
                    "type": "object",
                    "propertyNames": {"pattern": "^[a-zA-Z0-9._-]+$"},
                    "additionalProperties": {
                        "type": "object",
                        "required": ["payload"],
                        "additionalProperties": False,
                        "properties": {
                            "name": _TEXT,
                            "title": _TEXT,
                            "summary": _TEXT,
                            "contentType": _TEXT,
                            "headers": {"type": "object"},
                            "payload": {
                                "type": "object",
                                "required": ["schemaFormat", "schema"],
                                "additionalProperties": False,
                                "properties": {
                                    "schemaFormat": {"const": PAYLOAD_FORMAT},
                                    "schema": _REF,
                                },
                            },
                            "bindings": _REF,
                            "examples": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["name", "headers", "payload"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "name": _TEXT,
                                        "summary": _TEXT,
                                        "headers": {"type": "object"},
                                        "payload": {"type": "object"},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_asyncapi_document_has_the_structure_of_asyncapi_3() -> None:
    errors = Draft202012Validator(ASYNCAPI_SUBSET).iter_errors(asyncapi())
    assert [f"{error.json_path}: {error.message}" for error in errors] == []


def test_asyncapi_every_reference_resolves() -> None:
    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [ref for value in node.values() for ref in refs(value)]
        if isinstance(node, list):
            return [ref for value in node for ref in refs(value)]
        return []

    unresolved = []
    for ref in refs(asyncapi()):
        if ref.startswith("#/"):
            try:
                resolve_local(ref)
            except KeyError:
                unresolved.append(ref)
        elif not (ASYNCAPI.parent / ref).is_file():
            unresolved.append(ref)
    assert unresolved == []


def test_asyncapi_server_host_is_a_parameter() -> None:
    server = asyncapi()["servers"]["kafka"]
    assert server["protocol"] == "kafka"
    assert server["host"] == "{bootstrap}"
    assert server["variables"]["bootstrap"]["default"]


def test_asyncapi_has_a_channel_per_event_type_at_its_default_topic() -> None:
    prefix = TopicSettings().prefix
    addresses = {name: channel["address"] for name, channel in asyncapi()["channels"].items()}
    assert addresses == {t: topic_name(prefix, t) for t in EVENT_TYPES} | {
        "projects": projects_topic(prefix),
        "watermark": watermark_topic(prefix),
    }


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_asyncapi_channel_binding_names_the_topic_and_default_partitions(type_name: str) -> None:
    binding = asyncapi()["channels"][type_name]["bindings"]["kafka"]
    defaults = TopicSettings()
    assert (binding["topic"], binding["partitions"]) == (
        topic_name(defaults.prefix, type_name),
        defaults.partitions,
    )


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_asyncapi_channel_says_the_prefix_is_configurable(type_name: str) -> None:
    description = asyncapi()["channels"][type_name]["description"]
    assert f"{{prefix}}.{type_name}" in description
    assert "--topic-prefix" in description


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_asyncapi_channel_carries_its_types_message(type_name: str) -> None:
    messages = asyncapi()["channels"][type_name]["messages"]
    assert messages == {type_name: {"$ref": f"#/components/messages/{type_name}"}}


def test_asyncapi_consumers_receive_from_every_channel() -> None:
    received = {}
    for operation in asyncapi()["operations"].values():
        assert operation["action"] == "receive"
        channel = operation["channel"]["$ref"]
        (message,) = operation["messages"]
        assert message["$ref"].startswith(f"{channel}/messages/")
        received[channel] = resolve_local(message["$ref"])["$ref"]
    channels = [*EVENT_TYPES, "projects", "watermark"]
    assert received == {f"#/channels/{t}": f"#/components/messages/{t}" for t in channels}


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_asyncapi_message_payload_is_the_types_schema_file(type_name: str) -> None:
    payload = asyncapi()["components"]["messages"][type_name]["payload"]
    target = (ASYNCAPI.parent / payload["schema"]["$ref"]).resolve()
    assert payload["schemaFormat"] == PAYLOAD_FORMAT
    assert target == (EVENT_SCHEMAS / f"{type_name}.json").resolve()
    assert json.loads(target.read_text(encoding="utf-8"))["$id"] == schema_id(type_name)


def test_asyncapi_header_names_are_the_contract_headers() -> None:
    headers = asyncapi()["components"]["schemas"]["CloudEventHeaders"]
    assert tuple(headers["properties"]) == CONTRACT_HEADERS
    assert tuple(headers["required"]) == CONTRACT_HEADERS


def test_routing_writes_the_contract_headers() -> None:
    assert tuple(HEADER_NAMES) == CONTRACT_HEADERS


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_asyncapi_message_headers_pin_the_cloudevents_type(type_name: str) -> None:
    message_headers = asyncapi()["components"]["messages"][type_name]["headers"]
    base, pinned = message_headers["allOf"]
    assert base == {"$ref": "#/components/schemas/CloudEventHeaders"}
    assert pinned["properties"]["ce_type"]["const"] == f"{CE_TYPE_PREFIX}{type_name}"


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_asyncapi_message_key_is_the_normalized_project_name(type_name: str) -> None:
    bindings = resolve_local(asyncapi()["components"]["messages"][type_name]["bindings"]["$ref"])
    key = resolve_local(bindings["kafka"]["key"]["$ref"])
    assert key["type"] == "string"
    assert "normalized project name" in key["description"]


@pytest.mark.parametrize("case", CATALOG, ids=CATALOG_IDS)
def test_routed_record_matches_its_asyncapi_message(case: Case) -> None:
    event = parse_row(case.row)
    record = Router(TopicSettings().prefix, PYPI_URL).route(event)
    headers = {name: value.decode() for name, value in record.headers}
    errors = asyncapi_validator(f"#/components/messages/{event.type}/headers").iter_errors(headers)
    assert [error.message for error in errors] == []
    assert record.topic == asyncapi()["channels"][event.type]["address"]
    assert record.key == event.project_normalized.encode()
    assert validator(event.type).is_valid(orjson.loads(record.value))


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_asyncapi_example_is_the_schema_example_with_routed_headers(type_name: str) -> None:
    (example,) = asyncapi()["components"]["messages"][type_name]["examples"]
    (payload,) = event_schemas()[type_name]["examples"]
    record = Router(TopicSettings().prefix, PYPI_URL).route(parse_row(row_of(payload)))
    assert example["payload"] == payload
    assert example["headers"] == {name: value.decode() for name, value in record.headers}


def test_asyncapi_wrong_cloudevents_type_is_rejected() -> None:
    event = parse_row(("wordsmith", "0.1", 1465998123, "new release", 2168629))
    record = Router(TopicSettings().prefix, PYPI_URL).route(event)
    headers = {name: value.decode() for name, value in record.headers}
    headers["ce_type"] = f"{CE_TYPE_PREFIX}release.removed"
    assert not asyncapi_validator("#/components/messages/release.created/headers").is_valid(headers)


# --- the project index and the watermark --------------------------------------------------------


def topic_schema(name: str) -> Draft202012Validator:
    path = SCHEMAS / "topics" / f"{name}.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def topic_examples(validator: Draft202012Validator) -> list[Any]:
    schema = validator.schema
    assert isinstance(schema, dict)
    examples: list[Any] = schema["examples"]
    return examples


def test_index_records_validate_against_their_schema() -> None:
    validator = topic_schema("projects")
    index = ProjectIndex({"seeded-bad"})
    values = [
        *index.seed([("Seeded.Bad", 3), ("Plain", 4)]).values(),
        *index.updates([parse_row(case.row) for case in CATALOG]).values(),
    ]
    written = [orjson.loads(v) for v in values if v is not None]
    assert len(written) >= 3
    for value in written:
        errors = [e.message for e in validator.iter_errors(value)]
        assert not errors, (value, errors)
    (example,) = topic_examples(validator)
    assert validator.is_valid(example)


def test_watermarks_validate_against_their_schema() -> None:
    validator = topic_schema("watermark")
    for mark in (
        Watermark(serial=0, timestamp=None),
        Watermark(
            serial=9, timestamp=1_700_000_000, offsets={"pypi.release.created": [3]}, head=12
        ),
    ):
        value = orjson.loads(mark.encode())
        assert not [e.message for e in validator.iter_errors(value)], value
    (example,) = topic_examples(validator)
    assert validator.is_valid(example)


def test_asyncapi_index_and_watermark_channels_name_their_topics() -> None:
    channels = asyncapi()["channels"]
    defaults = TopicSettings()
    projects = channels["projects"]["bindings"]["kafka"]
    assert (projects["topic"], projects["partitions"]) == (
        projects_topic(defaults.prefix),
        defaults.partitions,
    )
    assert projects["topicConfiguration"]["cleanup.policy"] == ["compact"]
    watermark = channels["watermark"]["bindings"]["kafka"]
    assert (watermark["topic"], watermark["partitions"]) == (watermark_topic(defaults.prefix), 1)
