"""Settings: one typed object per concern, built once from flags and `PYPI_BRIDGE_*` variables.

Every flag of every command is declared here, in `FLAGS`, with its type, default and help.
The command line is generated from that table, and each flag also reads its default from the
environment variable `PYPI_BRIDGE_<FLAG>` (upper case, dashes to underscores). Nothing else in
the package reads the environment: settings are validated here and passed down.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import re
import socket
import ssl
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bridge.credentials import Credentials, Sources, credentials_for
from bridge.errors import ConfigError

ENV_PREFIX = "PYPI_BRIDGE_"
DEFAULT_PYPI_URL = "https://pypi.org/pypi"
DeliveryMode = Literal["auto", "transactional", "high-water"]
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TOPIC_PREFIX_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
#: C0 and C1 control characters and DEL: CR and LF would split a header or a log line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


# --- value parsers: each raises ValueError with a message that names what is expected -------

#: Longest interval or time-out `run` takes (one day): a longer one is a typo, and `inf` or
#: `1e300` would overflow the event loop's and the clients' time arithmetic.
MAX_SECONDS = 86_400.0
#: The leader session's bounds: Kafka's default group.max.session.timeout.ms is 30 minutes (a
#: default broker refuses more), and below a second heartbeats could not keep up.
MIN_SESSION_TIMEOUT, MAX_SESSION_TIMEOUT = 1.0, 1_800.0
#: Partitions per event topic. The bridge creates 30 such topics, so the bound already means
#: 300,000 partitions, more than a cluster is sized for; the Helm chart has the same bound.
MAX_PARTITIONS = 10_000
#: Kafka's wire limit of a topic's replication factor (int16); a broker refuses more replicas
#: than it has brokers, which the bridge reports at start.
MAX_REPLICATION_FACTOR = 32_767
#: Journal serials travel as XML-RPC <int>: 32 bits (PyPI is at about 41 million).
MAX_SERIAL = 2**31 - 1
#: Most journal rows per commit (the Helm chart's bound; PyPI pages hold at most 50,000 rows).
MAX_BATCH_SIZE = 10_000_000
#: Longest --contact: it is sent in every request's User-Agent.
MAX_CONTACT_LENGTH = 200


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise ValueError("expected a number of seconds, 0 or more")
    return value


def seconds(low: float, high: float, *, zero: bool = False) -> Callable[[str], float]:
    """A number of seconds from `low` (excluded when 0 unless `zero`) to `high`."""
    shown = f"from {low:g} to {high:g}" if low or zero else f"greater than 0 and at most {high:g}"

    def parse(text: str) -> float:
        try:
            value = _number(text)
        except ValueError:
            value = math.nan
        if not (low <= value <= high and (value > 0 or zero)):
            raise ValueError(f"expected a number of seconds {shown}")
        return value

    parse.__name__ = "seconds"
    return parse


def _whole(text: str, low: int, high: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(expected) from None
    if not low <= value <= high:
        raise ValueError(expected)
    return value


def positive_int(text: str) -> int:
    value = _whole(text, 1, 2**63 - 1, "expected a whole number of at least 1")
    if value < 1:
        raise ValueError("expected a whole number of at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = _whole(text, 0, 2**63 - 1, "expected a whole number, 0 or more")
    if value < 0:
        raise ValueError("expected a whole number, 0 or more")
    return value


def partitions(text: str) -> int:
    return _whole(text, 1, MAX_PARTITIONS, f"expected a whole number from 1 to {MAX_PARTITIONS}")


def batch_size(text: str) -> int:
    return _whole(text, 1, MAX_BATCH_SIZE, f"expected a whole number from 1 to {MAX_BATCH_SIZE}")


def serial(text: str) -> int:
    """A journal serial, 0 to 2**31 - 1."""
    return _whole(text, 0, MAX_SERIAL, f"expected a serial from 0 to {MAX_SERIAL}")


def port(text: str) -> int:
    return _whole(text, 0, 65535, "expected a TCP port from 0 to 65535 (0 picks a free one)")


def replication_factor(text: str) -> int:
    expected = (
        f"expected a whole number from 1 to {MAX_REPLICATION_FACTOR}, or -1 for the broker's "
        "default"
    )
    value = _whole(text, -1, MAX_REPLICATION_FACTOR, expected)
    if value == 0:
        raise ValueError(expected)
    return value


def start_serial(text: str) -> int | None:
    """A serial to start after, or `latest` (None): begin at the journal's head."""
    if text.strip().lower() == "latest":
        return None
    return _whole(text, 0, MAX_SERIAL, f"expected a serial (0 to {MAX_SERIAL}) or 'latest'")


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def http_url(text: str) -> str:
    expected = "expected an http:// or https:// URL"
    if not re.match(r"^https?://[^/\s]+", text) or _CONTROL.search(text) or " " in text:
        raise ValueError(expected)
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"{expected} with a valid host and port") from None
    if not parts.hostname:
        raise ValueError(f"{expected} with a host name")
    return text.rstrip("/")


