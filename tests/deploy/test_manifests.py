"""deploy/ runs what the CLI offers, the way ops need it: every Deployment probed,
sized and locked down; one image whose commands are the deployables; one source of truth
for the alert rules, each alert with its runbook section."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
import yaml

from relaybook.tooling.cli import _parser
from relaybook.tooling.settings import Settings
from relaybook.tooling.system import DEPLOYABLES
from tests.deploy.manifests import (
    DASHBOARD,
    DEPLOY,
    KUBERNETES,
    PROMETHEUS_RULE,
    RULES,
    core_manifests,
    documents,
    readme_anchors,
    rule_groups,
)

#: what runs in production: every deployable but the sandbox, which is for trials
PRODUCTION = sorted(set(DEPLOYABLES) - {"sandbox"})
#: the deployables whose Service carries callers' traffic (the API, the providers'
#: webhooks); the others' Services are for Prometheus only
SERVING = {"dispatcher", "ingest"}


def _port(deployable: str) -> int:
    setting = DEPLOYABLES[deployable][0]
    assert setting is not None
    port: int = getattr(Settings(), setting)
    return port


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in core_manifests() if doc["kind"] == kind}


def test_the_images_commands_are_the_clis_deployables_and_migrate() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    label = re.search(r'io\.relaybook\.commands="([^"]+)"', dockerfile)
    assert label is not None
    commands = set(label.group(1).split())
    assert commands == set(DEPLOYABLES) | {"migrate"}
    offered = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert commands <= offered
    assert re.search(r'^ENTRYPOINT \["relaybook"\]$', dockerfile, re.MULTILINE)
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE), "numeric: runAsNonRoot"


def test_compose_runs_every_deployable_on_its_port_after_the_migration() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    commands = {name: service.get("command") for name, service in services.items()}
    for deployable in DEPLOYABLES:
        assert commands[deployable] == [deployable], deployable
        check = " ".join(services[deployable]["healthcheck"]["test"])
        assert f"127.0.0.1:{_port(deployable)}/readyz" in check, deployable
    assert commands["migrate"] == ["migrate", "--allow-newer"]
    for deployable in PRODUCTION:
        after = services[deployable]["depends_on"]
        assert after["migrate"]["condition"] == "service_completed_successfully"
        assert after["kafka-topics"]["condition"] == "service_completed_successfully"
        assert services[deployable]["read_only"] is True
        assert services[deployable]["cap_drop"] == ["ALL"]
    for scaled in ("ingest", "worker"):
        assert services[scaled]["deploy"]["replicas"] >= 2, scaled
    # what callers reach is published, on the host's loopback unless told otherwise;
    # ingest, one host port for each of its replicas
    assert services["dispatcher"]["ports"] == ["${RELAYBOOK_API_PUBLISH:-127.0.0.1:8000}:8000"]
    (ingest,) = services["ingest"]["ports"]
    published = re.fullmatch(
        r"\$\{RELAYBOOK_INGEST_PUBLISH:-127\.0\.0\.1:(\d+)-(\d+)\}:8001", ingest
    )
    assert published is not None, ingest
    first, last = map(int, published.groups())
    assert last - first + 1 == services["ingest"]["deploy"]["replicas"]
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert {services[name]["profiles"][0] for name in ("prometheus", "grafana")} == {"monitoring"}


def test_prometheus_in_compose_scrapes_every_deployable_as_the_rules_name_it() -> None:
    config = yaml.safe_load((DEPLOY / "monitoring" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in config["scrape_configs"]}
    assert set(jobs) == {f"relaybook-{name}" for name in PRODUCTION}
    for name in PRODUCTION:
        assert jobs[f"relaybook-{name}"] == {
            "names": [name], "type": "A", "port": _port(name), "refresh_interval": "15s"
        }  # fmt: skip


def test_kubernetes_runs_every_production_deployable_on_its_port() -> None:
    deployments = _by_kind("Deployment")
    assert set(deployments) == {f"relaybook-{name}" for name in PRODUCTION}
    for name in PRODUCTION:
        container = deployments[f"relaybook-{name}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == [name]
        assert container["ports"] == [
            {"name": "http", "containerPort": _port(name), "protocol": "TCP"}
        ]
    services = _by_kind("Service")
    assert {service["spec"]["ports"][0]["port"] for service in services.values()} == {
        _port(name) for name in PRODUCTION
    }


@pytest.mark.parametrize("name", PRODUCTION)
def test_every_deployment_has_probes_resources_and_a_locked_down_security_context(
    name: str,
) -> None:
    """Those serving callers stay in their Service through a PostgreSQL or Kafka outage
    (ready on /healthz), so callers get relaybook's 503 with Retry-After, not the
    ingress's 502; the consumers, which serve nobody, are ready on /readyz."""
    pod = _by_kind("Deployment")[f"relaybook-{name}"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes == {
        # serving pods start only once they can work (a rollout with a refused secret
        # stalls instead of replacing working pods), then stay in their Service
        "startupProbe": ("/readyz" if name in SERVING else "/healthz", "http"),
        "readinessProbe": ("/healthz" if name in SERVING else "/readyz", "http"),
        "livenessProbe": ("/healthz", "http"),
    }
    _assert_sized_and_locked_down(pod)


def test_the_migration_job_is_locked_down_and_applied_first() -> None:
    job = _by_kind("Job")["relaybook-migrate"]
    assert job["metadata"]["labels"]["relaybook.io/pre-rollout"] == "true"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["migrate", "--allow-newer"]
    _assert_sized_and_locked_down(pod)
    # what the Job needs besides the Secret is applied with it (`-l relaybook.io/pre-rollout`)
    base = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())
    (settings,) = base["configMapGenerator"]
    assert settings["options"]["labels"]["relaybook.io/pre-rollout"] == "true"
    account = _by_kind("ServiceAccount")["relaybook"]
    assert account["metadata"]["labels"]["relaybook.io/pre-rollout"] == "true"


