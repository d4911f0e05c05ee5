"""No traceback for any input (issue 11): every case runs a real `pypi-bridge` process.

Bad flags and variables are one line naming the problem and the fix, exit status 2; a failure
at run time (the HTTP port already taken) is one line too, exit status 1. The metrics and health
server answers malformed requests 400 (or closes) and logs no traceback. Kubernetes'
service-link variables and other commands' variables do not break `run`. At DEBUG, aiokafka's
record of the SASL exchange (PLAIN carries the password itself) never reaches the log: proven
against a real Apache Kafka with PLAIN and SCRAM on a SASL listener.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.broker import EmbeddedBroker
from bridge.cli import RedactSecrets, setup_logging
from bridge.credentials import Credentials, Sources, on_secret
from tests.conftest import real_kafka
from tests.realkafka import KafkaCluster
from tests.support import (
    Process,
    Simulator,
    bridge_command,
    child_env,
    run_args,
    start,
    start_simulator,
)

#: Where nothing answers: a bridge that got past its checks would only retry against these.
NOWHERE_PYPI = "http://127.0.0.1:9/pypi"
NOWHERE_KAFKA = "127.0.0.1:9"
SERVING = re.compile(r"metrics and health on http://([^:]+):(\d+) ")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bridge_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**child_env(), **(env or {})},
        check=False,
    )


def assert_one_error_line(completed: subprocess.CompletedProcess[str], status: int) -> str:
    """The process exited `status` with one error line, the last of stderr, and no traceback."""
    output = completed.stdout + completed.stderr
    assert "Traceback" not in output, output[-3000:]
    assert completed.returncode == status, output[-3000:]
    errors = [line for line in completed.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, completed.stderr[-3000:]
    assert completed.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    sim = start_simulator(tmp_path_factory.mktemp("journal"), "--prefill", "200", "--rate", "0")
    yield sim
    sim.stop()


async def serving_port(process: Process, within: float = 60) -> int:
    """The port a running bridge's endpoints were bound to, from its log line."""
    deadline = time.monotonic() + within
    while (found := SERVING.search(process.output())) is None:
        if process.popen.poll() is not None:
            raise AssertionError(f"bridge exited early:\n{process.output()[-3000:]}")
        assert time.monotonic() < deadline, process.output()[-3000:]
        await asyncio.sleep(0.05)
    return int(found.group(2))


