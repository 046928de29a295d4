"""What notices and resends answer, as typed definitions: mypy checks the services' dicts
against them, and the API's ``/openapi.json`` describes each answer from them."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from relaybook.deliveries.answers import Channel
from relaybook.platform.answers import Timestamp, Uuid

NoticeStatus = Literal["draft", "scheduled", "sending", "sent", "partially_failed", "failed"]
ResendScope = Literal["failed", "undelivered", "selected"]


class SourceAnswer(TypedDict):
    service: str
    kind: str
    reference: str


class Stats(TypedDict):
    """A channel's funnel: ``sent`` counts every message the provider accepted,
    ``delivered`` those delivered (opened and clicked ones too), ``opened`` every human
    open (clicked included); ``queued``, ``failed`` and ``skipped`` are current states."""

    queued: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    failed: int
    skipped: int


class ChannelStats(TypedDict, total=False):
    email: Stats
    sms: Stats


class NoticeSummary(TypedDict):
    """A notice as the notices list shows it (its statistics are on its own page)."""

    id: Uuid
    #: the agency it was sent for, and its property (co-ownership), if any
    agency: str
    property: str | None
    source: SourceAnswer
    title: str
    channels: list[Channel]
    status: NoticeStatus
    send_at: Timestamp | None
    released_at: Timestamp | None
    created_at: Timestamp
    created_by: str


class Notice(NoticeSummary):
    """A notice with its recipients and statistics per channel."""

    recipients: int
    stats: ChannelStats


class NoticesPage(TypedDict):
    items: list[NoticeSummary]
    next_cursor: str | None


class Count(TypedDict):
    recipients: int
    email: int
    sms: int


class ScopeCount(Count):
    #: would be resent, but cannot be contacted there any more
    excluded: Count
    #: ``selected`` only: whether recipient_ids were given
    available: NotRequired[bool]


class ResendOptions(TypedDict):
    failed: ScopeCount
    undelivered: ScopeCount
    selected: ScopeCount


class Resend(Count):
    resend_id: Uuid
    excluded: Count


class ResendRecord(TypedDict):
    id: Uuid
    created_at: Timestamp
    requested_by: str
    scope: ResendScope
    recipients: int
    email: int
    sms: int
    full: bool


class ResendHistory(TypedDict):
    items: list[ResendRecord]


class PreviewMessage(TypedDict):
    """One channel's message as its recipient would get it now."""

    #: the language it is rendered in: the recipient's, or the notice's default
    language: str
    #: SHA-256 (hex) of its rendered parts as canonical JSON, as the journal records it
    content_sha256: str
    subject: NotRequired[str]
    text: str
    html: NotRequired[str | None]
    #: a text's SMS segments, and the encoding that makes them (GSM-7 or UCS-2)
    segments: NotRequired[int]
    encoding: NotRequired[str]


class Preview(TypedDict):
    notice_id: Uuid
    recipient_id: str
    email: NotRequired[PreviewMessage]
    sms: NotRequired[PreviewMessage]