def plain_text(text: str) -> str:
    """Text without control characters (it ends up in headers, logs and metric labels)."""
    if _CONTROL.search(text):
        raise ValueError("control characters (such as CR, LF or TAB) are not allowed")
    return text


def contact(text: str) -> str:
    """The operator's contact: sent in the User-Agent header of every request to PyPI."""
    if _CONTROL.search(text):
        raise ValueError(
            "control characters (such as CR, LF or TAB) are not allowed in a User-Agent header"
        )
    if len(text) > MAX_CONTACT_LENGTH:
        raise ValueError(f"expected at most {MAX_CONTACT_LENGTH} characters")
    return text


def bootstrap_servers(text: str) -> str:
    """`host:port[,host:port]` (`[v6]:port` for IPv6; without a port, Kafka's 9092)."""
    expected = "expected host:port[,host:port] ([v6]:port for IPv6)"
    if not text.strip():
        raise ValueError(f"{expected}; leave the flag out to start the embedded broker")
    entries = [entry.strip() for entry in text.split(",")]
    for entry in entries:
        problem = _server_problem(entry)
        if problem:
            where = f" in {entry!r}" if len(entries) > 1 and entry else ""
            raise ValueError(f"{problem}{where}; {expected}")
    return text.strip()


def _server_problem(entry: str) -> str | None:
    """What is wrong with one `host:port` of a bootstrap list, if anything."""
    if not entry:
        return "an empty entry"
    if _CONTROL.search(entry) or " " in entry:
        return "a space or a control character"
    number: str | None
    if entry.startswith("["):
        found = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", entry)
        if found is None:
            return "an unclosed '['"
        host, number = found.group(1), found.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
    elif entry.count(":") > 1:
        try:
            ipaddress.IPv6Address(entry)  # a bare IPv6 address, on Kafka's default port
        except ValueError:
            return "neither host:port nor an IPv6 address"
        return None
    else:
        host, colon, rest = entry.partition(":")
        number = rest if colon else None
        if not host:
            return "no host"
    if number is not None and not (
        number.isascii() and number.isdigit() and 1 <= int(number) <= 65535
    ):
        return f"port {number!r} is not a number from 1 to 65535"
    return None


def topic_prefix(text: str) -> str:
    if not _TOPIC_PREFIX_RE.match(text) or len(text) > 200:
        raise ValueError("expected letters, digits, '-', '_' in dot-separated parts (like 'pypi')")
    return text


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        for option in allowed:
            if text.strip().lower() == option.lower():
                return option
        raise ValueError(f"expected one of {', '.join(allowed)}")

    parse.__name__ = "choice"
    return parse


def readable_file(text: str) -> str:
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"no readable file at {text}")
    return str(path)


#: The password of a URL's user information (`scheme://user:password@host`), wherever one
#: appears in a text: shown and logged as `scheme://user:<redacted>@host`.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s]*@")


def without_password(text: str) -> str:
    """`text` with the password of every URL in it replaced by `<redacted>`."""
    return _URL_PASSWORD.sub(r"\g<1><redacted>@", text)


