"""Rotated credentials without a restart: a SCRAM password and a client certificate, renewed while
the bridge runs against a real Apache Kafka.

One KRaft node serves the module, with three listeners: PLAINTEXT (the tests' admin client and
the audits), SASL_SSL with SCRAM-SHA-512, and MTLS (TLS with a client certificate required). Three
`pypi-bridge run` processes follow one live journal, each under its own topic prefix:

- `scram` reads its password from a file. The user's password is changed on the broker (the
  Admin API's AlterUserScramCredentials, as Strimzi's user operator does) and the broker node is
  restarted, so every connection is made again: the broker now rejects the old password, which
  the file still holds (a Secret volume is updated up to a minute or two after the Secret).
  Once the bridge has said so in one line, the new password is written into the file.
- `mtls` reads its certificate and key from files. A new certificate from a new CA is written
  over both files in place (the certificate first: for a moment the two do not match), and the
  broker restarts trusting only the new CA, so the old certificate is refused from then on.
- `stale` uses the same user with a copy of the old password that is never updated, and a short
  `--credentials-grace`: it is the rule's other half, stopping with one line once the same
  unchanged files have been rejected for that long.

The two that carry on must do so in the same process, and `pypi-bridge audit --strict` must find
every journal entry exactly once. The first tests need no broker: they pin down the credential
files' life cycle (`bridge.credentials`) in microseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeAlias

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from bridge.broker import free_port
from bridge.config import KafkaSettings
from bridge.credentials import Credentials, Sources
from bridge.errors import ConfigError
from bridge.kafka import CredentialsRejected, consumer, refusal
from tests.conftest import real_kafka
from tests.pki import Ca, Leaf
from tests.realkafka import KafkaCluster
from tests.support import Simulator, audit_args, child_env, metric, run_args, start_simulator

USER = "bridge"
TLS_CN = "pypi-bridge"
#: Journal rows before the bridges start; more arrive live while they run.
PREFILL = 800
LIVE_RATE = 20.0
#: The stale bridge's --credentials-grace.
SHORT_GRACE = 4.0
ROTATION_LINE = "a rotation may be in progress"


# --- the credential files' life cycle, without a broker --------------------------------------


def _sasl(password_file: Path) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="127.0.0.1:9",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=USER,
        sasl_password=password_file.read_text().strip(),
        sasl_password_file=str(password_file),
    )


def test_a_new_client_uses_the_password_the_file_holds_now(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("first\n", encoding="utf-8")
    kafka = _sasl(password)
    assert kafka.client_options()["sasl_plain_password"] == "first"
    password.write_text("second\n", encoding="utf-8")
    assert kafka.client_options()["sasl_plain_password"] == "second"


async def test_a_running_client_reconnects_with_the_rotated_password(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("first\n", encoding="utf-8")
    kafka = _sasl(password).with_bootstrap(f"127.0.0.1:{free_port()}")  # nobody listens
    reader = consumer(kafka, request_timeout_ms=1000)
    password.write_text("rotated\n", encoding="utf-8")
    try:
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            await reader._client.bootstrap()
        # The connection attempt was made with what the file held at that moment.
        assert reader._client._sasl_plain_password == "rotated"
    finally:
        await reader.stop()


def test_an_empty_password_file_mid_rotation_keeps_the_previous_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = tmp_path / "password"
    password.write_text("first\n", encoding="utf-8")
    kafka = _sasl(password)
    assert kafka.client_options()["sasl_plain_password"] == "first"
    password.write_text("", encoding="utf-8")
    with caplog.at_level(logging.WARNING, "bridge.credentials"):
        assert kafka.client_options()["sasl_plain_password"] == "first"
        assert kafka.client_options()["sasl_plain_password"] == "first"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned  # one line per unusable state, not one per connection
    assert f"the SASL password file {password} is empty" in warned[0]
    assert "keep the previous credentials" in warned[0]


def test_an_unloadable_file_at_start_is_still_a_config_error(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n", encoding="utf-8")
    kafka = KafkaSettings(
        bootstrap_servers="kafka:9093", security_protocol="SSL", ssl_cafile=str(not_pem)
    )
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files"):
        kafka.client_options()


@pytest.fixture(scope="module")
def local_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ca = Ca.new(tmp_path_factory.mktemp("local-pki"))
    for name in ("one", "two"):
        ca.issue(name, TLS_CN, "clientAuth")
    return ca.directory


def test_a_certificate_written_before_its_key_waits_for_the_key(
    local_pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(local_pki / "one.crt", cert)
    shutil.copy(local_pki / "one.key", key)
    credentials = Credentials(
        Sources(
            tls=True,
            sasl=False,
            cafile=str(local_pki / "ca.crt"),
            certfile=str(cert),
            keyfile=str(key),
        )
    )
    first = credentials.current()
    shutil.copy(local_pki / "two.crt", cert)  # the key is still the old one
    with caplog.at_level(logging.WARNING, "bridge.credentials"):
        assert credentials.current() is first
        assert "keep the previous credentials" in caplog.text
        shutil.copy(local_pki / "two.key", key)
        renewed = credentials.current()
    assert renewed is not first
    assert renewed.ssl_context is not None
    assert f"the Kafka credential files changed ({cert}, {key})" in caplog.text


def test_the_rejection_count_starts_again_when_the_files_change(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("first\n", encoding="utf-8")
    now = [100.0]
    credentials = Credentials(
        Sources(tls=False, sasl=True, sasl_password_file=str(password)), clock=lambda: now[0]
    )
    credentials.current()
    credentials.accepted()
    credentials.rejected()
    now[0] += 30
    credentials.rejected()  # still the first rejection that counts
    assert credentials.rejected_for() == 30
    credentials.current()  # unchanged files: the count goes on
    assert credentials.rejected_for() == 30
    password.write_text("second\n", encoding="utf-8")
    credentials.current()
    assert credentials.rejected_for() is None
    credentials.rejected()
    now[0] += 5
    assert credentials.rejected_for() == 5
    credentials.accepted()
    assert credentials.rejected_for() is None
    assert credentials.ever_accepted


# --- the Admin API call that rotates a SCRAM password ---------------------------------------


class AlterUserScramCredentialsResponse_v0(Response):  # type: ignore[misc]
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user_name", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


_AlterScram: TypeAlias = AlterUserScramCredentialsRequest_v0


class AlterUserScramCredentials(Request[_AlterScram]):  # type: ignore[misc]
    """Set a user's SCRAM-SHA-512 password (KIP-554): the client salts and hashes it."""

    API_KEY = 51
    SCRAM_SHA_512: ClassVar[int] = 2
    ITERATIONS: ClassVar[int] = 4096

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self.salt = secrets.token_bytes(16)
        # RFC 5802's Hi(): PBKDF2 with the mechanism's hash.
        self.salted = hashlib.pbkdf2_hmac("sha512", password.encode(), self.salt, self.ITERATIONS)

    def build(self, request_struct_class: type[_AlterScram]) -> _AlterScram:
        upsertion: tuple[object, ...] = (
            self.user,
            self.SCRAM_SHA_512,
            self.ITERATIONS,
            self.salt,
            self.salted,
            {},
        )
        return request_struct_class([], [upsertion], {})


