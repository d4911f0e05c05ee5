"""The changelog fuzz target: one body of bytes through the whole data path, with its properties.

`check_body(body)` runs what the source and the pipeline do with a `changelog_since_serial`
answer and raises `PropertyViolated` (or lets an unexpected exception escape) when any of these
breaks:

1. `decode_changelog` returns rows or raises `XmlRpcFault` / `TransientSourceError`, nothing else;
2. its rows are exactly what `xmlrpc.client.loads(body, use_builtin_types=True)` makes of the
   same body, and it refuses no body that the standard library reads as a well-formed changelog
   answer (a refused page is retried forever); its faults are the standard library's faults;
   and its answer does not depend on the size of the slices the fast path cuts a body into
   (`CHUNK_CHARS`, a megabyte, shrunk here to a few characters so that small inputs cross it);
3. `check_page(rows, cursor)` returns or raises `RefusedPage`, nothing else, refuses exactly the
   pages that break the row rule, and drops exactly the rows at or below the cursor;
4. `parse_row` never raises on an accepted row, and keeps the row's fields;
5. the record the sink writes (`Router.route`, value `Event.to_json`) is built without raising,
   its value is JSON, and the consumer's `event_from_json` gives the same event back.

Pure Python and deterministic, so a crashing input replays as a plain test (`tests/test_fuzz.py`).
"""

from __future__ import annotations

import sys
import xmlrpc.client
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any
from xml.parsers import expat

import orjson

from bridge import xmlrpc as decoder
from bridge.errors import TransientSourceError
from bridge.events import EVENT_TYPES, event_from_json
from bridge.parse import parse_row
from bridge.routing import Router
from bridge.rows import SERIAL_MAX, TIMESTAMP_MAX, TIMESTAMP_MIN, RefusedPage, check_page
from bridge.xmlrpc import MAX_DEPTH, Row, XmlRpcFault, decode_changelog

__all__ = ["Outcome", "PropertyViolated", "check_body"]

ROUTER = Router("pypi", "https://pypi.org/pypi")
#: Bodies up to this size are fed to expat in one slice, so the decoder's bound on unfinished
#: markup (which the standard library lacks) cannot refuse them.
ONE_SLICE = 1 << 16
#: What `xmlrpc.client.loads` may raise on a body that is not a good answer.
_STDLIB_REFUSALS = (
    expat.ExpatError,
    xmlrpc.client.ResponseError,
    ValueError,
    TypeError,
    LookupError,
    ArithmeticError,
)


@dataclass(frozen=True)
class KnownBug:
    """A bug a fuzz run found in a file this target does not own, reported and not yet fixed.

    While it is open the target tolerates exactly this failure (type and message), so that a run
    goes on looking for others instead of stopping at the same input every time; the runner
    says how often it was seen, and `--no-known` turns the tolerance off. Remove the entry with
    the fix, and make its `known-*` seed a `regression-*` one with a named test.
    """

    name: str
    where: str
    exception: type[BaseException]
    messages: tuple[str, ...]

    def matches(self, exc: BaseException) -> bool:
        return type(exc) is self.exception and any(m in str(exc) for m in self.messages)


#: None open. The last one, xmlrpc-unknown-encoding (a LookupError from an XML declaration's
#: unknown encoding), is fixed and kept as `regression-xmlrpc-unknown-encoding`.
KNOWN_BUGS: tuple[KnownBug, ...] = ()
_seen_known: set[str] = set()


class PropertyViolated(AssertionError):
    """A property of the data path broke for this input."""


@dataclass(frozen=True)
class Outcome:
    """What became of one body: `rows`, `fault` or `malformed`; for rows, what was published."""

    kind: str
    rows: int = 0
    #: The known bug the body ran into (kind `known`).
    known: str = ""
    #: Whether the row rule refused the page (for `rows` only).
    refused: bool = False
    #: Events published from the page asked for with cursor 0.
    published: int = 0


