"""The journal store: generated rows kept as their XML-RPC bytes, and paged out like PyPI.

Rows are rendered to their XML-RPC `<value>` bytes once, when generated, and kept back to back in
one buffer, so a 50,000-row page is a single slice of it: benchmarks read pages as fast as the
bridge can ask. The rows themselves come from the traffic model (`bridge.simulator.traffic`).
"""

from __future__ import annotations

import bisect
import itertools
import re
import time
from array import array
from collections import deque
from collections.abc import Iterator, Sequence

from bridge.simulator.traffic import PendingRow, Traffic

#: A journal row as PyPI returns it: name, version, timestamp, action, serial.
Row = tuple[str, str | None, int, str, int]

#: XML-RPC's nil, as PyPI writes it for a missing version or an empty journal's last serial.
NIL_VALUE = "<value><nil/></value>\n"
#: Rows rendered per batch by `append` (bounds the transient strings of a large prefill).
_STORE_CHUNK = 20_000
_ROW_RE = re.compile(
    rb"<value><array><data>\n<value><string>(.*?)</string></value>\n"
    rb"(?:<value><string>(.*?)</string></value>|<value><nil/></value>)\n"
    rb"<value><int>(-?\d+)</int></value>\n<value><string>(.*?)</string></value>\n"
    rb"<value><int>(\d+)</int></value>\n</data></array></value>\n",
    re.S,
)


def xml_escape(text: str) -> str:
    """`text` with `&`, `<` and `>` escaped for an XML text node."""
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
        self._traffic = Traffic(seed, first_serial, unknown_rate)
        self._data = bytearray()
        self._serials = array("q")
        #: When each row became visible (POSIX seconds), for freshness measurements.
        self._visible_at = array("d")
        self._ends = array("q", [0])
        self._pending: deque[PendingRow] = deque()
        # Project key -> (display name, last serial): what list_packages_with_serial reports.
        self._listing: dict[str, tuple[str, int]] = {
            key: (display, serial) for key, display, serial in self._traffic.preexisting
        }

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
        """Queue the rows of one more transaction."""
        self._pending.extend(self._traffic.transaction())

    def _store(self, rows: Sequence[PendingRow]) -> None:
        parts: list[str] = []
        add = parts.append
        listing = self._listing
        # Names and versions are generated from [A-Za-z0-9._:-] only; actions may hold `&#NNN;`.
        for name, version, timestamp, action, serial, set_key, del_key in rows:
            if "&" in action:
                action = xml_escape(action)
            if version is None:
                add(
                    f"<value><array><data>\n<value><string>{name}</string></value>\n{NIL_VALUE}"
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
