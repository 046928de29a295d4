"""Typed views of the message contracts, for the code that builds and reads messages.

These mirror the JSON Schema files field for field; ``tests/schemas`` proves they agree,
so a change to one without the other fails the build.
"""

from typing import Any, Literal, NotRequired, TypedDict

Channel = Literal["email", "sms"]
Provider = Literal["sendgrid", "twilio", "relaybook"]


class SendJob(TypedDict):
    """``send-job/v1``: one attempt at one delivery."""

    schema: Literal["send-job/v1"]
    agency: NotRequired[str]
    job_id: str
    delivery_id: str
    notice_id: str
    recipient_id: str
    channel: Channel
    attempt: int
    resend_id: NotRequired[str | None]
    created_at: str


class DeliveryEvent(TypedDict):
    """``delivery-event/v1``: one canonical event about one message."""

    schema: Literal["delivery-event/v1"]
    agency: NotRequired[str | None]
    event_id: str
    type: str
    channel: Channel
    provider: Provider
    occurred_at: str
    received_at: str
    delivery_id: NotRequired[str | None]
    provider_message_id: NotRequired[str | None]
    address: NotRequired[str | None]
    reason: NotRequired[str | None]
    provider_code: NotRequired[str | None]
    bounce_type: NotRequired[Literal["bounce", "blocked"] | None]
    bounce_classification: NotRequired[str | None]
    url: NotRequired[str | None]
    machine_open: NotRequired[bool | None]
    attempt: NotRequired[int | None]
    raw: NotRequired[dict[str, Any]]


class RecipientEvent(TypedDict):
    """``recipient-event/v1``: a recipient may no longer (or again) be contacted."""

    schema: Literal["recipient-event/v1"]
    agency: NotRequired[str]
    event_id: str
    type: Literal["recipient.unsubscribed", "recipient.resubscribed"]
    recipient_id: str
    channel: Channel
    address: NotRequired[str | None]
    rule: str
    reason: str
    changed_by: Literal["automatic", "owner", "manager", "support"]
    evidence: NotRequired[list[dict[str, Any]]]
    occurred_at: str


#: contract name -> model, checked against ``schemas.SCHEMAS`` by the tests
MODELS: dict[str, type[Any]] = {
    "send-job/v1": SendJob,
    "delivery-event/v1": DeliveryEvent,
    "recipient-event/v1": RecipientEvent,
}
