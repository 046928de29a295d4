"""What a valid notice is: the body of ``POST /v1/notices`` (and the recipients it
names), decoded strictly (:mod:`relaybook.platform.decoding`), then
checked beyond its type (:func:`parse_notice`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any

import msgspec

from relaybook.platform.decoding import (
    NOT_BLANK,
    UNSET,
    Email,
    Id,
    InvalidRequestError,
    Moment,
    Phone,
    UnsetType,
    convert,
    in_utc,
)

#: documented limits
MAX_RECIPIENTS = 100_000
MAX_TEXT = 1_000_000
MAX_SMS = 1_600
MAX_SUBJECT = 998
Title = Annotated[str, msgspec.Meta(max_length=500, pattern=NOT_BLANK)]
Subject = Annotated[str, msgspec.Meta(max_length=MAX_SUBJECT, pattern=NOT_BLANK)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT, pattern=NOT_BLANK)]
SmsText = Annotated[str, msgspec.Meta(max_length=MAX_SMS, pattern=NOT_BLANK)]


class Source(msgspec.Struct, forbid_unknown_fields=True):
    """Who publishes the notice, and about what."""

    service: Id
    kind: Id
    reference: Id


class EmailContent(msgspec.Struct, forbid_unknown_fields=True):
    subject: Subject
    text: Text
    html: Text | None = None


class SmsContent(msgspec.Struct, forbid_unknown_fields=True):
    text: SmsText


class Recipient(msgspec.Struct, forbid_unknown_fields=True):
    """A recipient as a notice names them: an address left out is kept from before, one
    given as null is removed."""

    id: Id
    name: Id | None = None
    email: Email | UnsetType | None = UNSET
    phone: Phone | UnsetType | None = UNSET
    #: the agency's properties this person owns or rents in (added to those known)
    properties: Annotated[list[Id], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )


class NoticeBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/notices``: the channels are those whose content is given; ``send: true``
    sends now, ``send_at`` (in the future) schedules, neither makes a draft."""

    source: Source
    title: Title
    recipients: Annotated[list[Recipient], msgspec.Meta(min_length=1, max_length=MAX_RECIPIENTS)]
    #: the agency it is sent for; default: the token's, when it is bound to exactly one,
    #: else RELAYBOOK_DEFAULT_AGENCY
    agency: Id | None = None
    #: the agency's property (co-ownership) it is about, if any
    property: Id | None = None
    email: EmailContent | None = None
    sms: SmsContent | None = None
    send_at: Moment | None = None
    send: bool = False


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
    agency: str | None = None
    property_id: str | None = None

    @property
    def channels(self) -> list[str]:
        return [c for c, on in (("email", self.email_subject), ("sms", self.sms_text)) if on]

    @property
    def status(self) -> str:
        if self.send:
            return "sending"
        return "scheduled" if self.send_at else "draft"


def parse_notice(body: NoticeBody | Any, now: dt.datetime) -> NoticeRequest:
    """A ``POST /v1/notices`` body (decoded, or as plain JSON values) checked beyond its
    type: some content, unique recipient ids, ``send_at`` in the future."""
    if not isinstance(body, NoticeBody):
        body = convert(body, NoticeBody)
    if body.email is None and body.sms is None:
        raise InvalidRequestError("email", "a notice needs email or sms content (or both)")
    send_at = body.send_at
    if send_at is not None:
        send_at = in_utc("send_at", send_at)
        if body.send:
            raise InvalidRequestError("send_at", "cannot be given with send: true")
        if send_at <= now:
            raise InvalidRequestError("send_at", "must be in the future")
    seen: dict[str, int] = {}
    for index, recipient in enumerate(body.recipients):
        first = seen.setdefault(recipient.id, index)
        if first != index:
            raise InvalidRequestError(
                f"recipients[{index}].id", f"duplicate of recipients[{first}]"
            )
    email = body.email
    return NoticeRequest(
        body.source.service,
        body.source.kind,
        body.source.reference,
        body.title,
        email.subject if email else None,
        email.text if email else None,
        email.html if email else None,
        body.sms.text if body.sms else None,
        body.recipients,
        send_at,
        body.send,
        body.agency,
        body.property,
    )
