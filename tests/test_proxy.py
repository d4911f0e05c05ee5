"""The PyPI client behind an egress proxy and a private CA (issue 13, item 1).

The proxy is Debian's tinyproxy, a real forward proxy process; the bridge is a real
`pypi-bridge run` process against the journal simulator and the embedded broker, and the
events it published are read back. tinyproxy's own log proves the requests went through it.
The private CA is the tests' own (made with openssl by tests.pki), signing the certificate of a
TLS front before the simulator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bridge.broker import EmbeddedBroker, free_port
from bridge.cli import RedactSecrets, main
from bridge.config import (
    RUN_FLAGS,
    SourceSettings,
    add_flags,
    bypasses_proxy,
    proxy_variables,
    pypi_proxy,
    source_settings,
    without_password,
)
from bridge.errors import ConfigError, TransientSourceError
from bridge.source import PyPIClient
from tests.conftest import require
from tests.forwardproxy import (
    Tinyproxy,
    TlsFront,
    start_refusing_proxy,
    start_tinyproxy,
    start_tls_front,
)
from tests.pki import Ca, Leaf
from tests.support import (
    Process,
    Simulator,
    bridge_command,
    child_env,
    read_events,
    run_args,
    start_simulator,
)
from tests.test_hardening_cli import assert_one_error_line
from tests.test_kafka_security import handshake

PROXY_USER = "bridge"
PROXY_PASSWORD = "pr0xy-S3cret-pw"
#: Where nothing listens: a proxy there is dead.
DEAD_PROXY = f"http://127.0.0.1:{free_port()}"
PROXY_NAMES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")


# --- fixtures: the journal, tinyproxy, the private CA and the TLS front ------------------------


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    sim = start_simulator(tmp_path_factory.mktemp("journal"), "--prefill", "300", "--rate", "0")
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def serials(journal: Simulator) -> list[int]:
    return [row[4] for row in journal.rows()]


def _tinyproxy_present() -> None:
    require(shutil.which("tinyproxy") is not None, "tinyproxy (Debian package tinyproxy)")


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    _tinyproxy_present()
    proxy = start_tinyproxy(tmp_path / "tinyproxy")
    yield proxy
    proxy.stop()


@pytest.fixture
def guarded_proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    """tinyproxy asking for BasicAuth credentials."""
    _tinyproxy_present()
    proxy = start_tinyproxy(tmp_path / "tinyproxy", user=PROXY_USER, password=PROXY_PASSWORD)
    yield proxy
    proxy.stop()


@dataclasses.dataclass(frozen=True)
class PrivateCa:
    ca: Path
    other_ca: Path
    server: Leaf
    other_server: Leaf


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    """A CA and a server certificate for 127.0.0.1 it signed; another CA with its own."""
    mirror, other = (Ca.new(tmp_path_factory.mktemp(f"ca-{name}")) for name in ("mirror", "other"))
    return PrivateCa(mirror.cert, other.cert, mirror.server("127.0.0.1"), other.server("127.0.0.1"))


@pytest.fixture
def tls_front(journal: Simulator, private_ca: PrivateCa, tmp_path: Path) -> Iterator[TlsFront]:
    """The simulator behind TLS with a certificate of the private CA: a private mirror."""
    port = int(journal.url.rsplit(":", 1)[1].split("/", 1)[0])
    front = start_tls_front(tmp_path, port, private_ca.server.cert, private_ca.server.key)
    yield front
    front.stop()


# --- running the bridge ---------------------------------------------------------------------


def bridge_env(**proxy: str) -> dict[str, str]:
    """The child environment with only the proxy variables the test sets."""
    env = {k: v for k, v in child_env().items() if k.lower() not in PROXY_NAMES}
    return {**env, **proxy}


def launch(
    sim: Simulator, broker: EmbeddedBroker, log_path: Path, *extra: str, env: dict[str, str]
) -> tuple[Process, str]:
    """`pypi-bridge run` against `sim` on a topic prefix of its own; returns it and the prefix."""
    prefix = f"px-{uuid.uuid4().hex[:8]}"
    args = run_args(sim, broker.bootstrap_servers, prefix, "--start-serial", "0", *extra)
    out = log_path.open("ab")
    try:
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    finally:
        out.close()
    return Process(popen, log_path), prefix


def backfill(
    sim: Simulator,
    broker: EmbeddedBroker,
    tmp_path: Path,
    serials: list[int],
    *extra: str,
    env: dict[str, str],
) -> tuple[str, list[int]]:
    """Run the bridge to the journal's last serial; its log and the serials it published."""
    bridge, prefix = launch(
        sim, broker, tmp_path / "bridge.log", "--stop-at-serial", str(serials[-1]), *extra, env=env
    )
    status = bridge.wait(120)
    output = bridge.output()
    assert status == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    records = asyncio.run(read_events(broker.bootstrap_servers, prefix))
    published = sorted(orjson.loads(record.value)["serial"] for record in records)
    return output, published


