"""The XML-RPC codec: same answers as the standard library, faults and junk turned into our errors.

The standard library (`xmlrpc.client`) is the oracle: bodies are written by its `dumps`, then
rewritten into the layouts other servers use, and both decoders must agree on every one.
"""

from __future__ import annotations

import datetime
import re
import xmlrpc.client
from typing import Any
from xml.parsers.expat import ExpatError

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import BridgeError, TransientSourceError
from bridge.xmlrpc import (
    Row,
    XmlRpcFault,
    _decode_changelog_fast,
    decode_changelog,
    decode_response,
    encode_call,
)

# Shared machine, variable load: no per-example deadline. The fuzz tests draw more examples.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
fuzz = settings(relaxed, max_examples=300)

# --- helpers -----------------------------------------------------------------------------------

FORBIDDEN_IN_XML = (
    "".join(map(chr, [*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])) + "\ufffe\uffff"
)
xml_chars = st.characters(codec="utf-8", exclude_characters=FORBIDDEN_IN_XML)
# Pieces that exercise escaping, PyPI's double-escaped references and line-end normalisation.
tricky_pieces = st.sampled_from(
    [
        *("&", "<", ">", '"', "'", "&#233;", "caf&#233;", "&amp;", "]]>", "é", "\U0001f40d"),
        *(" ", "\n", "\t", "\r\n", "\r", "\x85", "\u2028", "add py3 file x-1.0-py3-none-any.whl"),
    ]
)
xml_text = st.lists(st.one_of(st.text(xml_chars, max_size=8), tricky_pieces), max_size=6).map(
    "".join
)
int32 = st.integers(-(2**31), 2**31 - 1)
rows_strategy = st.lists(
    st.tuples(xml_text, st.none() | xml_text, int32, xml_text, st.integers(0, 2**31 - 1)),
    max_size=8,
)


def dumps_response(value: Any) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True).encode("utf-8")


def changelog_body(rows: list[Row]) -> bytes:
    return dumps_response([list(row) for row in rows])


def stdlib_value(body: bytes) -> Any:
    params, _ = xmlrpc.client.loads(body, use_builtin_types=True)
    return params[0]


def stdlib_rows(body: bytes) -> list[Row]:
    return [tuple(row) for row in stdlib_value(body)]


TYPE_OPENINGS = ("<string>", "<string/>", "<int>", "<i4>", "<i8>", "<nil/>", "<nil>", "<array>")
TYPE_CLOSINGS = ("</string>", "<string/>", "</int>", "</i4>", "</i8>", "<nil/>", "</nil>")
TAG_PAIR = re.compile(r"(<[^<>]+>)(?=(<[^<>]+>))")


def relayout(
    body: bytes,
    *,
    whitespace: str = "",
    int_tag: str = "int",
    untyped: bool = False,
    short_empty: bool = False,
    nil: str = "<nil/>",
) -> bytes:
    """The same response as another server might write it; the meaning does not change."""
    text = body.decode("utf-8")
    text = text.replace("<int>", f"<{int_tag}>").replace("</int>", f"</{int_tag}>")
    if untyped:
        text = re.sub(
            r"<value><string>([^<]*)</string></value>", lambda m: f"<value>{m[1]}</value>", text
        )
    if short_empty:
        text = text.replace("<string></string>", "<string/>")
    text = text.replace("<nil/>", nil)

    def spaced(pair: re.Match[str]) -> str:
        left, right = pair[1], pair[2]
        # Whitespace is ignored between tags, except where it would become text of a value.
        if left == "<value>":
            ignored = right in TYPE_OPENINGS
        elif right == "</value>":
            ignored = left in TYPE_CLOSINGS or left == "</array>"
        else:
            ignored = left != "<string>"
        return left + whitespace if ignored else left

    return TAG_PAIR.sub(spaced, text).encode("utf-8")


layouts = st.fixed_dictionaries(
    {
        "whitespace": st.sampled_from(["", " ", "\n", "\n    ", "\t", "\r\n  "]),
        "int_tag": st.sampled_from(["int", "i4", "i8"]),
        "untyped": st.booleans(),
        "short_empty": st.booleans(),
        "nil": st.sampled_from(["<nil/>", "<nil />", "<nil></nil>"]),
    }
)

PYPI_ROWS: list[Row] = [
    ("py-pcapplusplus", "1.0.0", 1725534675, "remove release", 24891358),
    ("openllm", "0.4.33.dev3", 1701280908, "add py3 file openllm-0.4.33.dev3-py3-none-any.whl", 1),
    ("wordsmith", None, 1465998124, "add Owner DoublePlusAwks", 2168628),
    ("UFx", "1.0", 1465998207, "update author_email, home_page, summary, description", 2168631),
    ("", "", 0, "keyrotate ", 7),
]


