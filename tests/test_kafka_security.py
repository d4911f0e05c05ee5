"""Kafka TLS and SASL settings: from flags and `PYPI_BRIDGE_*` variables to aiokafka's options.

The certificates are real, made by the `openssl` CLI for each test module: a CA, a broker
certificate for localhost/127.0.0.1, a client certificate (its key also in a password-protected
copy) and a second, unrelated CA. TLS is exercised for real twice: in memory, handshaking the
bridge's SSL context against a server context; and end to end, with aiokafka producing and
consuming through the embedded broker. The embedded broker (tansu 0.6.0) cannot serve TLS itself
(its --cert and --key flags refuse to be combined, and --cert alone leaves the listener plain
TCP), so a TLS-terminating loopback proxy stands in front of it and the broker advertises the
proxy's address.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from bridge.broker import broker_binary, free_port
from bridge.config import RUN_FLAGS, KafkaSettings, add_flags, kafka_settings, run_settings
from bridge.errors import BridgeError, ConfigError, EmbeddedBrokerError
from tests.conftest import ROOT, require
from tests.pki import KEY_PASSWORD, KafkaPki, kafka_pki

SASL_PASSWORD = "s3cret-sasl-password"


# --- certificates ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> KafkaPki:
    """A CA, a broker and a client certificate, and an unrelated CA, made with openssl."""
    return kafka_pki(tmp_path_factory.mktemp("pki"), "pypi-bridge")


@pytest.fixture
def sasl_password_file(tmp_path: Path) -> Path:
    path = tmp_path / "sasl-password"
    path.write_text(SASL_PASSWORD + "\n", encoding="utf-8")
    return path


def server_context(pki: KafkaPki, *, require_client_cert: bool) -> ssl.SSLContext:
    """What a TLS broker would use: its certificate, and optionally client verification."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    return context


# --- building settings the way the command line does ----------------------------------------


