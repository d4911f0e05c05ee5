"""The report: the figures against their targets, as a printed table, `latest.json` and
`latest.md`."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiokafka
import orjson

import bridge
from benchmarks.backfill.harness import (
    CONSUMER_FETCH_WAIT_MS,
    FIRST_COMMIT,
    FRESHNESS_SLACK,
    KILL_TAKEOVER_SLACK,
    LEADER_SESSION_TIMEOUT,
    MIN_REQUEST_INTERVAL,
    PHASE_MARKS,
    PHASES_NOTE,
    POLL_INTERVAL,
    TARGET_GRACEFUL_TAKEOVER,
    TARGET_PEAK_MB,
    TARGET_ROWS_PER_SECOND,
    TARGET_SPEEDUP,
    Startup,
    seconds_text,
    verdict,
)
from benchmarks.backfill.scenarios import Backfill, Freshness, KafkaRun, Naive

# --- figures ----------------------------------------------------------------------------------


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    target: str
    ratio_to_baseline: float | None
    met: bool | None


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb: float | None = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 1024 / 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_gb, 1) if memory_gb is not None else None,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "aiokafka": aiokafka.__version__,
        "orjson": orjson.__version__,
        "aiohttp": aiohttp.__version__,
        "bridge": bridge.__version__,
    }


def figures(backfill: Backfill, naive: Naive, fresh: Freshness, kafka: KafkaRun) -> list[Figure]:
    base = naive.rows_per_second
    speedup = backfill.rows_per_second / base
    fresh_target = POLL_INTERVAL + FRESHNESS_SLACK
    return [
        Figure(
            "backfill, process start to exit",
            backfill.rows_per_second,
            "rows/s",
            f">= {TARGET_ROWS_PER_SECOND:,}",
            speedup,
            backfill.rows_per_second >= TARGET_ROWS_PER_SECOND and backfill.verified,
        ),
        Figure(
            "backfill, first to last commit",
            backfill.rows_per_second_after_first_commit,
            "rows/s",
            "",
            _ratio(backfill.rows_per_second_after_first_commit, base),
            None,
        ),
        Figure("backfill, start-up to first commit", backfill.startup_seconds, "s", "", None, None),
        Figure("naive baseline", base, "rows/s", "", 1.0, None),
        Figure(
            "speed-up over the naive baseline",
            speedup,
            "x",
            f">= {TARGET_SPEEDUP:g}x",
            None,
            speedup >= TARGET_SPEEDUP,
        ),
        Figure(
            "peak RSS during the backfill",
            backfill.peak_rss_mb,
            "MB",
            f"<= {TARGET_PEAK_MB:g}",
            None,
            backfill.peak_rss_mb <= TARGET_PEAK_MB,
        ),
        Figure(
            "bridge CPU per 1,000 rows", backfill.bridge_cpu_ms_per_1000_rows, "ms", "", None, None
        ),
        Figure("freshness p50", fresh.p50, "s", "", None, None),
        Figure(
            "freshness p99",
            fresh.p99,
            "s",
            f"<= {fresh_target:g}",
            None,
            fresh.p99 is not None and fresh.missing == 0 and fresh.p99 <= fresh_target,
        ),
        *kafka_figures(kafka),
    ]


KAFKA = "real Kafka: "


def kafka_figures(kafka: KafkaRun) -> list[Figure]:
    """The real-Kafka rows; n/a (and no verdict) when that part did not run."""
    kb = kafka.backfill
    rows: list[Figure] = [
        Figure(
            KAFKA + "backfill, process start to exit",
            kb.rows_per_second if kb else None,
            "rows/s",
            f">= {TARGET_ROWS_PER_SECOND:,}",
            None,
            (kb.rows_per_second >= TARGET_ROWS_PER_SECOND and kb.verified) if kb else None,
        ),
        Figure(
            KAFKA + "backfill, first to last commit",
            kb.rows_per_second_after_first_commit if kb else None,
            "rows/s",
            "",
            None,
            None,
        ),
        Figure(
            KAFKA + "backfill, start-up to first commit",
            kb.startup_seconds if kb else None,
            "s",
            "",
            None,
            None,
        ),
        Figure(
            KAFKA + "peak RSS during the backfill",
            kb.peak_rss_mb if kb else None,
            "MB",
            f"<= {TARGET_PEAK_MB:g}",
            None,
            kb.peak_rss_mb <= TARGET_PEAK_MB if kb else None,
        ),
        Figure(
            KAFKA + "bridge CPU per 1,000 rows",
            kb.bridge_cpu_ms_per_1000_rows if kb else None,
            "ms",
            "",
            None,
            None,
        ),
    ]
    targets = {
        "SIGTERM": TARGET_GRACEFUL_TAKEOVER,
        "SIGKILL": LEADER_SESSION_TIMEOUT + KILL_TAKEOVER_SLACK,
    }
    for name, target in targets.items():
        takeover = kafka.takeovers.get(name)
        rows += [
            Figure(
                f"{KAFKA}takeover after {name}, to the leader line",
                takeover.to_leader_line if takeover else None,
                "s",
                f"<= {target:g}",
                None,
                takeover.met if takeover else None,
            ),
            Figure(
                f"{KAFKA}takeover after {name}, to the first commit",
                takeover.to_first_commit if takeover else None,
                "s",
                "",
                None,
                None,
            ),
        ]
    return rows


def _ratio(value: float | None, base: float) -> float | None:
    return None if value is None or base <= 0 else value / base


# --- tables -----------------------------------------------------------------------------------


def _value(figure: Figure) -> str:
    if figure.value is None:
        return "n/a"
    if figure.unit == "rows/s":
        return f"{figure.value:,.0f} rows/s"
    if figure.unit == "x":
        return f"{figure.value:.1f}x"
    if figure.unit == "MB":
        return f"{figure.value:.1f} MB"
    if figure.unit == "ms":
        return f"{figure.value:.1f} ms"
    return f"{figure.value:.3f} {figure.unit}"


def _cells(figure: Figure) -> list[str]:
    ratio = "" if figure.ratio_to_baseline is None else f"{figure.ratio_to_baseline:.1f}x"
    met = verdict(figure.met)
    target = f"{figure.target} {figure.unit}".strip() if figure.target else ""
    if figure.unit == "x":
        target = figure.target
    return [figure.name, _value(figure), target, ratio, met]


HEADER = ["figure", "value", "target", "vs baseline", "met"]


def text_grid(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _markdown_grid(cells: list[list[str]]) -> str:
    header, *body = cells
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def text_table(rows: list[Figure]) -> str:
    return text_grid([HEADER, *(_cells(f) for f in rows)])


def markdown_table(rows: list[Figure]) -> str:
    return _markdown_grid([HEADER, *(_cells(f) for f in rows)])


def phase_cells(startups: Sequence[Startup]) -> list[list[str]]:
    """Phases down, start-ups across; a blank cell is a phase that start-up did not go through."""
    names = [name for name, _ in PHASE_MARKS] + [FIRST_COMMIT]
    cells = [["start-up phase", *(s.scenario for s in startups)]]
    for name in names:
        row = [name]
        for startup in startups:
            found = next((p.seconds for p in startup.phases if p.name == name), None)
            row.append("" if found is None else f"{found:.3f} s")
        if any(row[1:]):
            cells.append(row)
    cells.append(["total", *(seconds_text(s.total) for s in startups)])
    return cells


def describe_machine(info: dict[str, Any], date: str) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gb']} GB RAM; "
        f"Python {info['python']}, {info['os']}; aiokafka {info['aiokafka']}; {date}"
    )


# --- notes and files --------------------------------------------------------------------------


def _cpu_line(backfill: Backfill, broker: str) -> str:
    cpu = [
        f"bridge {backfill.bridge_cpu_seconds:.1f} s "
        f"({backfill.bridge_cpu_ms_per_1000_rows:.1f} ms per 1,000 rows)"
    ]
    if backfill.broker_cpu_seconds is not None:
        cpu.append(f"{broker} {backfill.broker_cpu_seconds:.1f} s")
    if backfill.simulator_cpu_seconds is not None:
        cpu.append(f"simulator {backfill.simulator_cpu_seconds:.1f} s")
    return f"{', '.join(cpu)} (wall {backfill.seconds:.1f} s)"


def _backfill_line(backfill: Backfill) -> str:
    if backfill.distinct_serials is None:
        events = f"{backfill.delivered:,} events in the topics"
    else:
        events = (
            f"{backfill.delivered:,} events read back with read_committed, "
            f"{backfill.distinct_serials:,} distinct serials"
        )
    return (
        f"{backfill.rows:,} rows in {backfill.seconds:.1f} s: start-up "
        f"{seconds_text(backfill.startup_seconds)}, {backfill.commits} commits over "
        f"{seconds_text(backfill.commit_seconds)}; {events}, checkpoint at serial "
        f"{backfill.checkpoint_serial} of {backfill.last_serial} "
        f"({'verified' if backfill.verified else 'NOT VERIFIED'}); delivery mode "
        f"{backfill.delivery_mode or 'unknown'}."
    )


def notes(backfill: Backfill, naive: Naive, fresh: Freshness, kafka: KafkaRun) -> list[str]:
    resolution = (
        f", mean poll gap {fresh.visibility_resolution * 1000:.0f} ms"
        if fresh.visibility_resolution is not None
        else ""
    )
    lines = [
        'Rows without "real Kafka:" ran on the embedded broker (tansu; the bridge picks '
        "high-water delivery there).",
        f"Backfill: {_backfill_line(backfill)}",
        f"CPU time during the backfill: {_cpu_line(backfill, 'broker')}; CPU is user + system "
        "of the bridge process from wait4, divided by the rows.",
        f"Peak RSS from the kernel (wait4 ru_maxrss, VmHWM); largest of "
        f"{backfill.memory_samples} VmRSS samples (every 50 ms): "
        f"{backfill.sampled_max_rss_mb:.1f} MB.",
        f"Naive baseline: {naive.rows:,} rows in {naive.seconds:.1f} s (ServerProxy paging, a "
        "dict per row, json.dumps, one awaited send_and_wait per record, aiokafka defaults).",
        f"Freshness: {fresh.events:,} events over {fresh.seconds:g} s at {fresh.rate:g} rows/s, "
        f"{fresh.missing} missing, max {seconds_text(fresh.max)}; poll interval "
        f"{POLL_INTERVAL:g} s, min request interval {MIN_REQUEST_INTERVAL:g} s (defaults); "
        f"visibility from {fresh.visibility}{resolution}; consumer fetch wait "
        f"{CONSUMER_FETCH_WAIT_MS} ms.",
    ]
    return lines + kafka_notes(kafka)


def kafka_notes(kafka: KafkaRun) -> list[str]:
    kb = kafka.backfill
    if not kafka.available or kb is None:
        return [f"Apache Kafka: NOT MEASURED ({kafka.reason}); its rows are n/a."]
    lines = [
        f"Apache Kafka {kafka.version}: one KRaft node (broker and controller, a JVM with a "
        "512 MB heap) on the same machine, started by tests/realkafka.py in "
        f"{seconds_text(kafka.start_seconds)}; its internal topics (__consumer_offsets, "
        f"__transaction_state) were created before any measurement, in "
        f"{seconds_text(kafka.warm_up_seconds)}, as a long-lived cluster has them; the bridge "
        f"auto-detected {kb.delivery_mode} delivery.",
        f"Real-Kafka backfill (same journal): {_backfill_line(kb)}",
        f"Real-Kafka CPU time: {_cpu_line(kb, 'Kafka JVM')}.",
    ]
    for name, takeover in kafka.takeovers.items():
        old = (
            f"the old leader exited {seconds_text(takeover.old_leader_exit_seconds)} after the "
            f"signal (status {takeover.old_leader_returncode})"
        )
        if takeover.old_leader_stopped_seconds is not None:
            old = (
                f"the old leader logged that it stopped producing after "
                f"{takeover.old_leader_stopped_seconds:.3f} s and {old}"
            )
        lines.append(
            f"Takeover after {name}: two replicas (--leader-session-timeout "
            f"{takeover.session_timeout:g}, heartbeat every "
            f"{max(0.3, takeover.session_timeout / 10):g} s) tail a journal the harness grows by "
            "one row every 50 ms, with the default intervals; from the signal, the standby's "
            "leader line after "
            f"{takeover.to_leader_line:.3f} s (target {takeover.target_seconds:g} s: "
            f'{verdict(takeover.met)}), its "resuming after serial" after '
            f"{takeover.to_resumed:.3f} s, its first commit after "
            f"{seconds_text(takeover.to_first_commit)}; {old}; the standby's join made the leader "
            f"end and restart its term {takeover.leader_terms_ended_by_join} time(s)."
        )
    lines.append(
        "Start-up phases come from the bridge's own log timestamps (UTC, to the millisecond) and "
        "the first checkpoint's written_at; takeover columns count from the signal."
    )
    return lines


def write_results(
    output: Path,
    info: dict[str, Any],
    date: str,
    settings: dict[str, Any],
    rows: list[Figure],
    details: dict[str, Any],
    lines: list[str],
    startups: Sequence[Startup] = (),
) -> tuple[Path, Path]:
    output.mkdir(parents=True, exist_ok=True)
    payload = {
        "date": date,
        "machine": info,
        "settings": settings,
        "figures": [asdict(f) for f in rows],
        "details": details,
        "notes": lines,
    }
    markdown = "\n".join(
        [
            "# Benchmark: `python -m benchmarks.backfill`",
            "",
            f"Machine: {describe_machine(info, date)}.",
            "",
            markdown_table(rows),
            "",
            *(f"- {line}" for line in lines),
            "",
            *(
                [
                    "## Start-up phases",
                    "",
                    PHASES_NOTE,
                    "",
                    _markdown_grid(phase_cells(startups)),
                    "",
                ]
                if startups
                else []
            ),
        ]
    )
    json_path, md_path = output / "latest.json", output / "latest.md"
    for path, text in ((json_path, json.dumps(payload, indent=2) + "\n"), (md_path, markdown)):
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(text)
        temporary.replace(path)
    return json_path, md_path
