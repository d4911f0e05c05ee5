"""The alert rules and the Grafana dashboard shipped by the Helm chart.

The rules are what the chart renders (templates/prometheusrule.yaml from
files/alert-catalog.yaml and the values), so the promtool unit tests in tests/promtool/ run on
that output: the chart is rendered with the real Helm engine for several releases (one release,
the same release name in two namespaces, one rule set over every namespace, a release renamed
with fullnameOverride, a release scraped through the PodMonitor), and the real `promtool`
checks and tests the result. The plain rule file (files/prometheus-rules.yaml) must be the
chart's own rendering. The dashboard is checked as a model Grafana imports as is, and every
panel query is parsed by promtool too. tests/test_prometheus_integration.py then runs the same
queries against a real Prometheus scraping a real bridge; the helpers it shares live here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.metrics import Health, Metrics, start_http
from tests.conftest import ROOT, require
from tests.support import metrics_text

try:
    import helm_python as helm
except (ImportError, OSError) as exc:  # OSError: the wheel's libhelm_c could not be loaded
    HELM_MISSING: str | None = f"Helm's engine, the helm-python-sdk wheel ({exc})"
else:
    HELM_MISSING = None

CHART_DIR = ROOT / "deploy" / "helm" / "pypi-bridge"
CHART_FILES = CHART_DIR / "files"
DASHBOARD = CHART_FILES / "grafana-dashboard.json"
#: The plain rule file (for Prometheus without the Operator), generated from the chart.
RULES = CHART_FILES / "prometheus-rules.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMTOOL_TESTS = sorted((ROOT / "tests" / "promtool").glob("*_test.yaml"))
ALERT_TESTS = ROOT / "tests" / "promtool" / "alerts_test.yaml"


@dataclass(frozen=True)
class Release:
    """One `helm install` whose PrometheusRule the promtool tests load as rendered/<name>.yaml."""

    name: str
    namespace: str
    values: Mapping[str, Any]


_RULES_ON: dict[str, Any] = {"prometheusRule": {"enabled": True}}
#: The releases the files of tests/promtool/ name in their `rule_files`.
RELEASES: dict[str, Release] = {
    "default": Release("pypi-bridge", "pypi", _RULES_ON),
    "team-a": Release("pypi-bridge", "team-a", _RULES_ON),
    "team-b": Release("pypi-bridge", "team-b", _RULES_ON),
    "cluster-wide": Release(
        "pypi-bridge",
        "monitoring",
        {"prometheusRule": {"enabled": True, "selector": 'job="pypi-bridge"'}},
    ),
    "renamed": Release("bridge", "pypi", {**_RULES_ON, "fullnameOverride": "pypi-events"}),
    "pod-monitor": Release("pypi-bridge", "pypi", {**_RULES_ON, "podMonitor": {"enabled": True}}),
}

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
_PROCESS_METRIC = re.compile(r"\bprocess_\w+")
#: What the dashboard charts of each replica's process (prometheus_client's ProcessCollector).
PROCESS_METRICS = {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"}
_SELECTOR = re.compile(r"\{([^{}]*)\}")
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


def default_selections(model: Mapping[str, Any]) -> dict[str, str]:
    """What Grafana substitutes for the dashboard's multi-value variables left at "All"."""
    return {
        variable["name"]: variable["allValue"]
        for variable in model["templating"]["list"]
        if variable.get("includeAll") and "allValue" in variable
    }


def panel_queries(model: Mapping[str, Any], values: Mapping[str, str]) -> list[PanelQuery]:
    """All panel queries of the dashboard, resolved with `values` plus Grafana's builtins.

    A variable of the dashboard that `values` leaves out stays at "All", as in Grafana.
    """
    known = {**GRAFANA_BUILTINS, **default_selections(model), **values}
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


# --- the rule files the chart renders ------------------------------------------------------


def render_rule_groups(release: Release) -> list[dict[str, Any]]:
    """The rule groups of the PrometheusRule the chart renders for `release` (real Helm engine)."""
    require(HELM_MISSING is None, str(HELM_MISSING))
    chart = helm.Chart.load(CHART_DIR)
    try:
        rendered: dict[str, str] = chart.render(
            dict(release.values), name=release.name, namespace=release.namespace
        )
    finally:
        chart.close()
    (text,) = [t for path, t in rendered.items() if path.endswith("/prometheusrule.yaml")]
    groups: list[dict[str, Any]] = yaml.safe_load(text)["spec"]["groups"]
    return groups


@pytest.fixture(scope="module")
def promtool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The promtool test files beside the chart's rule files they load (rendered/<release>.yaml)."""
    directory = tmp_path_factory.mktemp("promtool")
    (directory / "rendered").mkdir()
    for name, release in RELEASES.items():
        document = {"groups": render_rule_groups(release)}
        (directory / "rendered" / f"{name}.yaml").write_text(yaml.safe_dump(document))
    for test_file in PROMTOOL_TESTS:
        shutil.copy(test_file, directory / test_file.name)
    return directory


