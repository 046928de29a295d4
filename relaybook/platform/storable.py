"""Text and JSON that PostgreSQL can store and every JSON encoder can write.

Input from outside (a provider's webhook, an error message a provider wrote) may hold a
NUL, which no PostgreSQL text or ``jsonb`` value can hold, or a lone UTF-16 surrogate,
which is not Unicode at all (no UTF-8 encoder writes it). Kept as it came, such a value
fails every transaction that writes it. The API refuses them (422); what relaybook must
keep (a provider event happened, whatever its text) is made storable here instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: how ``orjson`` writes a NUL inside a string: ``jsonb`` refuses it
_ESCAPED_NUL = b"\\u0000"


def has_unstorable(text: str) -> bool:
    """True when ``text`` holds a NUL or a lone surrogate."""
    if text.isascii():
        return "\x00" in text
    return _UNSTORABLE.search(text) is not None


def text(value: str) -> str:
    """``value`` with each NUL and lone surrogate replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, value) if has_unstorable(value) else value


def json_value(value: Any) -> Any:
    """``value`` as it is when ``jsonb`` and ``orjson`` can hold it; otherwise its JSON
    text (every character outside ASCII escaped, so a NUL becomes the six characters
    ``\\u0000``) under ``escaped_json``: faithful to the byte, and storable."""
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # a lone surrogate, an integer past 64 bits, nesting past 255
        encoded = None
    if encoded is not None and _ESCAPED_NUL not in encoded:
        return value
    return {"escaped_json": json.dumps(value, ensure_ascii=True)}
