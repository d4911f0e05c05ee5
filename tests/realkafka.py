"""Apache Kafka itself, as JVM processes: the broker for every transactional, replication and
security claim.

The broker's jars come from Maven Central through `tests/kafka/pom.xml` (the one place the
versions are pinned); `mvn dependency:build-classpath` resolves them into Maven's local
repository once, and the classpath is cached in `.cache/kafka/<version>.classpath`. A cluster is
one KRaft node (combined broker and controller) or several, on free loopback ports; each node's
storage is formatted, its `server.properties` written, and it counts as started once it answers
Metadata with every node of the cluster. Logs stay in the node's directory (`server.log`,
`stdout.log`) for a failed test to show.

    python -m tests.realkafka fetch           resolve the pinned versions (make kafka-jars)
    python -m tests.realkafka serve [--nodes 3] [--version V]
                                              one broker (or a cluster) in the foreground
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from aiokafka.client import AIOKafkaClient

from bridge.broker import free_port

ROOT = Path(__file__).resolve().parent.parent
POM = ROOT / "tests" / "kafka" / "pom.xml"
CACHE = ROOT / ".cache" / "kafka"
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
#: The listener every node has: inter-broker traffic, the tests' admin clients.
PLAINTEXT = "PLAINTEXT"
CONTROLLER = "CONTROLLER"


class KafkaUnavailable(RuntimeError):
    """Java, Maven or the broker's jars are missing: the message says which and what to do."""


def _pom_property(name: str) -> str:
    root = ElementTree.parse(POM).getroot()  # noqa: S314 - the project's own file
    found = root.find(f"m:properties/m:{name}", _POM_NS)
    if found is None or not (found.text or "").strip():
        raise KafkaUnavailable(f"{POM} has no <{name}> property")
    return (found.text or "").strip()


def newest_version() -> str:
    """The newest 4.x, pinned in tests/kafka/pom.xml: every real-Kafka test runs on it."""
    return _pom_property("kafka.version")


def older_version() -> str:
    """An older 4.x, pinned beside it: the transactional scenarios run on it too."""
    return _pom_property("kafka.older.version")


def java_executable() -> str:
    """A Java 17 or newer: $JAVA_HOME's, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise KafkaUnavailable("no Java found: install Java 17 (Debian: openjdk-17-jre-headless)")
    return found


def classpath(version: str) -> str:
    """The broker's runtime classpath for `version`, resolved once and cached."""
    cached = CACHE / f"{version}.classpath"
    if cached.exists():
        text = cached.read_text().strip()
        if text and all(Path(jar).exists() for jar in text.split(os.pathsep)):
            return text
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailable(
            "no Maven found: install Maven (Debian: maven) to fetch Kafka's jars"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        "dependency:build-classpath",
        f"-Dmdep.outputFile={partial}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0 or not partial.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise KafkaUnavailable(
            f"Maven could not resolve org.apache.kafka:kafka_2.13:{version}: " + " | ".join(tail)
        )
    partial.replace(cached)
    return cached.read_text().strip()


@dataclass
class KafkaNode:
    """One KRaft node (broker and controller) of a cluster."""

    node_id: int
    directory: Path
    #: Listener name -> its port on 127.0.0.1.
    ports: dict[str, int]
    process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.ports[PLAINTEXT]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in (self.directory / "stdout.log", self.log_path):
            if path.exists():
                parts.append(f"--- {path} ---")
                parts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(parts)


