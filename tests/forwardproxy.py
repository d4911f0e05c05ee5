"""Real processes between the bridge and the journal simulator, for tests/test_proxy.py.

`start_tinyproxy`: Debian's tinyproxy, a real forward proxy (plain HTTP forwarding and CONNECT
tunnels), on a free loopback port with its own config and log file, optionally with BasicAuth.

`start_tls_front`: a TLS-terminating TCP forwarder (`python -m tests.forwardproxy`) in front of
the simulator, presenting a certificate of the tests' own CA: a PyPI mirror with a private
certificate, as the bridge sees one.

`start_refusing_proxy`: a loopback server that answers every request (a forwarded POST or a
CONNECT) with one fixed status, as a proxy that refuses credentials (407) or cannot reach PyPI
(502) does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO

from bridge.broker import free_port
from tests.support import ROOT
from tests.tcpproxy import TcpProxy


def _wait_until_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError(f"{what} did not listen on port {port} within 20 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Tinyproxy:
    """A running tinyproxy; its log records every request it forwards or tunnels."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_as(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def requests(self) -> list[str]:
        """The request lines tinyproxy received (`POST http://...`, `CONNECT host:port`)."""
        return [
            line.split("): ", 1)[1].strip()
            for line in self.log().splitlines()
            if "Request (file descriptor" in line and "): " in line
        ]

    def stop(self) -> None:
        _stop(self.process)


def start_tinyproxy(directory: Path, *, user: str | None = None, password: str = "") -> Tinyproxy:
    """tinyproxy on a free loopback port; with `user`, it asks for BasicAuth credentials."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = directory / "tinyproxy.log"
    lines = [
        f"Port {port}",
        "Listen 127.0.0.1",
        "Timeout 30",
        f'LogFile "{log_path}"',
        # Info records each request line (`Request (file descriptor N): POST http://...`).
        "LogLevel Info",
        "MaxClients 20",
        "Allow 127.0.0.1",
        "DisableViaHeader Yes",
        # No ConnectPort line: CONNECT is allowed to any port (the TLS front's is random).
    ]
    if user is not None:
        lines.append(f"BasicAuth {user} {password}")
    config = directory / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out: IO[bytes] = (directory / "tinyproxy.out").open("ab")
    try:
        # -d: in the foreground, so the test owns the process and stops it.
        process = subprocess.Popen(
            ["tinyproxy", "-d", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    finally:
        out.close()
    _wait_until_listening(port, process, "tinyproxy")
    return Tinyproxy(process, port, log_path)


@dataclass
class TlsFront:
    process: subprocess.Popen[bytes]
    port: int

    def url(self, path: str = "/pypi") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        _stop(self.process)


def start_tls_front(directory: Path, target_port: int, certificate: Path, key: Path) -> TlsFront:
    """A TLS server on a free loopback port forwarding each connection to `target_port`."""
    port = free_port()
    out: IO[bytes] = (directory / f"tls-front-{port}.log").open("ab")
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.forwardproxy",
                "--port",
                str(port),
                "--target-port",
                str(target_port),
                "--cert",
                str(certificate),
                "--key",
                str(key),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    finally:
        out.close()
    _wait_until_listening(port, process, "the TLS front")
    return TlsFront(process, port)


class _TlsTerminator(TcpProxy):
    """The tests' TCP proxy with TLS on its listening side."""

    def __init__(self, target_port: int, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", target_port)
        self._context = context

    async def start(self, port: int) -> None:
        self.port = port
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", port, ssl=self._context, reuse_address=True
        )


async def _serve_tls(args: argparse.Namespace) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    front = _TlsTerminator(args.target_port, context)
    await front.start(args.port)
    await asyncio.Event().wait()  # until terminated


@contextlib.contextmanager
def start_refusing_proxy(status: int) -> Iterator[str]:
    """A loopback 'proxy' answering every request with `status`; yields its URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    reason = HTTPStatus(status).phrase
    answer = (
        f"HTTP/1.1 {status} {reason}\r\n"
        'Proxy-Authenticate: Basic realm="test"\r\n'
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with client, contextlib.suppress(OSError):
                client.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = client.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                # Read a forwarded POST's body too: closing on unread bytes would reset the
                # connection, and the client would see a reset instead of the answer.
                header, _, body = head.partition(b"\r\n\r\n")
                for line in header.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        missing = int(value.strip()) - len(body)
                        while missing > 0 and (chunk := client.recv(missing)):
                            missing -= len(chunk)
                client.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join(5)
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="TLS front for the journal simulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    asyncio.run(_serve_tls(parser.parse_args()))


if __name__ == "__main__":
    main()
