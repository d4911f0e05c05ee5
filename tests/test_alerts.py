"""The alert rules and the Grafana dashboard shipped by the Helm chart.

The rules go through the real `promtool` (syntax check and the unit tests in
tests/promtool/alerts_test.yaml). The dashboard is checked as a model Grafana imports as is, and
every panel query is parsed by promtool too. tests/test_prometheus_integration.py then runs the
same queries against a real Prometheus scraping a real bridge; the helpers it shares live here.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.metrics import Metrics
from tests.conftest import ROOT, require

CHART_FILES = ROOT / "deploy" / "helm" / "pypi-bridge" / "files"
DASHBOARD = CHART_FILES / "grafana-dashboard.json"
RULES = CHART_FILES / "prometheus-rules.yaml"
ALERT_TESTS = ROOT / "tests" / "promtool" / "alerts_test.yaml"

#: Grafana's own variables that may appear in a query, with the value a test substitutes.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
#: What the observability contract (DESIGN.md) promises a dashboard can show.
CONTRACT_METRICS = {
    "pypi_bridge_events_published_total",
    "pypi_bridge_committed_serial",
    "pypi_bridge_source_head_serial",
    "pypi_bridge_committed_timestamp_seconds",
    "pypi_bridge_leader",
    "pypi_bridge_delivery_mode",
    "pypi_bridge_source_requests_total",
    "pypi_bridge_source_request_duration_seconds_bucket",
    "pypi_bridge_commit_duration_seconds_bucket",
    "pypi_bridge_errors_total",
    "pypi_bridge_build_info",
}
SEVERITIES = ("critical", "warning", "info")
_METRIC_NAME = re.compile(r"\bpypi_bridge_\w+")
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))|\[\[(\w+)\]\]")
_PANEL_FIELDS = ("id", "type", "title", "gridPos", "datasource", "targets")


# --- helpers shared with the integration test ------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    """One query of one dashboard panel, with every template variable substituted."""

    panel: str
    ref_id: str
    expr: str
    instant: bool


def load_dashboard() -> dict[str, Any]:
    """The dashboard model exactly as the chart ships it."""
    model: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return model


def load_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rule file, across groups."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def panels(model: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that shows data, including those nested in collapsed rows."""
    for panel in model.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def resolve_variables(expr: str, values: Mapping[str, str]) -> str:
    """Substitute `$name`, `${name}`, `${name:format}` and `[[name]]` as Grafana would.

    Raises KeyError naming any variable that has no value, so a query cannot reach Prometheus
    with a `$` left in it.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"template variable ${name} has no value (query: {expr})")
        return values[name]

    return _VARIABLE.sub(value, expr)


def panel_queries(model: Mapping[str, Any], values: Mapping[str, str]) -> list[PanelQuery]:
    """All panel queries of the dashboard, resolved with `values` plus Grafana's builtins."""
    known = {**GRAFANA_BUILTINS, **values}
    return [
        PanelQuery(
            panel=panel["title"],
            ref_id=target["refId"],
            expr=resolve_variables(target["expr"], known),
            instant=bool(target.get("instant", False)),
        )
        for panel in panels(model)
        for target in panel.get("targets", [])
    ]


