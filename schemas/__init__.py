"""The message contracts carried by Kafka: versioned JSON Schema files, beside the typed
models checked against them (``schemas.models``).

A message names its contract in its ``schema`` field (``send-job/v1``); a new version is
a new file, and consumers accept every version they know.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs

from relaybook.platform.kafka.contracts import Contracts

__all__ = [
    "CONTRACTS",
    "HEADER_FIELDS",
    "SCHEMAS",
    "TOPICS",
    "MessageError",
    "example",
    "schema",
    "validate",
]

#: relaybook's topics, without the configured prefix
TOPICS = ("send-jobs", "delivery-events", "recipient-events", "dead-letters")
#: the top-level fields also sent as headers, per topic, so that a consumer can pass over
#: messages that are not its own without decoding them (each send-worker lane its
#: channel), and route by agency without a lookup
HEADER_FIELDS: dict[str, tuple[str, ...]] = {
    "send-jobs": ("channel", "agency"),
    "delivery-events": ("agency",),
    "recipient-events": ("agency",),
}

#: contract name -> file, for every message relaybook publishes
SCHEMAS = {
    "send-job/v1": "send-job.v1.json",
    "delivery-event/v1": "delivery-event.v1.json",
    "recipient-event/v1": "recipient-event.v1.json",
}


class MessageError(ValueError):
    """A message does not follow its contract; the text names the field at fault."""


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of contract ``name`` (``send-job/v1``...)."""
    try:
        filename = SCHEMAS[name]
    except KeyError:
        raise MessageError(f"unknown message schema {name!r}") from None
    loaded: dict[str, Any] = json.loads(resources.files(__name__).joinpath(filename).read_text())
    return loaded


@cache
def _validator(name: str) -> Any:
    # jsonschema-rs: about 100x faster than the pure-Python validator, which matters on
    # the hot paths (every job the relay publishes, every message a consumer reads).
    return jsonschema_rs.validator_for(schema(name), validate_formats=True)


def validate(message: Any) -> str:
    """Checks ``message`` against the contract its ``schema`` field names; returns that name.

    Raises :class:`MessageError` naming the first field at fault.
    """
    if not isinstance(message, dict):
        raise MessageError("a message is a JSON object")
    name = message.get("schema")
    if not isinstance(name, str) or name not in SCHEMAS:
        raise MessageError(f"schema: unknown or missing ({name!r})")
    validator = _validator(name)
    if validator.is_valid(message):
        return name
    error = min(validator.iter_errors(message), key=_position)
    where = "/".join(str(part) for part in error.instance_path) or "(message)"
    raise MessageError(f"{name}: {where}: {error.message}")


def _position(error: Any) -> tuple[str, ...]:
    return tuple(str(part) for part in error.instance_path)


def example(filename: str) -> dict[str, Any]:
    """A shipped example message (``examples/<filename>``), for tests and documentation."""
    loaded: dict[str, Any] = json.loads(
        resources.files(__name__).joinpath("examples", filename).read_text()
    )
    return loaded


#: what Kafka's producers, consumers and the outbox check and route messages by
CONTRACTS = Contracts(topics=TOPICS, header_fields=HEADER_FIELDS, validate=validate)