def proxy_url(text: str) -> str:
    """An HTTP proxy, `http://[user:password@]host[:port]` (a bare `host:port` means http://).

    Only http:// proxies: aiohttp tunnels HTTPS to PyPI through them with CONNECT, and
    speaks neither SOCKS nor TLS to the proxy itself reliably.
    """
    expected = "expected http://host:port (user:password@ before the host if it asks for them)"
    if _CONTROL.search(text) or " " in text:
        raise ValueError(f"a space or a control character; {expected}")
    # curl and requests read a proxy without a scheme as http://, and so do operators' files.
    url = text if "://" in text else f"http://{text}"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise ValueError(f"not a URL with a valid host and port; {expected}") from None
    if parts.scheme.lower() != "http":
        raise ValueError(f"a {parts.scheme}:// proxy is not supported; {expected}")
    if not parts.hostname:
        raise ValueError(f"no proxy host; {expected}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a proxy URL has no path, query or fragment; {expected}")
    return url.rstrip("/")


def pem_certificates(text: str) -> str:
    """A readable file holding one or more PEM certificates (a CA bundle)."""
    try:
        pem = Path(text).read_text(encoding="ascii")
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(
            "not PEM certificates (a binary file: a DER certificate converts with "
            "`openssl x509 -inform der -in FILE -out FILE.pem`)"
        ) from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("not PEM certificates: no -----BEGIN CERTIFICATE----- block in it")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem)
    except ssl.SSLError as exc:
        raise ValueError(f"not PEM certificates OpenSSL can read ({exc.reason})") from None
    return text


