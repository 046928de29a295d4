"""Metrics ops ask for that are read when scraped, not counted as things happen."""

from __future__ import annotations

import asyncpg
from prometheus_client import REGISTRY


async def test_the_pools_connections_are_a_metric_read_when_scraped(pool: asyncpg.Pool) -> None:
    def connections(state: str) -> float:
        return REGISTRY.get_sample_value("relaybook_db_pool_connections", {"state": state}) or 0

    in_use = connections("in_use")
    async with pool.acquire():
        assert connections("in_use") == in_use + 1
        assert connections("max") >= 4
    assert connections("in_use") == in_use
