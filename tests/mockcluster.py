"""librdkafka's built-in mock Kafka cluster as a process: `python -m tests.mockcluster`.

It prints the brokers' bootstrap address (one line, `host:port,...`) and serves until SIGTERM.
It is the broker at hand that speaks the transactional protocol (InitProducerId,
AddPartitionsToTxn, EndTxn, commit and abort markers), so the tests prove the bridge's
transactional delivery mode on it.

The cluster is driven through `ctypes` on the librdkafka that the confluent-kafka wheel ships:
confluent-kafka's Python API starts a mock cluster (`test.mock.num.brokers`) but exposes neither
the mock's topic creation (the mock answers no CreateTopics request, and creates topics with 4
partitions on first use) nor its error injection, and the tests need both. Commands, one a line
on stdin, each answered `ok` or `error: ...` on stdout:

    topic NAME PARTITIONS         create a topic
    fail API_KEY ERROR_CODE [N]   the next N requests of that API fail with that error code

What the mock does not do (librdkafka 2.16; tests/test_transactional.py pins it): its Fetch
ignores the isolation level (the last stable offset is the high watermark, no aborted-transaction
list), so a read_committed reader sees aborted and unfinished transactions; it never fences a
producer by transactional id (each InitProducerId without a producer id hands out a new one) nor
aborts the transaction a dead producer left open; and its transaction markers have no CRC.
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bridge.routing import checkpoint_topic, event_topics, leadership_topic

ROOT = Path(__file__).resolve().parent.parent
RD_KAFKA_PRODUCER = 0


def load_librdkafka() -> ctypes.CDLL:
    """The librdkafka bundled with confluent-kafka (the one its Python API uses)."""
    import confluent_kafka

    bundled = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(bundled.glob("librdkafka*.so*"))
    if not found:
        raise SystemExit(f"mockcluster: no librdkafka in {bundled}")
    lib = ctypes.CDLL(str(found[0]))
    pointer, text, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    lib.rd_kafka_conf_new.restype = pointer
    lib.rd_kafka_conf_set.argtypes = [pointer, text, text, text, size]
    lib.rd_kafka_new.restype = pointer
    lib.rd_kafka_new.argtypes = [ctypes.c_int, pointer, text, size]
    lib.rd_kafka_destroy.argtypes = [pointer]
    lib.rd_kafka_handle_mock_cluster.restype = pointer
    lib.rd_kafka_handle_mock_cluster.argtypes = [pointer]
    lib.rd_kafka_mock_cluster_bootstraps.restype = text
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [pointer]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.restype = None
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [pointer, ctypes.c_int32]
    lib.rd_kafka_mock_topic_create.argtypes = [pointer, text, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_push_request_errors_array.restype = None
    lib.rd_kafka_mock_push_request_errors_array.argtypes = [
        pointer,
        ctypes.c_int16,
        size,
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.rd_kafka_mock_broker_set_rtt.restype = ctypes.c_int
    lib.rd_kafka_mock_broker_set_rtt.argtypes = [pointer, ctypes.c_int32, ctypes.c_int]
    lib.rd_kafka_err2name.restype = text
    lib.rd_kafka_err2name.argtypes = [ctypes.c_int]
    return lib


class MockCluster:
    """One mock cluster, alive as long as the client handle that owns it."""

    def __init__(self, lib: ctypes.CDLL, brokers: int, rebalance_delay_ms: int) -> None:
        self.lib = lib
        self.brokers = brokers
        error = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        settings = {
            "test.mock.num.brokers": str(brokers),
            # Warnings and errors only: the mock's start-up notice stays out of the output.
            "log_level": "4",
        }
        for name, value in settings.items():
            if lib.rd_kafka_conf_set(conf, name.encode(), value.encode(), error, len(error)):
                raise SystemExit(f"mockcluster: {name}: {error.value.decode()}")
        # rd_kafka_new owns `conf` from here on, also when it fails.
        self.handle = lib.rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, len(error))
        if not self.handle:
            raise SystemExit(f"mockcluster: {error.value.decode()}")
        self.cluster = lib.rd_kafka_handle_mock_cluster(self.handle)
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self.cluster, rebalance_delay_ms)
        self.bootstrap_servers: str = lib.rd_kafka_mock_cluster_bootstraps(self.cluster).decode()

    def create_topic(self, name: str, partitions: int) -> str:
        err = self.lib.rd_kafka_mock_topic_create(
            self.cluster, name.encode(), partitions, min(3, self.brokers)
        )
        return "ok" if err == 0 else f"error: {self.lib.rd_kafka_err2name(err).decode()}"

    def fail(self, api_key: int, error_code: int, count: int) -> str:
        errors = (ctypes.c_int * count)(*([error_code] * count))
        self.lib.rd_kafka_mock_push_request_errors_array(self.cluster, api_key, count, errors)
        return "ok"

    def set_rtt(self, milliseconds: int) -> str:
        """Delay every broker's responses by `milliseconds` (0: no delay)."""
        for broker in range(1, self.brokers + 1):
            err = self.lib.rd_kafka_mock_broker_set_rtt(self.cluster, broker, milliseconds)
            if err:
                return f"error: {self.lib.rd_kafka_err2name(err).decode()}"
        return "ok"

    def close(self) -> None:
        self.lib.rd_kafka_destroy(self.handle)