@dataclass(frozen=True)
class Flag:
    """One command-line flag, mirrored by the variable `PYPI_BRIDGE_<NAME>`."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    secret: bool = False
    repeatable: bool = False
    is_switch: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


# --- the flags, grouped by the concern they configure -------------------------------------

SOURCE_FLAGS = (
    Flag("pypi-url", http_url, DEFAULT_PYPI_URL, "PyPI's XML-RPC endpoint (or the simulator's)"),
    Flag("contact", contact, "", "contact (email or URL) added to the User-Agent, as PyPI asks"),
    Flag(
        "min-request-interval",
        seconds(0, MAX_SECONDS, zero=True),
        1.0,
        "seconds kept between two calls to PyPI (PyPI's docs ask for 1)",
    ),
    Flag(
        "request-timeout",
        seconds(0, MAX_SECONDS),
        60.0,
        "seconds before one PyPI call is abandoned",
    ),
    Flag(
        "max-backoff",
        seconds(0, MAX_SECONDS),
        60.0,
        "longest wait between retries of a failing call, and longest wait PyPI's answers "
        "(Retry-After, a throttling fault, the rate-limit headers) can impose",
    ),
    Flag(
        "max-response-bytes",
        positive_int,
        64 * 1024 * 1024,
        "largest answer read from PyPI (a 50,000-row page is about 14 MB); a larger one is "
        "abandoned while reading and retried",
    ),
    Flag(
        "pypi-proxy",
        proxy_url,
        None,
        "HTTP proxy to PyPI, http://[user:password@]host:port; wins over HTTPS_PROXY, "
        "HTTP_PROXY and NO_PROXY (default: those variables, as curl reads them)",
    ),
    Flag(
        "pypi-ca-file",
        pem_certificates,
        None,
        "PEM certificates of a private CA (a mirror's, a TLS-inspecting proxy's) trusted for "
        "PyPI's TLS in addition to the system store",
    ),
)

KAFKA_FLAGS = (
    Flag(
        "bootstrap-servers",
        bootstrap_servers,
        None,
        "Kafka bootstrap servers, host:port[,host:port]; none starts the embedded broker",
    ),
    Flag("security-protocol", choice(*SECURITY_PROTOCOLS), "PLAINTEXT", "Kafka security protocol"),
    Flag(
        "ssl-cafile", readable_file, None, "CA bundle (PEM) that signed the brokers' certificates"
    ),
    Flag("ssl-certfile", readable_file, None, "client certificate (PEM) for mutual TLS"),
    Flag("ssl-keyfile", readable_file, None, "client private key (PEM) for mutual TLS"),
    Flag("ssl-key-password", str, None, "password of the client private key", secret=True),
    Flag(
        "ssl-key-password-file",
        readable_file,
        None,
        "file holding the client key's password",
    ),
    Flag("sasl-mechanism", choice(*SASL_MECHANISMS), None, "SASL mechanism"),
    Flag("sasl-username", plain_text, None, "SASL user name"),
    Flag("sasl-password", str, None, "SASL password (prefer --sasl-password-file)", secret=True),
    Flag("sasl-password-file", readable_file, None, "file holding the SASL password"),
)

TOPIC_FLAGS = (
    Flag("topic-prefix", topic_prefix, "pypi", "topics are named {prefix}.{event type}"),
    Flag("partitions", partitions, 3, "partitions of each event topic created at start"),
    Flag(
        "replication-factor",
        replication_factor,
        -1,
        "replication factor of created topics (-1: 3, or fewer if the cluster is smaller)",
    ),
)

RUN_FLAGS = (
    *SOURCE_FLAGS,
    *KAFKA_FLAGS,
    *TOPIC_FLAGS,
    Flag(
        "start-serial",
        start_serial,
        None,
        "where to begin when no checkpoint exists: a serial (events after it) or 'latest'",
    ),
    Flag("poll-interval", seconds(0, MAX_SECONDS), 1.0, "seconds between polls once caught up"),
    Flag(
        "heartbeat-interval",
        seconds(0, MAX_SECONDS),
        10.0,
        "seconds between watermarks while the journal is quiet",
    ),
    Flag("stop-at-serial", serial, None, "exit 0 once every entry up to it is committed"),
    Flag("batch-size", batch_size, 10_000, "most journal rows published per commit"),
    Flag(
        "delivery",
        choice("auto", "transactional", "high-water"),
        "auto",
        "exactly-once mechanism: Kafka transactions, or high-water recovery",
    ),
    Flag(
        "transactional-id",
        plain_text,
        None,
        "fixed transactional id (default: from the topic prefix)",
    ),
    Flag(
        "leader-session-timeout",
        seconds(MIN_SESSION_TIMEOUT, MAX_SESSION_TIMEOUT),
        6.0,
        "seconds without a heartbeat before a crashed leader is replaced",
    ),
    Flag(
        "credentials-grace",
        seconds(0, MAX_SECONDS, zero=True),
        300.0,
        "seconds a rejected login or client certificate is retried, once the bridge has been "
        "connected, while the credential files may still be rotating (0: stop at once)",
    ),
    Flag(
        "replica-id",
        plain_text,
        None,
        "this replica's name in logs and metrics (default: host name)",
    ),
    Flag("http-host", plain_text, "0.0.0.0", "address for /metrics, /healthz and /readyz"),  # noqa: S104
    Flag("http-port", port, 9300, "port for /metrics, /healthz and /readyz"),
    Flag(
        "progress-interval",
        seconds(0, MAX_SECONDS),
        10.0,
        "seconds between backfill progress lines in the log",
    ),
    Flag("log-level", choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "log verbosity"),
    Flag("log-format", choice("text", "json"), "text", "log lines as text or JSON"),
)


#: Methods whose answers may be larger than `--max-response-bytes`, by this factor: PyPI's
#: project listing is about 60 MB (some 700,000 projects) in one answer.
RESPONSE_FACTORS: Mapping[str, int] = {"list_packages_with_serial": 4}


@dataclass(frozen=True)
class SourceSettings:
    """How the bridge talks to PyPI."""

    pypi_url: str = DEFAULT_PYPI_URL
    contact: str = ""
    min_request_interval: float = 1.0
    request_timeout: float = 60.0
    max_backoff: float = 60.0
    max_response_bytes: int = 64 * 1024 * 1024
    #: The HTTP proxy for `pypi_url`, credentials included (None: connect directly); resolved
    #: once at start by `pypi_proxy`. Never shown: `shown_proxy` is.
    proxy: str | None = dataclasses.field(default=None, repr=False)
    #: Where `proxy` came from: `--pypi-proxy` or the variable's name (`HTTPS_PROXY`, ...).
    proxy_origin: str = ""
    #: A private CA's PEM certificates, trusted in addition to the system store.
    ca_file: str | None = None

    @property
    def shown_proxy(self) -> str:
        """The proxy as logs and errors show it: its password, if any, redacted."""
        return without_password(self.proxy) if self.proxy else "no proxy"

    def response_cap(self, method: str) -> int:
        """The largest answer read for `method`: `max_response_bytes`, or the multiple of it
        that `RESPONSE_FACTORS` gives the method."""
        return self.max_response_bytes * RESPONSE_FACTORS.get(method, 1)

    def secrets(self) -> tuple[str, ...]:
        """What the log must never show: the proxy's password, as written and decoded."""
        if self.proxy is None:
            return ()
        password = urllib.parse.urlsplit(self.proxy).password
        if not password:
            return ()
        return (password, urllib.parse.unquote(password))


