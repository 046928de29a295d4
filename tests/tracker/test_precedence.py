"""The status precedence, table-driven: whatever order events come in, and however often,
a journal row ends the same, and never climbs down."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from tracker.precedence import Row, apply

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def event(kind: str, provider: str = "sendgrid", **fields: Any) -> dict[str, Any]:
    """``provider="relaybook"``: a send outcome reported by the worker."""
    source = "relaybook:d:1" if provider == "relaybook" else provider
    return {
        "event_id": f"{source}:{kind}",
        "type": kind,
        "provider": provider,
        "reason": None,
        "provider_code": None,
        **fields,
    }


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


BOUNCE = event("bounced", reason="550 5.1.1 no such user", provider_code="5.1.1")


@pytest.mark.parametrize(
    ("start", "incoming", "status"),
    [
        ("sent", event("processed"), "sent"),
        ("sent", event("delivered"), "delivered"),
        ("sent", event("opened", machine_open=False), "opened"),
        ("sent", event("opened", machine_open=True), "delivered"),
        ("sent", event("clicked"), "clicked"),
        ("sent", BOUNCE, "failed"),
        ("sent", event("dropped", reason="Bounced Address"), "failed"),
        ("sent", event("deferred"), "sent"),
        ("sent", event("spam_reported"), "delivered"),
        ("sent", event("unsubscribed"), "sent"),
        ("sent", event("a_type_nobody_knows"), "sent"),
        ("sent", event("delivered", "twilio"), "delivered"),
        ("sent", event("undelivered", "twilio", provider_code="30005"), "failed"),
        ("sent", event("read", "twilio"), "opened"),
        ("queued", event("accepted", "relaybook"), "sent"),
        ("queued", event("failed", "relaybook"), "failed"),
        ("delivered", event("processed"), "delivered"),
        ("opened", event("delivered"), "opened"),
        ("clicked", event("opened", machine_open=False), "clicked"),
        ("delivered", BOUNCE, "failed"),
        ("failed", event("delivered"), "failed"),
        ("failed", event("deferred"), "failed"),
        ("failed", event("clicked"), "failed"),
        ("skipped", event("delivered"), "skipped"),
    ],
)
def test_one_event_moves_the_status_only_upwards(
    start: str, incoming: dict[str, Any], status: str
) -> None:
    assert apply(Row(status=start), incoming, T0).status == status


def test_the_same_events_in_any_order_and_repeated_give_the_same_row() -> None:
    story = [
        (event("processed"), at(0)),
        (event("delivered"), at(5)),
        (event("opened", machine_open=True), at(6)),
        (event("opened", machine_open=False), at(60)),
        (event("clicked"), at(90)),
        (event("deferred"), at(2)),
    ]
    outcomes = set()
    for order in itertools.permutations(story):
        row = Row(status="sent", sent_at=at(-1))
        for incoming, when in [*order, *order[:2]]:  # and two of them again
            row = apply(row, incoming, when)
        outcomes.add(row)
    assert outcomes == {
        Row(
            status="clicked",
            sent_at=at(-1),
            delivered_at=at(5),
            opened_at=at(60),
            clicked_at=at(90),
        )
    }


def test_a_click_alone_implies_opened_and_delivered_at_its_time() -> None:
    row = apply(Row(status="sent", sent_at=at(0)), event("clicked"), at(30))
    assert (row.delivered_at, row.opened_at, row.clicked_at) == (at(30), at(30), at(30))
    later = apply(row, event("delivered"), at(10))  # the delivery, reported late
    assert (later.status, later.delivered_at, later.opened_at) == ("clicked", at(10), at(30))


def test_a_machine_open_proves_delivery_but_not_reading() -> None:
    row = apply(Row(status="sent"), event("opened", machine_open=True), at(3))
    assert (row.status, row.delivered_at, row.opened_at) == ("delivered", at(3), None)


def test_a_bounce_keeps_its_reason_and_code_whatever_comes_after() -> None:
    row = apply(Row(status="delivered", delivered_at=at(1)), BOUNCE, at(9))
    row = apply(row, event("dropped", reason="Bounced Address"), at(10))
    row = apply(row, event("delivered"), at(11))
    assert (row.status, row.reason, row.provider_code, row.failed_at) == (
        "failed",
        "550 5.1.1 no such user",
        "5.1.1",
        at(9),
    )


def test_leaving_the_queue_clears_a_retry_note() -> None:
    row = Row(status="queued", reason="retrying: 503 from SendGrid", provider_code="503")
    row = apply(row, event("accepted", "relaybook"), at(0))
    assert (row.status, row.reason, row.provider_code, row.sent_at) == ("sent", None, None, at(0))


def test_a_refusal_by_the_provider_api_is_not_a_send() -> None:
    refused = event("failed", "relaybook", reason="invalid number", provider_code="21211")
    row = apply(Row(status="queued"), refused, at(0))
    assert (row.status, row.sent_at, row.failed_at) == ("failed", None, at(0))
