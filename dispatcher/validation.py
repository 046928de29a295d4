"""What a valid notice is. ``parse_notice`` turns a request body into a :class:`NoticeRequest`
or raises :class:`InvalidRequestError` naming the first field at fault (``recipients[3].email``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Set
from typing import Any, NamedTuple

#: documented limits
MAX_RECIPIENTS = 100_000
MAX_TEXT = 1_000_000
MAX_SMS = 1_600
MAX_SUBJECT = 998
MAX_ID = 200

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_RECIPIENT_FIELDS = frozenset({"id", "name", "email", "phone"})
_ABSENT = object()


class InvalidRequestError(ValueError):
    """A request body is not acceptable; ``field`` says where."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail

    def within(self, where: str) -> InvalidRequestError:
        """The same error about a field of ``where`` (``recipients[3]``)."""
        return InvalidRequestError(f"{where}.{self.field}" if self.field else where, self.detail)


class Recipient(NamedTuple):  # a NamedTuple: made 100,000 times for a large notice
    id: str
    name: str | None
    email: str | None
    phone: str | None
    email_given: bool
    phone_given: bool


@dataclasses.dataclass(frozen=True)
class NoticeRequest:
    service: str
    kind: str
    reference: str
    title: str
    email_subject: str | None
    email_text: str | None
    email_html: str | None
    sms_text: str | None
    recipients: list[Recipient]
    send_at: dt.datetime | None
    send: bool

    @property
    def channels(self) -> list[str]:
        return [c for c, on in (("email", self.email_subject), ("sms", self.sms_text)) if on]

    @property
    def status(self) -> str:
        if self.send:
            return "sending"
        return "scheduled" if self.send_at else "draft"


def parse_object(value: Any, field: str, allowed: Set[str]) -> dict[str, Any]:
    """``value`` as an object with no field but ``allowed`` ones; ``field`` names it in
    errors ("(body)" or "" for the request's own fields)."""
    if not isinstance(value, dict):
        raise InvalidRequestError(field, "must be an object")
    if not value.keys() <= allowed:
        unknown = sorted(value.keys() - allowed)[0]
        raise InvalidRequestError(
            f"{field}.{unknown}" if field not in ("(body)", "") else unknown, "is not a known field"
        )
    return value


def _optional(value: Any, field: str, limit: int) -> str | None:
    return None if value is None else _text(value, field, limit)


def _text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(field, "must be a non-empty string")
    if len(value) > limit:
        raise InvalidRequestError(field, f"must be at most {limit} characters")
    return value


def parse_notice(body: Any, now: dt.datetime) -> NoticeRequest:
    """Validates a ``POST /v1/notices`` body."""
    body = parse_object(
        body, "(body)", {"source", "title", "email", "sms", "recipients", "send_at", "send"}
    )
    source = parse_object(body.get("source"), "source", {"service", "kind", "reference"})
    service = _text(source.get("service"), "source.service", MAX_ID)
    kind = _text(source.get("kind"), "source.kind", MAX_ID)
    reference = _text(source.get("reference"), "source.reference", MAX_ID)
    title = _text(body.get("title"), "title", 500)
    subject = text = html = sms = None
    if body.get("email") is not None:
        email = parse_object(body["email"], "email", {"subject", "text", "html"})
        subject = _text(email.get("subject"), "email.subject", MAX_SUBJECT)
        text = _text(email.get("text"), "email.text", MAX_TEXT)
        html = _optional(email.get("html"), "email.html", MAX_TEXT)
    if body.get("sms") is not None:
        sms = _text(parse_object(body["sms"], "sms", {"text"}).get("text"), "sms.text", MAX_SMS)
    if subject is None and sms is None:
        raise InvalidRequestError("email", "a notice needs email or sms content (or both)")
    send = body.get("send", False)
    if not isinstance(send, bool):
        raise InvalidRequestError("send", "must be true or false")
    send_at = _send_at(body.get("send_at"), now)
    if send and send_at is not None:
        raise InvalidRequestError("send_at", "cannot be given with send: true")
    return NoticeRequest(
        service,
        kind,
        reference,
        title,
        subject,
        text,
        html,
        sms,
        _recipients(body.get("recipients")),
        send_at,
        send,
    )


def _send_at(value: Any, now: dt.datetime) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequestError("send_at", "must be an ISO 8601 date-time with a time zone")
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            "send_at", "must be an ISO 8601 date-time with a time zone"
        ) from None
    if when.tzinfo is None:
        raise InvalidRequestError("send_at", "must include a time zone (Z or +hh:mm)")
    if when <= now:
        raise InvalidRequestError("send_at", "must be in the future")
    return when


def _recipients(value: Any) -> list[Recipient]:
    if not isinstance(value, list) or not value:
        raise InvalidRequestError("recipients", "must be a non-empty list")
    if len(value) > MAX_RECIPIENTS:
        raise InvalidRequestError("recipients", f"at most {MAX_RECIPIENTS} recipients per notice")
    seen: dict[str, int] = {}
    parsed = []
    # each recipient's fields are named in an error only once there is one
    for index, raw in enumerate(value):
        try:
            item = parse_object(raw, "", _RECIPIENT_FIELDS)
            recipient = parse_contact(item, _text(item.get("id"), "id", MAX_ID))
        except InvalidRequestError as error:
            raise error.within(f"recipients[{index}]") from None
        if recipient.id in seen:
            raise InvalidRequestError(
                f"recipients[{index}].id", f"duplicate of recipients[{seen[recipient.id]}]"
            )
        seen[recipient.id] = index
        parsed.append(recipient)
    return parsed


def parse_contact(item: dict[str, Any], recipient_id: str) -> Recipient:
    """A recipient's contact details: an address left out is kept, one given as null is
    removed."""
    name = _optional(item.get("name"), "name", MAX_ID)
    email = item.get("email", _ABSENT)
    if email not in (None, _ABSENT) and (
        not isinstance(email, str) or len(email) > 254 or not _EMAIL.match(email)
    ):
        raise InvalidRequestError("email", "is not a valid email address")
    phone = item.get("phone", _ABSENT)
    if phone not in (None, _ABSENT) and (not isinstance(phone, str) or not _E164.match(phone)):
        raise InvalidRequestError("phone", "is not an E.164 phone number (+33612345678)")
    return Recipient(
        recipient_id,
        name,
        None if email is _ABSENT else email,
        None if phone is _ABSENT else phone,
        email is not _ABSENT,
        phone is not _ABSENT,
    )
