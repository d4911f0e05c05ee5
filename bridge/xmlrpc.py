"""XML-RPC codec for PyPI's journal: encode calls, decode responses, and decode changelogs fast.

`decode_response` is the standard library's unmarshaller behind a stricter front door: the same
values for every body `xmlrpc.client.loads` accepts, but a body that is not a methodResponse
becomes `TransientSourceError(..., "malformed")` and a fault becomes `XmlRpcFault`, never any
other exception.

`decode_changelog` is the hot path (a backfill reads 50,000-row pages back to back). It
recognises the shape Warehouse sends with a compiled regex over the whole body and builds the
rows column by column in C, so no Python code runs per row (only per `&` reference). It only
answers when it can prove that the body is well-formed XML whose meaning it fully understands;
for anything else (faults, other encodings, CDATA, comments, untyped values...) it falls back
to `decode_response` and checks the shape of what that returns.
"""

from __future__ import annotations

import re
import xmlrpc.client
from collections.abc import Sequence
from typing import Any, TypeAlias
from xml.parsers.expat import ExpatError

from bridge.errors import BridgeError, TransientSourceError

#: One journal entry as `changelog_since_serial` returns it: (name, version, timestamp, action,
#: serial).
Row: TypeAlias = tuple[str, str | None, int, str, int]

# XML-RPC method names are restricted to these characters by the specification; the standard
# library's `dumps` writes the name unescaped, so anything else could break the document.
_METHOD_NAME = re.compile(r"[A-Za-z0-9_.:/]+")

# Exceptions the standard library's unmarshaller lets escape on a bad value: int()/float() on
# junk, a bad boolean, an unhashable struct key, an odd struct, a bad base64 or dateTime, a bad
# bigdecimal (decimal.InvalidOperation is an ArithmeticError); LookupError (KeyError and
# IndexError among them) also covers an XML declaration naming an encoding Python lacks, or a
# codec that is not a text encoding (found by the fuzzer: encoding='UTF-6').
_VALUE_ERRORS = (ValueError, TypeError, LookupError, ArithmeticError)

_EXCERPT_CHARS = 60
_FEED_BYTES = 1 << 16
_MAX_PENDING_BYTES = 1 << 18
_DETAIL_CHARS = 160