def _assert_sized_and_locked_down(pod: dict[str, Any]) -> None:
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    # secrets are referenced, never inlined
    assert {"secretRef": {"name": "relaybook"}} in container["envFrom"]
    assert all("value" not in variable for variable in container.get("env", []))
    mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/tmp", "/var/lib/relaybook"} <= mounted  # noqa: S108 - the writable emptyDirs
    # secret files (the Kafka client's private key) readable by the relaybook user, through
    # the pod's group, and by nobody else
    secrets = [volume["secret"] for volume in pod["volumes"] if "secret" in volume]
    assert secrets
    for secret in secrets:
        assert secret["defaultMode"] in {0o400, 0o440}, secret["secretName"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"] == 10001


def test_disruption_budgets_and_autoscalers_cover_the_deployables() -> None:
    budgets = _by_kind("PodDisruptionBudget")
    assert set(budgets) == {f"relaybook-{name}" for name in PRODUCTION}
    scalers = _by_kind("HorizontalPodAutoscaler")
    assert set(scalers) == {"relaybook-dispatcher", "relaybook-ingest"}
    for scaler in scalers.values():
        (metric,) = scaler["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
    (lag,) = documents(KUBERNETES / "examples" / "worker-hpa-consumer-lag.yaml")
    assert lag["spec"]["scaleTargetRef"]["name"] == "relaybook-worker"


def test_no_secret_is_in_the_kubernetes_manifests() -> None:
    assert not [doc for doc in core_manifests() if doc["kind"] == "Secret"]
    settings = (KUBERNETES / "base" / "settings.env").read_text()
    for secret in ("DATABASE_URL", "ADMIN_TOKEN", "API_KEY", "AUTH_TOKEN", "PASSWORD"):
        assert f"_{secret}=" not in settings, secret


def test_every_kustomization_names_files_that_exist() -> None:
    for kustomization in KUBERNETES.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for entry in spec.get("resources", []) + spec.get("components", []):
            assert (kustomization.parent / entry).exists(), (kustomization, entry)
        for generator in spec.get("configMapGenerator", []):
            for name in generator.get("envs", []) + generator.get("files", []):
                assert (kustomization.parent / name).is_file(), (kustomization, name)


def test_the_prometheus_rule_is_the_rule_file_exactly() -> None:
    """The copy kustomize forces on us (deploy/check rules rewrites it)."""
    (rule,) = documents(PROMETHEUS_RULE)
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == rule_groups(), "run `deploy/check rules`"
    groups_text = RULES.read_text().split("\ngroups:\n", 1)[1]
    copied = PROMETHEUS_RULE.read_text().split("\n  groups:\n", 1)[1]
    assert copied == "".join(
        f"  {line}" if line.strip() else line for line in groups_text.splitlines(True)
    ), "run `deploy/check rules`"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    anchors = readme_anchors()
    alerts = [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]
    assert len(alerts) >= 10
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        url = alert["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "deploy/README.md", alert["alert"]
        assert anchor in anchors, f"{alert['alert']}: no section #{anchor} in deploy/README.md"


def test_the_dashboard_has_the_panels_ops_asked_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " / ".join(panel["title"].lower() for panel in dashboard["panels"])
    for wanted in ("webhook", "sends out", "funnel", "lag", "latency", "errors", "alerts"):
        assert wanted in titles, wanted
    uids = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    assert uids == {"${datasource}"}


def test_the_trial_env_file_sets_only_settings_relaybook_knows() -> None:
    known = set(Settings().describe())
    for line in (DEPLOY / "sandbox.env").read_text().splitlines():
        if line.startswith("RELAYBOOK_"):
            assert shlex.split(line)[0].split("=", 1)[0] in known, line
