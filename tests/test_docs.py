"""Docs change with the code: the README names every flag, metric and event type there is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.config import RUN_FLAGS, Flag
from bridge.events import EVENT_TYPES
from bridge.metrics import Metrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```", 2)[1]
    assert "make demo" in first_block
    assert "make test" in first_block


@pytest.mark.parametrize("flag", RUN_FLAGS, ids=lambda f: f.name)
def test_readme_configuration_table_lists_every_run_flag(flag: Flag) -> None:
    assert f"| `--{flag.name}` | `{flag.env}` |" in README


def test_readme_lists_every_metric() -> None:
    names = {
        metric.name
        for metric in Metrics("docs").registry.collect()
        if metric.name.startswith("pypi_bridge_")
    }
    # prometheus_client reports counters without their `_total` suffix.
    documented = set(re.findall(r"`(pypi_bridge_[a-z_]+)", README))
    for name in names:
        assert name in documented or f"{name}_total" in documented, name


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_readme_lists_every_event_type(event_type: str) -> None:
    assert f"`{event_type}`" in README
