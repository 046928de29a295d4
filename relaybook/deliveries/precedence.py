"""How delivery events change a journal row: a policy that does not depend on their order.

The order itself is written once, in SQL, where the writers meet: ``delivery_statuses()``
and ``delivery_status_after(was, proven)`` (relaybook/deliveries/queries.sql,
``status_rule``); this module only says which status each event proves. The status only
climbs: ``queued`` < ``sent`` < ``delivered`` < ``opened`` < ``clicked``,
and ``failed`` outranks them all, so events can arrive in any order, twice, or late, and
the row ends the same: a late ``delivered`` or ``deferred`` never hides a bounce, an open
that arrives before its ``delivered`` still counts as delivered. A status implies the
ones below it (a click: opened, delivered and sent at its time), and a failure the
provider reported implies the message was sent (a worker's, a refusal, does not). Each
timestamp keeps the first time it happened. The reason and provider code are those of
the first failure. A skipped delivery was never sent: events leave it be.

Opens by a machine (Apple Mail Privacy Protection) prove delivery, not reading: they
count as delivered, never as opened.

Which status each event proves is decided here, per event; a batch's events are then
applied to their rows at once, in PostgreSQL (relaybook/deliveries/queries.sql,
``project_events``): one
statement, instead of reading the rows, applying the events in Python and writing the
rows back (the tracker's largest cost after storing the events).
"""

from __future__ import annotations

from typing import Any

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


def from_worker(event: dict[str, Any]) -> bool:
    """A send outcome the worker reported (ids ``relaybook:<delivery>:<attempt>:<type>``),
    not a provider's webhook: the worker recorded it on the delivery itself, so the
    tracker stores it in the journal but does not project it again."""
    return str(event["event_id"]).startswith("relaybook:")


def proves(event: dict[str, Any]) -> str | None:
    """The status an event proves, or None if it changes no status."""
    if event["type"] == "opened" and event.get("machine_open"):
        return "delivered"
    return PROVES.get(event["type"])
