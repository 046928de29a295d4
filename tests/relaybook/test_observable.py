"""Every deployable is observable: the send workers, the tracker and the bounce policy
serve /healthz, /readyz (ready only once each consumer joined its group) and /metrics on
ports of their own."""

from __future__ import annotations

import httpx

from relaybook.tooling.system import System
from tests.support import until


async def test_the_consumers_serve_health_readiness_and_metrics_on_their_own_ports(
    system: System,
) -> None:
    groups = {
        "worker": {"group relaybook-workers-email", "group relaybook-workers-sms"},
        "tracker": {"group relaybook-tracker"},
        "bounce-policy": {"group relaybook-bounce-policy"},
    }
    ports = {name: system.servers[name].url for name in groups}
    assert len(set(ports.values())) == 3
    async with httpx.AsyncClient(timeout=10) as client:
        for name, url in ports.items():
            assert (await client.get(f"{url}/healthz")).status_code == 200

            async def ready(url: str = url) -> bool:
                return (await client.get(f"{url}/readyz")).status_code == 200

            await until(ready, within=30)
            checks = (await client.get(f"{url}/readyz")).json()["checks"]
            assert set(checks) == {"database", "broker"} | groups[name], name
            metrics = await client.get(f"{url}/metrics")
            assert metrics.status_code == 200
            assert "relaybook_kafka_messages_consumed_total" in metrics.text
