"""Rows: the journal's contract, checked on every page before anything is published.

PyPI promises (JOURNAL.md) that `changelog_since_serial(n)` returns rows with serials above `n`,
strictly increasing, each an XML-RPC int. The checkpoint is the last serial published, so one
row that breaks this promise could move it anywhere: backwards (duplicates), far ahead (every
real row below it lost), or past what the next call can even encode. This module is the one
place that decides, for a page that decoded cleanly, what may go on:

- a row at or below the cursor (a stale cache, a lagging mirror) is dropped and counted: its
  event was already published or, below the checkpoint, belongs to the past;
- a page that is out of order (a serial not above the one before), or holds a serial or
  timestamp outside the ranges below, is refused whole: nothing of it is published or
  checkpointed, and the source retries it with backoff;
- everything else is published as it came.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.errors import TransientSourceError
from bridge.xmlrpc import Row

#: XML-RPC's `<int>` is a signed 32-bit integer: the next call must be able to send the serial.
SERIAL_MAX = 2**31 - 1
#: Timestamps are POSIX seconds in an XML-RPC int; PyPI's journal starts in 2002, and nothing
#: written before 2000-01-01 UTC can be one of its rows.
TIMESTAMP_MIN = 946_684_800
TIMESTAMP_MAX = 2**31 - 1


class RefusedPage(TransientSourceError):
    """A page that breaks the journal's contract: refused whole, retried with backoff."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"refused a changelog page: {problem}", "refused")


@dataclass(frozen=True)
class Page:
    """What is left of one `changelog_since_serial` page once the rule has been applied."""

    #: The rows to publish: serials strictly increasing, all above the cursor.
    rows: list[Row]
    #: How many rows at or below the cursor were dropped, and their lowest and highest serial.
    dropped: int = 0
    dropped_range: tuple[int, int] | None = None


def check_page(rows: Sequence[Row], cursor: int) -> Page:
    """Apply the row rule to a decoded page asked for with `changelog_since_serial(cursor)`.

    Raises `RefusedPage` for a page out of order or out of range; returns the rows to publish
    otherwise, without those at or below the cursor.
    """
    previous: int | None = None
    for index, (_, _, timestamp, _, serial) in enumerate(rows):
        if not 0 < serial <= SERIAL_MAX:
            raise RefusedPage(
                f"row {index} has serial {_short(serial)}, outside 1..{SERIAL_MAX} (an XML-RPC int)"
            )
        if not TIMESTAMP_MIN <= timestamp <= TIMESTAMP_MAX:
            raise RefusedPage(
                f"row {index} (serial {serial}) has timestamp {_short(timestamp)}, outside "
                f"{TIMESTAMP_MIN}..{TIMESTAMP_MAX} (2000-01-01 to 2038-01-19 UTC)"
            )
        if previous is not None and serial <= previous:
            raise RefusedPage(
                f"row {index} has serial {serial} after serial {previous}: "
                "serials must strictly increase"
            )
        previous = serial
    # Serials increase, so the rows at or below the cursor are a prefix of the page.
    stale = 0
    while stale < len(rows) and rows[stale][4] <= cursor:
        stale += 1
    if not stale:
        return Page(list(rows))
    return Page(list(rows[stale:]), stale, (rows[0][4], rows[stale - 1][4]))


def _short(value: int) -> str:
    """An integer for a log line: a hostile one may have thousands of digits."""
    if -(10**15) < value < 10**15:
        return str(value)
    sign = "-" if value < 0 else ""
    return f"{sign}about 2^{abs(value).bit_length() - 1}"


def check_listing(value: object) -> str | None:
    """What is wrong with a `list_packages_with_serial` answer, or None if nothing is.

    It must be a struct of project names (non-empty strings) to serials within the journal's
    range; the project index is seeded from it, so one bad entry refuses the whole answer.
    """
    if not isinstance(value, dict):
        return f"returned {type(value).__name__}, not a struct"
    for name, serial in value.items():
        if not isinstance(name, str) or not name.strip():
            return f"names a project {_short_text(name)}"
        if isinstance(serial, bool) or not isinstance(serial, int):
            return f"gives {_short_text(name)} a serial of type {type(serial).__name__}"
        if not 0 < serial <= SERIAL_MAX:
            return f"gives {_short_text(name)} serial {_short(serial)}, outside 1..{SERIAL_MAX}"
    return None


def _short_text(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
