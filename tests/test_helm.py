"""The Helm chart, rendered by the real Helm engine (helm-python-sdk wraps Helm's Go library).

Every rendered manifest is checked against the Kubernetes schemas of a recent release with
`kubernetes-validate`; the Prometheus Operator's objects, which those schemas do not know, are
checked structurally. The values schema must refuse unknown keys and ill-typed values, and every
`PYPI_BRIDGE_*` variable the chart can set must be one the bridge reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bridge.config import RUN_FLAGS, add_flags, run_settings
from bridge.metrics import Health, Metrics, start_http
from tests.conftest import ROOT, require

# A missing engine fails these tests in CI and skips them elsewhere (through `require`).
try:
    import helm_python as helm
except (ImportError, OSError) as exc:  # OSError: the wheel's libhelm_c could not be loaded
    HELM_MISSING: str | None = f"Helm's engine, the helm-python-sdk wheel ({exc})"
else:
    HELM_MISSING = None

try:
    import kubernetes_validate
except ImportError as exc:
    VALIDATE_MISSING: str | None = f"kubernetes-validate ({exc})"
else:
    VALIDATE_MISSING = None

CHART_DIR = ROOT / "deploy" / "helm" / "pypi-bridge"
RELEASE = "bridge"
NAMESPACE = "pypi"
FULLNAME = f"{RELEASE}-pypi-bridge"
#: Kinds of the Prometheus Operator: no Kubernetes schema, so they are checked structurally.
OPERATOR_GROUP = "monitoring.coreos.com/"
BRIDGE_ENV = {flag.env for flag in RUN_FLAGS}

Manifest = dict[str, Any]
Values = dict[str, Any]

#: A production-like release: mutual TLS and SCRAM-SHA-512 from existing Secrets, monitoring on,
#: a NetworkPolicy, three replicas.
SECURE: Values = {
    "replicaCount": 3,
    "bridge": {
        "contact": "ops@example.org",
        "topicPrefix": "pypi.prod",
        "partitions": 12,
        "replicationFactor": 3,
        "startSerial": 27000000,
        "pollInterval": 0.5,
        "batchSize": 1000000,
        "delivery": "transactional",
        "logLevel": "WARNING",
    },
    "kafka": {
        "bootstrapServers": "kafka-0.kafka:9093,kafka-1.kafka:9093,kafka-2.kafka:9093",
        "securityProtocol": "SASL_SSL",
        "tls": {
            "existingSecret": "kafka-client-tls",
            "caKey": "ca.crt",
            "certKey": "tls.crt",
            "keyKey": "tls.key",
            "keyPasswordKey": "key-password",
        },
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "existingSecret": "kafka-client-scram",
            "usernameKey": "username",
            "passwordKey": "password",
        },
    },
    "image": {"registry": "registry.example.org:5000", "repository": "data/pypi-kafka-bridge"},
    "extraEnv": [
        {"name": "HTTPS_PROXY", "value": "http://proxy.infra:3128"},
        {
            "name": "PROXY_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "egress-proxy", "key": "password"}},
        },
    ],
    "extraEnvFrom": [{"secretRef": {"name": "egress-proxy-env"}, "prefix": "PROXY_"}],
    "extraVolumes": [{"name": "mirror-ca", "configMap": {"name": "pypi-mirror-ca"}}],
    "extraVolumeMounts": [
        {"name": "mirror-ca", "mountPath": "/etc/pypi-bridge/mirror-ca", "readOnly": True}
    ],
    "podSecurityContext": {"fsGroupChangePolicy": "OnRootMismatch", "supplementalGroups": [4000]},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
    "grafanaDashboard": {"namespace": "monitoring", "annotations": {"grafana_folder": "PyPI"}},
    "networkPolicy": {
        "enabled": True,
        "kafka": {
            "ports": [9093],
            "to": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kafka"}}}
            ],
        },
        "dns": {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                    }
                }
            ]
        },
        "ingressFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "extraEgress": [
            {
                "ports": [{"port": 3128, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
            }
        ],
    },
}

#: The other branches of the Kafka settings: SASL PLAIN with the user name in the values, and
#: server-verified TLS with a CA only.
PLAIN_SASL: Values = {
    "kafka": {
        "securityProtocol": "SASL_PLAINTEXT",
        "sasl": {"mechanism": "PLAIN", "username": "bridge", "existingSecret": "kafka-pw"},
    },
    "bridge": {
        "startSerial": "latest",
        "transactionalId": "pypi-bridge-prod",
        "pypiProxy": "http://proxy.infra:3128",
        "pypiCaFile": "/etc/pypi-bridge/mirror-ca/ca.crt",
    },
}
TLS_ONLY: Values = {
    "kafka": {"securityProtocol": "SSL", "tls": {"existingSecret": "kafka-ca"}},
    "replicaCount": 1,
}

#: OpenShift's restricted SCC, scraped through a PodMonitor, budgeted by maxUnavailable.
OPENSHIFT: Values = {
    "openshift": True,
    "containerSecurityContext": {"seLinuxOptions": {"level": "s0:c26,c5"}},
    "podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "prometheusRule": {"enabled": True},
    "podDisruptionBudget": {"maxUnavailable": 1},
    "replicaCount": 3,
}

SCENARIOS: dict[str, Values] = {
    "defaults": {},
    "secure": SECURE,
    "plain-sasl": PLAIN_SASL,
    "tls-only": TLS_ONLY,
    "openshift": OPENSHIFT,
}


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    """The chart, loaded once by Helm's own loader."""
    require(HELM_MISSING is None, str(HELM_MISSING))
    loaded = helm.Chart.load(CHART_DIR)
    try:
        yield loaded
    finally:
        loaded.close()


