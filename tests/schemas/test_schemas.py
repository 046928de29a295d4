"""The message contracts: shipped examples follow them, the typed models agree with them
field for field, and a broken message is refused naming the field at fault."""

from __future__ import annotations

import typing

import pytest

import schemas
from schemas.models import MODELS


@pytest.mark.parametrize(
    "filename", ["send-job.v1.json", "delivery-event.v1.json", "delivery-event.v1.sms.json"]
)
def test_every_shipped_example_follows_its_schema(filename: str) -> None:
    message = schemas.example(filename)
    assert schemas.validate(message) == message["schema"]


@pytest.mark.parametrize("name", sorted(schemas.SCHEMAS))
def test_the_typed_model_has_exactly_the_schemas_fields(name: str) -> None:
    contract = schemas.schema(name)
    model = MODELS[name]
    assert set(typing.get_type_hints(model)) == set(contract["properties"])
    assert set(model.__required_keys__) == set(contract["required"])
    assert contract["additionalProperties"] is False


def test_every_schema_has_a_model() -> None:
    assert set(MODELS) == set(schemas.SCHEMAS)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channel": "fax"}, "channel"),
        ({"attempt": 0}, "attempt"),
        ({"delivery_id": "not-a-uuid"}, "delivery_id"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"surprise": 1}, "(message)"),
    ],
)
def test_a_broken_send_job_is_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    message = schemas.example("send-job.v1.json") | change
    with pytest.raises(schemas.MessageError) as raised:
        schemas.validate(message)
    assert str(raised.value).startswith(f"send-job/v1: {field}:")


def test_a_missing_field_is_named() -> None:
    message = schemas.example("delivery-event.v1.json")
    del message["occurred_at"]
    with pytest.raises(schemas.MessageError, match='"occurred_at" is a required property'):
        schemas.validate(message)


@pytest.mark.parametrize("message", [[], "text", {"schema": "send-job/v9"}, {}])
def test_a_message_without_a_known_schema_is_refused(message: object) -> None:
    with pytest.raises(schemas.MessageError):
        schemas.validate(message)


def test_unknown_event_types_are_kept_not_refused() -> None:
    """Providers add event types without notice; they must flow through, not be dropped."""
    message = schemas.example("delivery-event.v1.json") | {"type": "brand_new_provider_event"}
    assert schemas.validate(message) == "delivery-event/v1"