def check_body(body: bytes, tolerate_known: bool = True) -> Outcome:
    """Run one body through the data path and check every property; see the module docstring."""
    try:
        rows = decode_changelog(body)
    except LookupError as exc:
        known = next((bug for bug in KNOWN_BUGS if bug.matches(exc)), None)
        if known is None or not tolerate_known:
            raise
        if known.name not in _seen_known:
            _seen_known.add(known.name)
            print(f"fuzz: known bug {known.name} ({known.where}), tolerated", file=sys.stderr)
        return Outcome("known", known=known.name)
    except XmlRpcFault as fault:
        _check_fault_is_the_stdlibs(body, fault)
        return Outcome("fault")
    except RefusedPage as exc:
        raise PropertyViolated(f"the decoder applied the row rule: {exc}") from exc
    except TransientSourceError as exc:
        if exc.outcome != "malformed":
            raise PropertyViolated(f"outcome {exc.outcome!r} from the decoder: {exc}") from exc
        _check_stdlib_refuses_too(body)
        return Outcome("malformed")
    _check_rows_are_the_stdlibs(body, rows)
    _check_slicing_changes_nothing(body, rows)
    published = -1
    for cursor in _cursors(body, rows):
        accepted = _checked_page(rows, cursor)
        if accepted is None:
            return Outcome("rows", len(rows), refused=True)
        for row in accepted:
            _check_event(row)
        if cursor == 0:
            published = len(accepted)
    return Outcome("rows", len(rows), published=published)


# --- 2. the decoder against the standard library ------------------------------------------------


def _stdlib(body: bytes) -> tuple[str, Any]:
    """What `xmlrpc.client.loads` makes of the body: ("params", values), ("fault", fault) or
    ("refused", exception)."""
    try:
        params, _ = xmlrpc.client.loads(body, use_builtin_types=True)
    except xmlrpc.client.Fault as fault:
        return "fault", fault
    except _STDLIB_REFUSALS as exc:
        return "refused", exc
    return "params", params


def _check_rows_are_the_stdlibs(body: bytes, rows: list[Row]) -> None:
    kind, value = _stdlib(body)
    if kind != "params":
        raise PropertyViolated(f"decoded {len(rows)} rows; xmlrpc.client.loads: {kind} {value!r}")
    single = len(value) == 1 and isinstance(value[0], list)
    if not single or rows != [tuple(r) if isinstance(r, list) else r for r in value[0]]:
        raise PropertyViolated(
            f"decoded rows differ from xmlrpc.client.loads: {rows[:3]!r} vs {value!r:.300}"
        )
    for row, raw in zip(rows, value[0], strict=True):
        # == says 1 == True and "a" == "a"; a bool or a str subclass must not pass for a field.
        if [type(field) for field in row] != [type(field) for field in raw]:
            raise PropertyViolated(f"field types differ from xmlrpc.client.loads: {row!r}")


def _check_slicing_changes_nothing(body: bytes, rows: list[Row]) -> None:
    """The same rows when the fast path cuts the body into slices of a few characters."""
    chunk = 1 + len(body) % 251
    saved = decoder.CHUNK_CHARS
    decoder.CHUNK_CHARS = chunk
    try:
        sliced = decode_changelog(body)
    except (XmlRpcFault, TransientSourceError) as exc:
        raise PropertyViolated(f"with {chunk}-character slices: {exc}") from exc
    finally:
        decoder.CHUNK_CHARS = saved
    if sliced != rows:
        raise PropertyViolated(f"with {chunk}-character slices: {sliced[:3]!r} vs {rows[:3]!r}")


def _check_fault_is_the_stdlibs(body: bytes, fault: XmlRpcFault) -> None:
    kind, value = _stdlib(body)
    if kind == "fault":
        if (value.faultCode, value.faultString) != (fault.code, fault.message):
            raise PropertyViolated(
                f"fault {fault.code} {fault.message!r} but xmlrpc.client.loads says "
                f"{value.faultCode!r} {value.faultString!r}"
            )
        return
    # The standard library builds its Fault from the struct's members as keyword arguments: a
    # fault struct with members besides faultCode and faultString makes it raise TypeError.
    if not (kind == "refused" and isinstance(value, TypeError)):
        raise PropertyViolated(f"fault {fault.code} but xmlrpc.client.loads: {kind} {value!r:.300}")