class XmlRpcFault(BridgeError):
    """The server answered with an XML-RPC `<fault>` (throttling, bad method, bad argument...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"XML-RPC fault {code}: {one_line(message, 300)}")
        self.code = code
        #: The fault string verbatim (throttling faults carry the retry delay in it).
        self.message = message


def encode_call(method: str, params: Sequence[int | str]) -> bytes:
    """Encode a methodCall body (UTF-8, with an XML declaration).

    Ints are written as `<int>` (PyPI answers fault -32602 to a serial sent as a string); an int
    outside the signed 32-bit range raises OverflowError, a bool or any other type TypeError, and
    a method name with characters XML-RPC does not allow ValueError.
    """
    if not _METHOD_NAME.fullmatch(method):
        raise ValueError(f"not an XML-RPC method name: {method!r}")
    for param in params:
        if isinstance(param, bool) or not isinstance(param, int | str):
            raise TypeError(f"XML-RPC parameters here are int or str, not {type(param).__name__}")
    return xmlrpc.client.dumps(tuple(params), methodname=method).encode("utf-8")


def decode_response(body: bytes) -> Any:
    """Decode a methodResponse body to the value of its single parameter.

    Values are what `xmlrpc.client.loads(body, use_builtin_types=True)` gives (nil is None).
    Raises XmlRpcFault for a fault and TransientSourceError(..., "malformed") for anything that
    is not a well-formed methodResponse with one value.
    """
    reader = _ResponseReader()
    parser = xmlrpc.client.ExpatParser(reader)
    try:
        # In slices: expat holds the GIL for a whole buffer (seconds for a big one, even when
        # its first byte is wrong), and it stops at the first slice that is not XML.
        expat = parser._parser  # type: ignore[attr-defined]
        for offset in range(0, len(body), _FEED_BYTES):
            parser.feed(body[offset : offset + _FEED_BYTES])
            # Expat re-reads an unfinished token (a tag, a comment) from its start with every
            # slice: past a bound, that is no XML-RPC answer, and reading on would be quadratic.
            if offset + _FEED_BYTES - expat.CurrentByteIndex > _MAX_PENDING_BYTES:
                raise _Unfinished(expat.CurrentByteIndex)
        parser.close()
    except _WrongRoot as exc:
        raise _malformed(body, f"the root element is <{exc.tag}>, not <methodResponse>") from None
    except _Unfinished as exc:
        raise _malformed(
            body,
            f"markup from byte {exc.at} runs on for more than {_MAX_PENDING_BYTES} bytes "
            "without an end",
        ) from None
    except _TooDeep:
        raise _malformed(body, f"elements nested more than {MAX_DEPTH} deep") from None
    except ExpatError as exc:
        raise _malformed(body, f"not well-formed XML ({exc})") from None
    except xmlrpc.client.ResponseError as exc:
        raise _malformed(body, f"not XML-RPC ({exc})") from None
    except _VALUE_ERRORS as exc:
        raise _malformed(body, f"a value cannot be decoded ({type(exc).__name__}: {exc})") from None
    return reader.response(body)


def decode_changelog(body: bytes) -> list[Row]:
    """Decode a `changelog_since_serial` response into rows, exactly as the standard library would.

    Raises XmlRpcFault for a fault and TransientSourceError(..., "malformed") for a body that is
    not a methodResponse holding an array of [str, str or nil, int, str, int] arrays.
    """
    rows = _decode_changelog_fast(body)
    if rows is not None:
        return rows
    return _checked_rows(decode_response(body), body)


# --- the generic path: the standard library's unmarshaller, with the root and result checked ---


#: Elements nested deeper than this are no journal (a changelog row sits 11 deep): refusing
#: them keeps the decoded value shallow enough for anything that walks it recursively.
MAX_DEPTH = 64


class _Unfinished(Exception):
    """Expat has been holding one unfinished token (a tag, a comment...) for too long."""

    def __init__(self, at: int) -> None:
        super().__init__(at)
        self.at = at


class _TooDeep(Exception):
    """Raised from inside the expat callback: the body nests elements beyond `MAX_DEPTH`."""


class _WrongRoot(Exception):
    """Raised from inside the expat callback to stop at once on a body that is not a response."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.tag = tag


class _ResponseReader(xmlrpc.client.Unmarshaller):
    """The stdlib unmarshaller, refusing any root but methodResponse and checking the result."""

    def __init__(self) -> None:
        super().__init__(use_builtin_types=True)
        self._seen_root = False
        self._depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        if not self._seen_root:
            self._seen_root = True
            # The stdlib ignores namespace prefixes on every tag; do the same for the root.
            if tag.rsplit(":", 1)[-1] != "methodResponse":
                raise _WrongRoot(tag)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _TooDeep
        super().start(tag, attrs)

    def end(self, tag: str) -> None:
        self._depth -= 1
        super().end(tag)

    def response(self, body: bytes) -> Any:
        """The single value of a params response; raises for a fault or any other outcome."""
        if self._marks or self._type is None:
            raise _malformed(body, "no complete <params> or <fault> in the methodResponse")
        if self._type == "fault":
            raise _fault_from(self._stack, body)
        if self._type != "params" or len(self._stack) != 1:
            raise _malformed(body, f"{len(self._stack)} values in the response, expected one")
        return self._stack[0]


def _fault_from(stack: list[Any], body: bytes) -> BridgeError:
    fault = stack[0] if len(stack) == 1 else None
    if isinstance(fault, dict):
        code = fault.get("faultCode")
        message = fault.get("faultString")
        if isinstance(code, int) and not isinstance(code, bool) and isinstance(message, str):
            return XmlRpcFault(code, message)
    return _malformed(body, "a <fault> without an int faultCode and a string faultString")


def _checked_rows(value: Any, body: bytes) -> list[Row]:
    if not isinstance(value, list):
        raise _malformed(body, f"the changelog is a {type(value).__name__}, not an array")
    rows: list[Row] = []
    for index, row in enumerate(value):
        if not (isinstance(row, list) and len(row) == 5 and _row_types_ok(row)):
            raise _malformed(
                body,
                f"changelog row {index} is not [str, str or nil, int, str, int]: "
                + one_line(repr(row), _DETAIL_CHARS),
            )
        rows.append((row[0], row[1], row[2], row[3], row[4]))
    return rows


