"""The alert rules and the dashboard read only series relaybook really exports: scraped
here from every deployable of a running ``relaybook up`` (each in its own process, as in
production), whose /metrics count only their own work."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from relaybook.platform.settings import SettingsError
from relaybook.tooling.embedded import free_port_settings
from relaybook.tooling.processes import Processes
from relaybook.tooling.settings import Settings, load
from tests.deploy.manifests import DASHBOARD, SYNTHETIC, metric_names, rule_groups
from tests.support import ADMIN

_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", re.MULTILINE)
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exported(text: str) -> set[str]:
    """The series names of a /metrics page: every family it declares (with or without
    samples yet) and, for histograms, their _bucket, _sum and _count series."""
    names = set(_SAMPLE.findall(text))
    for family, kind in _TYPE.findall(text):
        names.add(family)
        names.update(family + suffix for suffix in _SUFFIXES.get(kind, ()))
    return names


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[Processes]:
    """``relaybook up`` on the test's database and topics, listening as in a container."""
    everywhere = "0.0.0.0"  # noqa: S104 - what the image sets: the pod's address must answer
    configured = dataclasses.replace(
        settings, **free_port_settings(), admin_token=ADMIN, listen_address=everywhere
    )
    async with Processes(configured) as system:
        yield system


@pytest.mark.timeout(300)
async def test_every_series_the_rules_and_the_dashboard_use_is_exported(
    running: Processes,
) -> None:
    scraped: dict[str, set[str]] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for name, child in running.children.items():
            answer = await client.get(f"{child.url}/metrics")
            assert answer.status_code == 200, name
            scraped[name] = exported(answer.text)
            # readiness as a series (the not-ready alert): 1 once its checks pass
            assert f'relaybook_ready{{service="{name}"}} 1.0' in answer.text, name
    everything = set().union(*scraped.values())

    rules = [rule for group in rule_groups() for rule in group["rules"]]
    used = {name for rule in rules for name in metric_names(rule["expr"])}
    dashboard = json.loads(DASHBOARD.read_text())
    used |= {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in metric_names(target["expr"])
    }
    assert len(used) > 20, "the names were not found in the expressions"
    assert used - SYNTHETIC - everything == set()

    # each process counts its own work: the series of a deployable are on its own page
    assert "relaybook_sends_total" in scraped["worker"]
    assert "relaybook_webhook_requests_rejected_total" in scraped["ingest"]
    assert "relaybook_outbox_oldest_age_seconds" in scraped["dispatcher"]
    assert "relaybook_tracker_events_total" in scraped["tracker"]
    assert "relaybook_bounce_policy_events_total" in scraped["bounce-policy"]


def test_the_listen_address_is_an_ipv4_address() -> None:
    assert load({}).listen_address == "127.0.0.1"
    everywhere = "0.0.0.0"  # noqa: S104 - a setting's value, parsed
    assert load({"RELAYBOOK_LISTEN_ADDRESS": everywhere}).listen_address == everywhere
    with pytest.raises(SettingsError, match="RELAYBOOK_LISTEN_ADDRESS='localhost'"):
        load({"RELAYBOOK_LISTEN_ADDRESS": "localhost"})
