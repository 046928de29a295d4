"""Metrics ops ask for that are read when scraped, not counted as things happen, and the
helper that counts a batch's items by their labels."""

from __future__ import annotations

import asyncpg
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from relaybook.platform.metrics import count_each


async def test_the_pools_connections_are_a_metric_read_when_scraped(pool: asyncpg.Pool) -> None:
    def connections(state: str) -> float:
        return REGISTRY.get_sample_value("relaybook_db_pool_connections", {"state": state}) or 0

    in_use = connections("in_use")
    async with pool.acquire():
        assert connections("in_use") == in_use + 1
        assert connections("max") >= 4
    assert connections("in_use") == in_use


def test_count_each_counts_one_per_item_under_its_own_labels() -> None:
    registry = CollectorRegistry()
    metric = Counter("things", "Things", ["channel", "kind"], registry=registry)

    count_each(metric, iter([("email", "hard"), ("sms", "soft"), ("email", "hard")]))
    count_each(metric, [])

    assert registry.get_sample_value("things_total", {"channel": "email", "kind": "hard"}) == 2
    assert registry.get_sample_value("things_total", {"channel": "sms", "kind": "soft"}) == 1
    assert registry.get_sample_value("things_total", {"channel": "sms", "kind": "hard"}) is None