def _check_stdlib_refuses_too(body: bytes) -> None:
    """A body the standard library reads as a good changelog answer must not be refused."""
    if len(body) > ONE_SLICE:
        return
    kind, value = _stdlib(body)
    if kind != "params" or len(value) != 1 or not _is_changelog(value[0]):
        return
    root, depth = _root_and_depth(body)
    # The decoder refuses, on purpose, other roots and elements nested past MAX_DEPTH.
    if root is not None and root.rsplit(":", 1)[-1] == "methodResponse" and depth <= MAX_DEPTH:
        raise PropertyViolated(f"refused a changelog xmlrpc.client.loads reads: {value!r:.300}")


def _is_changelog(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(row, list)
        and len(row) == 5
        and type(row[0]) is str
        and (row[1] is None or type(row[1]) is str)
        and type(row[2]) is int
        and type(row[3]) is str
        and type(row[4]) is int
        for row in value
    )


def _root_and_depth(body: bytes) -> tuple[str | None, int]:
    """The root element's name and the deepest nesting of elements in a well-formed body."""
    tags: list[str] = []
    depth = deepest = 0

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth, deepest
        tags.append(tag)
        depth += 1
        deepest = max(deepest, depth)

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.Parse(body, True)
    return (tags[0] if tags else None), deepest


# --- 3. the row rule -----------------------------------------------------------------------------


def _cursors(body: bytes, rows: list[Row]) -> tuple[int, ...]:
    """Cursor 0, and one of the page's own serials (chosen by the body) so that a prefix drops."""
    if not rows:
        return (0,)
    return (0, rows[len(body) % len(rows)][4])


def _breaks_the_row_rule(rows: Sequence[Row]) -> bool:
    """The row rule of `bridge.rows`, written out plainly as the reference."""
    serials = [row[4] for row in rows]
    return (
        any(not 0 < serial <= SERIAL_MAX for serial in serials)
        or any(not TIMESTAMP_MIN <= row[2] <= TIMESTAMP_MAX for row in rows)
        or any(later <= earlier for earlier, later in pairwise(serials))
    )


def _checked_page(rows: list[Row], cursor: int) -> list[Row] | None:
    """The rows `check_page` accepts (checked against the reference), or None if refused."""
    breaks = _breaks_the_row_rule(rows)
    try:
        page = check_page(rows, cursor)
    except RefusedPage as exc:
        if not breaks:
            raise PropertyViolated(f"refused a page that keeps the row rule: {exc}") from exc
        return None
    if breaks:
        raise PropertyViolated(f"accepted a page that breaks the row rule: {rows[:5]!r}")
    stale = [row for row in rows if row[4] <= cursor]
    if page.rows != rows[len(stale) :] or page.dropped != len(stale):
        raise PropertyViolated(f"cursor {cursor}: kept {page.rows[:3]!r}, dropped {page.dropped}")
    expected_range = (stale[0][4], stale[-1][4]) if stale else None
    if page.dropped_range != expected_range:
        raise PropertyViolated(f"dropped range {page.dropped_range} for {expected_range}")
    return page.rows


# --- 4 and 5. the event and its record -----------------------------------------------------------


def _check_event(row: Row) -> None:
    event = parse_row(row)
    _, version, timestamp, action, serial = row
    kept = (event.serial, event.version, event.timestamp, event.action)
    if kept != (serial, version, timestamp, action) or event.type not in EVENT_TYPES:
        raise PropertyViolated(f"{row!r} became {event!r}")
    record = ROUTER.route(event)
    if record.key != event.project_normalized.encode() or not record.topic.endswith(event.type):
        raise PropertyViolated(f"{row!r} routed to {record.topic} with key {record.key!r}")
    value = orjson.loads(record.value)
    if not isinstance(value, dict) or value.get("serial") != serial:
        raise PropertyViolated(f"{row!r} wrote the value {record.value!r:.300}")
    if event_from_json(record.value) != event:
        raise PropertyViolated(f"{row!r}: the consumer reads back another event")
