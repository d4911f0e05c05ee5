"""Security on a real Apache Kafka: SCRAM over TLS, mutual TLS, and least-privilege ACLs.

One KRaft node serves the whole module, with three listeners: PLAINTEXT (inter-broker traffic
and the tests' own admin client, both `User:ANONYMOUS`, a super user), SASL_SSL with
SCRAM-SHA-512 (its users are created when the storage is formatted), and MTLS (TLS with a client
certificate required; `ssl.principal.mapping.rules` makes the certificate's CN the principal).
The standard authorizer is on and allows nothing that no ACL grants. The certificates come from
the tests' own CA, made with openssl by tests.pki, plus one that expired in 2020.

Real processes all the way: the journal simulator, and `pypi-bridge run`, `consume` and `audit`,
each given its TLS and SASL settings by flags or by `PYPI_BRIDGE_*` variables. Each scenario works
under a topic prefix of its own and is granted that prefix's ACLs through the Admin API
(CreateAcls), so the scenarios share the broker but not their permissions; the commands that
need nothing but the broker are all started at once (`runs`), and each test checks one outcome.
`bridge_acls`, `consumer_acls` and `audit_acls` are the least-privilege sets the README
documents: together they are enough, and each ACL of the bridge's set is needed (the bridge
lacking any one of them stops with a line naming it).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shlex
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest

from tests.conftest import ROOT, Figures, real_kafka
from tests.pki import JANUARY_2020, KafkaPki, Leaf, kafka_pki
from tests.realkafka import KafkaCluster
from tests.support import (
    Simulator,
    audit_args,
    bridge_command,
    child_env,
    run_args,
    start_simulator,
)

#: Journal rows each backfill publishes (the simulator holds a few more).
ROWS = 2_000
#: The SCRAM users: the bridge, a read-only consumer (and auditor), and one with no topic ACL.
USERS = ("bridge", "reader", "newcomer")
BRIDGE, READER, NEWCOMER = (f"User:{name}" for name in USERS)
#: The bridge's client certificate; the broker's mapping rule makes its CN the principal.
TLS_CN = "pypi-bridge"
TLS_BRIDGE = f"User:{TLS_CN}"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


# --- the ACLs, as kafka-acls.sh names them ---------------------------------------------------


@dataclass(frozen=True)
class Acl:
    """One ALLOW ACL, for any host."""

    principal: str
    #: topic, group or transactional-id (the kafka-acls.sh flag without its dashes)
    resource: str
    name: str
    operation: str
    prefixed: bool = False

    def flags(self) -> str:
        """The ACL in kafka-acls.sh's words (principal aside), as the bridge's errors write it."""
        named = f"--operation {self.operation} --{self.resource} {self.name}"
        return f"{named} --resource-pattern-type prefixed" if self.prefixed else named


def bridge_acls(principal: str, prefix: str) -> list[Acl]:
    """What `pypi-bridge run` needs on a broker with transactions (Read and Write imply
    Describe; Create is only used for topics that do not exist yet)."""
    events, own = f"{prefix}.", f"{prefix}-bridge."
    return [
        Acl(principal, "topic", events, "Create", prefixed=True),
        Acl(principal, "topic", events, "Write", prefixed=True),
        Acl(principal, "topic", own, "Create", prefixed=True),
        Acl(principal, "topic", own, "Write", prefixed=True),
        Acl(principal, "topic", own, "Read", prefixed=True),
        Acl(principal, "group", own, "Read", prefixed=True),
        Acl(principal, "transactional-id", f"{prefix}-bridge", "Write"),
    ]


def consumer_acls(principal: str, prefix: str, group: str) -> list[Acl]:
    """What `pypi-bridge consume --group GROUP` needs (without --group, only the first)."""
    return [
        Acl(principal, "topic", f"{prefix}.", "Read", prefixed=True),
        Acl(principal, "group", group, "Read"),
    ]


def audit_acls(principal: str, prefix: str) -> list[Acl]:
    """What `pypi-bridge audit` needs: the event topics, and the checkpoint for the committed
    serial (not needed with --to-serial)."""
    return [
        Acl(principal, "topic", f"{prefix}.", "Read", prefixed=True),
        Acl(principal, "topic", f"{prefix}-bridge.checkpoint", "Read"),
    ]


# Kafka's wire codes (org.apache.kafka.common.acl and .resource).
_RESOURCE_TYPES = {"topic": 2, "group": 3, "transactional-id": 5}
_OPERATIONS = {"Read": 3, "Write": 4, "Create": 5}
_LITERAL, _PREFIXED, _ALLOW = 3, 4, 3


async def _create_acls(bootstrap: str, acls: Iterable[Acl]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for acl in acls:
            request = CreateAclsRequest(
                _RESOURCE_TYPES[acl.resource],
                acl.name,
                _PREFIXED if acl.prefixed else _LITERAL,
                acl.principal,
                "*",
                _OPERATIONS[acl.operation],
                _ALLOW,
            )
            response = await admin._send_request(request)
            refused = [(code, text) for code, text in response.creation_responses if code]
            assert not refused, f"CreateAcls {acl}: {refused}"
    finally:
        await admin.close()


def grant(kafka: KafkaCluster, acls: Iterable[Acl]) -> None:
    """Create the ACLs through the Admin API, as the super user on the PLAINTEXT listener."""
    asyncio.run(_create_acls(kafka.bootstrap_servers, acls))


# --- certificates, the broker and the journal ------------------------------------------------


@dataclass(frozen=True)
class Material:
    """Certificates, keys and password files."""

    pki: KafkaPki
    #: The broker's key and certificate in one PEM file (Kafka's PEM keystore).
    keystore: Path
    #: A client certificate from the test CA that was valid for one day in January 2020.
    expired: Leaf
    passwords: dict[str, str]
    password_files: dict[str, Path]
    wrong_password_file: Path


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    directory = tmp_path_factory.mktemp("pki")
    pki = kafka_pki(directory, TLS_CN)
    expired = pki.authority.issue("expired", TLS_CN, "clientAuth", period=JANUARY_2020)
    passwords = {user: secrets.token_hex(12) for user in USERS}
    files = {}
    for user, password in passwords.items():
        files[user] = directory / f"{user}-password"
        # As a Kubernetes Secret file usually is: with a trailing newline.
        files[user].write_text(password + "\n", encoding="utf-8")
    wrong = directory / "wrong-password"
    wrong.write_text("not-the-password\n", encoding="utf-8")
    return Material(
        pki=pki,
        keystore=pki.server.keystore(),
        expired=expired,
        passwords=passwords,
        password_files=files,
        wrong_password_file=wrong,
    )


@pytest.fixture(scope="module")
def secure_kafka(
    tmp_path_factory: pytest.TempPathFactory, material: Material
) -> Iterator[KafkaCluster]:
    """One Kafka node: PLAINTEXT (admin), SASL_SSL with SCRAM-SHA-512, and MTLS; ACLs enforced."""
    properties = {
        "authorizer.class.name": STANDARD_AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        # The broker itself and the tests' admin client come in on PLAINTEXT, as ANONYMOUS.
        "super.users": "User:ANONYMOUS",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(material.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(material.pki.ca),
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.mtls.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
    }
    users = []
    for user, password in material.passwords.items():
        users += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
    cluster = real_kafka(
        tmp_path_factory.mktemp("kafka-secure"),
        listeners={"SASL_SSL": "SASL_SSL", "MTLS": "SSL"},
        properties=properties,
        format_args=users,
    )
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    sim = start_simulator(
        tmp_path_factory.mktemp("journal"), "--prefill", str(ROWS + 500), "--rate", "0"
    )
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def serials(journal: Simulator) -> list[int]:
    """The serials of the rows a backfill publishes, in journal order."""
    return [row[4] for row in journal.rows()[:ROWS]]


# --- running the commands --------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What every command of the module is aimed at."""

    kafka: KafkaCluster
    material: Material
    journal: Simulator
    #: The serials a backfill publishes, in journal order.
    serials: list[int]

    def listener(self, name: str) -> str:
        return self.kafka.listener(name)


