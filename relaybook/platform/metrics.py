"""Helpers for the Prometheus metrics every deployable keeps."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from prometheus_client import Counter


def count_each(metric: Counter, labels: Iterable[tuple[str, ...]]) -> None:
    """Counts one for each tuple of label values in ``labels``: one label lookup per
    distinct tuple, not per item (a lookup and an increment take about 1.5 us, a good
    share of what a consumer spends on each message of a 5,000-message batch)."""
    for values, count in collections.Counter(labels).items():
        metric.labels(*values).inc(count)