def get(port: int, path: str) -> int:
    """The status of GET `path` (/readyz answers 503 while the replica is not ready yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


# --- bad flags and variables: refused at start, one line, exit status 2 ----------------------

_FLOAT_FLAGS = (
    "min-request-interval",
    "request-timeout",
    "max-backoff",
    "poll-interval",
    "progress-interval",
    "leader-session-timeout",
)
BAD_FLAGS = [
    (["--bootstrap-servers", "host:notaport"], "port 'notaport' is not a number from 1 to 65535"),
    (["--bootstrap-servers", ":::"], "neither host:port nor an IPv6 address"),
    (["--bootstrap-servers", "host:99999"], "port '99999' is not a number from 1 to 65535"),
    (["--bootstrap-servers", ""], "leave the flag out to start the embedded broker"),
    (["--bootstrap-servers", "a:9092,,b:9092"], "an empty entry"),
    (["--leader-session-timeout", "inf"], "expected a number of seconds from 1 to 1800"),
    (["--leader-session-timeout", "1e9"], "expected a number of seconds from 1 to 1800"),
    (["--leader-session-timeout", "nan"], "expected a number of seconds from 1 to 1800"),
    (["--leader-session-timeout", "-6"], "expected a number of seconds from 1 to 1800"),
    (["--contact", "ops@example.org\r\nX-Injected: 1"], "control characters"),
    (["--contact", "ops@example.org\n"], "control characters"),
    (["--contact", "ops\x1b[2J@example.org"], "control characters"),
    (["--contact", "x" * 201], "at most 200 characters"),
    (["--partitions", "100000"], "expected a whole number from 1 to 10000"),
    (["--replication-factor", "99999"], "expected a whole number from 1 to 32767"),
    (["--batch-size", "100000000"], "expected a whole number from 1 to 10000000"),
    (["--start-serial", "99999999999999999999"], "expected a serial (0 to 2147483647)"),
    (["--stop-at-serial", "2147483648"], "expected a serial from 0 to 2147483647"),
    (["--replica-id", "a\nforged log line"], "control characters"),
    (["--pypi-url", "http://pypi.example:99999/pypi"], "with a valid host and port"),
    *[([f"--{flag}={value}"], f"argument --{flag}: '{value}'") for flag in _FLOAT_FLAGS
      for value in ("inf", "nan", "-inf", "1e300")],
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"), BAD_FLAGS, ids=lambda v: repr(v)[:60] if isinstance(v, list) else ""
)
def test_bad_flag_is_refused_at_start_in_one_line(args: list[str], expected: str) -> None:
    kafka = [] if "--bootstrap-servers" in args else ["--bootstrap-servers", NOWHERE_KAFKA]
    completed = run_cli("run", "--pypi-url", NOWHERE_PYPI, "--http-port", "0", *kafka, *args)
    line = assert_one_error_line(completed, 2)
    assert line.startswith("pypi-bridge run: error: argument --")
    assert expected in line


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PYPI_BRIDGE_LEADER_SESSION_TIMEOUT", "inf", "from 1 to 1800"),
        ("PYPI_BRIDGE_POLL_INTERVAL", "nan", "greater than 0 and at most 86400"),
        ("PYPI_BRIDGE_PARTITIONS", "100000", "from 1 to 10000"),
        ("PYPI_BRIDGE_CONTACT", "ops@example.org\r\nX-Injected: 1", "control characters"),
        ("PYPI_BRIDGE_BOOTSTRAP_SERVERS", "kafka:notaport", "is not a number from 1 to 65535"),
    ],
)
def test_bad_variable_is_refused_at_start_in_one_line(
    variable: str, value: str, expected: str
) -> None:
    completed = run_cli("run", "--pypi-url", NOWHERE_PYPI, env={variable: value})
    line = assert_one_error_line(completed, 2)
    assert line.startswith(f"pypi-bridge: error: environment variable {variable}=")
    assert expected in line
    assert line.endswith(f"fix or unset {variable}")


@pytest.mark.parametrize(
    "args",
    [
        ["consume", "--bootstrap-servers", NOWHERE_KAFKA],
        ["audit", "--bootstrap-servers", NOWHERE_KAFKA, "--pypi-url", NOWHERE_PYPI],
        ["broker", "--port", "0"],
        ["simulate", "--port", "0"],
        ["demo", "--http-port", "0"],
    ],
    ids=lambda args: args[0],
)
def test_unknown_log_level_is_refused_in_one_line(args: list[str]) -> None:
    completed = run_cli(*args, "--log-level", "LOUD")
    line = assert_one_error_line(completed, 2)
    assert "LOUD" in line
    assert "DEBUG, INFO, WARNING" in line


def test_unresolvable_http_host_is_one_line_with_exit_2() -> None:
    completed = run_cli(
        "run",
        "--pypi-url",
        NOWHERE_PYPI,
        "--bootstrap-servers",
        NOWHERE_KAFKA,
        "--http-host",
        "no-such-host.invalid",
        "--http-port",
        "0",
    )
    line = assert_one_error_line(completed, 2)
    assert line.startswith(
        "pypi-bridge: error: --http-host 'no-such-host.invalid' does not resolve"
    )
    assert "pass an address of this machine" in line


# --- a second replica on a busy port: one line, exit status 1 ---------------------------------


async def test_second_replica_on_a_busy_http_port_is_one_line_with_exit_1(
    tmp_path: Path, broker: EmbeddedBroker, journal: Simulator
) -> None:
    args = [*run_args(journal, broker.bootstrap_servers, "busy"), "--http-host", "127.0.0.1"]
    first = start(args, tmp_path / "first.log")
    try:
        port = await serving_port(first)
        second = list(args)
        second[second.index("--http-port") + 1] = str(port)
        completed = await asyncio.to_thread(
            subprocess.run,
            second,
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
            check=False,
        )
        line = assert_one_error_line(completed, 1)
        assert line == (
            f"pypi-bridge: error: cannot serve /metrics, /healthz and /readyz: port {port} on "
            "127.0.0.1 is already in use (by another replica or program); stop that process, "
            "or pass another --http-port (0 picks a free one)"
        )
        assert await asyncio.to_thread(get, port, "/healthz") == 200, "the first one carries on"
    finally:
        assert first.stop(signal.SIGTERM) == 0, first.output()[-3000:]


# --- malformed HTTP requests: 400 or a closed connection, never a traceback ------------------

MALFORMED = {
    "garbage request line": b"\x00\xff\xfe garbage\r\n\r\n",
    "no HTTP at all": bytes(range(256)) * 16,
    "TLS on the plain port": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 160,
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "bad method": b"G\x01T /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "huge header": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    "a thousand headers": b"GET /readyz HTTP/1.1\r\n"
    + b"".join(b"X-%d: a\r\n" % i for i in range(1000))
    + b"\r\n",
    "huge request line": b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\n\r\n",
    "control bytes in a header": b"GET /metrics HTTP/1.1\r\nX: a\x00\x1b[31mb\r\n\r\n",
    "header without a colon": b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
    "negative content length": b"GET /readyz HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    "broken chunked body": b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "bad second request": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nB\x01D / HTTP/1.1\r\n\r\n",
    "bad URL": b"GET http://[::1/ HTTP/1.1\r\n\r\n",
}
#: Sent, then the connection is closed before the request is complete.
HALFWAY = [
    b"GE",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-",
    b"POST /readyz HTTP/1.1\r\nContent-Length: 1000\r\n\r\nonly a little",
]


def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, half-close, and read the answer (b'' if the server just closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        try:
            connection.sendall(data)
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer and close before it has read everything
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def send_and_close(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
async def test_malformed_requests_get_400_and_log_no_traceback(
    tmp_path: Path, broker: EmbeddedBroker, journal: Simulator, level: str
) -> None:
    args = run_args(journal, broker.bootstrap_servers, f"http{level.lower()}")
    bridge = start([*args, "--http-host", "127.0.0.1", "--log-level", level], tmp_path / "b.log")
    try:
        port = await serving_port(bridge)
        for name, data in MALFORMED.items():
            answer = await asyncio.to_thread(exchange, port, data)
            last = answer.rsplit(b"HTTP/1.", 1)[-1] if answer else b""
            assert answer == b"" or re.match(rb"[01] 4\d\d ", last), (name, answer[:200])
        for data in HALFWAY:
            await asyncio.to_thread(send_and_close, port, data)
        for path in ("/metrics", "/healthz"):
            assert await asyncio.to_thread(get, port, path) == 200, path
        assert await asyncio.to_thread(get, port, "/readyz") in (200, 503)
    finally:
        status = bridge.stop(signal.SIGTERM)
    output = bridge.output()
    assert status == 0, output[-3000:]
    assert "Traceback" not in output, output[-5000:]
    assert "aiohttp.server" not in output
    bad = [line for line in output.splitlines() if "Error handling request" in line]
    if level == "INFO":
        assert bad == [], "nothing at all below DEBUG: a stranger could flood the log"
    else:
        assert bad, "at DEBUG each malformed request is one line"
    assert "\x1b" not in output, "a request's control bytes never reach the log raw"


# --- Kubernetes' service links and other commands' variables ---------------------------------

#: What Kubernetes injects into every pod of a namespace with a Service named `pypi-bridge`.
SERVICE_LINKS = {
    "PYPI_BRIDGE_PORT": "tcp://10.0.0.1:8080",
    "PYPI_BRIDGE_PORT_8080_TCP": "tcp://10.0.0.1:8080",
    "PYPI_BRIDGE_PORT_8080_TCP_PROTO": "tcp",
    "PYPI_BRIDGE_PORT_8080_TCP_PORT": "8080",
    "PYPI_BRIDGE_PORT_8080_TCP_ADDR": "10.0.0.1",
    "PYPI_BRIDGE_SERVICE_HOST": "10.0.0.1",
    "PYPI_BRIDGE_SERVICE_PORT": "8080",
    "PYPI_BRIDGE_SERVICE_PORT_HTTP": "8080",
    # ... and by a Service named `pypi-bridge-http`, whose link lands on run's own flag.
    "PYPI_BRIDGE_HTTP_PORT": "tcp://10.0.0.2:9300",
}


async def test_run_ignores_service_links_and_other_commands_variables(
    tmp_path: Path, journal: Simulator
) -> None:
    last = journal.state()["last_serial"]
    environ = {
        **SERVICE_LINKS,
        "PYPI_BRIDGE_PREFILL": "lots",  # simulate's and demo's, malformed: not run's business
        "PYPI_BRIDGE_HOST": "",
        # run's own, malformed, but the command line gives the flag: the command line wins.
        "PYPI_BRIDGE_POLL_INTERVAL": "soon",
    }
    args = [
        "run",
        "--pypi-url",
        journal.url,
        "--start-serial",
        "0",
        "--stop-at-serial",
        str(last),
        "--http-port",
        "0",
        "--poll-interval",
        "0.2",
        "--min-request-interval",
        "0",
        "--log-level",
        "DEBUG",
    ]
    completed = await asyncio.to_thread(run_cli, *args, env=environ, timeout=180)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert f"reached --stop-at-serial {last}" in output
    ignored = [line for line in output.splitlines() if "ignoring PYPI_BRIDGE_" in line]
    assert len(ignored) == 1, "one DEBUG line names them"
    assert "DEBUG" in ignored[0]
    for name in [*SERVICE_LINKS, "PYPI_BRIDGE_PREFILL"]:
        assert name in ignored[0]
    assert "10.0.0.1" not in ignored[0], "names only"


def test_malformed_variable_of_run_beside_service_links_is_one_line() -> None:
    environ = {**SERVICE_LINKS, "PYPI_BRIDGE_HTTP_PORT": "nine thousand"}
    completed = run_cli("run", "--pypi-url", NOWHERE_PYPI, env=environ)
    line = assert_one_error_line(completed, 2)
    assert line == (
        "pypi-bridge: error: environment variable PYPI_BRIDGE_HTTP_PORT='nine thousand' is "
        "invalid: expected a TCP port from 0 to 65535 (0 picks a free one); fix or unset "
        "PYPI_BRIDGE_HTTP_PORT"
    )


def test_simulate_ignores_the_service_link_on_its_port_variable(tmp_path: Path) -> None:
    log_path = tmp_path / "simulate.log"
    with log_path.open("wb") as out:
        popen = subprocess.Popen(
            bridge_command("simulate", "--port", "0", "--rate", "0"),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**child_env(), **SERVICE_LINKS},
        )
    simulator = Process(popen, log_path)
    try:
        deadline = time.monotonic() + 60
        while "http://127.0.0.1:" not in simulator.output():
            assert popen.poll() is None, simulator.output()
            assert time.monotonic() < deadline, simulator.output()
            time.sleep(0.05)
    finally:
        assert simulator.stop() == 0, simulator.output()
    assert "Traceback" not in simulator.output()


# --- secrets: aiokafka's DEBUG record of the SASL exchange is redacted ----------------------

SASL_USER = "bridge"
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@pytest.fixture(scope="module")
def sasl_password() -> str:
    return "pw-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def sasl_kafka(
    tmp_path_factory: pytest.TempPathFactory, sasl_password: str
) -> Iterator[KafkaCluster]:
    """One Kafka node with a SASL_PLAINTEXT listener offering PLAIN and both SCRAMs."""
    login = "org.apache.kafka.common.security"
    properties = {
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms": ",".join(MECHANISMS),
        # PLAIN's users live in the listener's JAAS configuration: user_<name>="<password>".
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
            f'{login}.plain.PlainLoginModule required user_{SASL_USER}="{sasl_password}";'
        ),
        "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": (
            f"{login}.scram.ScramLoginModule required;"
        ),
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
            f"{login}.scram.ScramLoginModule required;"
        ),
    }
    users = []
    for mechanism in MECHANISMS[1:]:
        users += ["--add-scram", f"{mechanism}=[name={SASL_USER},password={sasl_password}]"]
    cluster = real_kafka(
        tmp_path_factory.mktemp("kafka-sasl"),
        listeners={"SASL_PLAINTEXT": "SASL_PLAINTEXT"},
        properties=properties,
        format_args=users,
    )
    yield cluster
    cluster.stop()


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_debug_log_never_shows_the_sasl_password(
    sasl_kafka: KafkaCluster,
    sasl_password: str,
    journal: Simulator,
    tmp_path: Path,
    mechanism: str,
    log_format: str,
) -> None:
    last = journal.state()["last_serial"]
    prefix = f"redact-{mechanism.lower()}-{log_format}"
    password_file = tmp_path / "password"
    password_file.write_text(sasl_password + "\n", encoding="utf-8")
    args = [
        *run_args(journal, sasl_kafka.listener("SASL_PLAINTEXT"), prefix),
        *("--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", mechanism),
        *("--sasl-username", SASL_USER, "--sasl-password-file", str(password_file)),
        *("--start-serial", "0", "--stop-at-serial", str(last)),
        *("--log-level", "DEBUG", "--log-format", log_format),
    ]
    bridge = start(args, tmp_path / "bridge.log")
    assert await asyncio.to_thread(bridge.wait, 240) == 0, bridge.output()[-3000:]
    lines = bridge.output().splitlines()
    assert f"Authenticated as {SASL_USER} via {mechanism}" in "\n".join(lines)
    assert any("SaslAuthenticateRequest" in line for line in lines), "the exchange is logged"
    shown = [sasl_password, repr(sasl_password.encode())[2:-1], sasl_password[:8]]
    for line in lines:
        assert not any(form in line for form in shown), line
        assert "\\x00bridge\\x00" not in line, line  # PLAIN's payload, even truncated
        assert not re.search(r"c=biws,r=[^,]*,p=[A-Za-z0-9+/]", line), line  # SCRAM's proof
        if "sasl_auth_bytes" in line:
            assert re.findall(r"sasl_auth_bytes=([^,)]*)", line) == ["<redacted>"], line
        if log_format == "json":
            assert isinstance(json.loads(line), dict), line


# --- the redacting filter itself (no process: what it does to the lines aiokafka writes) -----


def _redacted(message: str, *args: object, secrets: tuple[str, ...] = ()) -> str:
    record = logging.LogRecord("aiokafka.conn", logging.DEBUG, __file__, 1, message, args, None)
    RedactSecrets(secrets).filter(record)
    return record.getMessage()


def test_redaction_hides_a_plain_payload_whatever_its_quoting() -> None:
    payload = b'bridge\x00bridge\x00it\'s "quoted"'
    line = _redacted(
        "Request to k:9092 3: %s", f"SaslAuthenticateRequest_v1(sasl_auth_bytes={payload!r})"
    )
    assert line == "Request to k:9092 3: SaslAuthenticateRequest_v1(sasl_auth_bytes=<redacted>)"


def test_redaction_hides_a_scram_client_proof_outside_a_request() -> None:
    line = _redacted("sent c=biws,r=abc123,p=dGhlIHByb29m... to the broker")
    assert line == "sent c=biws,r=abc123,p=<redacted>... to the broker"


def test_redaction_hides_a_configured_secret_as_text_and_inside_a_repr() -> None:
    secret = "pä$$\\word"
    line = _redacted("%s %r %r", secret, secret, secret.encode(), secrets=(secret,))
    assert line == "<redacted> '<redacted>' b'<redacted>'"


def test_redaction_leaves_other_lines_alone() -> None:
    assert _redacted("Response from k:9092 4: MetadataResponse_v8(%s)", "brokers=[]") == (
        "Response from k:9092 4: MetadataResponse_v8(brokers=[])"
    )


def test_redaction_learns_a_password_rotated_after_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The filter installed by setup_logging hides a password that was not in the file at start:
    `Credentials` tells it of each secret it reads, before a connection uses it."""
    password_file = tmp_path / "password"
    password_file.write_text("first-password\n", encoding="utf-8")
    sources = Sources(tls=False, sasl=True, sasl_password_file=str(password_file))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        setup_logging("DEBUG")
        held = Credentials(sources)
        material = held.current()
        password_file.write_text("second-password-after-rotation\n", encoding="utf-8")
        rotated = held.current()  # the file's size changed: read again
        logging.getLogger("aiokafka.conn").debug(
            "sending %s then %r", material.sasl_password, rotated.sasl_password
        )
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
        on_secret(None)
    logged = capsys.readouterr().err
    assert rotated.sasl_password == "second-password-after-rotation"
    assert "sending <redacted> then '<redacted>'" in logged, logged
    assert "first-password" not in logged, logged
    assert "second-password" not in logged, logged