def assert_malformed(body: bytes) -> TransientSourceError:
    with pytest.raises(TransientSourceError) as caught:
        decode_changelog(body)
    assert caught.value.outcome == "malformed"
    return caught.value


# --- decode_changelog agrees with the standard library -----------------------------------------


@relaxed
@given(rows_strategy, layouts)
def test_changelog_decodes_like_stdlib_in_any_layout(
    rows: list[Row], layout: dict[str, Any]
) -> None:
    body = relayout(changelog_body(rows), **layout)
    assert decode_changelog(body) == stdlib_rows(body)


@fuzz
@given(rows_strategy, layouts)
def test_fast_path_declines_or_agrees_with_stdlib(rows: list[Row], layout: dict[str, Any]) -> None:
    body = relayout(changelog_body(rows), **layout)
    assert _decode_changelog_fast(body) in (None, stdlib_rows(body))


@relaxed
@given(rows_strategy, st.sampled_from(["", " ", "\n", "\n    ", "\t", "\r\n  "]))
def test_fast_path_takes_typed_bodies_in_any_whitespace(rows: list[Row], whitespace: str) -> None:
    body = relayout(changelog_body(rows), whitespace=whitespace)
    assert _decode_changelog_fast(body) == stdlib_rows(body)


def test_fast_path_takes_a_body_indented_only_in_its_last_row() -> None:
    body = changelog_body(PYPI_ROWS)
    at = body.rindex(b"<value><string>")
    body = body[:at] + b"<value>\n  <string>" + body[at + len(b"<value><string>") :]
    assert _decode_changelog_fast(body) == PYPI_ROWS


def test_fast_path_decodes_pypi_rows() -> None:
    assert _decode_changelog_fast(changelog_body(PYPI_ROWS)) == PYPI_ROWS


def test_pypi_double_escaped_reference_stays_literal() -> None:
    body = changelog_body([("cafe", None, 1, "add Owner caf&#233;", 2)])
    assert b"caf&amp;#233;" in body
    assert decode_changelog(body) == [("cafe", None, 1, "add Owner caf&#233;", 2)]


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("caf&#233;", "café"),
        ("caf&#xE9;", "café"),
        ("caf&#xe9;", "café"),
        ("&#x1F40D;", "\U0001f40d"),
        ("a&amp;b&lt;c&gt;d&quot;e&apos;f", "a&b<c>d\"e'f"),
        ("line&#13;&#10;", "line\r\n"),
    ],
)
def test_references_in_text_are_resolved(escaped: str, text: str) -> None:
    body = changelog_body([("n", "1", 1, "ACTION", 2)]).replace(b"ACTION", escaped.encode())
    assert decode_changelog(body) == [("n", "1", 1, text, 2)]


def test_empty_changelog_is_an_empty_list() -> None:
    assert decode_changelog(changelog_body([])) == []


ONE_ROW = changelog_body([("name", "1.0", 1465998124, "new release", 2168629)])


DECLARATION = b"<?xml version='1.0'?>"


def one_row_with(*edits: tuple[bytes, bytes]) -> bytes:
    body = ONE_ROW
    for old, new in edits:
        assert old in body
        body = body.replace(old, new)
    return body


UNUSUAL_VALID_BODIES = {
    "cdata": one_row_with((b"new release", b"<![CDATA[new <release>]]>")),
    "comment": one_row_with((b"</value>\n</data>", b"</value><!-- x -->\n</data>")),
    "latin-1": one_row_with(
        (DECLARATION, b"<?xml version='1.0' encoding='ISO-8859-1'?>"),
        (b"new release", b"caf\xc3\xa9"),
    ),
    "utf-8-declared": one_row_with((DECLARATION, b'<?xml version="1.0" encoding="UTF-8"?>')),
    "bom": b"\xef\xbb\xbf" + ONE_ROW,
    "dtd-entity": one_row_with(
        (b"new release", b"&r;"), (DECLARATION, b"<!DOCTYPE x [<!ENTITY r 'new release'>]>")
    ),
    "untyped": one_row_with((b"<string>name</string>", b"name")),
    "text-before-type": one_row_with((b"<value><string>name", b"<value>ignored<string>name")),
    "padded-int": one_row_with((b"<int>2168629</int>", b"<int> +002168629 </int>")),
    "namespaced-i8": one_row_with((b"<int>2168629</int>", b"<ex:i8>2168629</ex:i8>")),
    "empty-string": one_row_with((b"<string>1.0</string>", b"<string></string>")),
    "raw-cr": one_row_with((b"new release", b"new\rrelease\r\n")),
    "raw-gt": one_row_with((b"new release", b"new > release")),
    "short-empty": one_row_with((b"<string>1.0</string>", b"<string/>")),
    "nil-spaced": one_row_with((b"<value><string>1.0</string></value>", b"<value><nil /></value>")),
    "nil-pair": one_row_with(
        (b"<value><string>1.0</string></value>", b"<value><nil></nil></value>")
    ),
    "i4": one_row_with((b"<int>2168629</int>", b"<i4>2168629</i4>")),
}