def rendered_alerts(release: Release) -> list[dict[str, Any]]:
    return [rule for group in render_rule_groups(release) for rule in group["rules"]]


def test_promtool_tests_load_only_rule_files_the_chart_renders() -> None:
    assert len(PROMTOOL_TESTS) >= 4
    loaded: set[str] = set()
    for test_file in PROMTOOL_TESTS:
        document = yaml.safe_load(test_file.read_text(encoding="utf-8"))
        loaded.update(document["rule_files"])
    assert loaded == {f"rendered/{name}.yaml" for name in RELEASES}


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_rendered_rule_file_passes_promtool_check(promtool_dir: Path, name: str) -> None:
    result = run_promtool("check", "rules", str(promtool_dir / "rendered" / f"{name}.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 11 rules found" in result.stdout


@pytest.mark.parametrize("test_file", [p.name for p in PROMTOOL_TESTS])
def test_alert_unit_tests_pass_under_promtool(promtool_dir: Path, test_file: str) -> None:
    result = run_promtool("test", "rules", str(promtool_dir / test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails_under_promtool(promtool_dir: Path) -> None:
    # Guard against a vacuous pass: the same tests with one expected label changed must fail.
    text = (promtool_dir / "renamed_release_test.yaml").read_text(encoding="utf-8")
    broken = promtool_dir / "broken_test.yaml"
    broken.write_text(text.replace("job: pypi-events", "job: pypi-bridge"), encoding="utf-8")
    result = run_promtool("test", "rules", str(broken))
    assert result.returncode != 0, result.stdout


def test_plain_rule_file_is_the_charts_rendering() -> None:
    require(HELM_MISSING is None, str(HELM_MISSING))
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "helm" / "plain_rules.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_plain_rule_file_passes_promtool_check() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    fires: set[str] = set()
    stays_silent: set[str] = set()
    for test_file in PROMTOOL_TESTS:
        document = yaml.safe_load(test_file.read_text(encoding="utf-8"))
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else stays_silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in load_rules()}
    assert alerts - fires == set(), "alerts never tested firing"
    assert alerts - stays_silent == set(), "alerts never tested staying silent"


def test_every_alert_has_a_severity_a_summary_and_a_description_that_says_what_to_check() -> None:
    for rule in load_rules():
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert "check" in rule["annotations"]["description"].lower(), rule["alert"]


def _runbook_anchors() -> set[str]:
    """GitHub-style anchors of the runbook's headings (lower case, spaces to dashes)."""
    headings = re.findall(r"^#{2,3} (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_links_to_its_own_section_of_the_runbook() -> None:
    anchors = _runbook_anchors()
    seen: set[str] = set()
    for rule in load_rules():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/runbook.md", rule["alert"]
        assert anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"docs/runbook.md has no section for {rule['alert']}"
        seen.add(anchor)
    assert len(seen) == len(load_rules())


def test_runbook_sections_tell_the_person_paged_what_to_do() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    for rule in load_rules():
        section = text.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("What it means", "How to check", "What to do"):
            assert f"**{part}.**" in section, (rule["alert"], part)


def test_runbook_url_follows_the_values() -> None:
    values = {"prometheusRule": {"enabled": True, "runbookUrl": "https://wiki.example/rb"}}
    rules = rendered_alerts(Release("bridge", "pypi", values))
    assert {r["annotations"]["runbook_url"] for r in rules} == {
        f"https://wiki.example/rb#{r['alert'].lower()}" for r in rules
    }


_AGGREGATION = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_every_rule_aggregates_by_namespace_and_job(name: str) -> None:
    for rule in rendered_alerts(RELEASES[name]):
        groupings = _AGGREGATION.findall(rule["expr"])
        if rule["alert"] in ("PypiBridgeDown", "PypiBridgeNotScraped"):
            # Per target, and absent(): every label of the selector is kept as it is.
            assert groupings == [], rule["alert"]
            continue
        assert groupings, rule["alert"]
        for grouping in groupings:
            labels = {label.strip() for label in grouping.split(",")}
            assert {"namespace", "job"} <= labels, (rule["alert"], grouping)


def test_every_rule_selects_only_the_releases_own_series() -> None:
    for rule in rendered_alerts(RELEASES["renamed"]):
        selectors = re.findall(r"\b(?:pypi_bridge_\w+|up)\{([^}]*)\}", rule["expr"])
        assert selectors, rule["alert"]
        for selector in selectors:
            assert selector.startswith('namespace="pypi", job="pypi-events"'), rule["alert"]


def test_group_by_and_selector_come_from_the_values() -> None:
    values = {
        "prometheusRule": {
            "enabled": True,
            "selector": 'cluster="eu-1", job="bridge"',
            "groupBy": ["cluster", "namespace", "job"],
        }
    }
    (rule,) = [
        r
        for r in rendered_alerts(Release("b", "pypi", values))
        if r["alert"] == "PypiBridgeNoLeader"
    ]
    assert rule["expr"] == (
        'sum by (cluster, namespace, job) (pypi_bridge_leader{cluster="eu-1", job="bridge"}) == 0'
    )


def test_rules_can_be_disabled_and_retuned_from_the_values() -> None:
    values = {
        "prometheusRule": {
            "enabled": True,
            "additionalLabels": {"team": "data"},
            "rules": {
                "PypiBridgeThrottled": {"enabled": False},
                "PypiBridgeNoProgress": {"for": "20m", "severity": "warning", "threshold": 1800},
            },
        }
    }
    rules = {r["alert"]: r for r in rendered_alerts(Release("b", "pypi", values))}
    assert "PypiBridgeThrottled" not in rules
    assert len(rules) == 10
    progress = rules["PypiBridgeNoProgress"]
    assert progress["for"] == "20m"
    assert progress["labels"] == {"severity": "warning", "team": "data"}
    assert progress["expr"].rstrip().endswith("> 1800")
    # The others keep their defaults.
    assert rules["PypiBridgeNoLeader"]["for"] == "2m"
    assert rules["PypiBridgeNoLeader"]["labels"] == {"severity": "critical", "team": "data"}


def test_absence_rule_catches_a_release_with_no_target_at_all() -> None:
    (rule,) = [
        r for r in rendered_alerts(RELEASES["renamed"]) if r["alert"] == "PypiBridgeNotScraped"
    ]
    assert rule["expr"].strip() == 'absent(up{namespace="pypi", job="pypi-events"})'


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


def test_dashboard_has_cluster_and_namespace_variables_before_job() -> None:
    variables = [v["name"] for v in load_dashboard()["templating"]["list"]]
    assert variables == ["datasource", "cluster", "namespace", "job", "instance"]
    for variable in load_dashboard()["templating"]["list"][1:]:
        # "All" must also match series without the label (a Prometheus with one cluster).
        assert variable["includeAll"] is True, variable["name"]
        assert variable["allValue"] == ".*", variable["name"]


def test_each_variable_narrows_by_the_ones_before_it() -> None:
    queries = {v["name"]: v["definition"] for v in load_dashboard()["templating"]["list"][1:]}
    assert '{cluster=~"$cluster"}' in queries["namespace"]
    assert 'cluster=~"$cluster", namespace=~"$namespace"' in queries["job"]
    assert 'namespace=~"$namespace", job=~"$job"' in queries["instance"]


def test_every_series_in_every_query_is_filtered_by_cluster_and_namespace() -> None:
    checked = 0
    for panel in panels(load_dashboard()):
        for target in panel["targets"]:
            selectors = _SELECTOR.findall(target["expr"])
            assert selectors, (panel["title"], target["refId"])
            for selector in selectors:
                for matcher in ('cluster=~"$cluster"', 'namespace=~"$namespace"'):
                    assert matcher in selector, (panel["title"], target["refId"], matcher)
                checked += 1
    assert checked > 30


def _panel_metrics(title: str) -> set[str]:
    (panel,) = [p for p in panels(load_dashboard()) if p["title"] == title]
    return {
        name
        for target in panel["targets"]
        for name in _METRIC_NAME.findall(target["expr"]) + _PROCESS_METRIC.findall(target["expr"])
    }


def test_dashboard_charts_the_no_progress_signal() -> None:
    assert _panel_metrics("No progress: time since the last commit or empty poll") == {
        "pypi_bridge_last_commit_time_seconds"
    }


def test_dashboard_charts_the_sources_remaining_quota() -> None:
    assert _panel_metrics("PyPI quota") == {
        "pypi_bridge_source_quota_remaining",
        "pypi_bridge_source_quota_limit",
        "pypi_bridge_source_quota_reset_seconds",
    }


def test_dashboard_charts_cpu_memory_and_open_files_of_each_replica() -> None:
    queries = panel_queries(load_dashboard(), {})
    used = {name for query in queries for name in _PROCESS_METRIC.findall(query.expr)}
    assert used >= PROCESS_METRICS
    assert used - exported_metric_names() == set()


async def test_metrics_endpoint_exports_cpu_memory_and_open_files_of_the_process() -> None:
    metrics = Metrics("process-metrics")
    runner, port = await start_http(metrics, Health(), "127.0.0.1", 0)
    try:
        text = await asyncio.to_thread(metrics_text, port)
    finally:
        await runner.cleanup()
    for name in sorted(PROCESS_METRICS):
        (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
        assert float(line.split()[-1]) > 0, line
    assert "python_info{" in text


def test_resolve_variables_refuses_an_unknown_variable() -> None:
    with pytest.raises(KeyError, match=r"\$replica"):
        resolve_variables('up{replica="$replica"}', {"job": "x"})


def test_resolve_variables_substitutes_every_syntax_grafana_accepts() -> None:
    resolved = resolve_variables(
        "a{j=~'$job',k='${job}',l='${job:regex}',m='[[job]]'}", {"job": "x"}
    )
    assert resolved == "a{j=~'x',k='x',l='x',m='x'}"