async def _set_password(bootstrap: str, user: str, password: str) -> None:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await client.start()
    try:
        response = await client._send_request(AlterUserScramCredentials(user, password))
        failed = [(name, code, text) for name, code, text, _ in response.results if code]
        assert not failed, f"AlterUserScramCredentials: {failed}"
    finally:
        await client.close()


def set_password(kafka: KafkaCluster, user: str, password: str) -> None:
    """Change `user`'s password on the broker, as the super user on the PLAINTEXT listener."""
    asyncio.run(_set_password(kafka.bootstrap_servers, user, password))


# --- the broker, the journal and the bridges --------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    #: The broker's key and certificate (Kafka's PEM keystore).
    keystore: Path
    #: The CAs the broker accepts client certificates from: rewritten by the rotation.
    truststore: Path
    #: The CA of the renewed client certificate, and that certificate.
    next_ca: Path
    renewed: Leaf
    #: A copy of the original client certificate, for the check that it is refused after.
    original: Leaf


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = Ca.new(tmp_path_factory.mktemp("pki"))
    keystore = ca.server().keystore()
    original = ca.issue("client", TLS_CN, "clientAuth")
    truststore = ca.directory / "truststore.pem"
    shutil.copy(ca.cert, truststore)
    later = Ca.new(ca.directory / "next")
    renewed = later.issue("client", TLS_CN, "clientAuth")
    return Pki(ca.cert, keystore, truststore, later.cert, renewed, original)


@pytest.fixture(scope="module")
def old_password() -> str:
    return secrets.token_hex(12)


