"""A hostile PyPI for the tests: a proxy in front of the simulator that lies when told to.

Every call is forwarded to the simulator and its answer relayed, until a `Rule` matches: then
the rule's answer goes back instead (a page with a bad row, a huge body, a redirect, a lying
`Retry-After`...). Rules fire a set number of times and then the proxy tells the truth again,
so a test can prove that the bridge survived the lie and that every valid row arrived exactly
once: `pypi-bridge audit`, pointed at the simulator itself, is the oracle.
"""

from __future__ import annotations

import http.server
import threading
import urllib.request
import xml.sax.saxutils
import xmlrpc.client
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bridge.parse import Row


@dataclass
class Answer:
    """What the proxy sends back: a status, headers and a body (bytes, or chunks of it)."""

    body: bytes | Iterable[bytes] = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


#: Builds the hostile answer from the serial asked for and the simulator's true rows.
Make = Callable[[int | None, list[Row] | None], Answer]


@dataclass
class Rule:
    """Answer `method` calls with `make(...)`, `times` times (None: for ever)."""

    method: str
    make: Make
    times: int | None = 1
    fired: int = 0

    def wants(self, method: str) -> bool:
        return method == self.method and (self.times is None or self.fired < self.times)


def rows_answer(rows: Iterable[Any]) -> Answer:
    """A well-formed changelog answer holding `rows`, written by hand: unlike xmlrpc.client,
    it writes any int as `<int>`, however far outside XML-RPC's 32 bits."""
    written = []
    for row in rows:
        fields = "".join(_value(field) for field in row)
        written.append(f"<value><array><data>{fields}</data></array></value>")
    body = (
        "<?xml version='1.0'?><methodResponse><params><param><value><array><data>"
        + "".join(written)
        + "</data></array></value></param></params></methodResponse>"
    )
    return Answer(body.encode())


def _value(field: object) -> str:
    if field is None:
        return "<value><nil/></value>"
    if isinstance(field, int):
        return f"<value><int>{field}</int></value>"
    return f"<value><string>{xml.sax.saxutils.escape(str(field))}</string></value>"


def fault_answer(code: int, message: str) -> Answer:
    body = xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True)
    return Answer(body.encode())


def repeated(chunk: bytes, total: int) -> Iterator[bytes]:
    """`total` bytes of `chunk` repeated, produced lazily (a 500 MB body costs no memory)."""
    sent = 0
    while sent < total:
        piece = chunk[: total - sent]
        sent += len(piece)
        yield piece


class HostileProxy:
    """The proxy; `url` goes to `--pypi-url`. Use as a context manager."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.calls: list[tuple[str, int | None]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = self.rfile.read(length)
                proxy._answer(self, request)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/pypi"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HostileProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, method: str, make: Make, times: int | None = 1) -> Rule:
        rule = Rule(method, make, times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, request: bytes) -> None:
        params, method = xmlrpc.client.loads(request)
        serial = params[0] if params and isinstance(params[0], int) else None
        with self._lock:
            self.calls.append((method or "", serial))
            rule = next((r for r in self.rules if r.wants(method or "")), None)
            if rule is not None:
                rule.fired += 1
        if rule is None:
            answer = Answer(self._forward(request))
        else:
            truth = None
            if method == "changelog_since_serial":
                page: Any = xmlrpc.client.loads(self._forward(request))[0][0]
                truth = [tuple(r) for r in page]
            answer = rule.make(serial, truth)
        self._send(handler, answer)

    def _forward(self, request: bytes) -> bytes:
        call = urllib.request.Request(  # noqa: S310 - loopback only
            self.upstream, data=request, headers={"Content-Type": "text/xml"}, method="POST"
        )
        with urllib.request.urlopen(call, timeout=30) as response:  # noqa: S310
            body: bytes = response.read()
        return body

    @staticmethod
    def _send(handler: http.server.BaseHTTPRequestHandler, answer: Answer) -> None:
        handler.send_response(answer.status)
        headers = {"Content-Type": "text/xml", **answer.headers}
        for name, value in headers.items():
            handler.send_header(name, value)
        try:
            if isinstance(answer.body, bytes):
                if "Content-Length" not in headers:
                    handler.send_header("Content-Length", str(len(answer.body)))
                handler.end_headers()
                handler.wfile.write(answer.body)
                return
            # A streamed body: unless a length was declared, the connection's end marks its end.
            if "Content-Length" not in headers:
                handler.send_header("Connection", "close")
            handler.end_headers()
            handler.close_connection = True
            for chunk in answer.body:
                handler.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True  # the bridge hung up on a body it refused
