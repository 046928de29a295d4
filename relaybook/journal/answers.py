"""What the journal answers, as typed definitions: mypy checks the reader's dicts against
them, and the API's ``/openapi.json`` describes each answer from them."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from relaybook.deliveries.answers import Channel, DeliveryStatus
from relaybook.notices.answers import SourceAnswer
from relaybook.platform.answers import Timestamp, Uuid


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
    #: what the message went out as, once sent: the language it was rendered in, the
    #: SHA-256 (hex) of its rendered content, and for a text its SMS segments
    language: str | None
    content_sha256: str | None
    segments: int | None


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
