"""Run the fuzz engine for a while, in a child process, and say what it did and what it found.

libFuzzer ends its process when its time is up or at the first input that breaks a property, so
the engine runs as `python -m tests.fuzz.engine`, and this module reads its report: how many
inputs it executed, the coverage and corpus it reached, and the inputs it wrote as findings
(`crash-*` for a broken property or an unexpected exception, `timeout-*`, `oom-*`, `slow-unit-*`).

The committed seeds are read, never written: the corpus a run grows goes to `.cache/fuzz/`, so a
longer run starts from what the runs before it found, and the work tree stays clean.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SEEDS = HERE / "corpus" / "changelog"
DICTIONARY = HERE / "xmlrpc.dict"
WORK = ROOT / ".cache" / "fuzz"
#: The largest input libFuzzer makes: room for every seed, small enough to mutate fast.
MAX_LEN = 12288
#: Seconds one input may take before libFuzzer calls it a hang (a page of rows takes well
#: under a millisecond here).
INPUT_TIMEOUT = 10
RSS_LIMIT_MB = 2048
#: Seconds the child may take beyond its budget to start, load the corpus and write its report.
GRACE = 120

_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)
_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/", re.M)
_WRITTEN = re.compile(r"Test unit written to (\S+)")
_KNOWN = re.compile(r"^fuzz: known bug (\S+)", re.M)
_FINDING_PREFIXES = ("crash-", "timeout-", "oom-", "slow-unit-", "leak-")


@dataclass(frozen=True)
class FuzzRun:
    """What one run of the engine did and found."""

    seconds: float
    executions: int
    coverage: int
    corpus_before: int
    corpus_after: int
    returncode: int
    findings: list[Path] = field(default_factory=list)
    #: The Python traceback atheris printed for an uncaught exception, if any.
    traceback: str = ""
    #: Known bugs (`tests.fuzz.target.KNOWN_BUGS`) the run ran into and tolerated.
    known: list[str] = field(default_factory=list)
    log: Path | None = None

    @property
    def clean(self) -> bool:
        """The run went its whole time and found nothing."""
        return self.returncode == 0 and not self.findings

    def summary(self) -> str:
        """One paragraph for a person: numbers first, then what was found and what to do."""
        rate = self.executions / self.seconds if self.seconds else 0.0
        head = (
            f"fuzz changelog: {self.executions:,} executions in {self.seconds:.0f} s "
            f"({rate:,.0f}/s), coverage {self.coverage:,} edges, corpus "
            f"{self.corpus_before} -> {self.corpus_after} inputs"
        )
        if self.known:
            head += f"; ran into known bug(s) {', '.join(self.known)} (tolerated)"
        if self.clean:
            return f"{head}; found nothing new" if self.known else f"{head}; found nothing"
        lines = [f"{head}; FOUND {len(self.findings) or 'a failure'} (exit {self.returncode})"]
        lines += [f"  finding: {path}" for path in self.findings]
        if self.traceback:
            lines.append(self.traceback.rstrip())
        if self.findings:
            lines.append(
                "  replay: .venv/bin/python -m tests.fuzz --replay FILE; then commit the input "
                f"as {SEEDS.relative_to(ROOT)}/regression-<what> with a test in "
                "tests/test_fuzz.py"
            )
        if self.log is not None:
            lines.append(f"  log: {self.log}")
        return "\n".join(lines)


def command(seconds: int, grown: Path, findings: Path, tolerate_known: bool = True) -> list[str]:
    """The engine's command line: the grown corpus first (libFuzzer writes new inputs there)."""
    return [
        sys.executable,
        "-m",
        "tests.fuzz.engine",
        *([] if tolerate_known else ["--no-known"]),
        f"-max_total_time={seconds}",
        f"-timeout={INPUT_TIMEOUT}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-max_len={MAX_LEN}",
        f"-dict={DICTIONARY}",
        f"-artifact_prefix={findings}/",
        "-print_final_stats=1",
        str(grown),
        str(SEEDS),
    ]


def run(
    seconds: int,
    work: Path = WORK,
    echo: Callable[[str], None] | None = None,
    tolerate_known: bool = True,
) -> FuzzRun:
    """Fuzz for `seconds`; `echo` receives libFuzzer's progress lines as they come."""
    grown = work / "corpus" / "changelog"
    findings = work / "findings"
    grown.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    log = work / "last-run.log"
    before = set(findings.iterdir())
    started = time.monotonic()
    lines: list[str] = []
    with (
        log.open("w", encoding="utf-8") as out,
        subprocess.Popen(
            command(seconds, grown, findings, tolerate_known),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as child,
    ):
        assert child.stdout is not None
        deadline = started + seconds + GRACE
        for line in child.stdout:
            out.write(line)
            lines.append(line)
            if echo is not None and (
                "\tpulse " in line
                or "\tINITED " in line
                or "\tDONE " in line
                or "known bug" in line
            ):
                echo(line.rstrip())
            if time.monotonic() > deadline:
                child.kill()
                lines.append(f"runner: killed the engine after {seconds + GRACE} s\n")
                break
        returncode = child.wait()
    elapsed = time.monotonic() - started
    text = "".join(lines)
    return _report(text, returncode, elapsed, sorted(set(findings.iterdir()) - before), log)


def _report(text: str, returncode: int, elapsed: float, new: list[Path], log: Path) -> FuzzRun:
    stats = {name: int(value) for name, value in _STAT.findall(text)}
    done = _DONE.search(text)
    statuses = _STATUS.findall(text)
    executions = stats.get("number_of_executed_units")
    if executions is None:
        executions = int(done.group(1)) if done else (int(statuses[-1][0]) if statuses else 0)
    inited = [s for s in statuses if s[1] == "INITED"]
    written = [Path(path) for path in _WRITTEN.findall(text)]
    findings = sorted({*written, *(p for p in new if p.name.startswith(_FINDING_PREFIXES))})
    return FuzzRun(
        seconds=float(done.group(2)) if done else elapsed,
        executions=executions,
        coverage=int(statuses[-1][2]) if statuses else 0,
        corpus_before=int(inited[0][4]) if inited else 0,
        corpus_after=int(statuses[-1][4]) if statuses else 0,
        returncode=returncode,
        findings=findings,
        traceback=_traceback(text),
        known=sorted(set(_KNOWN.findall(text))),
        log=log,
    )


def _traceback(text: str) -> str:
    """The uncaught-exception report atheris prints, from its banner to the traceback's end."""
    start = text.find("=== Uncaught Python exception: ===")
    if start < 0:
        return ""
    end = text.find("\n==", start + 1)
    return text[start : end if end >= 0 else len(text)]