def _row_types_ok(row: list[Any]) -> bool:
    name, version, timestamp, action, serial = row
    return (
        isinstance(name, str)
        and (version is None or isinstance(version, str))
        and isinstance(timestamp, int)
        and not isinstance(timestamp, bool)
        and isinstance(action, str)
        and isinstance(serial, int)
        and not isinstance(serial, bool)
    )


def _malformed(body: bytes, what: str) -> TransientSourceError:
    excerpt = ascii(body[:_EXCERPT_CHARS].decode("utf-8", "replace"))
    return TransientSourceError(
        f"PyPI sent a malformed XML-RPC response: {one_line(what, _DETAIL_CHARS)} "
        f"({len(body)} bytes, starting {excerpt})",
        "malformed",
    )


def one_line(text: str, limit: int = 200) -> str:
    """`text` with every control and non-ASCII character escaped, cut to `limit` characters."""
    escaped = ascii(text)[1:-1]
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


# --- the fast path ----------------------------------------------------------------------------
#
# The fast path accepts the shape Python's xmlrpc.client writes (which is what Warehouse sends):
# typed <string>, <int> and <nil/> values, with any XML whitespace between tags. re.split with
# a row pattern cuts the body into fields (and proves that nothing else sits between rows); a
# few whole-body scans that each run in C prove the rest of well-formedness: no control
# characters, no U+FFFE/U+FFFF, no "]]>", every "&" a valid reference. Text is captured with
# [^<]* because a negated single character is the regex engine's quickest loop; the scans make
# that safe. Anything else (untyped values, <string/>, <i4>, CDATA, comments, other encodings,
# faults) is left to the generic path, which has the final word.

_WS = "[ \t\r\n]*"


def _tags(*tags: str) -> str:
    return _WS.join((*tags, ""))


def _row_pattern(inner: str) -> re.Pattern[str]:
    """One changelog row; `inner` is the whitespace allowed inside a `<value>`, next to its type.

    The 5 groups are the fields' raw text; a nil version leaves its group None.
    """
    text = "([^<]*)"
    integer = f"<value>{inner}<int>{inner}([-+]?[0-9]{{1,30}}){inner}</int>{inner}</value>{_WS}"
    string = f"<value>{inner}<string>{text}</string>{inner}</value>{_WS}"
    version = f"<value>{inner}(?:<string>{text}</string>|<nil{_WS}/>){inner}</value>{_WS}"
    return re.compile(
        f"<value>{inner}<array>{inner}<data>{_WS}"
        + string
        + version
        + integer
        + string
        + integer
        + f"</data>{inner}</array>{inner}</value>{_WS}"
    )


_HEAD = re.compile(
    r"(?:<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(['\"])1\.0\1"
    r"(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(['\"])(?i:utf-8)\2)?[ \t\r\n]*\?>)?"
    + _WS
    + _tags("<methodResponse>", "<params>", "<param>", "<value>", "<array>", "<data>")
)
_FOOT = re.compile(
    _tags("</data>", "</array>", "</value>", "</param>", "</params>", "</methodResponse>")
)
# xmlrpc.client's layout (whitespace only between sibling elements) matches the first, a
# fifth faster; an indented body needs the second.
_ROW_PATTERNS = (_row_pattern(""), _row_pattern(_WS))
# re.split returns the text before each match, then its 5 groups; once the text between
# matches is dropped, each row is 5 fields in a row.
_FIELDS = _ROW_PATTERNS[0].groups
_STRIDE = _FIELDS + 1
_NAME, _VERSION, _TIMESTAMP, _ACTION, _SERIAL = range(_FIELDS)
#: Rows are split a slice of about this many characters at a time: no single regex call (which
#: holds the GIL) runs long, so a decoding thread leaves the event loop free between slices.
CHUNK_CHARS = 1 << 20
_SPACE = re.compile(_WS)