@pytest.fixture(scope="module")
def context(
    secure_kafka: KafkaCluster, material: Material, journal: Simulator, serials: list[int]
) -> Context:
    return Context(secure_kafka, material, journal, serials)


@dataclass(frozen=True)
class Outcome:
    status: int
    stdout: str
    stderr: str
    #: From the start of the process to its exit.
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Launched:
    """A command started in the background, its output in files; `outcome()` waits for it."""

    def __init__(
        self, args: list[str], directory: Path, environ: Mapping[str, str] | None = None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.stdout, self.stderr = directory / "stdout", directory / "stderr"
        self.started = time.monotonic()
        self.ended: float | None = None
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                args,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**child_env(), **(environ or {})},
                cwd=ROOT,
            )
        # Notes the exit as it happens, however late the test asks.
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        self.process.wait()
        self.ended = time.monotonic()

    def outcome(self, timeout: float = 240.0) -> Outcome:
        self._watcher.join(timeout)
        if self.ended is None:
            self.stop()
            raise AssertionError(
                f"still running after {timeout:.0f} s (retrying for ever?):\n"
                + self.stderr.read_text(errors="replace")[-3000:]
            )
        return Outcome(
            self.process.returncode,
            self.stdout.read_text(errors="replace"),
            self.stderr.read_text(errors="replace"),
            self.ended - self.started,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def pypi_bridge(
    args: list[str], directory: Path, environ: Mapping[str, str] | None = None
) -> Outcome:
    """Run one command to its end; `environ` adds PYPI_BRIDGE_* variables."""
    return Launched(args, directory, environ).outcome()


@dataclass(frozen=True)
class Plan:
    """One command the module runs: the ACLs granted before, its arguments, its variables."""

    acls: list[Acl]
    args: list[str]
    environ: dict[str, str] = field(default_factory=dict)


class Runs:
    """The commands started together; `runs[key]` waits for one and returns its outcome."""

    def __init__(self, launched: dict[str, Launched]) -> None:
        self.launched = launched

    def __getitem__(self, key: str) -> Outcome:
        return self.launched[key].outcome()


@pytest.fixture(scope="module")
def runs(context: Context, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Every command below that needs only the broker, started at once; each test checks one.

    Interpreter and broker start-up costs dominate these runs; overlapping them keeps the module
    within its time budget. Their topic prefixes (and so their ACLs) keep them apart.
    """
    plans = {**backfill_plans(context), **refusal_plans(context), **lacking_plans(context)}
    grant(context.kafka, [acl for plan in plans.values() for acl in plan.acls])
    directory = tmp_path_factory.mktemp("runs")
    launched = {
        key: Launched(plan.args, directory / key, plan.environ) for key, plan in plans.items()
    }
    yield Runs(launched)
    for each in launched.values():
        each.stop()


def scram_flags(
    material: Material, user: str, *, password_file: Path | None = None, cafile: Path | None = None
) -> list[str]:
    return [
        "--security-protocol", "SASL_SSL", "--ssl-cafile", str(cafile or material.pki.ca),
        "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", user,
        "--sasl-password-file", str(password_file or material.password_files[user]),
    ]  # fmt: skip


def scram_environment(material: Material, user: str) -> dict[str, str]:
    return {
        "PYPI_BRIDGE_SECURITY_PROTOCOL": "SASL_SSL",
        "PYPI_BRIDGE_SSL_CAFILE": str(material.pki.ca),
        "PYPI_BRIDGE_SASL_MECHANISM": "SCRAM-SHA-512",
        "PYPI_BRIDGE_SASL_USERNAME": user,
        "PYPI_BRIDGE_SASL_PASSWORD_FILE": str(material.password_files[user]),
    }


def backfill(context: Context, listener: str, prefix: str, *flags: str) -> list[str]:
    """`pypi-bridge run` from the journal's start to its ROWS-th row, then exit."""
    stop = str(context.serials[-1])
    return run_args(
        context.journal,
        context.listener(listener),
        prefix,
        *flags,
        "--start-serial",
        "0",
        "--stop-at-serial",
        stop,
    )


def consume_args(bootstrap: str, prefix: str, *extra: str) -> list[str]:
    return bridge_command(
        "consume", "--bootstrap-servers", bootstrap, "--topic-prefix", prefix, *extra
    )


def audit_as_reader(context: Context, prefix: str, directory: Path) -> Outcome:
    args = audit_args(context.journal, context.listener("SASL_SSL"), prefix, "--strict")
    return pypi_bridge([*args, *scram_flags(context.material, "reader")], directory)


def one_error_line(outcome: Outcome) -> str:
    """The failure is exit status 1 and one line on stderr, `pypi-bridge: error: ...`."""
    assert outcome.status == 1, outcome.output[-3000:]
    assert "Traceback" not in outcome.output, outcome.output[-3000:]
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1, outcome.stderr[-3000:]
    assert lines[0].startswith("pypi-bridge: error: "), lines[0]
    return lines[0]


# --- it works, with the least privilege ------------------------------------------------------


def backfill_plans(context: Context) -> dict[str, Plan]:
    """Over SCRAM as `User:bridge` (flags), and over mutual TLS as the certificate's CN
    (PYPI_BRIDGE_* variables, the key encrypted): each holding only the bridge's ACLs. The
    reader holds the consumer's and the auditor's."""
    tls = {
        "PYPI_BRIDGE_SECURITY_PROTOCOL": "SSL",
        "PYPI_BRIDGE_SSL_CAFILE": str(context.material.pki.ca),
        "PYPI_BRIDGE_SSL_CERTFILE": str(context.material.pki.client.cert),
        "PYPI_BRIDGE_SSL_KEYFILE": str(context.material.pki.client_key_encrypted),
        "PYPI_BRIDGE_SSL_KEY_PASSWORD_FILE": str(context.material.pki.key_password_file),
    }
    return {
        "backfill-scram": Plan(
            [
                *bridge_acls(BRIDGE, "scram"),
                *consumer_acls(READER, "scram", "reader"),
                *audit_acls(READER, "scram"),
            ],
            [*backfill(context, "SASL_SSL", "scram"), *scram_flags(context.material, "bridge")],
        ),
        "backfill-mtls": Plan(
            [*bridge_acls(TLS_BRIDGE, "mtls"), *audit_acls(READER, "mtls")],
            backfill(context, "MTLS", "mtls"),
            tls,
        ),
    }


def test_bridge_backfills_over_scram_with_only_its_acls_and_the_audit_is_clean(
    runs: Runs, context: Context, tmp_path: Path, figures: Figures
) -> None:
    ran = runs["backfill-scram"]
    assert ran.status == 0, ran.output[-3000:]
    assert "delivery mode: transactional" in ran.output
    audited = audit_as_reader(context, "scram", tmp_path)
    assert audited.status == 0, audited.output[-3000:]
    assert f"{ROWS} journal entries, {ROWS} records read" in audited.stdout
    assert "CLEAN: every entry exactly once" in audited.stdout
    figures.add(
        f"{ROWS}-row backfill over SASL_SSL (SCRAM-SHA-512), least-privilege ACLs, "
        f"started with the module's other {len(runs.launched) - 1} commands",
        f"{ran.seconds:.1f} s from process start to exit; audit --strict {audited.seconds:.1f} s",
    )


def test_bridge_backfills_over_mutual_tls_set_by_environment_variables(
    runs: Runs, context: Context, tmp_path: Path, figures: Figures
) -> None:
    ran = runs["backfill-mtls"]
    assert ran.status == 0, ran.output[-3000:]
    assert "delivery mode: transactional" in ran.output
    audited = audit_as_reader(context, "mtls", tmp_path)
    assert audited.status == 0, audited.output[-3000:]
    assert f"{ROWS} journal entries, {ROWS} records read" in audited.stdout
    figures.add(
        f"{ROWS}-row backfill over mutual TLS, started with the others", f"{ran.seconds:.1f} s"
    )


def test_read_only_consumer_gets_every_event_with_read_acls_only(
    runs: Runs, context: Context, tmp_path: Path
) -> None:
    assert runs["backfill-scram"].status == 0
    args = consume_args(
        context.listener("SASL_SSL"),
        "scram",
        "--group", "reader", "--from-beginning", "--max-events", str(ROWS), "--timeout", "20",
    )  # fmt: skip
    consumed = pypi_bridge(args, tmp_path, scram_environment(context.material, "reader"))
    assert consumed.status == 0, consumed.output[-3000:]
    events = [orjson.loads(line) for line in consumed.stdout.splitlines()]
    assert sorted(event["serial"] for event in events) == context.serials


# --- refused: one line that names the problem and the fix, exit status 1 ---------------------

COMMANDS = ("run", "consume", "audit")


def command(name: str, context: Context, listener: str, *flags: str) -> list[str]:
    """`name` aimed at `listener` with `flags`; `run` logs warnings and errors only."""
    prefix, bootstrap = "refused", context.listener(listener)
    if name == "run":
        return [*backfill(context, listener, prefix, *flags), "--log-level", "WARNING"]
    if name == "consume":
        return consume_args(bootstrap, prefix, "--max-events", "1", "--timeout", "10", *flags)
    return audit_args(context.journal, bootstrap, prefix, "--strict", *flags)


def refusal_plans(context: Context) -> dict[str, Plan]:
    """Each command, refused each way: a wrong password, an untrusted broker, an expired
    client certificate."""
    material = context.material
    expired = [
        "--security-protocol", "SSL", "--ssl-cafile", str(material.pki.ca),
        "--ssl-certfile", str(material.expired.cert), "--ssl-keyfile", str(material.expired.key),
    ]  # fmt: skip
    wrong = scram_flags(material, "bridge", password_file=material.wrong_password_file)
    ways = {
        "wrong-password": ("SASL_SSL", wrong),
        "untrusted-ca": ("SASL_SSL", scram_flags(material, "bridge", cafile=material.pki.other_ca)),
        "expired-certificate": ("MTLS", expired),
    }
    return {
        f"refused-{way}-{name}": Plan([], command(name, context, listener, *flags))
        for way, (listener, flags) in ways.items()
        for name in COMMANDS
    }


@pytest.mark.parametrize("name", COMMANDS)
def test_a_wrong_scram_password_is_one_line_naming_the_fix(name: str, runs: Runs) -> None:
    line = one_error_line(runs[f"refused-wrong-password-{name}"])
    assert "rejected the SCRAM-SHA-512 login of user 'bridge'" in line
    assert "invalid credentials" in line  # the broker's own words
    assert "check --sasl-username and the password in --sasl-password-file" in line


@pytest.mark.parametrize("name", COMMANDS)
def test_a_broker_certificate_from_an_untrusted_ca_is_one_line_naming_the_fix(
    name: str, runs: Runs
) -> None:
    line = one_error_line(runs[f"refused-untrusted-ca-{name}"])
    assert "is not trusted: unable to get local issuer certificate" in line
    assert "pass --ssl-cafile with the CA (PEM) that signed the brokers' certificates" in line


@pytest.mark.parametrize("name", COMMANDS)
def test_an_expired_client_certificate_is_one_line_naming_the_fix(
    name: str, runs: Runs, context: Context
) -> None:
    line = one_error_line(runs[f"refused-expired-certificate-{name}"])
    # The broker's TLS alert says only "certificate unknown"; the bridge reads the dates itself.
    assert f"refused the client certificate {context.material.expired.cert}" in line
    assert "it expired on 2020-01-02 00:00:00 UTC" in line
    assert "renew it" in line


# --- every ACL of the bridge's set is needed --------------------------------------------------

#: The bridge's ACLs, in the order of `bridge_acls`.
BRIDGE_ACL_IDS = (
    "create-event-topics",
    "write-event-topics",
    "create-own-topics",
    "write-own-topics",
    "read-own-topics",
    "read-leader-group",
    "write-transactional-id",
)


def lacking_acl(missing: str) -> tuple[str, Acl]:
    """The prefix of the run that lacks one of the bridge's ACLs, and the ACL it lacks."""
    prefix = f"lacks-{BRIDGE_ACL_IDS.index(missing)}"
    return prefix, bridge_acls(BRIDGE, prefix)[BRIDGE_ACL_IDS.index(missing)]


def lacking_plans(context: Context) -> dict[str, Plan]:
    """A backfill as `User:bridge` for each ACL of its set: holding all of them but that one."""
    plans = {}
    for missing in BRIDGE_ACL_IDS:
        prefix, lacking = lacking_acl(missing)
        acls = [acl for acl in bridge_acls(BRIDGE, prefix) if acl != lacking]
        args = [*backfill(context, "SASL_SSL", prefix), "--log-level", "WARNING"]
        plans[f"lacking-{missing}"] = Plan(acls, [*args, *scram_flags(context.material, "bridge")])
    return plans


@pytest.mark.parametrize("missing", BRIDGE_ACL_IDS)
def test_the_bridge_lacking_one_of_its_acls_stops_with_a_line_naming_it(
    missing: str, runs: Runs
) -> None:
    line = one_error_line(runs[f"lacking-{missing}"])
    _, lacking = lacking_acl(missing)
    kind = lacking.resource.replace("-", " ")
    assert f"denies {BRIDGE} {lacking.operation} on {kind} {lacking.name}" in line
    assert f"kafka-acls.sh --add --allow-principal {BRIDGE} {lacking.flags()})" in line


def test_a_consumer_lacking_read_on_the_event_topics_is_told_the_acl_to_grant(
    context: Context, tmp_path: Path
) -> None:
    # Its group, but not the topics.
    grant(context.kafka, consumer_acls(NEWCOMER, "scram", "newcomer")[1:])
    args = consume_args(context.listener("SASL_SSL"), "scram", "--group", "newcomer")
    refused = pypi_bridge(
        [*args, "--timeout", "10", *scram_flags(context.material, "newcomer")], tmp_path
    )
    line = one_error_line(refused)
    assert f"denies {NEWCOMER} Read on topic scram." in line
    topics = consumer_acls(NEWCOMER, "scram", "newcomer")[0]
    assert f"--allow-principal {NEWCOMER} {topics.flags()})" in line


def test_a_consumer_lacking_read_on_its_group_is_told_the_acl_to_grant(
    runs: Runs, context: Context, tmp_path: Path
) -> None:
    assert runs["backfill-scram"].status == 0  # the reader's ACLs are granted by then
    args = consume_args(context.listener("SASL_SSL"), "scram", "--group", "not-granted")
    refused = pypi_bridge(
        [*args, "--timeout", "10", *scram_flags(context.material, "reader")], tmp_path
    )
    line = one_error_line(refused)
    assert f"denies {READER} Read on group not-granted" in line
    assert f"--allow-principal {READER} --operation Read --group not-granted)" in line


# --- the README documents exactly these sets -------------------------------------------------


def _documented_acls() -> set[Acl]:
    """Every ACL the README's kafka-acls.sh commands grant."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### ACLs for the bridge and its consumers", 1)[1]
    section = re.split(r"^##+ ", section, maxsplit=1, flags=re.M)[0]
    found: set[Acl] = set()
    for command_text in re.findall(r"^kafka-acls\.sh .*?(?<!\\)$", section, re.M | re.S):
        words = shlex.split(command_text.replace("\\\n", " "))
        principal = words[words.index("--allow-principal") + 1]
        prefixed = "--resource-pattern-type" in words
        resource = next(w[2:] for w in words if w in ("--topic", "--group", "--transactional-id"))
        name = words[words.index(f"--{resource}") + 1]
        for at, word in enumerate(words):
            if word == "--operation":
                found.add(Acl(principal, resource, name, words[at + 1], prefixed))
    return found


def test_the_readme_grants_exactly_the_acls_proven_here() -> None:
    proven = {
        *bridge_acls(BRIDGE, "pypi"),
        *consumer_acls(READER, "pypi", "reader"),
        *audit_acls(READER, "pypi"),
    }
    assert _documented_acls() == proven
