"""What the API answers, as typed definitions: mypy checks the handlers' dicts against
them, and ``/openapi.json`` describes each answer from them."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from relaybook.platform.answers import Timestamp, Uuid

Channel = Literal["email", "sms"]
DeliveryStatus = Literal["queued", "sent", "delivered", "opened", "clicked", "failed", "skipped"]
NoticeStatus = Literal["draft", "scheduled", "sending", "sent", "partially_failed", "failed"]
Wants = Literal["yes", "no", "not_applicable"]
ChangedBy = Literal["default", "owner", "manager", "support", "automatic"]
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


class JournalItem(TypedDict):
    delivery_id: Uuid
    notice_id: Uuid
    recipient_id: str
    channel: Channel
    status: DeliveryStatus
    address: str | None
    attempt: int
    created_at: Timestamp
    sent_at: Timestamp | None
    delivered_at: Timestamp | None
    opened_at: Timestamp | None
    clicked_at: Timestamp | None
    failed_at: Timestamp | None
    reason: str | None
    provider_code: str | None


class JournalPage(TypedDict):
    items: list[JournalItem]
    #: the next page's ``cursor``; null on the last page
    next_cursor: str | None


class DeliveryNotice(TypedDict):
    id: Uuid
    title: str
    source: SourceAnswer


class Delivery(JournalItem):
    """One message and its event timeline (the canonical delivery events)."""

    notice: DeliveryNotice
    retry_of: Uuid | None
    resend_id: Uuid | None
    is_latest: bool
    provider: str | None
    provider_message_id: str | None
    send_attempts: int
    events: list[dict[str, Any]]


class RecipientChannel(TypedDict):
    delivery_id: Uuid
    status: DeliveryStatus
    reason: str | None
    provider_code: str | None
    address: str | None


class NoticeRecipient(TypedDict):
    id: str
    name: str | None
    email: NotRequired[RecipientChannel]
    sms: NotRequired[RecipientChannel]


class NoticeRecipients(TypedDict):
    items: list[NoticeRecipient]
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


class ChannelPreference(TypedDict):
    wants: Wants
    reason: str | None
    changed_by: ChangedBy
    changed_by_name: str | None
    changed_at: Timestamp | None


class RecipientPreferences(TypedDict):
    #: the agency the recipient is of (a recipient id is unique within its agency)
    agency: str
    recipient_id: str
    name: str | None
    email: ChannelPreference
    sms: ChannelPreference
    never_auto_unsubscribe: bool


class PreferencesPage(TypedDict):
    items: list[RecipientPreferences]
    next_cursor: str | None


class Contact(TypedDict):
    id: str
    name: str | None
    email: str | None
    phone: str | None