def wait_for_lines(process: Process, needle: str, count: int, within: float = 60) -> list[str]:
    """Wait until the process logged `count` lines containing `needle`; returns them all."""
    deadline = time.monotonic() + within
    while True:
        lines = [line for line in process.output().splitlines() if needle in line]
        if len(lines) >= count:
            return lines
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"wanted {count} lines with {needle!r}; output:\n{process.output()[-3000:]}"
            )
        time.sleep(0.1)


def retried_failure(
    sim: Simulator,
    broker: EmbeddedBroker,
    tmp_path: Path,
    needle: str,
    *extra: str,
    env: dict[str, str],
) -> list[str]:
    """Run the bridge until it has tried a failing call three times; the failure lines.

    The bridge is still running then (retrying, not stopped); it is killed, since a graceful
    stop would wait for the call being retried.
    """
    bridge, _ = launch(sim, broker, tmp_path / "bridge.log", "--max-backoff", "0.5", *extra,
                       env=env)  # fmt: skip
    try:
        lines = wait_for_lines(bridge, needle, 3)
        assert bridge.popen.poll() is None, bridge.output()[-3000:]
    finally:
        bridge.stop(signal.SIGKILL)
    output = bridge.output()
    assert "Traceback" not in output, output[-3000:]
    for line in lines:
        assert "retrying in" in line, line
    return lines


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`pypi-bridge ARGS` in `env` (default: no proxy variables at all)."""
    return subprocess.run(
        bridge_command(*args),
        capture_output=True,
        text=True,
        timeout=30,
        env=env if env is not None else bridge_env(),
        check=False,
    )


def source_of(args: list[str], environ: dict[str, str]) -> SourceSettings:
    import argparse

    parser = argparse.ArgumentParser()
    add_flags(parser, RUN_FLAGS, environ)
    return source_settings(parser.parse_args(args))


# --- the proxy from the environment, as curl and urllib read it ------------------------------


def test_lower_case_variable_wins_even_when_empty() -> None:
    found = proxy_variables(
        {"HTTPS_PROXY": "http://upper:3128", "https_proxy": "", "HTTP_PROXY": "http://up:3128"}
    )
    assert found["https_proxy"] == ("https_proxy", "")
    assert found["http_proxy"] == ("HTTP_PROXY", "http://up:3128")
    assert pypi_proxy("https://pypi.org/pypi", None, found) == (None, "")


def test_the_urls_scheme_picks_the_variable() -> None:
    variables = proxy_variables(
        {"HTTPS_PROXY": "http://tls-proxy:3128", "HTTP_PROXY": "http://plain-proxy:3128"}
    )
    assert pypi_proxy("https://pypi.org/pypi", None, variables) == (
        "http://tls-proxy:3128",
        "HTTPS_PROXY",
    )
    assert pypi_proxy("http://mirror.internal/pypi", None, variables) == (
        "http://plain-proxy:3128",
        "HTTP_PROXY",
    )


def test_a_bare_host_and_port_means_an_http_proxy() -> None:
    variables = proxy_variables({"https_proxy": "proxy.corp:3128"})
    assert pypi_proxy("https://pypi.org/pypi", None, variables)[0] == "http://proxy.corp:3128"


NO_PROXY_CASES = [
    ("pypi.org", "pypi.org", None),
    ("pypi.org", "files.pypi.org", None),
    (".pypi.org", "pypi.org", None),
    (".pypi.org", "www.pypi.org", None),
    ("pypi.org", "notpypi.org", None),
    ("PyPI.org", "pypi.org", 443),
    ("pypi.org:443", "pypi.org", 443),
    ("pypi.org:8443", "pypi.org", 443),
    ("*", "pypi.org", None),
    ("localhost, 127.0.0.1 ,", "127.0.0.1", 8080),
    ("127.0.0.1", "127.0.0.10", None),
    ("example.org,pypi.org", "pypi.org", None),
    ("", "pypi.org", None),
]


@pytest.mark.parametrize(("no_proxy", "host", "port"), NO_PROXY_CASES)
def test_no_proxy_matches_as_urllib_does(no_proxy: str, host: str, port: int | None) -> None:
    netloc = f"{host}:{port}" if port is not None else host
    expected = bool(urllib.request.proxy_bypass_environment(netloc, {"no": no_proxy}))  # type: ignore[attr-defined]
    assert bypasses_proxy(no_proxy, host, port) is expected


def test_no_proxy_exempts_the_pypi_host() -> None:
    variables = proxy_variables(
        {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "localhost,.pypi.org"}
    )
    assert pypi_proxy("https://pypi.org/pypi", None, variables) == (None, "")
    assert pypi_proxy("https://example.org/pypi", None, variables)[1] == "HTTPS_PROXY"


def test_pypi_proxy_flag_wins_over_the_variables_and_no_proxy() -> None:
    settings = source_of(
        ["--pypi-proxy", "http://flag-proxy:8080"],
        {"HTTPS_PROXY": "http://env-proxy:3128", "NO_PROXY": "pypi.org"},
    )
    assert (settings.proxy, settings.proxy_origin) == ("http://flag-proxy:8080", "--pypi-proxy")


def test_pypi_proxy_is_read_from_its_own_variable() -> None:
    settings = source_of([], {"PYPI_BRIDGE_PYPI_PROXY": "http://bridge-proxy:3128"})
    assert settings.proxy == "http://bridge-proxy:3128"


def test_a_malformed_proxy_variable_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as raised:
        source_of([], {"HTTPS_PROXY": f"socks5://u:{PROXY_PASSWORD}@proxy:1080"})
    message = str(raised.value)
    assert "HTTPS_PROXY" in message
    assert "socks5:// proxy is not supported" in message
    assert PROXY_PASSWORD not in message
    assert "u:<redacted>@proxy" in message


def test_a_malformed_variable_for_the_other_scheme_is_not_this_commands_business() -> None:
    settings = source_of([], {"HTTP_PROXY": "socks5://proxy:1080"})
    assert settings.proxy is None


def test_settings_never_show_the_proxy_password() -> None:
    settings = source_of(["--pypi-proxy", f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy:3128"], {})
    assert PROXY_PASSWORD not in repr(settings)
    assert settings.shown_proxy == f"http://{PROXY_USER}:<redacted>@proxy:3128"
    assert PROXY_PASSWORD in settings.secrets()


def test_log_lines_lose_every_url_password() -> None:
    redact = RedactSecrets(("p%40ss", "p@ss")).redact
    assert without_password("via http://u:p@ss@proxy:3128 and https://m:x@mirror/pypi") == (
        "via http://u:<redacted>@proxy:3128 and https://m:<redacted>@mirror/pypi"
    )
    line = "proxy http://u:p%40ss@proxy:3128 said no; password p@ss; user ops@example.org"
    assert redact(line) == (
        "proxy http://u:<redacted>@proxy:3128 said no; password <redacted>; user ops@example.org"
    )


# --- bad values: one line at start, exit status 2, never a password ---------------------------

BAD_PROXIES = [
    (f"socks5://u:{PROXY_PASSWORD}@proxy:1080", "a socks5:// proxy is not supported"),
    (f"https://u:{PROXY_PASSWORD}@proxy:3128", "a https:// proxy is not supported"),
    (f"http://u:{PROXY_PASSWORD}@proxy:99999", "not a URL with a valid host and port"),
    (f"http://u:{PROXY_PASSWORD}@:3128", "no proxy host"),
    (f"http://u:{PROXY_PASSWORD}@proxy:3128/path", "no path, query or fragment"),
    ("http://proxy:3128\r\nX-Injected: 1", "a space or a control character"),
]


def refusal(
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    **environ: str,
) -> str:
    """`pypi-bridge ARGV` run in this process by `bridge.cli.main`, as the console script runs
    it, in an environment of `environ` only; asserts exit status 2 and one line, returns it."""
    for name in list(os.environ):
        if name.lower() in PROXY_NAMES or name.startswith("PYPI_BRIDGE_"):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    try:
        status = main(argv)
    except SystemExit as exited:  # argparse's own error exit
        status = exited.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert status == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize(("value", "expected"), BAD_PROXIES)
def test_a_malformed_pypi_proxy_flag_is_one_line_and_status_2(
    value: str, expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    line = refusal([*_nowhere(), "--pypi-proxy", value], capsys, monkeypatch)
    assert line.startswith("pypi-bridge run: error: argument --pypi-proxy")
    assert expected in line
    assert PROXY_PASSWORD not in line


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "PYPI_BRIDGE_PYPI_PROXY"])
def test_a_malformed_proxy_variable_is_one_line_and_status_2(
    variable: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    value = f"ftp://u:{PROXY_PASSWORD}@proxy:21"
    line = refusal(_nowhere(), capsys, monkeypatch, **{variable: value})
    assert f"environment variable {variable}=" in line
    assert "ftp:// proxy is not supported" in line
    assert PROXY_PASSWORD not in line


def test_bad_proxy_and_ca_values_stop_a_real_process_in_one_line(tmp_path: Path) -> None:
    bad_flag = run_cli(*_nowhere(), "--pypi-proxy", f"socks5://u:{PROXY_PASSWORD}@proxy:1080")
    assert "a socks5:// proxy is not supported" in assert_one_error_line(bad_flag, 2)
    bad_variable = run_cli(*_nowhere(), env=bridge_env(HTTP_PROXY="http://proxy:0x50"))
    line = assert_one_error_line(bad_variable, 2)
    assert "environment variable HTTP_PROXY='http://proxy:0x50'" in line
    missing = run_cli(*_nowhere(), "--pypi-ca-file", str(tmp_path / "missing.pem"))
    assert "cannot read it" in assert_one_error_line(missing, 2)
    for completed in (bad_flag, missing):
        assert PROXY_PASSWORD not in completed.stdout + completed.stderr


def test_help_never_shows_the_proxy_password_from_the_environment() -> None:
    env = bridge_env(PYPI_BRIDGE_PYPI_PROXY=f"http://u:{PROXY_PASSWORD}@proxy:3128")
    completed = run_cli("run", "--help", env=env)
    assert completed.returncode == 0, completed.stderr
    assert "--pypi-proxy" in completed.stdout
    assert PROXY_PASSWORD not in completed.stdout


def _bad_ca_files(directory: Path, private_ca: PrivateCa) -> dict[str, tuple[Path, str]]:
    (directory / "garbage.pem").write_text("not a certificate\n", encoding="utf-8")
    (directory / "binary.der").write_bytes(b"\x30\x82\x01\x0a\xff\xfe")
    truncated = private_ca.ca.read_text(encoding="ascii").replace("\n", "\n#", 3)
    (directory / "broken.pem").write_text(truncated, encoding="ascii")
    return {
        "missing": (directory / "missing.pem", "cannot read it: No such file or directory"),
        "directory": (directory, "cannot read it: Is a directory"),
        "not pem": (directory / "garbage.pem", "no -----BEGIN CERTIFICATE----- block"),
        "a key": (private_ca.server.key, "no -----BEGIN CERTIFICATE----- block"),
        "binary": (directory / "binary.der", "not PEM certificates (a binary file"),
        "broken pem": (directory / "broken.pem", "not PEM certificates OpenSSL can read"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "directory", "not pem", "a key", "binary", "broken pem"]
)
def test_an_unusable_ca_file_is_one_line_and_status_2(
    case: str,
    private_ca: PrivateCa,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, expected = _bad_ca_files(tmp_path, private_ca)[case]
    line = refusal([*_nowhere(), "--pypi-ca-file", str(path)], capsys, monkeypatch)
    assert line.startswith("pypi-bridge run: error: argument --pypi-ca-file")
    assert expected in line


def test_an_unusable_ca_file_variable_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = str(tmp_path / "missing.pem")
    line = refusal(_nowhere(), capsys, monkeypatch, PYPI_BRIDGE_PYPI_CA_FILE=missing)
    assert "environment variable PYPI_BRIDGE_PYPI_CA_FILE=" in line
    assert "cannot read it" in line


def _nowhere() -> list[str]:
    return [
        "run", "--pypi-url", "http://127.0.0.1:9/pypi", "--bootstrap-servers", "127.0.0.1:9",
        "--http-port", "0",
    ]  # fmt: skip


# --- the CA file: in addition to the system store ---------------------------------------------


def _server(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_ca_file_is_trusted_in_addition_to_the_system_store(
    private_ca: PrivateCa, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.source import tls_context

    # OpenSSL's system store, as the process sees it, made of the other CA only.
    monkeypatch.setenv("SSL_CERT_FILE", str(private_ca.other_ca))
    monkeypatch.setenv("SSL_CERT_DIR", str(private_ca.other_ca.parent / "empty"))
    context = tls_context(SourceSettings(ca_file=str(private_ca.ca)))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    mirror = _server(private_ca.server.cert, private_ca.server.key)
    public = _server(private_ca.other_server.cert, private_ca.other_server.key)
    assert handshake(context, mirror, "127.0.0.1")[0]["subject"]
    assert handshake(context, public, "127.0.0.1")[0]["subject"]
    # Without the flag, only the system store: the mirror's CA is not trusted.
    system_only = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(system_only, mirror, "127.0.0.1")


# --- what the client says when the proxy refuses ---------------------------------------------


REFUSALS = {
    # A CONNECT (https://) is answered by the proxy itself.
    ("https", 407): "refused this client's credentials: HTTP 407 Proxy Authentication Required "
    "to CONNECT pypi.example:443",
    ("https", 502): "answered HTTP 502 Bad Gateway to CONNECT pypi.example:443",
    # A forwarded POST (http://): 407 is the proxy's; a 502 may be the proxy's or PyPI's CDN's.
    ("http", 407): "refused this client's credentials: HTTP 407 Proxy Authentication Required "
    "to POST http://pypi.example:443/pypi",
    ("http", 502): "HTTP 502 from http://pypi.example:443/pypi through the proxy",
}


@pytest.mark.parametrize(("scheme", "status"), sorted(REFUSALS))
async def test_a_refusing_proxy_is_a_retriable_error_naming_it_without_the_password(
    scheme: str, status: int
) -> None:
    expected = REFUSALS[(scheme, status)]
    with start_refusing_proxy(status) as proxy:
        credentialed = proxy.replace("http://", f"http://{PROXY_USER}:{PROXY_PASSWORD}@")
        settings = SourceSettings(
            pypi_url=f"{scheme}://pypi.example:443/pypi",
            request_timeout=10,
            proxy=credentialed,
            proxy_origin="HTTPS_PROXY",
        )
        async with PyPIClient(settings) as client:
            with pytest.raises(TransientSourceError) as raised:
                await client._post(b"<methodCall/>", 1 << 20)
    message = str(raised.value)
    assert expected in message, message
    assert f"the proxy http://{PROXY_USER}:<redacted>@127.0.0.1:" in message
    assert "(HTTPS_PROXY)" in message
    assert PROXY_PASSWORD not in message


async def test_an_unreachable_proxy_is_a_retriable_error_naming_it() -> None:
    settings = SourceSettings(
        pypi_url="https://pypi.example/pypi", proxy=DEAD_PROXY, proxy_origin="--pypi-proxy"
    )
    async with PyPIClient(settings) as client:
        with pytest.raises(TransientSourceError) as raised:
            await client._post(b"<methodCall/>", 1 << 20)
    assert f"cannot connect to the proxy {DEAD_PROXY} (--pypi-proxy)" in str(raised.value)


# --- real processes: tinyproxy, the simulator, the bridge, the broker ------------------------


def test_bridge_goes_through_the_proxy_named_by_http_proxy(
    journal: Simulator,
    broker: EmbeddedBroker,
    serials: list[int],
    tinyproxy: Tinyproxy,
    tmp_path: Path,
) -> None:
    env = bridge_env(HTTP_PROXY=tinyproxy.url, HTTPS_PROXY=tinyproxy.url)
    output, published = backfill(journal, broker, tmp_path, serials, env=env)
    assert published == serials
    forwarded = [r for r in tinyproxy.requests() if r.startswith(f"POST {journal.url} ")]
    assert len(forwarded) >= 2, tinyproxy.log()[-3000:]  # the head and at least one page
    assert f"through the proxy {tinyproxy.url} (HTTP_PROXY)" in output


def test_no_proxy_bypasses_a_dead_proxy_for_the_simulator_host(
    journal: Simulator, broker: EmbeddedBroker, serials: list[int], tmp_path: Path
) -> None:
    env = bridge_env(http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY, no_proxy="localhost,127.0.0.1")
    output, published = backfill(journal, broker, tmp_path, serials, env=env)
    assert published == serials
    assert "through the proxy" not in output


def test_unreachable_proxy_is_one_line_per_attempt_naming_it_and_retried(
    journal: Simulator, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    env = bridge_env(HTTP_PROXY=DEAD_PROXY)
    lines = retried_failure(journal, broker, tmp_path, "cannot connect to the proxy", env=env)
    assert (
        f"cannot connect to the proxy {DEAD_PROXY} (HTTP_PROXY) to reach {journal.url}"
        in (lines[0])
    )


def test_pypi_proxy_flag_wins_over_the_environment(
    journal: Simulator,
    broker: EmbeddedBroker,
    serials: list[int],
    tinyproxy: Tinyproxy,
    tmp_path: Path,
) -> None:
    env = bridge_env(HTTP_PROXY=DEAD_PROXY, NO_PROXY="127.0.0.1")
    output, published = backfill(
        journal, broker, tmp_path, serials, "--pypi-proxy", tinyproxy.url, env=env
    )
    assert published == serials
    assert any(r.startswith(f"POST {journal.url} ") for r in tinyproxy.requests())
    assert f"through the proxy {tinyproxy.url} (--pypi-proxy)" in output


def test_proxy_credentials_work_and_never_reach_the_log(
    journal: Simulator,
    broker: EmbeddedBroker,
    serials: list[int],
    guarded_proxy: Tinyproxy,
    tmp_path: Path,
) -> None:
    env = bridge_env(PYPI_BRIDGE_PYPI_PROXY=guarded_proxy.url_as(PROXY_USER, PROXY_PASSWORD))
    output, published = backfill(
        journal, broker, tmp_path, serials, "--log-level", "DEBUG", env=env
    )
    assert published == serials
    assert any(r.startswith(f"POST {journal.url} ") for r in guarded_proxy.requests())
    assert f"http://{PROXY_USER}:<redacted>@127.0.0.1:{guarded_proxy.port}" in output
    assert PROXY_PASSWORD not in output


def test_wrong_proxy_password_is_one_clear_line_per_attempt_and_retried(
    journal: Simulator, broker: EmbeddedBroker, guarded_proxy: Tinyproxy, tmp_path: Path
) -> None:
    wrong = guarded_proxy.url_as(PROXY_USER, "not-" + PROXY_PASSWORD)
    lines = retried_failure(
        journal,
        broker,
        tmp_path,
        "refused this client's credentials",
        env=bridge_env(HTTP_PROXY=wrong),
    )
    # tinyproxy 1.11 answers a wrong password with 401 where the standard says 407; the line
    # names whichever status the proxy gave, and the proxy without the password.
    assert f"the proxy http://{PROXY_USER}:<redacted>@127.0.0.1:{guarded_proxy.port}" in lines[0]
    assert "HTTP 401" in lines[0] or "HTTP 407" in lines[0]
    assert "not-" + PROXY_PASSWORD not in "\n".join(lines)
    assert len(guarded_proxy.requests()) >= 2


# --- real processes: a private mirror behind TLS ----------------------------------------------


def _mirror(journal: Simulator, front: TlsFront) -> Simulator:
    return dataclasses.replace(journal, url=front.url())


def test_untrusted_certificate_stops_the_bridge_with_one_tls_line(
    journal: Simulator, broker: EmbeddedBroker, tls_front: TlsFront, tmp_path: Path
) -> None:
    bridge, _ = launch(_mirror(journal, tls_front), broker, tmp_path / "bridge.log",
                       env=bridge_env())  # fmt: skip
    status = bridge.wait(60)
    output = bridge.output()
    assert status == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("pypi-bridge: error: the TLS certificate of 127.0.0.1:"), last
    assert "is not trusted" in last
    assert "pass its certificate with --pypi-ca-file" in last


def test_pypi_ca_file_trusts_the_mirrors_private_ca(
    journal: Simulator,
    broker: EmbeddedBroker,
    serials: list[int],
    tls_front: TlsFront,
    private_ca: PrivateCa,
    tmp_path: Path,
) -> None:
    _, published = backfill(
        _mirror(journal, tls_front), broker, tmp_path, serials,
        "--pypi-ca-file", str(private_ca.ca), env=bridge_env(),
    )  # fmt: skip
    assert published == serials


def test_https_goes_through_the_proxy_named_by_https_proxy_with_connect(
    journal: Simulator,
    broker: EmbeddedBroker,
    serials: list[int],
    tls_front: TlsFront,
    private_ca: PrivateCa,
    guarded_proxy: Tinyproxy,
    tmp_path: Path,
) -> None:
    proxy = guarded_proxy.url_as(PROXY_USER, PROXY_PASSWORD)
    env = bridge_env(HTTPS_PROXY=proxy, HTTP_PROXY=DEAD_PROXY)
    output, published = backfill(
        _mirror(journal, tls_front), broker, tmp_path, serials,
        "--pypi-ca-file", str(private_ca.ca), env=env,
    )  # fmt: skip
    assert published == serials
    assert f"CONNECT 127.0.0.1:{tls_front.port} HTTP/1.1" in guarded_proxy.requests()
    assert PROXY_PASSWORD not in output