def parse_run(args: list[str], environ: Mapping[str, str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pypi-bridge run")
    add_flags(parser, RUN_FLAGS, environ or {})
    return parser.parse_args(args)


def settings(args: list[str], environ: Mapping[str, str] | None = None) -> KafkaSettings:
    return kafka_settings(parse_run(["--bootstrap-servers", "kafka:9093", *args], environ))


def tls_args(pki: KafkaPki, *, mutual: bool = False, encrypted: bool = False) -> list[str]:
    args = ["--security-protocol", "SSL", "--ssl-cafile", str(pki.ca)]
    if mutual:
        key = pki.client_key_encrypted if encrypted else pki.client.key
        args += ["--ssl-certfile", str(pki.client.cert), "--ssl-keyfile", str(key)]
    if encrypted:
        args += ["--ssl-key-password-file", str(pki.key_password_file)]
    return args


def handshake(
    client: ssl.SSLContext, server: ssl.SSLContext, hostname: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A TLS handshake in memory; returns the certificates each side saw of the other."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname=hostname)
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
                    done[name] = True
        if all(done.values()):
            # TLS 1.3 delivers the server's verdict on the client certificate after the
            # client's side is done: one read surfaces a rejection as an SSLError.
            with contextlib.suppress(ssl.SSLWantReadError):
                client_side.read(1)
            break
    assert all(done.values()), "the handshake did not finish"
    seen_by_client = client_side.getpeercert()
    assert seen_by_client is not None
    return seen_by_client, server_side.getpeercert()


def common_name(certificate: dict[str, Any] | None) -> str:
    assert certificate is not None
    subject = dict(pair[0] for pair in certificate["subject"])
    return str(subject["commonName"])


# --- client options -------------------------------------------------------------------------


def test_plaintext_options_carry_no_tls_or_sasl() -> None:
    options = settings([]).client_options()
    assert options == {
        "bootstrap_servers": "kafka:9093",
        "client_id": "pypi-bridge",
        "security_protocol": "PLAINTEXT",
    }


def test_options_without_bootstrap_servers_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no Kafka bootstrap servers are set; pass"):
        kafka_settings(parse_run([])).client_options()


def test_ssl_context_verifies_the_broker_against_the_given_ca(pki: KafkaPki) -> None:
    options = settings(tls_args(pki)).client_options()
    context: ssl.SSLContext = options["ssl_context"]
    assert options["security_protocol"] == "SSL"
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    broker, _ = handshake(context, server_context(pki, require_client_cert=False), "localhost")
    assert common_name(broker) == "localhost"


def test_ssl_context_refuses_a_broker_signed_by_another_ca(pki: KafkaPki) -> None:
    args = ["--security-protocol", "SSL", "--ssl-cafile", str(pki.other_ca)]
    context = settings(args).client_options()["ssl_context"]
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(context, server_context(pki, require_client_cert=False), "localhost")


def test_ssl_context_checks_the_broker_host_name(pki: KafkaPki) -> None:
    context = settings(tls_args(pki)).client_options()["ssl_context"]
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(context, server_context(pki, require_client_cert=False), "kafka.example.org")


def test_ssl_without_a_ca_file_trusts_only_the_system_store(pki: KafkaPki) -> None:
    context = settings(["--security-protocol", "SSL"]).client_options()["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, server_context(pki, require_client_cert=False), "localhost")


def test_mutual_tls_presents_the_client_certificate(pki: KafkaPki) -> None:
    context = settings(tls_args(pki, mutual=True)).client_options()["ssl_context"]
    _, client = handshake(context, server_context(pki, require_client_cert=True), "localhost")
    assert common_name(client) == "pypi-bridge"


def test_broker_requiring_a_client_certificate_rejects_one_way_tls(pki: KafkaPki) -> None:
    context = settings(tls_args(pki)).client_options()["ssl_context"]
    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|PEER_DID_NOT_RETURN"):
        handshake(context, server_context(pki, require_client_cert=True), "localhost")


def test_encrypted_client_key_opens_with_the_password_file(pki: KafkaPki) -> None:
    kafka = settings(tls_args(pki, mutual=True, encrypted=True))
    assert kafka.ssl_key_password == KEY_PASSWORD
    context = kafka.client_options()["ssl_context"]
    _, client = handshake(context, server_context(pki, require_client_cert=True), "localhost")
    assert common_name(client) == "pypi-bridge"


def test_tls_files_may_come_from_the_environment(pki: KafkaPki) -> None:
    environ = {
        "PYPI_BRIDGE_SECURITY_PROTOCOL": "SSL",
        "PYPI_BRIDGE_SSL_CAFILE": str(pki.ca),
        "PYPI_BRIDGE_SSL_CERTFILE": str(pki.client.cert),
        "PYPI_BRIDGE_SSL_KEYFILE": str(pki.client_key_encrypted),
        "PYPI_BRIDGE_SSL_KEY_PASSWORD_FILE": str(pki.key_password_file),
    }
    kafka = settings([], environ)
    assert (kafka.ssl_cafile, kafka.ssl_keyfile) == (str(pki.ca), str(pki.client_key_encrypted))
    assert kafka.ssl_key_password == KEY_PASSWORD


def test_sasl_plain_options_carry_the_user_and_the_password_from_its_file(
    sasl_password_file: Path,
) -> None:
    args = ["--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN"]
    args += ["--sasl-username", "bridge", "--sasl-password-file", str(sasl_password_file)]
    options = settings(args).client_options()
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "PLAIN"
    assert options["sasl_plain_username"] == "bridge"
    # The file's trailing newline (as Secrets are often written) is not part of the password.
    assert options["sasl_plain_password"] == SASL_PASSWORD
    assert "ssl_context" not in options


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_over_tls_carries_both_the_ssl_context_and_the_mechanism(
    pki: KafkaPki, sasl_password_file: Path, mechanism: str
) -> None:
    environ = {
        "PYPI_BRIDGE_SECURITY_PROTOCOL": "SASL_SSL",
        "PYPI_BRIDGE_SSL_CAFILE": str(pki.ca),
        "PYPI_BRIDGE_SASL_MECHANISM": mechanism.lower(),
        "PYPI_BRIDGE_SASL_USERNAME": "bridge",
        "PYPI_BRIDGE_SASL_PASSWORD_FILE": str(sasl_password_file),
    }
    options = settings([], environ).client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "bridge",
        SASL_PASSWORD,
    )
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_sasl_password_file_wins_over_a_password_given_inline(sasl_password_file: Path) -> None:
    environ = {"PYPI_BRIDGE_SASL_PASSWORD": "inline"}
    args = ["--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN"]
    args += ["--sasl-username", "bridge", "--sasl-password-file", str(sasl_password_file)]
    assert settings(args, environ).sasl_password == SASL_PASSWORD


# --- secrets stay secret --------------------------------------------------------------------


def test_settings_never_show_their_secrets(pki: KafkaPki, sasl_password_file: Path) -> None:
    args = [*tls_args(pki, mutual=True, encrypted=True), "--security-protocol", "SASL_SSL"]
    args += ["--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "bridge"]
    args += ["--sasl-password-file", str(sasl_password_file)]
    namespace = parse_run(["--bootstrap-servers", "kafka:9093", *args])
    kafka = kafka_settings(namespace)
    assert kafka.sasl_password == SASL_PASSWORD
    assert kafka.ssl_key_password == KEY_PASSWORD
    for shown in (repr(kafka), str(kafka), repr(run_settings(namespace))):
        assert SASL_PASSWORD not in shown
        assert KEY_PASSWORD not in shown
    assert "bridge" in repr(kafka)


def test_help_never_shows_a_secret_from_the_environment() -> None:
    parser = argparse.ArgumentParser(prog="pypi-bridge run")
    add_flags(
        parser,
        RUN_FLAGS,
        {"PYPI_BRIDGE_SASL_PASSWORD": SASL_PASSWORD, "PYPI_BRIDGE_SSL_KEY_PASSWORD": KEY_PASSWORD},
    )
    text = parser.format_help()
    assert "PYPI_BRIDGE_SASL_PASSWORD" in text
    assert SASL_PASSWORD not in text
    assert KEY_PASSWORD not in text


# --- bad combinations: one line that names the fix ------------------------------------------


def _bad(args: list[str], tmp_path: Path) -> str:
    secret = tmp_path / "secret"
    secret.write_text("pw", encoding="utf-8")
    args = [a.replace("{secret}", str(secret)) for a in args]
    with pytest.raises(ConfigError) as caught:
        settings(args)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--sasl-mechanism", "PLAIN"],
            "--sasl-mechanism PLAIN needs a SASL security protocol; "
            "add --security-protocol SASL_SSL (or SASL_PLAINTEXT)",
        ),
        (
            ["--security-protocol", "SASL_SSL", "--sasl-username", "u"],
            "--security-protocol SASL_SSL needs a SASL mechanism; "
            "add --sasl-mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)",
        ),
        (
            [
                "--security-protocol",
                "SASL_SSL",
                "--sasl-mechanism",
                "SCRAM-SHA-512",
                "--sasl-password-file",
                "{secret}",
            ],
            "SASL needs a user name and a password; set --sasl-username and "
            "--sasl-password-file (or PYPI_BRIDGE_SASL_PASSWORD)",
        ),
        (
            [
                "--security-protocol",
                "SASL_PLAINTEXT",
                "--sasl-mechanism",
                "PLAIN",
                "--sasl-username",
                "u",
            ],
            "SASL needs a user name and a password",
        ),
        (
            ["--security-protocol", "SSL", "--ssl-certfile", "{secret}"],
            "mutual TLS needs both --ssl-certfile and --ssl-keyfile; give both or neither",
        ),
        (
            ["--security-protocol", "SSL", "--ssl-keyfile", "{secret}"],
            "mutual TLS needs both --ssl-certfile and --ssl-keyfile",
        ),
        (
            ["--ssl-cafile", "{secret}"],
            "TLS files were given but --security-protocol is PLAINTEXT; "
            "use --security-protocol SSL or SASL_SSL",
        ),
        (
            [
                "--security-protocol",
                "SASL_PLAINTEXT",
                "--sasl-mechanism",
                "PLAIN",
                "--sasl-username",
                "u",
                "--sasl-password",
                "pw",
                "--ssl-cafile",
                "{secret}",
            ],
            "TLS files were given but --security-protocol is SASL_PLAINTEXT",
        ),
    ],
)
def test_bad_combination_is_one_line_naming_the_fix(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    assert _bad(args, tmp_path).startswith(expected)


def test_unreadable_password_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    gone = tmp_path / "password"
    gone.write_text("pw", encoding="utf-8")
    namespace = parse_run(
        [
            "--security-protocol",
            "SASL_SSL",
            "--sasl-mechanism",
            "PLAIN",
            "--sasl-username",
            "u",
            "--sasl-password-file",
            str(gone),
        ]
    )
    gone.unlink()  # vanished between start-up parsing and reading, as a rotated Secret can
    with pytest.raises(ConfigError) as caught:
        kafka_settings(namespace)
    assert str(caught.value) == (
        f"cannot read the SASL password file {gone}: No such file or directory"
    )


def test_unknown_protocol_in_the_environment_is_one_line_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_run([], {"PYPI_BRIDGE_SECURITY_PROTOCOL": "TLS"})
    assert str(caught.value) == (
        "environment variable PYPI_BRIDGE_SECURITY_PROTOCOL='TLS' is invalid: expected one of "
        "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; fix or unset PYPI_BRIDGE_SECURITY_PROTOCOL"
    )


def test_unknown_mechanism_in_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="PYPI_BRIDGE_SASL_MECHANISM='GSSAPI' is invalid"):
        parse_run([], {"PYPI_BRIDGE_SASL_MECHANISM": "GSSAPI"})


def test_missing_tls_file_is_refused_while_parsing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no readable file at"):
        parse_run([], {"PYPI_BRIDGE_SSL_CAFILE": str(tmp_path / "absent.pem")})


# --- bad TLS material and empty secrets are one-line configuration errors ----------------


def test_ca_file_that_is_not_a_certificate_is_a_config_error(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n", encoding="utf-8")
    kafka = settings(["--security-protocol", "SSL", "--ssl-cafile", str(not_pem)])
    with pytest.raises(ConfigError):
        kafka.client_options()


def test_wrong_key_password_is_a_config_error(pki: KafkaPki, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("wrong\n", encoding="utf-8")
    args = tls_args(pki, mutual=True)
    args += ["--ssl-keyfile", str(pki.client_key_encrypted), "--ssl-key-password-file", str(wrong)]
    with pytest.raises(ConfigError):
        settings(args).client_options()


def test_encrypted_key_without_a_password_is_a_config_error_not_a_prompt(pki: KafkaPki) -> None:
    # In a child without a terminal: in this process OpenSSL could wait for someone to type.
    code = textwrap.dedent(
        f"""
        from bridge.config import KafkaSettings
        from bridge.errors import ConfigError
        settings = KafkaSettings(
            bootstrap_servers="kafka:9093",
            security_protocol="SSL",
            ssl_cafile={str(pki.ca)!r},
            ssl_certfile={str(pki.client.cert)!r},
            ssl_keyfile={str(pki.client_key_encrypted)!r},
        )
        try:
            settings.client_options()
        except ConfigError as exc:
            print("ConfigError:", exc)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=ROOT,
        check=False,
    )
    assert "pass phrase" not in completed.stdout + completed.stderr
    assert completed.stdout.startswith("ConfigError:")


def test_empty_sasl_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "password"
    empty.write_text("\n", encoding="utf-8")
    args = ["--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN"]
    args += ["--sasl-username", "u", "--sasl-password-file", str(empty)]
    with pytest.raises(ConfigError):
        settings(args)


# --- end to end: aiokafka through TLS to the embedded broker --------------------------------


@dataclass
class TansuProcess:
    process: subprocess.Popen[bytes]
    listen_port: int
    advertised_port: int
    log: Path


@pytest.fixture
def tansu_behind(tmp_path: Path) -> Iterator[TansuProcess]:
    """The embedded broker on a plain port, advertising another port where TLS will listen."""
    try:
        binary = broker_binary()
    except EmbeddedBrokerError as exc:
        require(False, f"the embedded broker ({exc})")
        raise
    listen, advertised = free_port(), free_port()
    log = tmp_path / "tansu.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary, "broker",
                "--listener-url", f"tcp://127.0.0.1:{listen}",
                "--advertised-listener-url", f"tcp://127.0.0.1:{advertised}",
                "--storage-engine", "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"},
        )  # fmt: skip
    try:
        _wait_for_port(listen, process)
        yield TansuProcess(process, listen, advertised, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, "the broker exited at start-up"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail("the broker did not listen in time")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass  # either side hung up; closing the other is all there is to do
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_terminator(
    listen_port: int, target_port: int, context: ssl.SSLContext
) -> AsyncIterator[None]:
    """TLS on `listen_port`, plain TCP to `target_port`: a broker's TLS listener, in-process."""
    tasks: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", listen_port, ssl=context)
    try:
        yield
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def test_aiokafka_produces_and_consumes_over_mutual_tls_with_the_bridge_options(
    pki: KafkaPki, tansu_behind: TansuProcess
) -> None:
    servers = f"127.0.0.1:{tansu_behind.advertised_port}"
    args = tls_args(pki, mutual=True, encrypted=True)
    kafka = kafka_settings(parse_run(["--bootstrap-servers", servers, *args]))
    options = kafka.client_options()
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    context = server_context(pki, require_client_cert=True)
    async with tls_terminator(tansu_behind.advertised_port, tansu_behind.listen_port, context):
        admin = AIOKafkaAdminClient(**options)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(**options)
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, b"over tls", key=b"pypi")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **options)
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), timeout=20)
        finally:
            await consumer.stop()
    assert (record.key, record.value, record.offset) == (b"pypi", b"over tls", sent.offset)


