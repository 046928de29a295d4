"""Provider webhooks turned into canonical ``delivery-event/v1`` messages.

Pure functions: a SendGrid event (one element of the posted array) or a Twilio form in,
a canonical event out, or :class:`MalformedError` naming what is wrong. Event ids are
derived from the provider's own (``sg_event_id``; Twilio ``MessageSid`` + status), so a
duplicate webhook yields the same id and collapses in the tracker. Event types nobody
knows yet are kept under their own name, never rejected.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from relaybook.platform import storable
from relaybook.platform.timestamps import iso
from webhook_ingest import WebhookError

#: SendGrid event name -> canonical type
SENDGRID_TYPES = {
    "processed": "processed",
    "dropped": "dropped",
    "delivered": "delivered",
    "deferred": "deferred",
    "bounce": "bounced",
    "open": "opened",
    "click": "clicked",
    "spamreport": "spam_reported",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "group_unsubscribed",
    "group_resubscribe": "group_resubscribed",
}

#: Twilio asynchronous error codes worth a human-readable reason in the journal
TWILIO_ERRORS = {
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered by the carrier",
    "30008": "Unknown error",
    "30034": "Message from an unregistered number",
}

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})


class MalformedError(WebhookError):
    """The webhook does not have the shape the provider documents (400)."""

    def __init__(self, detail: str) -> None:
        super().__init__(400, "malformed", detail)


def parse_batch(body: bytes) -> Any:
    """A signed body as JSON: by ``orjson`` (fast), or, for what it refuses that is still
    JSON (a lone surrogate in a string), by the standard library, so the events are kept
    (:func:`relaybook.platform.storable.json_value`); nesting past about 1000 levels is refused."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except RecursionError:
        raise MalformedError("the body is nested too deeply") from None
    except ValueError:  # UnicodeDecodeError and too many digits included
        raise MalformedError("the body is not JSON") from None


def _delivery_id(value: Any) -> str | None:
    """A correlation id we issued, or None for anything else (never an error: events about
    messages relaybook did not send are kept, just not correlated)."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return storable.text(value) if isinstance(value, str) and value else None


def sendgrid_event(raw: Any, index: int, received_at: str) -> dict[str, Any]:
    """The canonical event for element ``index`` of a SendGrid batch."""
    if not isinstance(raw, dict):
        raise MalformedError(f"event {index} is not a JSON object")
    name = raw.get("event")
    event_id = raw.get("sg_event_id")
    timestamp = raw.get("timestamp")
    if not isinstance(name, str) or not name:
        raise MalformedError(f"event {index}: `event` must be a non-empty string")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 100:
        raise MalformedError(f"event {index}: `sg_event_id` must be a string of 1 to 100 chars")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        raise MalformedError(f"event {index}: `timestamp` must be Unix seconds")
    try:
        occurred = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedError(f"event {index}: `timestamp` is out of range") from None
    kind = SENDGRID_TYPES.get(name) or storable.text(name)
    event: dict[str, Any] = {
        "schema": "delivery-event/v1",
        "event_id": f"sendgrid:{storable.text(event_id)}",
        "type": kind,
        "channel": "email",
        "provider": "sendgrid",
        "occurred_at": iso(occurred),
        "received_at": received_at,
        "delivery_id": _delivery_id(raw.get("delivery_id")),
        "provider_message_id": _text(raw.get("sg_message_id")),
        "address": _text(raw.get("email")),
        "reason": None,
        "provider_code": None,
        "raw": _faithful(raw, index),
    }
    if kind in {"bounced", "dropped", "deferred"}:
        event["reason"] = _text(raw.get("reason")) or _text(raw.get("response"))
        event["provider_code"] = _text(raw.get("status"))
    if kind == "bounced":
        bounce_type = raw.get("type")
        event["bounce_type"] = bounce_type if bounce_type in ("bounce", "blocked") else None
        classification = _text(raw.get("bounce_classification"))
        event["bounce_classification"] = classification.lower() if classification else None
    elif kind == "clicked":
        event["url"] = _text(raw.get("url"))
    elif kind == "opened":
        event["machine_open"] = raw.get("sg_machine_open") is True
    elif kind == "deferred":
        attempt = raw.get("attempt")
        if isinstance(attempt, str) and attempt.isascii() and attempt.isdigit():
            attempt = int(attempt[:9])
        if isinstance(attempt, int) and not isinstance(attempt, bool) and 1 <= attempt < 10**9:
            event["attempt"] = attempt
    return event


def _faithful(raw: dict[str, Any], index: int) -> Any:
    """The provider's event as received, storable
    (:func:`relaybook.platform.storable.json_value`)."""
    try:
        return storable.json_value(raw)
    except RecursionError:
        raise MalformedError(f"event {index} is nested too deeply") from None


def _required(form: Mapping[str, str], name: str) -> str:
    value = storable.text(form.get(name, ""))
    if not value:
        raise MalformedError(f"the form has no `{name}`")
    return value


def _form(form: Mapping[str, str]) -> dict[str, str]:
    """A Twilio form as received, storable: a NUL (``%00``) becomes U+FFFD in the names
    and values it is in (the form is UTF-8 text, so it holds no lone surrogate)."""
    return {storable.text(name): storable.text(value) for name, value in form.items()}


def twilio_status(
    form: Mapping[str, str], delivery_id: str | None, received_at: str
) -> dict[str, Any]:
    """The canonical event for one status callback. Twilio's form carries no time of its
    own: the event happened when it arrived."""
    sid = _required(form, "MessageSid")
    status = _required(form, "MessageStatus").lower()
    code = _text(form.get("ErrorCode"))
    return {
        "schema": "delivery-event/v1",
        "event_id": f"twilio:{sid}:{status}",
        "type": status,
        "channel": "sms",
        "provider": "twilio",
        "occurred_at": received_at,
        "received_at": received_at,
        "delivery_id": _delivery_id(delivery_id),
        "provider_message_id": sid,
        "address": _text(form.get("To")),
        "reason": TWILIO_ERRORS.get(code, f"Twilio error {code}") if code else None,
        "provider_code": code,
        "raw": _form(form),
    }


def twilio_inbound(form: Mapping[str, str], received_at: str) -> dict[str, Any]:
    """The canonical event for an inbound SMS: ``opted_out`` for STOP and its synonyms,
    ``opted_in`` for START and its synonyms, ``inbound`` for anything else."""
    sid = _required(form, "MessageSid")
    sender = _required(form, "From")
    keyword = storable.text(form.get("Body", "")).strip().upper()
    opt = form.get("OptOutType", "").upper()
    if keyword in OPT_OUT or opt == "STOP":
        kind = "opted_out"
    elif keyword in OPT_IN or opt == "START":
        kind = "opted_in"
    else:
        kind = "inbound"
    return {
        "schema": "delivery-event/v1",
        "event_id": f"twilio:{sid}:{kind}",
        "type": kind,
        "channel": "sms",
        "provider": "twilio",
        "occurred_at": received_at,
        "received_at": received_at,
        "delivery_id": None,
        "provider_message_id": sid,
        "address": sender,
        "reason": f"replied {keyword}" if kind != "inbound" else None,
        "provider_code": None,
        "raw": _form(form),
    }
