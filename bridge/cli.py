"""Command line: argparse subcommands, then a single `asyncio.run(...)`.

Expected failures print one line (`pypi-bridge: error: problem; fix`) and exit non-zero, never a
traceback: 2 for a bad flag or variable, 1 for anything else the bridge reports on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from bridge import __version__, credentials
from bridge.config import (
    KAFKA_FLAGS,
    RUN_FLAGS,
    Flag,
    KafkaSettings,
    _EnvDefaultsParser,
    add_flags,
    boolean,
    choice,
    environment,
    kafka_settings,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
    run_settings,
    source_settings,
    topic_prefix,
    without_password,
)
from bridge.errors import BridgeError, ConfigError

log = logging.getLogger("bridge")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
log_level = choice(*_LOG_LEVELS)


def _point_in_time(text: str) -> float:
    from bridge.consumer import parse_time

    return parse_time(text)


CONSUME_FLAGS = (
    *KAFKA_FLAGS,
    Flag("topic-prefix", topic_prefix, "pypi", "topics are named {prefix}.{event type}"),
    Flag("type", str, None, "event type or glob (repeatable), e.g. release.* ", repeatable=True),
    Flag(
        "from-beginning", boolean, False, "start at the oldest event (new groups)", is_switch=True
    ),
    Flag("from-serial", non_negative_int, None, "start after this journal serial"),
    Flag(
        "from-time",
        _point_in_time,
        None,
        "start at this journal time (RFC 3339 such as 2026-12-03T12:00:00Z, or POSIX seconds)",
    ),
    Flag(
        "until-caught-up",
        boolean,
        False,
        "exit 0 once everything up to the newest watermark at start is printed",
        is_switch=True,
    ),
    Flag(
        "ordered", boolean, False, "print in serial order across the chosen types", is_switch=True
    ),
    Flag(
        "project",
        str,
        None,
        "only this project's events (repeatable, any spelling)",
        repeatable=True,
    ),
    Flag("max-events", positive_int, None, "exit after printing this many events"),
    Flag("timeout", positive_float, None, "exit after this many seconds without a new event"),
    Flag("group", str, None, "consumer group: resume where it left off, commit as it goes"),
    Flag("log-level", log_level, "WARNING", "log verbosity"),
)
BROKER_FLAGS = (
    Flag("host", str, "127.0.0.1", "address to listen on"),
    Flag("port", port, 9092, "port to listen on (0 picks a free one)"),
    Flag("log-level", log_level, "INFO", "log verbosity"),
)
DEMO_FLAGS = (
    Flag("rate", non_negative_float, 20.0, "simulated journal rows per second"),
    Flag("prefill", positive_int, 5000, "journal rows that exist before the bridge starts"),
    Flag("duration", positive_float, None, "stop after this many seconds (default: until Ctrl-C)"),
    Flag("http-port", port, 9300, "port for /metrics, /healthz, /readyz (0 picks a free one)"),
    Flag("seed", int, 2026, "simulator seed"),
    Flag("log-level", log_level, "WARNING", "log verbosity"),
)


def _simulate_flags() -> tuple[Flag, ...]:
    from bridge.simulator import SIMULATE_FLAGS

    return (*SIMULATE_FLAGS, Flag("log-level", log_level, "INFO", "log verbosity"))


def _audit_flags() -> tuple[Flag, ...]:
    from bridge.audit import AUDIT_FLAGS

    return AUDIT_FLAGS


COMMANDS: dict[str, tuple[str, Callable[[], Sequence[Flag]]]] = {
    "run": ("the bridge: tail PyPI's journal into Kafka", lambda: RUN_FLAGS),
    "demo": ("everything on this machine, with a live view of events by type", lambda: DEMO_FLAGS),
    "consume": ("print events as JSON Lines", lambda: CONSUME_FLAGS),
    "simulate": ("a PyPI journal simulator speaking the real XML-RPC protocol", _simulate_flags),
    "broker": ("the embedded Kafka-protocol broker in the foreground", lambda: BROKER_FLAGS),
    "audit": ("check a serial range of the topics against the source", _audit_flags),
}


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _EnvDefaultsParser(
        prog="pypi-bridge",
        description="PyPI's journal as a typed, exactly-once event stream on Apache Kafka. "
        "Every flag also reads PYPI_BRIDGE_<FLAG>.",
    )
    parser.add_argument("--version", action="version", version=f"pypi-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_EnvDefaultsParser)
    for name, (summary, flags) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=summary)
        add_flags(command, flags(), environ)
    return parser


#: A SASL exchange as aiokafka logs every request and response at DEBUG: PLAIN's bytes are
#: "user\0user\0password", SCRAM's carry the salt and the client proof.
_SASL_BYTES = re.compile(r"""(sasl_auth_bytes=)b?('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
#: A SCRAM client-final message wherever it appears (RFC 5802: channel binding, nonce, proof).
_SCRAM_FINAL = re.compile(r"(c=[A-Za-z0-9+/=]*,r=[^,\s'\"]*,p=)[A-Za-z0-9+/=]*")
REDACTED = "<redacted>"


class RedactSecrets(logging.Filter):
    """Rewrite every log line that would show a Kafka credential; installed by `setup_logging`.

    At DEBUG aiokafka logs each request it sends, the SASL ones included, so a PLAIN login
    would put the password in the log (tests/test_hardening_cli.py proves it no longer does,
    on a real Kafka). Installed on the handler, the filter sees every logger's records: the
    SASL bytes and any SCRAM client-final message are replaced, and so is each configured
    secret (as text, and as it shows inside a bytes or str repr), and each one read from a file
    later (bridge/credentials.py tells it of a rotated password). So is the password of any
    URL (`http://user:password@proxy:3128`): a proxy's, or a mirror's in `--pypi-url`.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self._forms: set[str] = set()
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Redact `secret` from now on too (a password read again after a rotation)."""
        if not secret:
            return
        forms = {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]}
        if forms <= self._forms:
            return
        self._forms |= forms
        # Longest first, so that no shorter form leaves part of a longer one behind. A new
        # list, not an edit of the one a logging thread may be reading.
        self._secrets = sorted(self._forms, key=len, reverse=True)

    def redact(self, text: str) -> str:
        text = without_password(text)
        text = _SASL_BYTES.sub(rf"\g<1>{REDACTED}", text)
        text = _SCRAM_FINAL.sub(rf"\g<1>{REDACTED}", text)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True  # a malformed record: logging reports it as such, with no arguments
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redact(text)
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(level: str, fmt: str = "text", secrets: Iterable[str | None] = ()) -> None:
    """Log to stderr as text or JSON lines, every line passed through `RedactSecrets`."""
    handler = logging.StreamHandler(sys.stderr)
    redactor = RedactSecrets(secrets)
    handler.addFilter(redactor)
    credentials.on_secret(redactor.add)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    if level.upper() not in _LOG_LEVELS:
        raise ConfigError(
            f"--log-level {level!r} is not a log level", f"use one of {', '.join(_LOG_LEVELS)}"
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every reconnect attempt, hundreds a second during an outage; the bridge's
    # own lines say what matters (unreachable, back again, recovering). DEBUG shows them all.
    if root.level > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _quiet_kafka_leftovers(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Keep aiokafka's orphaned futures out of the log; everything else as asyncio would.

    When a real Kafka fences the producer (or a broker goes away), aiokafka's sender fails
    several of its internal requests at once but hands only one error to the bridge; the others
    end as "Future exception was never retrieved" with a traceback. The bridge has already
    reported the cause in one line, so these go to DEBUG.
    """
    error = context.get("exception")
    if isinstance(error, KafkaError) and "never retrieved" in str(context.get("message", "")):
        log.debug("aiokafka left an unobserved error behind: %r", error)
        return
    loop.default_exception_handler(context)


def run_until_signalled(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run `main(stop)`; SIGTERM and SIGINT set `stop` for a graceful shutdown."""

    async def wrapper() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.set_exception_handler(_quiet_kafka_leftovers)
        return await main(stop)

    return asyncio.run(wrapper())


# --- the commands -------------------------------------------------------------------------------


def _secrets(kafka: KafkaSettings) -> tuple[str | None, ...]:
    """What the log must never show of these Kafka settings."""
    return (kafka.sasl_password, kafka.ssl_key_password)


def _note_ignored_environment(ns: argparse.Namespace) -> None:
    """One DEBUG line naming the PYPI_BRIDGE_* variables this command does not read."""
    ignored = getattr(ns, "ignored_environment", ())
    if ignored:
        log.debug(
            "ignoring %s: not variables of pypi-bridge %s (another command's, or Kubernetes' "
            "service links)",
            ", ".join(ignored),
            ns.command,
        )


def cmd_run(ns: argparse.Namespace) -> int:
    from bridge.service import Replica

    settings = run_settings(ns)
    secrets = (*_secrets(settings.kafka), *settings.source.secrets())
    setup_logging(settings.log_level, settings.log_format, secrets)
    _note_ignored_environment(ns)
    log.info("pypi-bridge %s starting as replica %s", __version__, settings.replica_id)
    return run_until_signalled(Replica(settings).run)


def cmd_broker(ns: argparse.Namespace) -> int:
    from bridge.broker import start_broker

    setup_logging(ns.log_level)
    broker = start_broker(ns.port, host=ns.host)
    print(f"embedded broker listening; bootstrap servers: {broker.bootstrap_servers}", flush=True)
    print("memory only: all data is lost when it stops. Ctrl-C to stop.", flush=True)

    async def wait(stop: asyncio.Event) -> int:
        while not stop.is_set():
            if broker.process.poll() is not None:
                raise BridgeError(f"the embedded broker exited ({broker.process.returncode})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        return 0

    try:
        return run_until_signalled(wait)
    finally:
        broker.stop()


def cmd_simulate(ns: argparse.Namespace) -> int:
    from bridge.simulator import serve, simulator_settings

    setup_logging(ns.log_level)
    settings = simulator_settings(ns)

    def ready(url: str) -> None:
        print(url, flush=True)

    async def main(stop: asyncio.Event) -> int:
        server = asyncio.create_task(serve(settings, on_ready=ready))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        return 0

    return run_until_signalled(main)


def cmd_consume(ns: argparse.Namespace) -> int:
    from bridge.consumer import EventStream, resolve_types

    kafka = kafka_settings(ns)
    setup_logging(ns.log_level, secrets=_secrets(kafka))
    _note_ignored_environment(ns)
    if kafka.bootstrap_servers is None:
        raise ConfigError("consume needs a broker", "pass --bootstrap-servers host:port")
    types = resolve_types(ns.type or ["*"])
    out = sys.stdout.buffer

    async def main(stop: asyncio.Event) -> int:
        printed = 0
        async with EventStream(
            kafka,
            types,
            prefix=ns.topic_prefix,
            group=ns.group,
            from_beginning=ns.from_beginning,
            from_serial=ns.from_serial,
            from_time=ns.from_time,
            until_caught_up=ns.until_caught_up,
            ordered=ns.ordered,
            projects=ns.project or (),
        ) as stream:
            # Joining a group takes seconds: the quiet time counts from when the stream is ready.
            last_event = time.monotonic()
            while not stop.is_set() and not stream.finished:
                if ns.max_events is not None and printed >= ns.max_events:
                    break
                if ns.timeout is not None and time.monotonic() - last_event >= ns.timeout:
                    break
                event = await stream.get(0.5)
                if event is None:
                    continue
                out.write(orjson.dumps(event) + b"\n")
                out.flush()
                printed += 1
                last_event = time.monotonic()
        return 0

    return run_until_signalled(main)


def cmd_demo(ns: argparse.Namespace) -> int:
    from bridge.demo import run_demo

    setup_logging(ns.log_level)
    return run_until_signalled(lambda stop: run_demo(ns, stop))


def cmd_audit(ns: argparse.Namespace) -> int:
    from bridge.audit import run_audit

    secrets = (*_secrets(kafka_settings(ns)), *source_settings(ns).secrets())
    setup_logging(ns.log_level, secrets=secrets)
    _note_ignored_environment(ns)
    return run_until_signalled(lambda stop: run_audit(ns, stop))


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "demo": cmd_demo,
    "consume": cmd_consume,
    "simulate": cmd_simulate,
    "broker": cmd_broker,
    "audit": cmd_audit,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `pypi-bridge` and `python -m bridge`."""
    try:
        ns = build_parser(environment()).parse_args(argv)
        return HANDLERS[ns.command](ns)
    # Printed, not logged, so without the log filter: a URL's password is redacted here too.
    except ConfigError as exc:
        print(f"pypi-bridge: error: {without_password(str(exc))}", file=sys.stderr)
        return 2
    except BridgeError as exc:
        print(f"pypi-bridge: error: {without_password(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
