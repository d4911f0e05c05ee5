"""The container image, built here without a Docker daemon and run as a cluster would run it.

deploy/build-image.sh builds it with buildah (rootful, chroot isolation) into a container storage
of the tests' own, kept in the user's cache (`~/.cache/pypi-kafka-bridge/image`, or `$IMAGE_CACHE`)
as Maven keeps the broker's jars in ~/.m2: a second run, from this checkout or a fresh clone,
reuses the cached layers and rebuilds only what changed.
With no registry reachable the base is made from Debian bookworm's packages with debootstrap.
podman then runs it on the host network, against the session's embedded broker and a journal
simulator on loopback: as user 10001, on a read-only root filesystem with a tmpfs on /tmp, the
way the Helm chart's securityContext runs it.

podman uses runc, not crun: crun 1.8 refuses hybrid cgroup hosts ("cgroups in hybrid mode not
supported"). The open-files and process limits are given explicitly, because podman's defaults
are higher than a host without CAP_SYS_RESOURCE may set (setrlimit: operation not permitted).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.broker import EmbeddedBroker, free_port
from tests.conftest import ROOT, Figures, require
from tests.support import Simulator, metric, read_events, start_simulator

BUILD_SCRIPT = ROOT / "deploy" / "build-image.sh"
LOCK = ROOT / "deploy" / "requirements.lock"


def _cache_directory() -> Path:
    """Where the tests' container storage lives: `$IMAGE_CACHE`, else the user's cache."""
    chosen = os.environ.get("IMAGE_CACHE")
    if chosen:
        return Path(chosen)
    user_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(user_cache) / "pypi-kafka-bridge" / "image"


CACHE = _cache_directory()
VERSION: str = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
    "version"
]
TAG = f"localhost/pypi-kafka-bridge:{VERSION}"
#: A cold build (debootstrap, the locked wheels from PyPI, the project) takes about two and a
#: half minutes on two cores; a cached one seconds.
BUILD_TIMEOUT = 900.0
#: The chart's terminationGracePeriodSeconds.
GRACE_SECONDS = 30.0
UID = 10001
MAX_DANGLING = 12
PREFIX = "image"
#: Options every `podman run` here shares; see the module docstring for the limits and runc.
RUN_OPTIONS = (
    "--rm",
    "--network",
    "host",
    "--no-healthcheck",
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
)


def storage_driver() -> str:
    """overlay where the kernel has it (layers shared, fast), else vfs (a full copy per layer)."""
    chosen = os.environ.get("IMAGE_STORAGE_DRIVER")
    if chosen:
        return chosen
    filesystems = Path("/proc/filesystems").read_text(encoding="utf-8")
    return "overlay" if re.search(r"\boverlay\b", filesystems) else "vfs"


@dataclass
class Containers:
    """buildah and podman pointed at the test's own container storage."""

    env: dict[str, str]

    def podman(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", "--runtime", "runc", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    def popen(self, args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        with log_path.open("wb") as out:
            return subprocess.Popen(
                ["podman", "--runtime", "runc", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )


@pytest.fixture(scope="module")
def containers() -> Containers:
    for tool, package in (("buildah", "buildah"), ("podman", "podman"), ("runc", "runc")):
        require(shutil.which(tool) is not None, f"{tool} (Debian package {package})")
    require(os.geteuid() == 0, "root (rootful buildah and podman; debootstrap for the base)")
    driver = storage_driver()
    directory = CACHE / driver
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "storage.conf"
    conf.write_text(
        "[storage]\n"
        f'driver = "{driver}"\n'
        f'graphroot = "{directory / "storage"}"\n'
        f'runroot = "{directory / "run"}"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYPI_BRIDGE_")}
    env["CONTAINERS_STORAGE_CONF"] = str(conf)
    return Containers(env)


@pytest.fixture(scope="module")
def image(containers: Containers, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built by deploy/build-image.sh with buildah; the build time is reported."""
    # Each edit of bridge/ leaves the previous build's images behind, untagged; past a dozen the
    # cache is dropped (the tagged Debian base stays), so the cache does not grow for ever.
    dangling = containers.podman("images", "--quiet", "--filter", "dangling=true")
    if len(dangling.stdout.split()) > MAX_DANGLING:
        containers.podman("image", "prune", "--force", timeout=300)
    log_path = tmp_path_factory.mktemp("image") / "build.log"
    started = time.monotonic()
    with log_path.open("wb") as out:
        completed = subprocess.run(
            [str(BUILD_SCRIPT), TAG],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**containers.env, "IMAGE_BUILDER": "buildah"},
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    elapsed = time.monotonic() - started
    output = log_path.read_text(errors="replace")
    assert completed.returncode == 0, f"image build failed:\n{output[-4000:]}"
    base = re.findall(r"\(base (\S+)\)", output)
    Figures().add(f"image build ({TAG}, base {base[-1] if base else '?'})", f"{elapsed:.1f} s")
    print(f"image build took {elapsed:.1f} s")
    return TAG


def inspect(containers: Containers, reference: str) -> dict[str, Any]:
    completed = containers.podman("image", "inspect", reference)
    assert completed.returncode == 0, completed.stderr
    (found,) = orjson.loads(completed.stdout)
    result: dict[str, Any] = found
    return result


def locked_pins() -> dict[str, str]:
    """Distribution name (normalized) -> version, as deploy/requirements.lock pins them."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", LOCK.read_text(), re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


# --- what was built -------------------------------------------------------------------------


def test_image_config_runs_the_bridge_as_user_10001(containers: Containers, image: str) -> None:
    found = inspect(containers, image)
    config = found["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["pypi-bridge"]
    assert config["Cmd"] == ["run"]
    assert "9300/tcp" in config["ExposedPorts"]
    # The build keeps the Docker format, so the HEALTHCHECK survives (OCI would drop it).
    assert "/healthz" in " ".join(found["Healthcheck"]["Test"])


def test_image_holds_exactly_the_locked_versions_and_no_pip(
    containers: Containers, image: str
) -> None:
    listing = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    completed = containers.podman(
        "run", *RUN_OPTIONS, "--read-only", "--entrypoint", "python", image, "-c", listing
    )
    assert completed.returncode == 0, completed.stderr
    installed = {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in orjson.loads(completed.stdout).items()
    }
    assert installed.pop("pypi-kafka-bridge") == VERSION
    assert installed == locked_pins()


# --- how it runs ----------------------------------------------------------------------------


@dataclass
class Running:
    """The bridge in a container, with the oracle it publishes from."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int
    journal: Simulator
    bootstrap: str
    pid: int

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            status: int = response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
    return status


@pytest.fixture(scope="module")
def running(
    containers: Containers,
    image: str,
    broker: EmbeddedBroker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    directory = tmp_path_factory.mktemp("container")
    journal = start_simulator(directory, "--prefill", "3000", "--rate", "0", "--seed", "13")
    name = f"pypi-bridge-test-{os.getpid()}"
    port = free_port()
    args = [
        "run",
        *RUN_OPTIONS,
        "--name",
        name,
        # As the chart runs it: nothing writable but an emptyDir-like tmpfs on /tmp.
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs",
        "/tmp:rw,size=16m",
        # The port through the environment, as the chart sets it and the HEALTHCHECK reads it.
        "--env",
        f"PYPI_BRIDGE_HTTP_PORT={port}",
        image,
        "run",
        "--pypi-url",
        journal.url,
        "--bootstrap-servers",
        broker.bootstrap_servers,
        "--topic-prefix",
        PREFIX,
        "--start-serial",
        "0",
        "--min-request-interval",
        "0",
        "--poll-interval",
        "0.2",
        "--http-host",
        "127.0.0.1",
    ]
    log_path = directory / "container.log"
    process = containers.popen(args, log_path)
    try:
        deadline = time.monotonic() + 120
        pid = 0
        while pid == 0:
            assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the container did not start in 120 s"
            state = containers.podman("inspect", "--format", "{{.State.Pid}}", name)
            pid = int(state.stdout.strip() or 0) if state.returncode == 0 else 0
            time.sleep(0.2)
        yield Running(name, process, log_path, port, journal, broker.bootstrap_servers, pid)
    finally:
        if process.poll() is None:
            containers.podman("kill", name)
            process.wait(60)
        containers.podman("rm", "--force", "--ignore", name)
        journal.stop()


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def mount_options(pid: int) -> dict[str, tuple[str, str]]:
    """Mount point -> (filesystem type, per-mount options), as the process sees its mounts."""
    found: dict[str, tuple[str, str]] = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text(encoding="utf-8").splitlines():
        fields, _, tail = line.partition(" - ")
        parts = fields.split()
        found[parts[4]] = (tail.split()[0], parts[5])
    return found


def test_container_process_runs_as_uid_10001(running: Running) -> None:
    status = proc_status(running.pid)
    assert status["Name"].startswith("pypi-bridge")
    # Real, effective, saved and filesystem ids; no user namespace, so the host sees them as is.
    assert status["Uid"].split() == [str(UID)] * 4
    assert status["Gid"].split() == [str(UID)] * 4


def test_container_root_filesystem_is_read_only_with_a_tmpfs_on_tmp(running: Running) -> None:
    mounts = mount_options(running.pid)
    assert "ro" in mounts["/"][1].split(",")
    assert mounts["/tmp"][0] == "tmpfs"
    assert "rw" in mounts["/tmp"][1].split(",")


def test_container_serves_readyz(running: Running) -> None:
    deadline = time.monotonic() + 90
    while readyz(running.http_port) != 200:
        assert running.process.poll() is None, running.output()[-3000:]
        assert time.monotonic() < deadline, f"/readyz never 200:\n{running.output()[-3000:]}"
        time.sleep(0.3)


def test_container_passes_its_own_healthcheck(
    containers: Containers, image: str, running: Running
) -> None:
    test_container_serves_readyz(running)
    kind, *command = inspect(containers, image)["Healthcheck"]["Test"]
    assert kind == "CMD"
    checked = containers.podman("exec", running.name, *command)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_container_publishes_every_journal_row_once(running: Running) -> None:
    rows = running.journal.rows()
    assert len(rows) == 3000
    head = rows[-1][4]
    deadline = time.monotonic() + 120
    while True:
        assert running.process.poll() is None, running.output()[-3000:]
        try:
            committed = await asyncio.to_thread(
                metric, running.http_port, "pypi_bridge_committed_serial"
            )
        except OSError:
            committed = -1
        if committed >= head:
            break
        assert time.monotonic() < deadline, f"serial {head} not committed:\n{running.output()}"
        await asyncio.sleep(0.5)
    records = await read_events(running.bootstrap, PREFIX)
    seen = Counter(int(dict(record.headers)["ce_id"]) for record in records)
    assert sorted(seen) == [row[4] for row in rows]
    assert set(seen.values()) == {1}


def test_container_stops_on_sigterm_within_the_grace_period(
    containers: Containers, running: Running, figures: Figures
) -> None:
    test_container_serves_readyz(running)
    started = time.monotonic()
    sent = containers.podman("kill", "--signal", "TERM", running.name)
    assert sent.returncode == 0, sent.stderr
    try:
        code = running.process.wait(GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still running {GRACE_SECONDS:.0f} s after SIGTERM:\n{running.output()[-3000:]}"
        ) from None
    elapsed = time.monotonic() - started
    figures.add("image: SIGTERM to exit", f"{elapsed:.1f} s")
    assert code == 0, running.output()[-3000:]
    assert "Traceback" not in running.output()
