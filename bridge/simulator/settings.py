"""The simulator's flags and settings: what `pypi-bridge simulate` can be told, validated once."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from bridge.config import (
    Flag,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
)
from bridge.errors import ConfigError
from bridge.simulator.journal import Journal

FAULT_KINDS = ("502", "503", "timeout", "truncate", "malformed", "reset")
#: Kinds `POST /_sim/faults` accepts on top of `FAULT_KINDS`.
CONTROL_FAULT_KINDS = (*FAULT_KINDS, "throttle", "fault")
#: How the rate limit is advertised: the fields of draft-ietf-httpapi-ratelimit-headers-10
#: (`RateLimit-Policy` and `RateLimit`, what PyPI sends since June 2026), the three fields of its
#: revisions 00 to 06 (`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`), or nothing.
RATE_LIMIT_HEADERS = ("draft-10", "legacy", "none")
#: PyPI's code default: 3,600 calls per client IP in a moving hour.
PYPI_RATE_LIMIT = 3_600
PYPI_RATE_LIMIT_WINDOW = 3_600.0


def probability(text: str) -> float:
    """A probability from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("expected a probability from 0 to 1")
    return value


def fault_kinds(text: str) -> tuple[str, ...]:
    """A comma-separated list of fault kinds (see `FAULT_KINDS`)."""
    kinds = tuple(part.strip().lower() for part in text.split(",") if part.strip())
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"expected a comma list of {', '.join(FAULT_KINDS)}")
    return kinds


def header_style(text: str) -> str:
    """One of `RATE_LIMIT_HEADERS`."""
    style = text.strip().lower()
    if style not in RATE_LIMIT_HEADERS:
        raise ValueError(f"expected one of {', '.join(RATE_LIMIT_HEADERS)}")
    return style


def _serial(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 2**31 - 1:
        raise ValueError("expected a serial from 1 to 2147483647 (32-bit on the wire)")
    return value


SIMULATE_FLAGS = (
    Flag("host", str, "127.0.0.1", "address the simulator listens on"),
    Flag("port", port, 8800, "port the simulator listens on (0 picks a free one)"),
    Flag("seed", int, 0, "seed of the generated traffic (same seed, same journal)"),
    Flag("prefill", non_negative_int, 0, "journal rows generated before serving"),
    Flag(
        "first-serial",
        _serial,
        40_000_000,
        "serial of the first row; it sets the era (below ~3.7 million: legacy PyPI's texts)",
    ),
    Flag(
        "rate",
        non_negative_float,
        0.25,
        "live rows per second appended while serving, in bursts (0.25 is PyPI's ~20k a day)",
    ),
    Flag("page-size", positive_int, 50_000, "most rows one changelog_since_serial returns"),
    Flag(
        "rate-limit",
        non_negative_int,
        PYPI_RATE_LIMIT,
        "calls allowed per window and client IP, every method counted; once they are used up "
        "a call is answered with the -32500 HTTPTooManyRequests fault (0: no limit and no "
        "rate-limit headers; PyPI: 3600)",
    ),
    Flag(
        "rate-limit-window",
        positive_float,
        PYPI_RATE_LIMIT_WINDOW,
        "seconds of the moving rate-limit window (PyPI: 3600)",
    ),
    Flag(
        "rate-limit-headers",
        header_style,
        "draft-10",
        "rate-limit headers on every XML-RPC answer, faults included: draft-10 "
        '(RateLimit-Policy: "pypi-xmlrpc";q=QUOTA;w=WINDOW and RateLimit: '
        '"pypi-xmlrpc";r=REMAINING;t=RESET, as PyPI since June 2026), legacy (RateLimit-Limit, '
        "RateLimit-Remaining, RateLimit-Reset, for older clients) or none",
    ),
    Flag("fault-rate", probability, 0.0, "probability that a call fails (kinds from --faults)"),
    Flag("faults", fault_kinds, FAULT_KINDS, "comma list of fault kinds --fault-rate draws from"),
    Flag("latency", non_negative_float, 0.0, "seconds added to every call"),
    Flag(
        "stop-after-rows",
        non_negative_int,
        None,
        "stop appending live rows once the journal holds this many",
    ),
    Flag(
        "unknown-rate",
        probability,
        0.001,
        "share of generated transactions with an action text no catalog knows",
    ),
    Flag(
        "hang",
        positive_float,
        300.0,
        "seconds a 'timeout' fault holds a call before dropping the connection",
    ),
)


@dataclass(frozen=True)
class SimulatorSettings:
    """Everything `pypi-bridge simulate` needs, validated together."""

    host: str = "127.0.0.1"
    port: int = 8800
    seed: int = 0
    prefill: int = 0
    first_serial: int = 40_000_000
    rate: float = 0.25
    page_size: int = 50_000
    #: Calls per window and client IP (0: no limit, no headers), and the window in seconds.
    rate_limit: int = PYPI_RATE_LIMIT
    rate_limit_window: float = PYPI_RATE_LIMIT_WINDOW
    #: One of `RATE_LIMIT_HEADERS`.
    rate_limit_headers: str = "draft-10"
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    latency: float = 0.0
    stop_after_rows: int | None = None
    unknown_rate: float = 0.001
    hang: float = 300.0

    def __post_init__(self) -> None:
        if self.rate_limit_headers not in RATE_LIMIT_HEADERS:
            raise ConfigError(
                f"rate_limit_headers {self.rate_limit_headers!r} is not one of "
                f"{', '.join(RATE_LIMIT_HEADERS)}",
                "pick one of those",
            )

    def new_journal(self) -> Journal:
        """An empty journal generating this configuration's traffic."""
        return Journal(
            seed=self.seed, first_serial=self.first_serial, unknown_rate=self.unknown_rate
        )


def simulator_settings(ns: argparse.Namespace) -> SimulatorSettings:
    """The validated settings of `pypi-bridge simulate`, from flags parsed with SIMULATE_FLAGS."""
    if ns.stop_after_rows is not None and ns.stop_after_rows < ns.prefill:
        raise ConfigError(
            f"--stop-after-rows {ns.stop_after_rows} is below --prefill {ns.prefill}",
            "give a row count at or above the prefill",
        )
    return SimulatorSettings(
        host=ns.host,
        port=ns.port,
        seed=ns.seed,
        prefill=ns.prefill,
        first_serial=ns.first_serial,
        rate=ns.rate,
        page_size=ns.page_size,
        rate_limit=ns.rate_limit,
        rate_limit_window=ns.rate_limit_window,
        rate_limit_headers=ns.rate_limit_headers,
        fault_rate=ns.fault_rate,
        faults=tuple(ns.faults),
        latency=ns.latency,
        stop_after_rows=ns.stop_after_rows,
        unknown_rate=ns.unknown_rate,
        hang=ns.hang,
    )
