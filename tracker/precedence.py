"""How one delivery event changes a journal row: a pure policy, order-independent.

The status only climbs: ``queued`` < ``sent`` < ``delivered`` < ``opened`` < ``clicked``,
and ``failed`` outranks them all, so events can arrive in any order, twice, or late, and
the row ends the same: a late ``delivered`` or ``deferred`` never hides a bounce, an open
that arrives before its ``delivered`` still counts as delivered. Each timestamp keeps the
first time it happened. The reason and provider code are those of the first failure.

Opens by a machine (Apple Mail Privacy Protection) prove delivery, not reading: they
count as delivered, never as opened.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

RANK = {"queued": 0, "sent": 1, "delivered": 2, "opened": 3, "clicked": 4, "failed": 5}

#: canonical event type -> the status it proves. Types not listed (deferred,
#: unsubscribed, opted_out, ones nobody knows yet...) are kept in the timeline only.
PROVES = {
    "accepted": "sent",
    "processed": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "spam_reported": "delivered",
    "opened": "opened",
    "read": "opened",
    "clicked": "clicked",
    "failed": "failed",
    "bounced": "failed",
    "dropped": "failed",
    "undelivered": "failed",
    "canceled": "failed",
}

#: the timestamps each status implies (clicked implies opened, delivered and sent)
_STAMPS = {
    "sent": ("sent_at",),
    "delivered": ("sent_at", "delivered_at"),
    "opened": ("sent_at", "delivered_at", "opened_at"),
    "clicked": ("sent_at", "delivered_at", "opened_at", "clicked_at"),
    "failed": ("failed_at",),
}


@dataclasses.dataclass(frozen=True)
class Row:
    """The journal fields of one delivery that events change."""

    status: str
    sent_at: dt.datetime | None = None
    delivered_at: dt.datetime | None = None
    opened_at: dt.datetime | None = None
    clicked_at: dt.datetime | None = None
    failed_at: dt.datetime | None = None
    reason: str | None = None
    provider_code: str | None = None


def from_worker(event: dict[str, Any]) -> bool:
    """A send outcome the worker reported (ids ``relaybook:<delivery>:<attempt>:<type>``),
    not a provider's webhook: its ``failed`` is a refusal before anything was sent."""
    return str(event["event_id"]).startswith("relaybook:")


def proves(event: dict[str, Any]) -> str | None:
    """The status an event proves, or None if it changes no status."""
    if event["type"] == "opened" and event.get("machine_open"):
        return "delivered"
    return PROVES.get(event["type"])


def apply(row: Row, event: dict[str, Any], occurred_at: dt.datetime) -> Row:
    """``row`` after ``event``. Skipped deliveries were never sent: events leave them be."""
    status = proves(event)
    if status is None or row.status == "skipped":
        return row
    changes: dict[str, Any] = {}
    stamps = _STAMPS[status]
    if status == "failed" and not from_worker(event):
        stamps = ("sent_at", "failed_at")  # the provider had accepted it
    for stamp in stamps:
        current = getattr(row, stamp)
        if current is None or occurred_at < current:
            changes[stamp] = occurred_at
    if RANK[status] > RANK.get(row.status, 0):
        changes["status"] = status
        if status == "failed":
            changes["reason"] = event.get("reason") or event["type"]
            changes["provider_code"] = event.get("provider_code")
        elif row.status == "queued":  # a "retrying: ..." note is over
            changes["reason"] = changes["provider_code"] = None
    return dataclasses.replace(row, **changes) if changes else row
