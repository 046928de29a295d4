"""What a valid notice is: the body of ``POST /v1/notices`` (and the recipients it
names), decoded strictly (:mod:`relaybook.platform.decoding`), then
checked beyond its type (:func:`parse_notice`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any

import msgspec

from relaybook.content.messages import DEFAULT_LANGUAGE, NoticeContent, by_language
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
#: a language as BCP 47 writes it: fr, nl-BE, de-BE
Language = Annotated[
    str,
    msgspec.Meta(
        max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$", examples=["fr", "nl-BE"]
    ),
]
#: a recipient's data: its JSON at most this long, and nested at most this deep
MAX_DATA_BYTES = 16_384
MAX_DATA_DEPTH = 10
#: languages a notice's content may come in, its default's included
MAX_LANGUAGES = 10


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
    #: the language they read, kept like their addresses (null: none known)
    language: Language | UnsetType | None = UNSET
    #: what this notice says to them of their own, for its templates (``data.amount``)
    data: dict[str, Any] | None = None


class LanguageContent(msgspec.Struct, forbid_unknown_fields=True):
    """A notice's content in one more language: a channel left out is the default's."""

    email: EmailContent | None = None
    sms: SmsContent | None = None


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
    #: the language of ``email`` and ``sms``: what a recipient gets when the notice has
    #: no content in theirs
    default_language: Language = DEFAULT_LANGUAGE
    #: the content in other languages
    content: dict[Language, LanguageContent] | None = None
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
    default_language: str = DEFAULT_LANGUAGE
    #: the content in other languages, as stored: {language: {"email": {...}, "sms": {...}}}
    content: dict[str, dict[str, Any]] | None = None

    @property
    def texts(self) -> dict[str, dict[str, Any]]:
        """The content by language, the default's first (what NoticeContent compiles)."""
        email = (
            {"subject": self.email_subject, "text": self.email_text, "html": self.email_html}
            if self.email_subject
            else None
        )
        return by_language(self.default_language, email, self.sms_text, self.content)

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
    for index, recipient in enumerate(body.recipients):
        if recipient.data is not None:
            _check_data(f"recipients[{index}].data", recipient.data)
    content = _other_languages(body)
    email = body.email
    request = NoticeRequest(
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
        body.default_language,
        content,
    )
    compiled = NoticeContent(request.default_language, request.texts)
    compiled.check([(r.id, r.data or {}) for r in body.recipients])
    return request


def _other_languages(body: NoticeBody) -> dict[str, dict[str, Any]] | None:
    """``content`` as stored, checked: other languages than the default, channels the
    notice has."""
    if not body.content:
        return None
    if len(body.content) >= MAX_LANGUAGES:
        raise InvalidRequestError("content", f"at most {MAX_LANGUAGES - 1} other languages")
    stored: dict[str, dict[str, Any]] = {}
    seen = {body.default_language.lower(): "default_language"}
    for language, given in body.content.items():
        earlier = seen.setdefault(language.lower(), f"content.{language}")
        if earlier == "default_language":
            raise InvalidRequestError(
                f"content.{language}", "is the default language: give it as email and sms"
            )
        if earlier != f"content.{language}":
            raise InvalidRequestError(f"content.{language}", f"is {earlier} again")
        for channel in ("email", "sms"):
            if getattr(given, channel) is not None and getattr(body, channel) is None:
                raise InvalidRequestError(
                    f"content.{language}.{channel}",
                    f"the notice has no {channel} content in its default language",
                )
        stored[language] = {
            "email": msgspec.to_builtins(given.email) if given.email else None,
            "sms": msgspec.to_builtins(given.sms) if given.sms else None,
        }
    return stored


def _check_data(field: str, data: dict[str, Any]) -> None:
    if len(msgspec.json.encode(data)) > MAX_DATA_BYTES:
        raise InvalidRequestError(field, f"is over {MAX_DATA_BYTES} bytes as JSON")
    if _nested_over(data, MAX_DATA_DEPTH):
        raise InvalidRequestError(field, f"is nested over {MAX_DATA_DEPTH} levels deep")


def _nested_over(value: dict[str, Any], limit: int) -> bool:
    """Whether objects and arrays nest over ``limit`` deep (``value`` itself is 1), level
    by level: no recursion for a deep value to exhaust."""
    level: list[Any] = [value]
    for _ in range(limit):
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True