def serve_commands(cluster: MockCluster) -> None:
    for line in sys.stdin:
        words = line.split()
        try:
            if words[:1] == ["topic"] and len(words) == 3:
                answer = cluster.create_topic(words[1], int(words[2]))
            elif words[:1] == ["rtt"] and len(words) == 2:
                answer = cluster.set_rtt(int(words[1]))
            elif words[:1] == ["fail"] and len(words) in (3, 4):
                count = int(words[3]) if len(words) == 4 else 1
                answer = cluster.fail(int(words[1]), int(words[2]), count)
            else:
                answer = f"error: unknown command {line.strip()!r}"
        except ValueError as exc:
            answer = f"error: {exc}"
        print(answer, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mockcluster", description=__doc__)
    parser.add_argument("--brokers", type=int, default=3, help="number of mock brokers")
    parser.add_argument(
        "--rebalance-delay-ms",
        type=int,
        default=0,
        help="group.initial.rebalance.delay.ms (the mock, like Kafka, defaults to 3000)",
    )
    args = parser.parse_args()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster = MockCluster(load_librdkafka(), args.brokers, args.rebalance_delay_ms)
    print(cluster.bootstrap_servers, flush=True)
    # Commands are read on a side thread; the end of stdin does not end the cluster, SIGTERM does.
    threading.Thread(target=serve_commands, args=(cluster,), daemon=True).start()
    while not stop.wait(0.5):
        pass
    cluster.close()


# --- the tests' side --------------------------------------------------------------------------


@dataclass
class MockClusterProcess:
    """A running `python -m tests.mockcluster`, and its command channel."""

    popen: subprocess.Popen[str]
    bootstrap_servers: str

    def command(self, line: str) -> None:
        assert self.popen.stdin is not None
        assert self.popen.stdout is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()
        answer = self.popen.stdout.readline().strip()
        assert answer == "ok", f"mock cluster, {line!r}: {answer or 'no answer'}"

    def create_bridge_topics(self, prefix: str, partitions: int = 3) -> None:
        """The topics `pypi-bridge run` would create, shaped as it would create them."""
        for topic in event_topics(prefix):
            self.command(f"topic {topic} {partitions}")
        self.command(f"topic {checkpoint_topic(prefix)} 1")
        self.command(f"topic {leadership_topic(prefix)} 1")

    def set_rtt(self, milliseconds: int) -> None:
        self.command(f"rtt {milliseconds}")

    def fail_next(self, api_key: int, error_code: int, count: int = 1) -> None:
        self.command(f"fail {api_key} {error_code} {count}")

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()


def start_mock_cluster(log_path: Path, brokers: int = 3) -> MockClusterProcess:
    """Start the mock cluster; its warnings go to `log_path`."""
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "tests.mockcluster", "--brokers", str(brokers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            cwd=ROOT,
        )
    assert popen.stdout is not None
    address = popen.stdout.readline().strip()
    if not address:
        popen.wait(10)
        raise AssertionError(f"the mock cluster did not start:\n{log_path.read_text()[-3000:]}")
    return MockClusterProcess(popen, address)


if __name__ == "__main__":
    main()
