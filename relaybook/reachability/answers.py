"""What the preferences answer, as typed definitions: mypy checks the service's dicts
against them, and the API's ``/openapi.json`` describes each answer from them."""

from __future__ import annotations

from typing import Literal, TypedDict

from relaybook.platform.answers import Timestamp

Wants = Literal["yes", "no", "not_applicable"]
ChangedBy = Literal["default", "owner", "manager", "support", "automatic"]


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