@pytest.mark.parametrize("body", UNUSUAL_VALID_BODIES.values(), ids=UNUSUAL_VALID_BODIES.keys())
def test_unusual_valid_bodies_decode_like_stdlib(body: bytes) -> None:
    assert decode_changelog(body) == stdlib_rows(body)


# --- what must not be accepted -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["a\x00b", "\x1f", "\x0b", "\ufffe", "\uffff"],
    ids=["nul", "unit-separator", "vertical-tab", "fffe", "ffff"],
)
def test_characters_xml_forbids_make_the_body_malformed(text: str) -> None:
    body = changelog_body([("n", "1", 1, text, 2)])
    with pytest.raises(ExpatError, match="not well-formed"):
        stdlib_rows(body)  # the oracle agrees this is not XML
    assert_malformed(body)


@pytest.mark.parametrize(
    "raw",
    [
        b"a & b",
        b"&#0;",
        b"&#xD800;",
        b"&#x110000;",
        b"&bogus;",
        b"&#;",
        b"a ]]> b",
        b"&#99999999999;",
        b"&#xFFFE;",
        b"&#65535;",
    ],
)
def test_bad_references_and_cdata_ends_make_the_body_malformed(raw: bytes) -> None:
    assert_malformed(ONE_ROW.replace(b"new release", raw))


@pytest.mark.parametrize(
    "value",
    [
        [["name", "1.0", 1, "create"]],
        [["name", "1.0", 1, "create", 2, 3]],
        [[1, "1.0", 1, "create", 2]],
        [["name", 1, 1, "create", 2]],
        [["name", "1.0", "1", "create", 2]],
        [["name", "1.0", True, "create", 2]],
        [["name", "1.0", 1, None, 2]],
        [["name", "1.0", 1, "create", 2.0]],
        [{"name": "x"}],
        {"rows": []},
        42,
        None,
    ],
)
def test_wrong_changelog_shape_is_malformed(value: Any) -> None:
    error = assert_malformed(dumps_response(value))
    assert "changelog" in error.problem


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        b"\x00\xff\xfe garbage",
        ONE_ROW[: len(ONE_ROW) // 2],
        xmlrpc.client.dumps((5,), methodname="changelog_since_serial").encode(),
        b"<methodResponse><params></params></methodResponse>",
        b"<methodResponse><params><param><value><int>1</int></value></param>"
        b"<param><value><int>2</int></value></param></params></methodResponse>",
        b"<methodResponse><params><param><value><foo/></value></param></params></methodResponse>",
        b"<methodResponse><params><param><value><int>x</int></value></param></params>"
        b"</methodResponse>",
    ],
    ids=[
        "empty", "html", "garbage", "truncated", "method-call", "no-param", "two-params",
        "unknown-type", "bad-int",
    ],
)  # fmt: skip
def test_non_response_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(TransientSourceError) as caught:
        decode_response(body)
    assert caught.value.outcome == "malformed"
    assert_malformed(body)


def test_malformed_problem_is_one_line_with_length_and_excerpt() -> None:
    body = b"<html>\n<body>\x1b[31mBad \xff Gateway</body></html>" + b"x" * 500
    error = assert_malformed(body)
    assert f"{len(body)} bytes" in error.problem
    assert "<html>" in error.problem
    assert str(error).isprintable()
    assert len(str(error)) < 400


def test_wrong_root_is_named_in_the_problem() -> None:
    error = assert_malformed(b"<html><body>Service Unavailable</body></html>")
    assert "root element is <html>" in error.problem


def test_every_truncation_of_a_body_is_malformed() -> None:
    body = changelog_body(PYPI_ROWS[:2])
    for end in range(len(body.rstrip())):
        assert_malformed(body[:end])


def outcome(body: bytes) -> Any:
    """What decode_changelog does with a body; only our two error types may escape."""
    try:
        return decode_changelog(body)
    except XmlRpcFault as fault:
        return ("fault", fault.code)
    except TransientSourceError as error:
        return error.outcome


@fuzz
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_our_errors(body: bytes) -> None:
    assert outcome(body) in ("malformed", [])


@fuzz
@given(
    rows_strategy,
    layouts,
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 3), st.binary(max_size=4)), max_size=3
    ),
)
def test_damaged_bodies_raise_only_our_errors_or_decode_like_stdlib(
    rows: list[Row], layout: dict[str, Any], edits: list[tuple[int, int, bytes]]
) -> None:
    body = relayout(changelog_body(rows), **layout)
    for at, cut, insert in edits:
        at %= len(body) + 1
        body = body[:at] + insert + body[at + cut :]
    result = outcome(body)
    if isinstance(result, list):
        assert result == stdlib_rows(body)
    else:
        assert result == "malformed"