# Every byte XML 1.0 allows: deleting these from a body leaves only the forbidden ones.
_XML_BYTES = bytes(b for b in range(256) if b >= 0x20 or b in b"\t\n\r")
# The last alternative catches an "&" that starts no valid reference.
_REFERENCE = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#([0-9]{1,8})|#x([0-9a-fA-F]{1,8}));|&")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


class _NotFast(Exception):
    """The body is outside what the fast path can prove it understands."""


def _decode_changelog_fast(body: bytes) -> list[Row] | None:
    """Rows of a changelog body in the usual shape, or None to use the generic path."""
    if body.translate(None, _XML_BYTES):
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Single-character searches first: they are memchr-fast, "]]>" on its own is not.
    if "\ufffe" in text or "\uffff" in text or ("]" in text and "]]>" in text):
        return None
    if "\r" in text:
        # XML reads every CR LF and lone CR as LF before parsing.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    head = _HEAD.match(text)
    foot_at = text.rfind("</data>")
    if head is None or foot_at < head.end() or not _FOOT.fullmatch(text, foot_at):
        return None
    start, end = head.end(), foot_at
    if start == end:
        return []  # an empty page
    for pattern in _ROW_PATTERNS:
        fields = _split_rows(pattern, text, start, end)
        if fields is not None:
            break
    else:
        return None  # text between rows, or no row shape at all: not ours to judge
    names = fields[_NAME::_FIELDS]
    versions = fields[_VERSION::_FIELDS]
    actions = fields[_ACTION::_FIELDS]
    if "&" in text:
        try:
            names = _unescape_column(names)
            actions = _unescape_column(actions)
            if "&" in "".join(filter(None, versions)):
                versions = [v if v is None else _unescape(v) for v in versions]
        except _NotFast:
            return None
    return list(
        zip(
            names,
            versions,
            map(int, fields[_TIMESTAMP::_FIELDS]),
            actions,
            map(int, fields[_SERIAL::_FIELDS]),
            strict=True,
        )
    )


def _split_rows(pattern: re.Pattern[str], text: str, start: int, end: int) -> list[str] | None:
    """The fields of the rows that make up exactly `text[start:end]`, or None.

    The region is cut into slices that end right after a row (after `</array>`, `</value>` and
    the whitespace that follows); each slice must be rows and nothing else. A cut in the wrong
    place only makes a slice fail, and the generic path then has the final word.
    """
    fields: list[str] = []
    position = start
    while position < end:
        cut = _cut_after_row(text, position + CHUNK_CHARS, end)
        if cut < 0:
            return None
        parts = pattern.split(text[position:cut])
        if len(parts) == 1 or parts[0] or parts[-1] or any(parts[_STRIDE:-1:_STRIDE]):
            return None
        del parts[::_STRIDE]
        fields.extend(parts)
        position = cut
    return fields


def _cut_after_row(text: str, at: int, end: int) -> int:
    """Where the slice that should end near `at` ends: right after a row, or `end`.

    No row is near a slice long (a real one is well under a kilobyte): if no row ends within
    a slice's length after `at`, the region is not rows, and -1 says so.
    """
    if at >= end:
        return end
    close = text.find("</array>", at, min(end, at + CHUNK_CHARS))
    close = -1 if close < 0 else text.find("</value>", close, min(end, close + CHUNK_CHARS))
    if close < 0:
        return -1
    found = _SPACE.match(text, close + len("</value>"), end)
    return found.end() if found else end


def _unescape_column(column: list[str]) -> list[str]:
    """Resolve references in every value with one regex pass over the column joined on NUL.

    No value holds a NUL: the body has none (checked) and a reference to one is refused.
    """
    joined = "\x00".join(column)
    return column if "&" not in joined else _unescape(joined).split("\x00")


def _unescape(text: str) -> str:
    return _REFERENCE.sub(_reference, text) if "&" in text else text


def _reference(match: re.Match[str]) -> str:
    named, decimal, hexadecimal = match.groups()
    if named is not None:
        return _NAMED[named]
    if decimal is None and hexadecimal is None:
        raise _NotFast  # a bare "&": not well-formed, let expat say so
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    # The characters XML 1.0 allows; expat rejects a reference to any other.
    if (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    ):
        return chr(code)
    raise _NotFast