def proxy_variables(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """`https_proxy`, `http_proxy` and `no_proxy` of `environ`: lower-case name -> (the name
    as set, value).

    As in curl and urllib, the lower-case form wins over any other spelling, even when empty
    (an empty value unsets the proxy).
    """
    found: dict[str, tuple[str, str]] = {}
    for name, value in environ.items():
        key = name.lower()
        if key in _PROXY_VARIABLES and (key not in found or name == key):
            found[key] = (name, value)
    return found


_PROXY_VARIABLES = ("https_proxy", "http_proxy", "no_proxy")


def bypasses_proxy(no_proxy: str, host: str, port: int | None) -> bool:
    """Whether `NO_PROXY` exempts `host` (curl's and urllib's rule): `*` exempts all; each
    comma-separated entry, with or without a leading dot, matches that host and every name
    under it, and `entry:port` only that port. IP addresses match exactly (no CIDR ranges).
    """
    host = host.lower().rstrip(".")
    with_port = f"{host}:{port}" if port is not None else host
    for entry in no_proxy.split(","):
        name = entry.strip().lstrip(".").lower()
        if name == "*":
            return True
        if not name:
            continue
        for candidate in (host, with_port):
            if candidate == name or candidate.endswith("." + name):
                return True
    return False


def pypi_proxy(
    pypi_url: str, flag: str | None, variables: Mapping[str, tuple[str, str]]
) -> tuple[str | None, str]:
    """The proxy to reach `pypi_url` through, and where it was set (None, "": go direct).

    Resolved here, once, rather than by aiohttp's `trust_env`: the environment is read in one
    place and a malformed proxy is refused at start (exit status 2) instead of failing every
    request; `--pypi-proxy` can win over the variables; and `trust_env` would also read
    `~/.netrc` and send whatever credentials it holds for PyPI's host, which a service must
    not pick up from a home directory by accident.

    `--pypi-proxy` names the proxy for the one host the client talks to, so NO_PROXY does not
    apply to it. Otherwise `https_proxy` (or `http_proxy` for an http:// URL) is used unless
    `no_proxy` exempts the host.
    """
    if flag:
        return flag, "--pypi-proxy"
    parts = urllib.parse.urlsplit(pypi_url)
    name, value = variables.get(f"{parts.scheme.lower()}_proxy", ("", ""))
    if not value:
        return None, ""
    no_proxy = variables.get("no_proxy", ("", ""))[1]
    if no_proxy and bypasses_proxy(no_proxy, parts.hostname or "", parts.port):
        return None, ""
    try:
        return proxy_url(value), name
    except ValueError as exc:
        raise ConfigError(
            f"environment variable {name}={without_password(value)!r} is not a proxy the bridge "
            f"can use for {pypi_url}: {exc}",
            f"fix or unset {name}, list the host in NO_PROXY, or pass --pypi-proxy",
        ) from None


@dataclass(frozen=True)
class KafkaSettings:
    """How the bridge reaches Kafka. Secrets never appear in `repr` or logs."""

    bootstrap_servers: str | None = None
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = dataclasses.field(default=None, repr=False)
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = dataclasses.field(default=None, repr=False)
    client_id: str = "pypi-bridge"
    #: Files the secrets were read from: read again when they change (see `bridge.credentials`).
    sasl_password_file: str | None = None
    ssl_key_password_file: str | None = None

    def credentials(self) -> Credentials | None:
        """This client's TLS and SASL material, loaded again when its files change (None:
        PLAINTEXT, nothing to load)."""
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        sasl = self.security_protocol.startswith("SASL")
        if not (tls or sasl):
            return None
        return credentials_for(
            Sources(
                tls=tls,
                sasl=sasl,
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                key_password=self.ssl_key_password,
                key_password_file=self.ssl_key_password_file,
                sasl_password=self.sasl_password,
                sasl_password_file=self.sasl_password_file,
            )
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments shared by every aiokafka client the bridge creates, with the
        credentials the files hold now."""
        if self.bootstrap_servers is None:
            raise ConfigError("no Kafka bootstrap servers are set", "pass --bootstrap-servers")
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        credentials = self.credentials()
        if credentials is not None:
            material = credentials.current()
            if material.ssl_context is not None:
                options["ssl_context"] = material.ssl_context
            if self.security_protocol.startswith("SASL"):
                options["sasl_mechanism"] = self.sasl_mechanism
                options["sasl_plain_username"] = self.sasl_username
                options["sasl_plain_password"] = material.sasl_password
        return options

    def with_bootstrap(self, servers: str) -> KafkaSettings:
        return dataclasses.replace(self, bootstrap_servers=servers)


@dataclass(frozen=True)
class TopicSettings:
    """Names and shape of the topics the bridge writes."""

    prefix: str = "pypi"
    partitions: int = 3
    replication_factor: int = -1


@dataclass(frozen=True)
class RunSettings:
    """Everything `pypi-bridge run` needs, validated together."""

    source: SourceSettings = SourceSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    start_serial: int | None = None
    poll_interval: float = 1.0
    #: Seconds between watermarks written while the journal is quiet (each batch writes one).
    heartbeat_interval: float = 10.0
    stop_at_serial: int | None = None
    batch_size: int = 10_000
    delivery: DeliveryMode = "auto"
    transactional_id: str | None = None
    leader_session_timeout: float = 6.0
    #: Seconds the same rejected credentials are retried once connected (README, "Rotating
    #: credentials").
    credentials_grace: float = 300.0
    replica_id: str = dataclasses.field(default_factory=socket.gethostname)
    http_host: str = "0.0.0.0"  # noqa: S104 - a pod's probes and scrapes come from outside
    http_port: int = 9300
    progress_interval: float = 10.0
    log_level: str = "INFO"
    log_format: str = "text"

    @property
    def effective_transactional_id(self) -> str:
        return self.transactional_id or f"{self.topics.prefix}-bridge"

    @property
    def group_id(self) -> str:
        """Consumer group whose single partition owner leads."""
        return f"{self.topics.prefix}-bridge.leader"


# --- building argparse from the table, and settings from the parsed values ----------------


class _EnvDefaultsParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line with the fix, and exit status 2."""

    def error(self, message: str) -> Any:
        self.exit(2, f"pypi-bridge {self.prog.split()[-1]}: error: {message} (see --help)\n")


#: What Kubernetes puts in `{SERVICE}_PORT` for every Service of the namespace (service links):
#: a Service named `pypi-bridge` gives every pod PYPI_BRIDGE_PORT=tcp://10.0.0.1:9300.
_SERVICE_LINK = re.compile(r"^(tcp|udp|sctp)://[^\s/]+:[0-9]+$")


def service_link(name: str, value: str) -> bool:
    """Whether `name=value` looks like one of Kubernetes' service-link variables."""
    return name.endswith("_PORT") and _SERVICE_LINK.match(value) is not None


class _FromEnvironment(str):
    """A flag's default taken from its variable, parsed only if the command uses the flag.

    argparse converts a string default with the flag's type only when the flag is absent from
    the command line, and each subcommand only its own: so a variable of another subcommand
    (PYPI_BRIDGE_PORT of `simulate`) cannot break `run`, and a flag given on the command line
    wins over a malformed variable.
    """

    __slots__ = ()


class _Repeated(argparse.Action):
    """Append each value; values on the command line replace the variable's list."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        items = list(current) if isinstance(current, list) else []
        items.append(values)
        setattr(namespace, self.dest, items)


def add_flags(
    parser: argparse.ArgumentParser, flags: Sequence[Flag], environ: Mapping[str, str]
) -> None:
    """Declare `flags` on `parser`, each defaulting to its `PYPI_BRIDGE_*` variable if set.

    A variable is parsed only when the command is parsed without its flag; a malformed one is
    then a `ConfigError` naming the variable. The `PYPI_BRIDGE_*` variables the command does
    not read (another command's, Kubernetes' service links) end up, by name, in the parsed
    namespace's `ignored_environment`.
    """
    ignored = {name for name in environ if name.startswith(ENV_PREFIX)}
    for flag in flags:
        default = flag.default
        raw = environ.get(flag.env)
        if raw is not None and raw != "" and not service_link(flag.env, raw):
            ignored.discard(flag.env)
            default = _FromEnvironment(raw)
        help_text = f"{flag.help} [env {flag.env}]"
        if flag.is_switch:
            action = parser.add_argument(
                f"--{flag.name}",
                dest=flag.dest,
                action=argparse.BooleanOptionalAction,
                default=default if isinstance(default, _FromEnvironment) else bool(default),
                help=help_text,
            )
            # Set after construction: BooleanOptionalAction takes no type in newer Pythons.
            action.type = _named(flag)
            continue
        parser.add_argument(
            f"--{flag.name}",
            dest=flag.dest,
            type=_named(flag),
            default=default,
            action=_Repeated if flag.repeatable else "store",
            help=help_text
            + ("" if flag.secret or default is None else f" (default: {_shown(default)})"),
        )
    parser.set_defaults(ignored_environment=tuple(sorted(ignored)))
    if any(flag.name == "pypi-proxy" for flag in flags):
        # The proxy variables are no flag's, but the source settings resolve the proxy from
        # them: taken here, from the environment the parser was built with.
        parser.set_defaults(proxy_variables=proxy_variables(environ))


def _shown(value: object) -> str:
    """A flag's value as help and errors show it: a URL's password redacted."""
    return without_password(str(value))


def _named(flag: Flag) -> Callable[[str], Any]:
    """Wrap a value parser so argparse's error names the flag (or its variable) and the
    expectation."""

    def parse(text: str) -> Any:
        try:
            if isinstance(text, _FromEnvironment):
                return (
                    [flag.parse(v) for v in text.split(",")]
                    if flag.repeatable
                    else (flag.parse(text))
                )
            return flag.parse(text)
        except ValueError as exc:
            if isinstance(text, _FromEnvironment):
                shown = "(hidden)" if flag.secret else repr(_shown(text))
                raise ConfigError(
                    f"environment variable {flag.env}={shown} is invalid: {exc}",
                    f"fix or unset {flag.env}",
                ) from None
            raise argparse.ArgumentTypeError(f"{_shown(text)!r}: {exc}") from None

    parse.__name__ = flag.dest
    return parse


def _read_secret(value: str | None, path: str | None, what: str) -> str | None:
    if path is None:
        return value
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"the {what} file {path} is empty", "put the secret in it")
    return secret


def kafka_settings(ns: argparse.Namespace) -> KafkaSettings:
    """Kafka connection settings from parsed flags, with secrets loaded and combinations checked."""
    protocol = ns.security_protocol
    if ns.sasl_mechanism and not protocol.startswith("SASL"):
        raise ConfigError(
            f"--sasl-mechanism {ns.sasl_mechanism} needs a SASL security protocol",
            "add --security-protocol SASL_SSL (or SASL_PLAINTEXT)",
        )
    password = _read_secret(ns.sasl_password, ns.sasl_password_file, "SASL password")
    if protocol.startswith("SASL"):
        if not ns.sasl_mechanism:
            raise ConfigError(
                f"--security-protocol {protocol} needs a SASL mechanism",
                f"add --sasl-mechanism ({', '.join(SASL_MECHANISMS)})",
            )
        if not ns.sasl_username or password is None:
            raise ConfigError(
                "SASL needs a user name and a password",
                "set --sasl-username and --sasl-password-file (or PYPI_BRIDGE_SASL_PASSWORD)",
            )
    if (ns.ssl_certfile is None) != (ns.ssl_keyfile is None):
        raise ConfigError(
            "mutual TLS needs both --ssl-certfile and --ssl-keyfile", "give both or neither"
        )
    if (ns.ssl_cafile or ns.ssl_certfile) and protocol not in ("SSL", "SASL_SSL"):
        raise ConfigError(
            f"TLS files were given but --security-protocol is {protocol}",
            "use --security-protocol SSL or SASL_SSL",
        )
    return KafkaSettings(
        bootstrap_servers=ns.bootstrap_servers,
        security_protocol=protocol,
        ssl_cafile=ns.ssl_cafile,
        ssl_certfile=ns.ssl_certfile,
        ssl_keyfile=ns.ssl_keyfile,
        ssl_key_password=_read_secret(
            ns.ssl_key_password, ns.ssl_key_password_file, "TLS key password"
        ),
        sasl_mechanism=ns.sasl_mechanism if protocol.startswith("SASL") else None,
        sasl_username=ns.sasl_username,
        sasl_password=password,
        sasl_password_file=ns.sasl_password_file,
        ssl_key_password_file=ns.ssl_key_password_file,
    )


def source_settings(ns: argparse.Namespace) -> SourceSettings:
    """How to reach PyPI, the proxy resolved from `--pypi-proxy` or the proxy variables."""
    proxy, origin = pypi_proxy(ns.pypi_url, ns.pypi_proxy, getattr(ns, "proxy_variables", {}))
    return SourceSettings(
        pypi_url=ns.pypi_url,
        contact=ns.contact,
        min_request_interval=ns.min_request_interval,
        request_timeout=ns.request_timeout,
        max_backoff=ns.max_backoff,
        max_response_bytes=ns.max_response_bytes,
        proxy=proxy,
        proxy_origin=origin,
        ca_file=ns.pypi_ca_file,
    )


def topic_settings(ns: argparse.Namespace) -> TopicSettings:
    return TopicSettings(
        prefix=ns.topic_prefix, partitions=ns.partitions, replication_factor=ns.replication_factor
    )


def run_settings(ns: argparse.Namespace) -> RunSettings:
    """The validated settings of `pypi-bridge run`."""
    if (
        ns.stop_at_serial is not None
        and ns.start_serial is not None
        and ns.stop_at_serial < ns.start_serial
    ):
        raise ConfigError(
            f"--stop-at-serial {ns.stop_at_serial} is before --start-serial {ns.start_serial}",
            "give a stop serial at or after the start serial",
        )
    return RunSettings(
        source=source_settings(ns),
        kafka=kafka_settings(ns),
        topics=topic_settings(ns),
        start_serial=ns.start_serial,
        poll_interval=ns.poll_interval,
        heartbeat_interval=ns.heartbeat_interval,
        stop_at_serial=ns.stop_at_serial,
        batch_size=ns.batch_size,
        delivery=ns.delivery,
        transactional_id=ns.transactional_id,
        leader_session_timeout=ns.leader_session_timeout,
        credentials_grace=ns.credentials_grace,
        replica_id=ns.replica_id or socket.gethostname(),
        http_host=ns.http_host,
        http_port=ns.http_port,
        progress_interval=ns.progress_interval,
        log_level=ns.log_level,
        log_format=ns.log_format,
    )


def environment() -> Mapping[str, str]:
    """The process environment; the one place the package reads it (at start-up, in `cli`)."""
    return os.environ