# --- faults ------------------------------------------------------------------------------------

FAULTS = [
    (
        -32500,
        "HTTPTooManyRequests: The action could not be performed because there were too many "
        "requests by the client. Limit may reset in 1 seconds.",
    ),
    (-32500, "RuntimeError: PyPI XMLRPC API is read only"),
    (-32601, "server error; requested method not found"),
    (-32602, "client error; serial: Input should be a valid integer"),
    (-32700, "parse error; not well formed"),
]


@pytest.mark.parametrize(("code", "message"), FAULTS)
def test_fault_raises_xmlrpc_fault_with_code_and_message(code: int, message: str) -> None:
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()
    for decode in (decode_response, decode_changelog):
        with pytest.raises(XmlRpcFault) as caught:
            decode(body)
        assert (caught.value.code, caught.value.message) == (code, message)
        assert isinstance(caught.value, BridgeError)
        assert str(code) in str(caught.value)
        assert message[:20] in str(caught.value)


def test_fault_without_code_and_string_is_malformed() -> None:
    body = (
        b"<methodResponse><fault><value><struct><member><name>faultString</name>"
        b"<value><string>oops</string></value></member></struct></value></fault></methodResponse>"
    )
    with pytest.raises(TransientSourceError, match="faultCode"):
        decode_response(body)


# --- decode_response ---------------------------------------------------------------------------

xmlrpc_values = st.recursive(
    st.none()
    | st.booleans()
    | int32
    | st.floats(allow_nan=False)
    | xml_text
    | st.binary(max_size=20)
    | st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2100, 1, 1)).map(
        lambda moment: moment.replace(microsecond=0)
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(xml_text, children, max_size=4)
    ),
    max_leaves=12,
)


@relaxed
@given(xmlrpc_values, st.sampled_from(["", "\n  "]))
def test_response_decodes_like_stdlib(value: Any, whitespace: str) -> None:
    body = relayout(dumps_response(value), whitespace=whitespace)
    assert decode_response(body) == stdlib_value(body)


def test_last_serial_of_an_empty_journal_is_none() -> None:
    assert decode_response(dumps_response(None)) is None


def test_last_serial_is_an_int() -> None:
    assert decode_response(dumps_response(41_000_000)) == 41_000_000


def test_packages_with_serial_is_a_dict() -> None:
    projects = {"Foo_Bar": 12, "café": 13}
    assert decode_response(dumps_response(projects)) == projects


# --- encode_call -------------------------------------------------------------------------------


@relaxed
@given(
    st.lists(
        int32 | st.text(st.characters(codec="utf-8", exclude_characters=FORBIDDEN_IN_XML + "\r"))
    )
)
def test_call_round_trips_through_stdlib(params: list[int | str]) -> None:
    body = encode_call("changelog_since_serial", params)
    assert xmlrpc.client.loads(body) == (tuple(params), "changelog_since_serial")


def test_call_encodes_ints_as_int_with_a_declaration() -> None:
    body = encode_call("changelog_since_serial", [24891358])
    assert body.startswith(b"<?xml version='1.0'?>")
    assert b"<value><int>24891358</int></value>" in body


@pytest.mark.parametrize("param", [True, 1.5, None, b"1"])
def test_call_refuses_values_that_are_not_int_or_str(param: Any) -> None:
    with pytest.raises(TypeError):
        encode_call("changelog_since_serial", [param])


def test_call_refuses_a_method_name_xmlrpc_does_not_allow() -> None:
    with pytest.raises(ValueError, match="method name"):
        encode_call("x</methodName><methodName>y", [])


def test_call_refuses_ints_beyond_32_bits() -> None:
    with pytest.raises(OverflowError):
        encode_call("changelog_since_serial", [2**31])


@pytest.mark.parametrize("encoding", ["UTF-6", "rot13", "hex", "base64"])
def test_a_declared_encoding_python_cannot_decode_is_malformed_not_a_lookup_error(
    encoding: str,
) -> None:
    """Found by the fuzzer (tests/fuzz/corpus/changelog/regression-xmlrpc-unknown-encoding):
    expat asks Python for the declared codec, and its LookupError escaped every handler."""
    body = f"<?xml version='1.0' encoding='{encoding}'?><methodResponse/>".encode()
    with pytest.raises(TransientSourceError, match="malformed XML-RPC response"):
        decode_changelog(body)
    with pytest.raises(TransientSourceError, match="malformed XML-RPC response"):
        decode_response(body)