@dataclass
class KafkaCluster:
    """A running Apache Kafka cluster on loopback; stop it with `stop()`."""

    version: str
    directory: Path
    nodes: list[KafkaNode]
    cluster_id: str
    properties: dict[str, str] = field(default_factory=dict)
    java_options: tuple[str, ...] = ()

    @property
    def bootstrap_servers(self) -> str:
        """The PLAINTEXT listeners of every node."""
        return self.listener(PLAINTEXT)

    def listener(self, name: str) -> str:
        """`host:port,...` of listener `name` on every node."""
        return ",".join(f"127.0.0.1:{node.ports[name]}" for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start_node(self, node: KafkaNode) -> None:
        """Start (or restart) one node's JVM; returns at once."""
        assert not node.alive(), f"node {node.node_id} already runs"
        out = (node.directory / "stdout.log").open("ab")
        try:
            node.process = subprocess.Popen(
                [
                    java_executable(),
                    *self.java_options,
                    f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
                    "-cp",
                    classpath(self.version),
                    "kafka.Kafka",
                    str(node.directory / "server.properties"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            out.close()

    def kill(self, node: KafkaNode, sig: int = signal.SIGKILL, timeout: float = 60.0) -> None:
        """Signal one node by its own pid and wait for it to end."""
        if node.process is None:
            return
        if node.process.poll() is None:
            node.process.send_signal(sig)
            try:
                node.process.wait(timeout)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()

    def restart(self, node: KafkaNode, within: float = 120.0) -> None:
        """Start a stopped node again and wait until the whole cluster answers."""
        self.start_node(node)
        self.wait_ready(within)

    def wait_ready(self, within: float = 120.0) -> None:
        """Until every node answers Metadata listing all the nodes, or raise with the logs."""
        deadline = time.monotonic() + within
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise KafkaUnavailable(
                        f"Kafka node {node.node_id} exited with status "
                        f"{node.process.returncode}:\n{node.log_tail()}"
                    )
            alive = [n for n in self.nodes if n.alive()]
            closed = [n.node_id for n in alive if not _accepts(n.port)]
            if closed:
                last_error = f"node(s) {closed} not listening yet"
            else:
                try:
                    # Every node by itself: a restarted one must answer, not only its peers.
                    seen = min(_metadata_nodes([n.address]) for n in alive)
                except (OSError, RuntimeError, TimeoutError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    if seen >= len(self.nodes):
                        return
                    last_error = f"Metadata lists {seen} of {len(self.nodes)} nodes"
            time.sleep(0.3)
        raise KafkaUnavailable(
            f"Kafka did not answer Metadata within {within:.0f} s ({last_error}):\n"
            + "\n".join(n.log_tail() for n in self.nodes)
        )

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL after a while)."""
        for node in self.nodes:
            if node.alive():
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self.kill(node, signal.SIGKILL, timeout=20.0)

    def log_tails(self) -> str:
        return "\n".join(node.log_tail() for node in self.nodes)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _metadata_nodes(addresses: Sequence[str]) -> int:
    """How many brokers a Metadata answer lists (asked from a thread with its own loop)."""

    async def ask() -> int:
        client = AIOKafkaClient(bootstrap_servers=list(addresses), request_timeout_ms=5000)
        try:
            await client.bootstrap()
            return len(client.cluster.brokers())
        finally:
            await client.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, ask()).result(timeout=30)


_LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _base_properties(
    node: KafkaNode, nodes: Sequence[KafkaNode], protocols: Mapping[str, str]
) -> dict[str, str]:
    replicas = str(min(3, len(nodes)))
    names = [PLAINTEXT, *(name for name in protocols if name != PLAINTEXT)]
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(
            f"{n.node_id}@127.0.0.1:{n.ports[CONTROLLER]}" for n in nodes
        ),
        "controller.listener.names": CONTROLLER,
        "listeners": ",".join(
            f"{name}://127.0.0.1:{node.ports[name]}" for name in [*names, CONTROLLER]
        ),
        "advertised.listeners": ",".join(
            f"{name}://127.0.0.1:{node.ports[name]}" for name in names
        ),
        "listener.security.protocol.map": ",".join(
            f"{name}:{protocols.get(name, PLAINTEXT)}" for name in [*names, CONTROLLER]
        ),
        "inter.broker.listener.name": PLAINTEXT,
        "log.dirs": str(node.directory / "data"),
        "num.partitions": "1",
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": str(min(2, len(nodes))),
        "transaction.state.log.num.partitions": "5",
        "default.replication.factor": replicas,
        "min.insync.replicas": str(min(2, len(nodes))),
        # A test's group forms at once instead of after Kafka's default 3 s.
        "group.initial.rebalance.delay.ms": "0",
        # Kill-and-restart loops may use a 2 s leader session (Kafka's floor is 6 s by default).
        "group.min.session.timeout.ms": "1000",
        "auto.create.topics.enable": "false",
        "log.flush.interval.messages": str(2**62),
    }


def start_kafka(
    directory: Path,
    *,
    version: str | None = None,
    nodes: int = 1,
    listeners: Mapping[str, str] | None = None,
    properties: Mapping[str, str] | None = None,
    format_args: Sequence[str] = (),
    heap: str = "512m",
    within: float = 180.0,
) -> KafkaCluster:
    """Format and start a cluster of `nodes` KRaft nodes; returns once it answers Metadata.

    `listeners` adds named listeners beside PLAINTEXT (name -> security protocol, e.g.
    `{"SASL_SSL": "SASL_SSL", "MTLS": "SSL"}`), each on a free port of every node; `properties`
    are added to (or override) every node's server.properties; `format_args` go to
    `kafka-storage format` (e.g. `--add-scram ...`).
    """
    chosen = version or newest_version()
    jars = classpath(chosen)
    java = java_executable()
    protocols = dict(listeners or {})
    directory.mkdir(parents=True, exist_ok=True)
    members = []
    for node_id in range(1, nodes + 1):
        node_dir = directory / f"node-{node_id}"
        node_dir.mkdir(parents=True, exist_ok=True)
        ports = {name: free_port() for name in [PLAINTEXT, *protocols, CONTROLLER]}
        members.append(KafkaNode(node_id, node_dir, ports))
    cluster_id = _random_cluster_id()
    for node in members:
        config = {**_base_properties(node, members, protocols), **(properties or {})}
        (node.directory / "server.properties").write_text(
            "".join(f"{key}={value}\n" for key, value in config.items())
        )
        (node.directory / "log4j2.properties").write_text(_LOG4J.format(path=node.log_path))
    formats = [
        subprocess.Popen(
            [
                java,
                "-Xmx256m",
                "-cp",
                jars,
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                cluster_id,
                "-c",
                str(node.directory / "server.properties"),
                *format_args,
            ],
            stdout=(node.directory / "format.log").open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        for node in members
    ]
    for node, formatting in zip(members, formats, strict=True):
        if formatting.wait(120) != 0:
            raise KafkaUnavailable(
                f"formatting Kafka storage failed:\n{(node.directory / 'format.log').read_text()}"
            )
    cluster = KafkaCluster(
        chosen,
        directory,
        members,
        cluster_id,
        dict(properties or {}),
        ("-Xms128m", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true"),
    )
    _STARTED.append(cluster)
    for node in members:
        cluster.start_node(node)
    try:
        cluster.wait_ready(within)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _random_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one that starts with "-", as Kafka's own `Uuid.randomUuid()` ensures: kafka-storage
    would read it as an option and refuse to format (one start in 64 otherwise).
    """
    import base64

    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


#: Every cluster started by this process, for the logs of a failed test.
_STARTED: list[KafkaCluster] = []


def running_clusters() -> list[KafkaCluster]:
    return [c for c in _STARTED if any(n.alive() for n in c.nodes)]


@contextlib.contextmanager
def kafka_cluster(directory: Path, **options: object) -> Iterator[KafkaCluster]:
    """`start_kafka` as a context manager that always stops the cluster."""
    cluster = start_kafka(directory, **options)  # type: ignore[arg-type]
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.realkafka", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="resolve the pinned broker versions from Maven Central")
    serve = commands.add_parser("serve", help="run a broker (or a cluster) in the foreground")
    serve.add_argument("--version", default=None, help="a Kafka version (default: the newest pin)")
    serve.add_argument("--nodes", type=int, default=1, help="KRaft nodes (default 1)")
    serve.add_argument("--dir", type=Path, default=None, help="data and logs (default: a temp dir)")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            for version in (newest_version(), older_version()):
                started = time.monotonic()
                jars = classpath(version)
                print(
                    f"Kafka {version}: {len(jars.split(os.pathsep))} jars "
                    f"({time.monotonic() - started:.1f} s)"
                )
            return 0
        directory = args.dir or Path(tempfile.mkdtemp(prefix="pypi-bridge-kafka-"))
        cluster = start_kafka(directory, version=args.version, nodes=args.nodes)
    except KafkaUnavailable as exc:
        print(f"realkafka: error: {exc}", file=sys.stderr)
        return 1
    print(cluster.bootstrap_servers, flush=True)
    print(
        f"Apache Kafka {cluster.version}, {len(cluster.nodes)} node(s), logs in {directory}; "
        "Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stopping and all(n.alive() for n in cluster.nodes):
            time.sleep(0.5)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
