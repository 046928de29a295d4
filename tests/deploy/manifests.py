"""Reading deploy/: its YAML files, the metric names its PromQL uses, README anchors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
RULES = DEPLOY / "monitoring" / "alerts.yaml"
PROMETHEUS_RULE = KUBERNETES / "components" / "prometheus-operator" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "monitoring" / "grafana" / "relaybook.json"

#: series Prometheus records itself for every target, not exported by anyone
SYNTHETIC = frozenset({"up"})
#: PromQL words that look like names: functions, aggregations, keywords
_PROMQL_WORDS = re.compile(r"\b(relaybook_[a-z0-9_]+|up)\b(?!\s*\()")


def documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of ``path`` (empty ones left out)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def core_manifests() -> list[dict[str, Any]]:
    """The resources of deploy/kubernetes/base, as listed by its kustomization."""
    base = KUBERNETES / "base"
    listed = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    return [doc for name in listed for doc in documents(base / name)]


def metric_names(expression: str) -> set[str]:
    """The series names a PromQL expression reads (recording rules' ``a:b:c`` left out:
    they are defined by the rules, not exported)."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    return set(_PROMQL_WORDS.findall(without_strings))


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def readme_anchors() -> set[str]:
    lines = (DEPLOY / "README.md").read_text().splitlines()
    return {github_anchor(line.lstrip("#")) for line in lines if line.startswith("#")}