def exported_metric_names() -> set[str]:
    """Series names the bridge exposes, as Prometheus stores them (with `_total`, `_bucket`...)."""
    names: set[str] = set()
    for family in Metrics("names").registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def promtool() -> str:
    """Path of promtool, or the test is skipped (failed in CI)."""
    found = shutil.which("promtool")
    require(found is not None, "promtool (Debian package prometheus)")
    assert found is not None
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool with a deadline; the caller asserts on the outcome."""
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


# --- the rule file ---------------------------------------------------------------------------


def test_rule_file_passes_promtool_check() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass_under_promtool() -> None:
    result = run_promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    document = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    fires: set[str] = set()
    stays_silent: set[str] = set()
    for case in document["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else stays_silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in load_rules()}
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - stays_silent == set(), "alerts never tested staying silent"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_description() -> None:
    for rule in load_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        # The description is the runbook: it must say what to check.
        assert "check" in rule["annotations"]["description"].lower(), rule["alert"]


def test_alert_names_are_unique() -> None:
    names = [rule["alert"] for rule in load_rules()]
    assert len(names) == len(set(names))


def test_rules_use_only_metrics_the_bridge_exports() -> None:
    used = {name for rule in load_rules() for name in _METRIC_NAME.findall(rule["expr"])}
    assert used, "no bridge metric in the rules"
    assert used - exported_metric_names() == set()


# --- the dashboard ---------------------------------------------------------------------------


def test_dashboard_imports_without_inputs_and_names_itself() -> None:
    model = load_dashboard()
    assert "__inputs" not in model
    assert "__requires" not in model
    assert model["uid"]
    assert len(model["uid"]) <= 40
    assert model["title"]
    assert model["schemaVersion"] >= 36
    # An exported model for import carries no database id.
    assert model.get("id") is None


def test_dashboard_declares_a_prometheus_datasource_variable() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    expected = {"type": "prometheus", "uid": "${datasource}"}
    model = load_dashboard()
    for panel in panels(model):
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == expected, (panel["title"], target["refId"])
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]


def test_every_panel_has_the_fields_grafana_needs() -> None:
    for panel in panels(load_dashboard()):
        missing = [field for field in _PANEL_FIELDS if field not in panel]
        assert missing == [], panel.get("title")


def test_panel_ids_are_unique() -> None:
    top = load_dashboard()["panels"]
    ids = [panel["id"] for panel in top]
    ids += [nested["id"] for row in top for nested in row.get("panels", [])]
    assert len(ids) == len(set(ids))


def test_panel_ref_ids_are_unique_within_each_panel() -> None:
    for panel in panels(load_dashboard()):
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_panels_fit_the_24_column_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(load_dashboard()):
        grid = panel["gridPos"]
        x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
        assert all(isinstance(v, int) for v in (x, y, w, h)), panel["title"]
        assert min(x, y) >= 0, panel["title"]
        assert min(w, h) > 0, panel["title"]
        assert x + w <= 24, panel["title"]
        for cell in itertools.product(range(x, x + w), range(y, y + h)):
            assert cell not in cells, f"{panel['title']} overlaps {cells.get(cell)}"
            cells[cell] = panel["title"]


def test_dashboard_queries_use_only_metrics_the_bridge_exports() -> None:
    queries = panel_queries(load_dashboard(), {"job": ".*", "instance": ".*"})
    used = {name for query in queries for name in _METRIC_NAME.findall(query.expr)}
    assert used - exported_metric_names() == set()


def test_dashboard_shows_every_metric_of_the_observability_contract() -> None:
    queries = panel_queries(load_dashboard(), {"job": ".*", "instance": ".*"})
    used = {name for query in queries for name in _METRIC_NAME.findall(query.expr)}
    assert CONTRACT_METRICS - used == set()


def test_every_template_variable_in_a_query_is_defined() -> None:
    model = load_dashboard()
    defined = {variable["name"]: ".*" for variable in model["templating"]["list"]}
    # KeyError from resolve_variables names the undefined variable.
    assert panel_queries(model, defined)


def test_variable_queries_filter_on_the_bridge_build_info() -> None:
    for variable in load_dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert "pypi_bridge_build_info" in variable["definition"], variable["name"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no bare expression parser; a recording rule per query makes it parse them.
    queries = panel_queries(load_dashboard(), {"job": ".*", "instance": ".*"})
    rules = [
        {"record": f"dashboard:panel_{number}:{query.ref_id.lower()}", "expr": query.expr}
        for number, query in enumerate(queries)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run_promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_resolve_variables_refuses_an_unknown_variable() -> None:
    with pytest.raises(KeyError, match=r"\$replica"):
        resolve_variables('up{replica="$replica"}', {"job": "x"})


def test_resolve_variables_substitutes_every_syntax_grafana_accepts() -> None:
    resolved = resolve_variables(
        "a{j=~'$job',k='${job}',l='${job:regex}',m='[[job]]'}", {"job": "x"}
    )
    assert resolved == "a{j=~'x',k='x',l='x',m='x'}"
