"""The PyPI journal simulator behind `pypi-bridge simulate`.

An aiohttp server speaking PyPI's XML-RPC mirroring protocol on `/pypi` exactly as JOURNAL.md
describes it (methods, row shape, silent page cap, faults, per-IP moving-window rate limit and
its rate-limit headers), fed by a seeded generator of realistic journal traffic whose texts
follow the era of the serial. Tests and demos steer the server through small JSON endpoints
under `/_sim/`. One module per part, in the order a row travels:

- `traffic`: the world of projects, users and teams, and the transactions it writes;
- `journal`: the rows stored as their XML-RPC bytes, paged out like PyPI;
- `server`: the XML-RPC endpoint, its faults and rate limit, and the server's life cycle;
- `control`: the `/_sim/` endpoints;
- `settings`: the flags of `pypi-bridge simulate`.
"""

from bridge.simulator.journal import Journal, Row
from bridge.simulator.server import (
    RATE_LIMIT_POLICY,
    SIMULATOR,
    XMLRPC_PATH,
    MovingWindow,
    Quota,
    RunningSimulator,
    log,
    prefilled_journal,
    rate_limit_headers,
    running_simulator,
    serve,
    simulator_app,
)
from bridge.simulator.settings import (
    CONTROL_FAULT_KINDS,
    FAULT_KINDS,
    PYPI_RATE_LIMIT,
    PYPI_RATE_LIMIT_WINDOW,
    RATE_LIMIT_HEADERS,
    SIMULATE_FLAGS,
    SimulatorSettings,
    fault_kinds,
    header_style,
    probability,
    simulator_settings,
)
from bridge.simulator.traffic import LEGACY_END, era_serial, era_timestamp, normalize

__all__ = [
    "CONTROL_FAULT_KINDS",
    "FAULT_KINDS",
    "LEGACY_END",
    "PYPI_RATE_LIMIT",
    "PYPI_RATE_LIMIT_WINDOW",
    "RATE_LIMIT_HEADERS",
    "RATE_LIMIT_POLICY",
    "SIMULATE_FLAGS",
    "SIMULATOR",
    "XMLRPC_PATH",
    "Journal",
    "MovingWindow",
    "Quota",
    "Row",
    "RunningSimulator",
    "SimulatorSettings",
    "era_serial",
    "era_timestamp",
    "fault_kinds",
    "header_style",
    "log",
    "normalize",
    "prefilled_journal",
    "probability",
    "rate_limit_headers",
    "running_simulator",
    "serve",
    "simulator_app",
    "simulator_settings",
]