async def test_aiokafka_refuses_a_broker_its_ca_did_not_sign(
    pki: KafkaPki, tansu_behind: TansuProcess
) -> None:
    servers = f"127.0.0.1:{tansu_behind.advertised_port}"
    args = ["--security-protocol", "SSL", "--ssl-cafile", str(pki.other_ca)]
    options = kafka_settings(parse_run(["--bootstrap-servers", servers, *args])).client_options()
    context = server_context(pki, require_client_cert=False)
    async with tls_terminator(tansu_behind.advertised_port, tansu_behind.listen_port, context):
        producer = AIOKafkaProducer(**options, request_timeout_ms=3000)
        try:
            with pytest.raises(KafkaConnectionError):
                await producer.start()
        finally:
            await producer.stop()


@pytest.mark.xfail(
    strict=True,
    reason="tansu 0.6.0: --cert and --key cannot be combined; --cert alone stays plain TCP",
)
def test_embedded_broker_serves_tls_itself(pki: KafkaPki, tmp_path: Path) -> None:
    try:
        binary = broker_binary()
    except BridgeError as exc:
        require(False, f"the embedded broker ({exc})")
        raise
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            "--cert", str(pki.server.cert), "--key", str(pki.server.key),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(port, process)
        context = settings(tls_args(pki)).client_options()["ssl_context"]
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() is not None
    finally:
        process.kill()
        process.wait()