@pytest.fixture(scope="module")
def rotating_kafka(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, old_password: str
) -> Iterator[KafkaCluster]:
    """PLAINTEXT, SASL_SSL (SCRAM-SHA-512) and MTLS listeners; the truststore can be rewritten."""
    properties = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(pki.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(pki.truststore),
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.mtls.ssl.client.auth": "required",
    }
    cluster = real_kafka(
        tmp_path_factory.mktemp("kafka-rotation"),
        listeners={"SASL_SSL": "SASL_SSL", "MTLS": "SSL"},
        properties=properties,
        format_args=["--add-scram", f"SCRAM-SHA-512=[name={USER},password={old_password}]"],
    )
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    sim = start_simulator(
        tmp_path_factory.mktemp("journal"), "--prefill", str(PREFILL), "--rate", str(LIVE_RATE)
    )
    yield sim
    sim.stop()


class Bridge:
    """One `pypi-bridge run` in the background, its output in a file, its /metrics on a port."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        with log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [*args, "--http-port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def committed(self) -> float:
        try:
            return metric(self.port, "pypi_bridge_committed_serial")
        except (OSError, urllib.error.URLError, AssertionError):
            return -1.0

    def wait_committed(self, serial: int, within: float, what: str) -> None:
        """Until everything up to `serial` is committed, or fail with the log."""
        wait_until(lambda: self.committed() >= serial, within, what, self)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_until(condition: Callable[[], bool], within: float, what: str, *logs: Bridge) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    shown = "\n".join(f"--- {b.log_path} ---\n{b.output()[-3000:]}" for b in logs)
    raise AssertionError(f"not within {within:.0f} s: {what}\n{shown}")


@dataclass
class Rotation:
    """What happened to the three bridges, recorded by the `rotation` fixture."""

    scram: Bridge
    mtls: Bridge
    stale: Bridge
    #: The journal's last serial once the live traffic stopped: what the audits cover.
    head: int
    #: Whether the two that carry on were still the same processes after the rotation.
    carried_on: dict[str, bool]
    statuses: dict[str, int]
    kafka: KafkaCluster
    journal: Simulator
    pki: Pki
    files: Path


@pytest.fixture(scope="module")
def rotation(
    rotating_kafka: KafkaCluster,
    journal: Simulator,
    pki: Pki,
    old_password: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rotation]:
    kafka = rotating_kafka
    files = tmp_path_factory.mktemp("mounted")
    password_file, stale_file = files / "password", files / "stale-password"
    for path in (password_file, stale_file):
        path.write_text(old_password + "\n", encoding="utf-8")
    cert, key = files / "tls.crt", files / "tls.key"
    shutil.copy(pki.original.cert, cert)
    shutil.copy(pki.original.key, key)
    scram = [
        "--security-protocol", "SASL_SSL", "--ssl-cafile", str(pki.ca),
        "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", USER,
    ]  # fmt: skip
    mtls = [
        "--security-protocol", "SSL", "--ssl-cafile", str(pki.ca),
        "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
    ]  # fmt: skip

    def run(listener: str, prefix: str, *flags: str) -> list[str]:
        return run_args(journal, kafka.listener(listener), prefix, "--start-serial", "0", *flags)

    logs = tmp_path_factory.mktemp("bridges")
    bridges = {
        "scram": Bridge(
            run("SASL_SSL", "scram", *scram, "--sasl-password-file", str(password_file)),
            logs / "scram.log",
        ),
        "mtls": Bridge(run("MTLS", "mtls", *mtls), logs / "mtls.log"),
        "stale": Bridge(
            run(
                "SASL_SSL",
                "stale",
                *scram,
                "--sasl-password-file",
                str(stale_file),
                "--credentials-grace",
                str(SHORT_GRACE),
                "--log-level",
                "WARNING",
            ),
            logs / "stale.log",
        ),
    }
    scram_bridge, mtls_bridge, stale_bridge = bridges.values()
    try:
        backfilled = journal.rows()[PREFILL - 1][4]
        for bridge in bridges.values():
            bridge.wait_committed(backfilled, 120, "the backfill")
        # The rotation: a new password on the broker (not yet in the file), a new certificate
        # from a new CA in the files (the certificate first), and the broker trusting only the
        # new CA from its restart on.
        new_password = secrets.token_hex(12)
        set_password(kafka, USER, new_password)
        shutil.copy(pki.renewed.cert, cert)
        time.sleep(0.5)
        shutil.copy(pki.renewed.key, key)
        shutil.copy(pki.next_ca, pki.truststore)
        node = kafka.nodes[0]
        kafka.kill(node, signal.SIGTERM)
        kafka.restart(node)
        wait_until(
            lambda: ROTATION_LINE in scram_bridge.output(),
            120,
            "the SCRAM bridge says that its password is rejected",
            scram_bridge,
        )
        # As the kubelet does when it syncs the Secret volume: the new password arrives.
        password_file.write_text(new_password + "\n", encoding="utf-8")
        restarted_at = journal.state()["last_serial"]
        for bridge in (scram_bridge, mtls_bridge):
            bridge.wait_committed(restarted_at + 1, 120, "publishing again after the rotation")
        journal.post("/_sim/rate", {"rate": 0})
        head = int(journal.state()["last_serial"])
        for bridge in (scram_bridge, mtls_bridge):
            bridge.wait_committed(head, 60, "caught up")
        # One process each, started once: still running means it never exited or restarted.
        carried_on = {"scram": scram_bridge.alive(), "mtls": mtls_bridge.alive()}
        wait_until(lambda: not stale_bridge.alive(), 60, "the stale bridge stops", stale_bridge)
        statuses = {name: bridge.stop() for name, bridge in bridges.items()}
        yield Rotation(
            scram_bridge,
            mtls_bridge,
            stale_bridge,
            head,
            carried_on,
            statuses,
            kafka,
            journal,
            pki,
            files,
        )
    finally:
        for bridge in bridges.values():
            bridge.stop()


def audit(rotation: Rotation, prefix: str) -> subprocess.CompletedProcess[str]:
    args = audit_args(
        rotation.journal,
        rotation.kafka.bootstrap_servers,
        prefix,
        "--strict",
        "--to-serial",
        str(rotation.head),
    )
    return subprocess.run(
        args, capture_output=True, text=True, timeout=180, env=child_env(), check=False
    )


# --- SCRAM: the password rotated on the broker first, in the file later ----------------------


def test_a_rejected_password_after_a_rotation_is_one_line_then_retried(
    rotation: Rotation,
) -> None:
    output = rotation.scram.output()
    lines = [line for line in output.splitlines() if ROTATION_LINE in line]
    assert len(lines) == 1, lines
    assert "rejected the SCRAM-SHA-512 login of user 'bridge'" in lines[0]
    assert "read again at each attempt" in lines[0]
    assert "Kafka accepts this replica's credentials again" in output


def test_the_scram_bridge_carries_on_in_the_same_process(rotation: Rotation) -> None:
    assert rotation.carried_on["scram"], rotation.scram.output()[-3000:]
    assert rotation.statuses["scram"] == 0, rotation.scram.output()[-3000:]
    assert "Traceback" not in rotation.scram.output()


def test_the_scram_bridge_published_every_entry_exactly_once(rotation: Rotation) -> None:
    audited = audit(rotation, "scram")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "CLEAN: every entry exactly once" in audited.stdout


# --- mutual TLS: a renewed certificate from a new CA, written in place ----------------------


def test_the_mtls_bridge_carries_on_with_the_renewed_certificate(rotation: Rotation) -> None:
    output = rotation.mtls.output()
    assert rotation.carried_on["mtls"], output[-3000:]
    assert rotation.statuses["mtls"] == 0, output[-3000:]
    assert "the Kafka credential files changed" in output
    assert "Traceback" not in output


def test_the_mtls_bridge_published_every_entry_exactly_once(rotation: Rotation) -> None:
    audited = audit(rotation, "mtls")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "CLEAN: every entry exactly once" in audited.stdout


def test_the_original_certificate_is_refused_after_the_rotation(rotation: Rotation) -> None:
    # Without this, the mTLS bridge would have proven nothing: the old files would have done.
    kafka = KafkaSettings(
        bootstrap_servers=rotation.kafka.listener("MTLS"),
        security_protocol="SSL",
        ssl_cafile=str(rotation.pki.ca),
        ssl_certfile=str(rotation.pki.original.cert),
        ssl_keyfile=str(rotation.pki.original.key),
    )
    refused = asyncio.run(refusal(kafka))
    assert isinstance(refused, CredentialsRejected), refused


# --- the rule's other half: unchanged files, rejected for the grace period --------------------


def test_unchanged_rejected_credentials_stop_the_bridge_after_the_grace(
    rotation: Rotation,
) -> None:
    output = rotation.stale.output()
    assert rotation.statuses["stale"] == 1, output[-3000:]
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert sum(ROTATION_LINE in line for line in lines) == 1, output[-3000:]
    last = lines[-1]
    assert last.startswith("pypi-bridge: error: "), last
    assert "rejected the SCRAM-SHA-512 login of user 'bridge'" in last
    assert "with unchanged credential files" in last
    assert "check --sasl-username and the password in --sasl-password-file" in last
