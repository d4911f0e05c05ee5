"""The generated part of the seed corpus: `python -m tests.fuzz.seeds` writes it again.

Each seed is a whole HTTP body as PyPI (or a broken CDN, or a hostile middlebox) could send it
for `changelog_since_serial`, named for what it is: `rows-*` decode to rows the row rule
accepts, `refused-*` to rows it refuses, `fault-*` to an XML-RPC fault, `malformed-*` to
nothing (`tests/test_fuzz.py` checks every seed against its name). Real-shaped pages come from
the simulator (`bridge.simulator`), one short window per era of the journal's texts; the rest
are written here by hand around those rows. `regression-*` and `known-*` files are not written
here: each is an input a fuzz run found, committed with its test (`regression-*`) or, for a bug
reported in a file the target does not own, with its entry in `target.KNOWN_BUGS` (`known-*`).

The seeds are small (a few kilobytes at most): libFuzzer mutates small inputs fastest, and a
body's size adds nothing the decoder's logic does not already see in a few rows.
"""

from __future__ import annotations

import sys
import xmlrpc.client
from datetime import UTC, datetime
from pathlib import Path

from bridge.simulator import SimulatorSettings, era_serial
from bridge.xmlrpc import Row

CORPUS = Path(__file__).resolve().parent / "corpus" / "changelog"

#: The framing the simulator and Warehouse put around a changelog array.
HEAD = b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><array><data>\n"
TAIL = b"</data></array></value>\n</param>\n</params>\n</methodResponse>\n"

#: (seed name, a date in the era, rows): short windows of the simulated journal.
ERAS = (
    ("rows-simulated-2006-legacy-uploads-without-version", "2006-06-01", 12),
    ("rows-simulated-2016-legacy-pypi", "2016-06-15", 12),
    ("rows-simulated-2024-09", "2024-09-10", 12),
    ("rows-simulated-2026-03", "2026-03-01", 12),
)

TS = 1_700_000_000
#: One row per catalog form of JOURNAL.md, and the ambiguous rows of the three `add` facts.
CATALOG_ROWS: list[Row] = [
    ("Foo_Bar", None, TS, "create", 101),
    ("Foo_Bar", None, TS, "add Owner alice", 102),
    ("Foo_Bar", "1.0", TS, "new release", 103),
    ("Foo_Bar", "1.0", TS, "add source file Foo_Bar-1.0.tar.gz", 104),
    ("Foo_Bar", "1.0", TS, "add Python 3.11 file Foo_Bar-1.0-py3-none-any.whl", 105),
    ("Foo_Bar", "1.0", TS, "add any file file Foo_Bar-1.0.win32.exe", 106),
    ("Foo_Bar", None, 1150000000, "add 2.4 file Foo_Bar-0.1.tar.gz", 107),
    ("Foo_Bar", None, TS, "add Maintainer core file team", 108),
    ("Foo_Bar", None, TS, "change Owner ops to infra team to Maintainer", 109),
    ("Foo_Bar", None, TS, "remove Maintainer Release Managers", 110),
    ("Foo_Bar", None, TS, "invite Maintainer bob", 111),
    ("Foo_Bar", None, TS, "accepted Maintainer Bob", 112),
    ("Foo_Bar", None, TS, "revoke_invite Owner carol", 113),
    ("Foo_Bar", "1.0", TS, "remove file Foo_Bar-1.0.tar.gz", 114),
    ("Foo_Bar", "1.0", TS, "yank release", 115),
    ("Foo_Bar", "1.0", TS, "unyank release", 116),
    ("Foo_Bar", "1.0", TS, "release quarantined", 117),
    ("Foo_Bar", "1.0", TS, "release quarantine cleared", 118),
    ("Foo_Bar", None, TS, "project quarantined", 119),
    ("Foo_Bar", None, TS, "project quarantine cleared", 120),
    ("Foo_Bar", "1.0", TS, "remove release", 121),
    ("Foo_Bar", "1.0", TS, "remove", 122),
    ("Foo_Bar", None, TS, "docdestroy", 123),
    ("user:j&#246;rg", None, TS, "nuke user", 124),
    ("Mirror", None, TS, "add alternate repository Mirror to project Foo_Bar", 125),
    ("Mirror", None, TS, "deleted alternate repository Mirror from project Foo_Bar", 126),
    ("Foo_Bar", "1.0", 1300000000, "update author_email, home_page, summary", 127),
    ("Foo_Bar", "1.0", 1300000000, "update", 128),
    ("Foo_Bar", None, 1370000000, "update hosting_mode", 129),
    ("Foo_Bar", None, 1300000000, "rename from Caf&#233;", 130),
    ("Foo_Bar", None, 1300000000, "docupdate", 131),
    ("Foo_Bar", "1.0", 1300000000, "add url http://example.org/x.tgz", 132),
    ("Foo_Bar", "1.0", 1300000000, "remove url http://example.org/x.tgz", 133),
    ("", "", 1363000000, "keyrotate ", 134),
    ("Foo_Bar", None, TS, "remove project", 135),
    ("Foo_Bar", "1.0", TS, "frobnicate the widget", 136),
]