def render(chart: Any, values: Values | None = None) -> list[Manifest]:
    """Every object the chart renders with `values` (NOTES.txt and empty documents left out)."""
    rendered: dict[str, str] = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    objects: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(chart: Any, values: Values | None = None) -> str:
    rendered: dict[str, str] = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def one(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(objects: list[Manifest]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def is_test_hook(manifest: Manifest) -> bool:
    hook: str | None = manifest["metadata"].get("annotations", {}).get("helm.sh/hook")
    return hook == "test"


def hook_pod(objects: list[Manifest]) -> Manifest:
    (pod,) = [o for o in objects if is_test_hook(o)]
    return pod


def container(objects: list[Manifest]) -> Manifest:
    containers: list[Manifest] = one(objects, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ]
    assert len(containers) == 1
    return containers[0]


def bridge_config(objects: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = one(objects, "ConfigMap", FULLNAME)["data"]
    return data


def kube_version() -> str:
    require(VALIDATE_MISSING is None, str(VALIDATE_MISSING))
    version: str = kubernetes_validate.latest_version()
    return version


# --- the chart as a whole -------------------------------------------------------------------


def test_chart_is_helm_v2_with_the_project_version_as_app_version() -> None:
    chart_yaml = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart_yaml["apiVersion"] == "v2"
    assert chart_yaml["appVersion"] == project["version"]


@pytest.mark.parametrize("scenario", ["defaults", "secure"])
def test_chart_lints_without_warnings_in_strict_mode(chart: Any, scenario: str) -> None:
    report = helm.lint(
        CHART_DIR, SCENARIOS[scenario], strict=True, kube_version=f"v{kube_version()}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [], report
    assert problems == [], report


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_kubernetes_object_matches_the_kubernetes_schema(
    chart: Any, scenario: str
) -> None:
    version = kube_version()
    checked = 0
    for manifest in render(chart, SCENARIOS[scenario]):
        if manifest["apiVersion"].startswith(OPERATOR_GROUP):
            continue
        # strict: unknown fields are errors too, as the API server's field validation makes them.
        kubernetes_validate.validate(manifest, version, strict=True)
        checked += 1
    assert checked >= 5


def test_defaults_render_the_core_objects_and_no_optional_ones(chart: Any) -> None:
    assert kinds(render(chart)) == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "Pod",  # the `helm test` hook
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]


def test_secure_release_adds_monitoring_and_the_network_policy(chart: Any) -> None:
    assert kinds(render(chart, SECURE)) == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Pod",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_every_object_carries_the_standard_labels(chart: Any) -> None:
    for manifest in render(chart, SECURE):
        labels = manifest["metadata"]["labels"]
        # The test Pod's name label differs, so the Service never routes to it.
        expected_name = "pypi-bridge-test" if is_test_hook(manifest) else "pypi-bridge"
        assert labels["app.kubernetes.io/name"] == expected_name
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


def test_chart_grants_no_kubernetes_api_access(chart: Any) -> None:
    objects = render(chart, SECURE)
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & set(kinds(objects))
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == FULLNAME


# --- the values schema ----------------------------------------------------------------------


def _schema_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema (a JSON object) in the schema, with its JSON pointer."""
    if isinstance(node, dict):
        yield path, node
        for key, child in node.items():
            yield from _schema_nodes(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _schema_nodes(child, f"{path}/{index}")


def test_values_schema_closes_every_object_it_describes() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    described = [(path, node) for path, node in _schema_nodes(schema) if "properties" in node]
    assert len(described) > 20
    for path, node in described:
        assert node.get("additionalProperties") is False, f"{path or '/'} is open"


def test_values_schema_is_draft_07_with_no_ignored_keywords() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    # Draft-07 is what every Helm 3 and 4 release understands.
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    # In draft-07 a keyword beside $ref is silently ignored.
    for path, node in _schema_nodes(schema):
        assert not ("$ref" in node and len(node) > 1), f"{path} has keywords beside $ref"


def test_default_values_satisfy_the_schema_outside_helm_too() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(values)


@pytest.mark.parametrize(
    "values",
    [
        {"replicas": 2},
        {"bridge": {"topicPrefx": "pypi"}},
        {"kafka": {"tls": {"caFile": "/etc/ca.pem"}}},
        {"kafka": {"sasl": {"password": "hunter2"}}},
        {"networkPolicy": {"kafka": {"port": 9092}}},
        {"resources": {"limits": {"gpu": 1}}},
        {"probes": {"liveness": {"path": "/live"}}},
    ],
    ids=lambda v: json.dumps(v),
)
def test_schema_rejects_unknown_keys(chart: Any, values: Values) -> None:
    with pytest.raises(helm.HelmValuesError, match="additional properties"):
        render(chart, values)


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": "2"},
        {"replicaCount": 0},
        {"bridge": {"partitions": "three"}},
        {"bridge": {"partitions": 1.5}},
        {"bridge": {"replicationFactor": 0}},
        {"bridge": {"delivery": "maybe"}},
        {"bridge": {"pollInterval": 0}},
        {"bridge": {"startSerial": "soon"}},
        {"bridge": {"topicPrefix": "pypi events"}},
        {"bridge": {"pypiUrl": "ftp://pypi.org"}},
        {"bridge": {"httpPort": 70000}},
        {"kafka": {"bootstrapServers": "kafka"}},
        {"kafka": {"securityProtocol": "TLS"}},
        {"kafka": {"sasl": {"mechanism": "SCRAM-SHA-1"}}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"resources": {"requests": {"cpu": "lots"}}},
        {"podSecurityContext": {"runAsUser": 0}},
        {"serviceMonitor": {"enabled": "yes"}},
        {"serviceMonitor": {"interval": "often"}},
        {"extraEnv": [{"name": "PYPI_BRIDGE_TOPIC_PREFIX", "value": "sneaky"}]},
    ],
    ids=lambda v: json.dumps(v),
)
def test_schema_rejects_ill_typed_values(chart: Any, values: Values) -> None:
    with pytest.raises(helm.HelmValuesError, match="schema"):
        render(chart, values)


@pytest.mark.parametrize(
    ("values", "advice"),
    [
        ({"kafka": {"sasl": {"mechanism": "PLAIN"}}}, "set kafka.securityProtocol to SASL_SSL"),
        ({"kafka": {"securityProtocol": "SASL_SSL"}}, "set kafka.sasl.mechanism"),
        (
            {
                "kafka": {
                    "securityProtocol": "SASL_SSL",
                    "sasl": {"mechanism": "PLAIN", "existingSecret": "s"},
                }
            },
            "set kafka.sasl.username",
        ),
        (
            {
                "kafka": {
                    "securityProtocol": "SASL_SSL",
                    "sasl": {"mechanism": "PLAIN", "username": "u"},
                }
            },
            "set kafka.sasl.existingSecret",
        ),
        (
            {
                "kafka": {
                    "securityProtocol": "SSL",
                    "tls": {"existingSecret": "t", "certKey": "tls.crt"},
                }
            },
            "give both or neither",
        ),
        ({"kafka": {"tls": {"existingSecret": "t"}}}, "use SSL or SASL_SSL"),
        ({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 2}}, "below replicaCount"),
    ],
)
def test_bad_combinations_fail_the_render_with_the_fix(
    chart: Any, values: Values, advice: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=advice):
        render(chart, values)


# --- the bridge's settings ------------------------------------------------------------------


def _bridge_variables(objects: list[Manifest]) -> set[str]:
    names = {name for name in bridge_config(objects) if name.startswith("PYPI_BRIDGE_")}
    names |= {
        env["name"] for env in container(objects)["env"] if env["name"].startswith("PYPI_BRIDGE_")
    }
    return names


def test_every_bridge_variable_the_chart_sets_is_one_the_bridge_reads(chart: Any) -> None:
    seen: set[str] = set()
    for values in SCENARIOS.values():
        seen |= _bridge_variables(render(chart, values))
    # Guard against a vacuous pass: the renders reach every kind of setting.
    assert {
        "PYPI_BRIDGE_BOOTSTRAP_SERVERS",
        "PYPI_BRIDGE_SSL_CAFILE",
        "PYPI_BRIDGE_SSL_KEY_PASSWORD_FILE",
        "PYPI_BRIDGE_SASL_PASSWORD_FILE",
        "PYPI_BRIDGE_SASL_USERNAME",
        "PYPI_BRIDGE_START_SERIAL",
        "PYPI_BRIDGE_TRANSACTIONAL_ID",
        "PYPI_BRIDGE_REPLICA_ID",
    } <= seen
    assert seen - BRIDGE_ENV == set()


#: Flags of `pypi-bridge run` the chart leaves alone, and why.
LEFT_TO_THE_BRIDGE = {
    # A Deployment runs for good; a one-off run to a serial is a Job, not this chart.
    "PYPI_BRIDGE_STOP_AT_SERIAL",
    # The default (every address) is what probes and scrapes from outside the pod need.
    "PYPI_BRIDGE_HTTP_HOST",
    # Secrets reach the bridge as files (the *_FILE variables), never as values.
    "PYPI_BRIDGE_SSL_KEY_PASSWORD",
    "PYPI_BRIDGE_SASL_PASSWORD",
}


def test_chart_covers_every_bridge_setting_it_does_not_deliberately_leave_out(
    chart: Any,
) -> None:
    seen: set[str] = set()
    for values in SCENARIOS.values():
        seen |= _bridge_variables(render(chart, values))
    assert BRIDGE_ENV - seen == LEFT_TO_THE_BRIDGE


def test_secrets_reach_the_bridge_only_as_file_paths(chart: Any) -> None:
    objects = render(chart, SECURE)
    names = _bridge_variables(objects)
    assert "PYPI_BRIDGE_SASL_PASSWORD" not in names
    assert "PYPI_BRIDGE_SSL_KEY_PASSWORD" not in names
    assert not [o for o in objects if o["kind"] == "Secret"]


def _materialise_mounts(objects: list[Manifest], root: Path) -> dict[str, str]:
    """The pod's environment, with each mounted Secret item made a file under `root`.

    Returns the variables the container would see, paths rewritten into `root`.
    """
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    moved: dict[str, str] = {}
    for mount in container(objects)["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert mount["readOnly"] is True
        local = root / mount["name"]
        local.mkdir()
        for item in secret["items"]:
            (local / item["path"]).write_text(f"from {secret['secretName']}/{item['key']}\n")
        moved[mount["mountPath"]] = str(local)
    environ: dict[str, str] = {}
    for key, value in bridge_config(objects).items():
        for mount_path, local_path in moved.items():
            value = value.replace(mount_path, local_path)
        environ[key] = value
    for env in container(objects)["env"]:
        source = env.get("valueFrom", {})
        if "fieldRef" in source:
            environ[env["name"]] = "bridge-pypi-bridge-7d9f-abcde"
        elif "secretKeyRef" in source:
            environ[env["name"]] = "user-from-" + source["secretKeyRef"]["key"]
        else:
            environ[env["name"]] = env["value"]
    return environ


def test_bridge_accepts_the_rendered_secure_configuration(chart: Any, tmp_path: Path) -> None:
    environ = _materialise_mounts(render(chart, SECURE), tmp_path)
    parser = argparse.ArgumentParser()
    add_flags(parser, RUN_FLAGS, environ)
    settings = run_settings(parser.parse_args([]))
    kafka = settings.kafka
    assert kafka.bootstrap_servers == SECURE["kafka"]["bootstrapServers"]
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert kafka.sasl_username == "user-from-username"
    assert kafka.sasl_password == "from kafka-client-scram/password"
    assert kafka.ssl_key_password == "from kafka-client-tls/key-password"
    assert Path(kafka.ssl_cafile or "").read_text() == "from kafka-client-tls/ca.crt\n"
    assert Path(kafka.ssl_certfile or "").read_text() == "from kafka-client-tls/tls.crt\n"
    assert Path(kafka.ssl_keyfile or "").read_text() == "from kafka-client-tls/tls.key\n"
    assert (settings.topics.prefix, settings.topics.partitions) == ("pypi.prod", 12)
    assert settings.topics.replication_factor == 3
    assert (settings.start_serial, settings.poll_interval) == (27000000, 0.5)
    assert (settings.batch_size, settings.delivery) == (1000000, "transactional")
    assert settings.replica_id == "bridge-pypi-bridge-7d9f-abcde"
    assert settings.source.contact == "ops@example.org"


def test_bridge_accepts_the_rendered_default_configuration(chart: Any, tmp_path: Path) -> None:
    environ = _materialise_mounts(render(chart), tmp_path)
    parser = argparse.ArgumentParser()
    add_flags(parser, RUN_FLAGS, environ)
    settings = run_settings(parser.parse_args([]))
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.http_port == 9300
    assert settings.start_serial is None


def test_whole_numbers_render_without_an_exponent(chart: Any) -> None:
    config = bridge_config(render(chart, {"bridge": {"batchSize": 5000000}}))
    assert config["PYPI_BRIDGE_BATCH_SIZE"] == "5000000"


def test_pypi_proxy_and_ca_file_reach_the_bridge_only_when_set(chart: Any) -> None:
    config = bridge_config(render(chart, PLAIN_SASL))
    assert config["PYPI_BRIDGE_PYPI_PROXY"] == "http://proxy.infra:3128"
    assert config["PYPI_BRIDGE_PYPI_CA_FILE"] == "/etc/pypi-bridge/mirror-ca/ca.crt"
    defaults = bridge_config(render(chart))
    assert "PYPI_BRIDGE_PYPI_PROXY" not in defaults
    assert "PYPI_BRIDGE_PYPI_CA_FILE" not in defaults


def test_start_serial_zero_is_kept(chart: Any) -> None:
    config = bridge_config(render(chart, {"bridge": {"startSerial": 0}}))
    assert config["PYPI_BRIDGE_START_SERIAL"] == "0"


# --- the Deployment -------------------------------------------------------------------------


def test_deployment_runs_two_replicas_by_default(chart: Any) -> None:
    assert one(render(chart), "Deployment")["spec"]["replicas"] == 2
    assert one(render(chart, SECURE), "Deployment")["spec"]["replicas"] == 3


def test_container_is_locked_down(chart: Any) -> None:
    objects = render(chart, SECURE)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container(objects)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_tmp_is_a_writable_empty_dir(chart: Any) -> None:
    objects = render(chart)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (tmp,) = [m for m in container(objects)["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert not tmp.get("readOnly", False)
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[tmp["name"]]


def test_probes_use_healthz_for_liveness_and_readyz_for_readiness(chart: Any) -> None:
    bridge = container(render(chart))
    assert bridge["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert bridge["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert bridge["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert bridge["ports"] == [{"name": "http", "containerPort": 9300, "protocol": "TCP"}]


def test_http_port_setting_moves_the_container_port_and_the_bridge_together(chart: Any) -> None:
    objects = render(chart, {"bridge": {"httpPort": 9400}})
    assert container(objects)["ports"][0]["containerPort"] == 9400
    assert bridge_config(objects)["PYPI_BRIDGE_HTTP_PORT"] == "9400"


def test_container_runs_the_bridge_with_resources(chart: Any) -> None:
    bridge = container(render(chart))
    assert bridge["args"] == ["run"]
    assert bridge["image"] == "pypi-kafka-bridge:0.1.0"
    assert set(bridge["resources"]) == {"requests", "limits"}
    assert bridge["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]


def test_resources_default_to_the_measured_backfill(chart: Any) -> None:
    resources = container(render(chart))["resources"]
    # Measured: a 1,000,000-row backfill takes about 0.8 of a core and peaks at 140 MB RSS.
    assert resources["requests"] == {"cpu": "800m", "memory": "192Mi"}
    assert resources["limits"] == {"cpu": "1", "memory": "512Mi"}
    values_text = (CHART_DIR / "values.yaml").read_text(encoding="utf-8")
    comment = values_text.split("\nresources:", 1)[0].rsplit("\n\n", 1)[1]
    for figure in ("make bench", "1,000,000-row backfill", "0.8 of a core", "140 MB"):
        assert figure in comment, figure


def test_image_registry_prefixes_the_repository(chart: Any) -> None:
    assert container(render(chart, SECURE))["image"] == (
        "registry.example.org:5000/data/pypi-kafka-bridge:0.1.0"
    )
    digest = "sha256:" + "b" * 64
    values = {"image": {"registry": "ghcr.io", "digest": digest}}
    assert container(render(chart, values))["image"] == f"ghcr.io/pypi-kafka-bridge@{digest}"


def test_extra_env_may_come_from_a_secret(chart: Any) -> None:
    env = {e["name"]: e for e in container(render(chart, SECURE))["env"]}
    assert env["PROXY_PASSWORD"] == {
        "name": "PROXY_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "egress-proxy", "key": "password"}},
    }


def test_extra_env_from_follows_the_bridge_config_map(chart: Any) -> None:
    assert container(render(chart, SECURE))["envFrom"] == [
        {"configMapRef": {"name": FULLNAME}},
        {"secretRef": {"name": "egress-proxy-env"}, "prefix": "PROXY_"},
    ]


def test_extra_volumes_are_mounted_beside_the_charts_own(chart: Any) -> None:
    objects = render(chart, SECURE)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["mirror-ca"] == {"name": "mirror-ca", "configMap": {"name": "pypi-mirror-ca"}}
    assert {"tmp", "kafka-tls", "kafka-sasl"} <= set(volumes)
    mounts = {m["name"]: m for m in container(objects)["volumeMounts"]}
    assert mounts["mirror-ca"] == {
        "name": "mirror-ca",
        "mountPath": "/etc/pypi-bridge/mirror-ca",
        "readOnly": True,
    }


@pytest.mark.parametrize(
    "values",
    [
        {"extraEnv": [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]},
        {"extraEnv": [{"name": "A"}]},
        {"extraEnv": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]},
        {"extraEnvFrom": [{"secret": {"name": "s"}}]},
        {"extraVolumeMounts": [{"name": "ca"}]},
        {"image": {"registry": "https://registry.example.org"}},
        {"podDisruptionBudget": {"unhealthyPodEvictionPolicy": "Never"}},
        {"podDisruptionBudget": {"maxUnavailable": 0}},
        {"containerSecurityContext": {"allowPrivilegeEscalation": True}},
        {"containerSecurityContext": {"privileged": True}},
        {"networkPolicy": {"extraEgress": [{"ports": [{"port": 3128, "protocol": "HTTP"}]}]}},
        {"prometheusRule": {"rules": {"PypiBridgeNoLeader": {"threshold": 1}}}},
        {"prometheusRule": {"rules": {"PypiBridgeNoProgress": {"severity": "page"}}}},
        {"prometheusRule": {"rules": {"PypiBridgeNoProgres": {"enabled": False}}}},
        {"prometheusRule": {"groupBy": []}},
        {"prometheusRule": {"selector": '{job="x"}'}},
    ],
    ids=lambda v: json.dumps(v),
)
def test_schema_rejects_bad_new_values(chart: Any, values: Values) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)


# --- security contexts ----------------------------------------------------------------------


def test_openshift_preset_leaves_the_ids_to_the_restricted_scc(chart: Any) -> None:
    objects = render(chart, OPENSHIFT)
    for pod in (one(objects, "Deployment")["spec"]["template"]["spec"], hook_pod(objects)["spec"]):
        context = pod["securityContext"]
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(context)
        assert context["runAsNonRoot"] is True
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    bridge = container(objects)["securityContext"]
    assert "runAsUser" not in bridge
    assert bridge["allowPrivilegeEscalation"] is False
    assert bridge["capabilities"] == {"drop": ["ALL"]}


def test_container_security_context_is_merged_over_the_locked_down_one(chart: Any) -> None:
    context = container(render(chart, OPENSHIFT))["securityContext"]
    assert context["seLinuxOptions"] == {"level": "s0:c26,c5"}
    assert context["readOnlyRootFilesystem"] is True
    custom = {
        "containerSecurityContext": {"runAsUser": 20000, "capabilities": {"drop": ["NET_RAW"]}}
    }
    context = container(render(chart, custom))["securityContext"]
    assert context["runAsUser"] == 20000
    assert context["capabilities"] == {"drop": ["NET_RAW"]}
    assert context["runAsNonRoot"] is True


def test_pod_security_context_takes_the_further_settings(chart: Any) -> None:
    context = one(render(chart, SECURE), "Deployment")["spec"]["template"]["spec"][
        "securityContext"
    ]
    assert context["fsGroupChangePolicy"] == "OnRootMismatch"
    assert context["supplementalGroups"] == [4000]
    assert (context["runAsUser"], context["fsGroup"]) == (10001, 10001)


def test_image_digest_wins_over_the_tag(chart: Any) -> None:
    digest = "sha256:" + "a" * 64
    bridge = container(render(chart, {"image": {"tag": "0.2.0", "digest": digest}}))
    assert bridge["image"] == f"pypi-kafka-bridge@{digest}"


def test_replica_id_is_the_pod_name(chart: Any) -> None:
    env = {e["name"]: e for e in container(render(chart))["env"]}
    assert env["PYPI_BRIDGE_REPLICA_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }


def test_grace_period_leaves_time_for_a_hand_over(chart: Any) -> None:
    deployment = one(render(chart), "Deployment")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    # A standby is ready before an old replica goes: the roll never leaves zero replicas.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_a_settings_change_changes_the_pod_template(chart: Any) -> None:
    def checksum(values: Values) -> str:
        pod = one(render(chart, values), "Deployment")["spec"]["template"]
        value: str = pod["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum({}) == checksum({"replicaCount": 4})
    assert checksum({}) != checksum({"bridge": {"topicPrefix": "pypi2"}})


def test_topology_spread_over_nodes_and_zones(chart: Any) -> None:
    pod = one(render(chart), "Deployment")["spec"]["template"]["spec"]
    spread = pod["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]
    selector = one(render(chart), "Deployment")["spec"]["selector"]["matchLabels"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)


def test_kafka_secrets_are_mounted_read_only_under_the_names_the_config_points_at(
    chart: Any,
) -> None:
    objects = render(chart, SECURE)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert {s["secretName"] for s in secrets.values()} == {
        "kafka-client-tls",
        "kafka-client-scram",
    }
    mounts = {m["name"]: m for m in container(objects)["volumeMounts"]}
    files = {
        f"{mounts[name]['mountPath']}/{item['path']}"
        for name, secret in secrets.items()
        for item in secret["items"]
    }
    assert all(mounts[name]["readOnly"] is True for name in secrets)
    config = bridge_config(objects)
    pointed = {value for key, value in config.items() if key.endswith("FILE")}
    assert pointed == files
    assert len(pointed) == 5


def test_sasl_user_name_may_come_from_the_secret(chart: Any) -> None:
    objects = render(chart, SECURE)
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["PYPI_BRIDGE_SASL_USERNAME"]["valueFrom"] == {
        "secretKeyRef": {"name": "kafka-client-scram", "key": "username"}
    }
    assert "PYPI_BRIDGE_SASL_USERNAME" not in bridge_config(objects)


def test_tls_without_a_secret_trusts_the_system_cas(chart: Any) -> None:
    objects = render(chart, {"kafka": {"securityProtocol": "SSL"}})
    assert "PYPI_BRIDGE_SSL_CAFILE" not in bridge_config(objects)
    assert [m["mountPath"] for m in container(objects)["volumeMounts"]] == ["/tmp"]


def test_extra_env_reaches_the_container(chart: Any) -> None:
    env = {e["name"]: e for e in container(render(chart, SECURE))["env"]}
    assert env["HTTPS_PROXY"]["value"] == "http://proxy.infra:3128"


# --- Service, PodDisruptionBudget, NetworkPolicy --------------------------------------------


def test_service_exposes_the_http_port_of_the_pods(chart: Any) -> None:
    objects = render(chart)
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9300, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize(("replicas", "budgets"), [(1, 0), (2, 1), (3, 1)])
def test_disruption_budget_keeps_one_replica_when_there_are_several(
    chart: Any, replicas: int, budgets: int
) -> None:
    objects = render(chart, {"replicaCount": replicas})
    found = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert len(found) == budgets
    if found:
        assert found[0]["spec"]["minAvailable"] == 1
        assert "maxUnavailable" not in found[0]["spec"]


def test_disruption_budget_lets_drains_evict_pods_that_are_not_ready(chart: Any) -> None:
    # While Kafka is away /readyz is 503 on every replica; the budget must not block a drain.
    budget = one(render(chart), "PodDisruptionBudget")["spec"]
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    strict = {"podDisruptionBudget": {"unhealthyPodEvictionPolicy": "IfHealthyBudget"}}
    budget = one(render(chart, strict), "PodDisruptionBudget")["spec"]
    assert budget["unhealthyPodEvictionPolicy"] == "IfHealthyBudget"


def test_disruption_budget_may_count_replicas_down_instead(chart: Any) -> None:
    budget = one(render(chart, OPENSHIFT), "PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert "minAvailable" not in budget
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_disruption_budget_refuses_to_let_every_replica_go(chart: Any) -> None:
    values = {"replicaCount": 2, "podDisruptionBudget": {"maxUnavailable": 2}}
    with pytest.raises(
        helm.HelmRenderError, match=r"maxUnavailable \(2\) must be below replicaCount"
    ):
        render(chart, values)


def test_network_policy_allows_kafka_pypi_dns_out_and_http_in(chart: Any) -> None:
    policy = one(render(chart, SECURE), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {
            "ports": [{"port": "http", "protocol": "TCP"}],
            "from": SECURE["networkPolicy"]["ingressFrom"],
        }
    ]
    kafka, pypi, dns, _proxy = policy["egress"]
    assert kafka == {
        "ports": [{"port": 9093, "protocol": "TCP"}],
        "to": SECURE["networkPolicy"]["kafka"]["to"],
    }
    assert pypi == {"ports": [{"port": 443, "protocol": "TCP"}]}
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def test_network_policy_appends_the_extra_egress_rules(chart: Any) -> None:
    egress = one(render(chart, SECURE), "NetworkPolicy")["spec"]["egress"]
    assert len(egress) == 4
    assert egress[3] == SECURE["networkPolicy"]["extraEgress"][0]
    default = one(render(chart, {"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert len(default["spec"]["egress"]) == 3


# --- Prometheus Operator objects (checked structurally) and the Grafana dashboard ----------


def test_service_monitor_scrapes_every_replica_on_http(chart: Any) -> None:
    objects = render(chart, SECURE)
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert set(spec) == {"namespaceSelector", "selector", "endpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert (
        spec["selector"]["matchLabels"].items()
        <= one(objects, "Service")["metadata"]["labels"].items()
    )
    assert spec["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]


def test_pod_monitor_scrapes_every_replica_instead_of_the_service_monitor(chart: Any) -> None:
    objects = render(chart, OPENSHIFT)
    assert "ServiceMonitor" not in kinds(objects)
    monitor = one(objects, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    spec = monitor["spec"]
    assert set(spec) == {"namespaceSelector", "selector", "podMetricsEndpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["podMetricsEndpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]


def test_alerts_follow_the_job_the_pod_monitor_gives(chart: Any) -> None:
    rule = one(render(chart, OPENSHIFT), "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    # The Prometheus Operator names a PodMonitor's job <namespace>/<name>.
    assert all(f'namespace="{NAMESPACE}", job="{NAMESPACE}/{FULLNAME}"' in e for e in exprs)


def test_service_and_pod_monitor_together_fail_the_render(chart: Any) -> None:
    values = {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}
    with pytest.raises(helm.HelmRenderError, match="enable one of the two"):
        render(chart, values)


def test_prometheus_rule_is_the_plain_rule_file_for_the_releases_own_job(chart: Any) -> None:
    rule = one(render(chart, SECURE), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    plain = yaml.safe_load((CHART_DIR / "files" / "prometheus-rules.yaml").read_text())["groups"]
    # The same rules; only the selector differs: this release's namespace and Service.
    release_selector = f'namespace="{NAMESPACE}", job="{FULLNAME}"'
    for group in plain:
        for entry in group["rules"]:
            entry["expr"] = entry["expr"].replace('job="pypi-bridge"', release_selector)
    assert rule["spec"]["groups"] == plain
    for group in rule["spec"]["groups"]:
        assert isinstance(group["name"], str)
        assert len(group["rules"]) == 11
        for entry in group["rules"]:
            assert ("alert" in entry) != ("record" in entry)
            assert release_selector in entry["expr"]


def test_grafana_dashboard_configmap_carries_the_dashboard_for_the_sidecar(chart: Any) -> None:
    objects = render(chart, SECURE)
    dashboard = one(objects, "ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "PyPI"}
    source = (CHART_DIR / "files" / "grafana-dashboard.json").read_text(encoding="utf-8")
    (text,) = dashboard["data"].values()
    assert json.loads(text) == json.loads(source)


def test_grafana_dashboard_label_is_configurable(chart: Any) -> None:
    values = {"grafanaDashboard": {"labels": {"grafana_dashboard": None, "dashboards": "pypi"}}}
    dashboard = one(render(chart, values), "ConfigMap", f"{FULLNAME}-dashboard")
    labels = dashboard["metadata"]["labels"]
    assert labels["dashboards"] == "pypi"
    assert "grafana_dashboard" not in labels


def test_grafana_dashboard_can_be_left_out(chart: Any) -> None:
    objects = render(chart, {"grafanaDashboard": {"enabled": False}})
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"] == [FULLNAME]


# --- NOTES.txt ------------------------------------------------------------------------------


def test_notes_tell_how_to_find_the_leader(chart: Any) -> None:
    text = notes(chart)
    assert f"port-forward svc/{FULLNAME} 9300:http" in text
    assert "pypi_bridge_leader" in text


def test_notes_warn_about_a_single_replica(chart: Any) -> None:
    assert "no standby" in notes(chart, {"replicaCount": 1})
    assert "no standby" not in notes(chart)


# --- Chart.yaml -----------------------------------------------------------------------------


def test_chart_metadata_describes_the_chart() -> None:
    chart_yaml = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart_yaml["description"].strip()
    # unhealthyPodEvictionPolicy is on by default from 1.27.
    assert chart_yaml["kubeVersion"] == ">=1.27.0-0"
    assert {"pypi", "kafka"} <= set(chart_yaml["keywords"])
    assert all(m["name"] for m in chart_yaml["maintainers"])
    annotations = chart_yaml["annotations"]
    assert annotations["artifacthub.io/license"] == "Apache-2.0"
    (image,) = yaml.safe_load(annotations["artifacthub.io/images"])
    assert image["image"] == f"pypi-kafka-bridge:{chart_yaml['appVersion']}"


# --- helm test ------------------------------------------------------------------------------


def test_helm_test_pod_asks_the_service_for_readyz(chart: Any) -> None:
    objects = render(chart)
    pod = hook_pod(objects)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    (check,) = spec["containers"]
    # The bridge's own image: nothing else to pull in an air-gapped cluster.
    assert check["image"] == container(objects)["image"]
    assert check["command"][:2] == ["python", "-c"]
    assert check["command"][-1] == f"http://{FULLNAME}.{NAMESPACE}.svc:9300/readyz"
    assert check["securityContext"] == container(objects)["securityContext"]


def test_helm_test_pod_is_never_behind_the_service(chart: Any) -> None:
    objects = render(chart)
    selector = one(objects, "Service")["spec"]["selector"]
    labels = hook_pod(objects)["metadata"]["labels"]
    assert not selector.items() <= labels.items()


def test_helm_test_follows_the_service_port_and_can_be_left_out(chart: Any) -> None:
    pod = hook_pod(render(chart, {"service": {"port": 8080}}))
    assert pod["spec"]["containers"][0]["command"][-1].endswith(".svc:8080/readyz")
    assert not [o for o in render(chart, {"tests": {"enabled": False}}) if is_test_hook(o)]


async def test_helm_test_script_passes_against_a_ready_bridge(chart: Any) -> None:
    (check,) = hook_pod(render(chart))["spec"]["containers"]
    script = check["command"][2]
    health = Health(broker_reachable=True, role="standby", detail="standing by")
    runner, port = await start_http(Metrics("helm-test"), health, "127.0.0.1", 0)
    try:
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", script, f"http://127.0.0.1:{port}/readyz"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        await runner.cleanup()
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 200 " in result.stdout
    assert '"role": "standby"' in result.stdout


# --- the chart README's values table --------------------------------------------------------

VALUES_TABLE = ROOT / "deploy" / "helm" / "values_table.py"
CHART_README = CHART_DIR / "README.md"


def _values_table(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VALUES_TABLE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_chart_readme_values_table_is_up_to_date() -> None:
    result = _values_table("--check")
    assert result.returncode == 0, result.stderr


def test_values_table_check_fails_on_a_stale_readme(tmp_path: Path) -> None:
    stale = tmp_path / "README.md"
    text = CHART_README.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `image.registry`"))
    stale.write_text(text.replace(row + "\n", ""), encoding="utf-8")
    result = _values_table("--check", "--readme", str(stale))
    assert result.returncode == 1
    assert "make chart-docs" in result.stderr
    assert _values_table("--readme", str(stale)).returncode == 0
    assert stale.read_text(encoding="utf-8") == text


def _table_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in CHART_README.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells
    return rows


def test_values_table_describes_every_top_level_value_with_its_default() -> None:
    rows = _table_rows()
    schema = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    for key in schema["properties"]:
        assert any(row == key or row.startswith(f"{key}.") for row in rows), key
    assert all(cells[3] for cells in rows.values())
    assert rows["podDisruptionBudget.unhealthyPodEvictionPolicy"][2] == '`"AlwaysAllow"`'
    assert rows["resources.requests"][2] == '`{"cpu": "800m", "memory": "192Mi"}`'
    assert rows["openshift"][2] == "`false`"
    assert "secretKeyRef" in rows["extraEnv"][3]


def test_notes_name_the_job_the_alerts_select(chart: Any) -> None:
    text = notes(chart, OPENSHIFT)
    assert f'PodMonitor {FULLNAME} (job="{NAMESPACE}/{FULLNAME}")' in text
    assert f'The alerts select namespace="{NAMESPACE}", job="{NAMESPACE}/{FULLNAME}"' in text
    assert f"helm test {RELEASE} -n {NAMESPACE}" in text
