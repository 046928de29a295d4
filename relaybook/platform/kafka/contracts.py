"""What the platform must know of the messages it carries, given by whoever owns them
(``schemas.CONTRACTS``): the topics, the fields each topic's messages also carry as
headers, and the check of a message against its contract. The platform itself knows no
topic and no message."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Protocol

#: a record's headers (aiokafka's record builder takes a list only; never changed once made)
Headers = list[tuple[str, bytes]]


class Fields(Protocol):
    """A message's fields by name: a dict, or a database row holding them."""

    def get(self, name: str, /) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Contracts:
    #: the topics a deployment has, without the configured prefix
    topics: tuple[str, ...]
    #: the top-level fields also sent as headers, per topic, so that a consumer can pass
    #: over messages that are not its own without decoding them
    header_fields: Mapping[str, tuple[str, ...]]
    #: checks a message against the contract it names; raises a ``ValueError`` naming
    #: the field at fault
    validate: Callable[[Any], object]

    def headers_for(self, topic: str, message: Fields) -> Headers:
        """The headers a message of ``topic`` (unprefixed) carries: the values of its
        ``header_fields`` it has."""
        names = self.header_fields.get(topic)
        return _headers(names, tuple(message.get(name) for name in names)) if names else []


@functools.cache
def _headers(names: tuple[str, ...], values: tuple[Any, ...]) -> Headers:
    # one list per combination of values (a channel and an agency): encoding them for
    # every message was 8 % of the relay
    return [(name, str(value).encode()) for name, value in zip(names, values, strict=True) if value]