_ROW = (
    "<value><array><data>\n<value><string>{}</string></value>\n{}"
    "<value><int>{}</int></value>\n<value><string>{}</string></value>\n"
    "<value><int>{}</int></value>\n</data></array></value>\n"
)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def page(rows: list[Row]) -> bytes:
    """A changelog answer in the layout PyPI and the simulator write."""
    parts = [
        _ROW.format(
            _escape(name),
            "<value><nil/></value>\n"
            if version is None
            else f"<value><string>{_escape(version)}</string></value>\n",
            timestamp,
            _escape(action),
            serial,
        )
        for name, version, timestamp, action, serial in rows
    ]
    return HEAD + "".join(parts).encode() + TAIL


def fault(code: int, message: str) -> bytes:
    """A fault answer, as `xmlrpc.client` writes it."""
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()


def simulated(date: str, count: int) -> bytes:
    """`count` rows of the simulated journal from the given day's era, framed as PyPI does."""
    when = int(datetime.fromisoformat(date).replace(tzinfo=UTC).timestamp())
    journal = SimulatorSettings(seed=7, first_serial=era_serial(when)).new_journal()
    journal.append(count)
    return journal.page(0, count, HEAD, TAIL)


def seeds() -> dict[str, bytes]:
    """Every generated seed, by file name."""
    rows = CATALOG_ROWS[:4]
    one = page(rows[:1])
    body = page(rows)
    out: dict[str, bytes] = {name: simulated(date, n) for name, date, n in ERAS}
    out |= {
        "rows-catalog-every-action": page(CATALOG_ROWS),
        "rows-empty-page": HEAD + TAIL,
        "rows-stdlib-dumps-layout": xmlrpc.client.dumps(
            ([list(row) for row in rows],), methodresponse=True, allow_none=True
        ).encode(),
        "rows-no-xml-declaration": body.split(b"\n", 1)[1],
        "rows-crlf-line-ends": body.replace(b"\n", b"\r\n"),
        "rows-indented": body.replace(b"<value>", b"<value>\n  ").replace(
            b"</value>", b"\n</value>"
        ),
        "rows-entities": page(
            [("a&b<c>", "1.0&#1;", TS, "add Owner caf\u00e9 &#233; &amp; <x> \"'", 7)]
        )
        .replace(b"&gt;", b">", 1)
        .replace(b"&amp;b", b"&#38;b")
        .replace(b"Owner", b"&#x4F;wner"),
        "rows-cdata-action": one.replace(
            b"<string>create</string>", b"<string><![CDATA[create]]></string>"
        ),
        "rows-comment-and-processing-instruction": one.replace(
            b"<data>\n<value><array>", b"<data>\n<!-- a row --><?pi x?><value><array>"
        ),
        "rows-untyped-string-and-i4": one.replace(b"<string>Foo_Bar</string>", b"Foo_Bar").replace(
            b"<int>101</int>", b"<i4>101</i4>"
        ),
        "rows-nil-spellings": page(
            [("Foo", None, TS, "create", 1), ("Foo", None, TS, "docupdate", 2)]
        )
        .replace(b"<nil/>", b"<nil></nil>", 1)
        .replace(b"<nil/>", b"<nil />", 1),
        "rows-signed-and-padded-ints": one.replace(b"<int>101</int>", b"<int> +000101 </int>"),
        "rows-utf8-declared-and-non-ascii": page(
            [("Caf\u00e9", "1.0", TS, "create \u6771\u4eac", 9)]
        ).replace(b"<?xml version='1.0'?>", b'<?xml version="1.0" encoding="UTF-8"?>'),
        "rows-utf16": body.decode()
        .replace("version='1.0'", "version='1.0' encoding='utf-16'")
        .encode("utf-16"),
        "rows-latin1": page([("Caf\u00e9", None, TS, "create", 5)])
        .decode()
        .replace("version='1.0'", "version='1.0' encoding='iso-8859-1'")
        .encode("latin-1"),
        "rows-doctype-internal-entity": body.replace(
            b"<methodResponse>", b'<!DOCTYPE m [<!ENTITY e "&#38;#233;">]>\n<methodResponse>'
        ).replace(b"alice", b"&e;"),
        "rows-namespace-prefixes": body.replace(
            b"<methodResponse>", b'<x:methodResponse xmlns:x="u">'
        )
        .replace(b"</methodResponse>", b"</x:methodResponse>")
        .replace(b"<string>", b"<x:string>")
        .replace(b"</string>", b"</x:string>"),
        "refused-serials-out-of-order": page([rows[1], rows[0]]),
        "refused-serial-past-32-bits": page([("Foo", None, TS, "create", 2**31)]),
        "refused-timestamp-before-2000": page([("Foo", None, 946684799, "create", 5)]),
        "fault-throttled": fault(
            -32500,
            "HTTPTooManyRequests: The action could not be performed because there were too "
            "many requests by the client. Limit may reset in 3 seconds.",
        ),
        "fault-method-not-found": fault(-32601, "server error; requested method not found"),
        "fault-bad-argument": fault(
            -32602, "client error; serial: Input should be a valid integer"
        ),
        "fault-not-xmlrpc": fault(-32700, "parse error. not well formed"),
        "malformed-truncated-page": body[: len(body) * 2 // 3],
        "malformed-garbage": b"<?xml version='1.0'?>\n<methodResponse>\n<params>\n"
        b"<param>\n<par\xff\xfe\x00am><v",
        "malformed-last-serial-int": HEAD[: HEAD.index(b"<value>")] + b"<value><int>41000000</int>"
        b"</value>\n</param>\n</params>\n</methodResponse>\n",
        "malformed-last-serial-nil": HEAD[: HEAD.index(b"<value>")] + b"<value><nil/></value>\n"
        b"</param>\n</params>\n</methodResponse>\n",
        "malformed-packages-struct": xmlrpc.client.dumps(
            ({"Foo_Bar": 101, "six": 102},), methodresponse=True
        ).encode(),
        "malformed-boolean-timestamp": one.replace(
            b"<int>1700000000</int>", b"<boolean>1</boolean>"
        ),
        "malformed-four-fields": one.replace(b"<value><nil/></value>\n", b""),
        "malformed-method-call": body.replace(b"methodResponse", b"methodCall"),
        "malformed-html-error-page": b"<html><body><h1>503 Service Unavailable</h1></body></html>",
        "malformed-empty-body": b"",
    }
    return out


def write(corpus: Path = CORPUS) -> list[Path]:
    """Write every generated seed into `corpus`; returns the paths written."""
    corpus.mkdir(parents=True, exist_ok=True)
    written = []
    for name, body in sorted(seeds().items()):
        path = corpus / name
        path.write_bytes(body)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS):
        print(f"{path.stat().st_size:6d} {path}")
