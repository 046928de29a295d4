from prometheus_client import CollectorRegistry, Counter

from relaybook.metrics import count_each


def test_count_each_counts_one_per_item_under_its_own_labels() -> None:
    registry = CollectorRegistry()
    metric = Counter("things", "Things", ["channel", "kind"], registry=registry)

    count_each(metric, iter([("email", "hard"), ("sms", "soft"), ("email", "hard")]))
    count_each(metric, [])

    assert registry.get_sample_value("things_total", {"channel": "email", "kind": "hard"}) == 2
    assert registry.get_sample_value("things_total", {"channel": "sms", "kind": "soft"}) == 1
    assert registry.get_sample_value("things_total", {"channel": "sms", "kind": "hard"}) is None
