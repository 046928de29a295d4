"""Strict decoding of requests into typed definitions.

Bodies, query strings and path parameters are decoded by msgspec into the typed
definitions of whoever serves them (the same ones the API's ``/openapi.json`` is generated
from; the field types shared by all are below). Anything refused is an
:class:`InvalidRequestError` naming the field at fault (``recipients[3].email``): a type,
length or pattern msgspec checks, a NUL or lone surrogate (PostgreSQL cannot store them),
a number not written in ASCII digits, a date-time that is not one in UTC (past year 9999
or before year 1 once converted), or nesting too deep to decode.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, TypeVar

import msgspec

from relaybook.platform.storable import has_unstorable

#: documented limits
MAX_ID = 200

#: somewhere a character that is not white space: blank text is refused
NOT_BLANK = r"\S"
EMAIL = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+(?!\n)$"
)
#: ``(?!\n)$``: the end of the text, in Python as in JSON Schema's ECMA-262 (Python's ``$``
#: alone also matches before a final newline: "a@b.org\n" was accepted)
E164 = r"^\+[1-9][0-9]{6,14}(?!\n)$"
#: what a refused pattern means, said to the caller instead of the regex
_PATTERN_MEANING = {
    NOT_BLANK: "must not be empty or blank",
    EMAIL: "is not a valid email address",
    E164: "is not an E.164 phone number (+33612345678)",
}

Id = Annotated[str, msgspec.Meta(max_length=MAX_ID, pattern=NOT_BLANK)]
Email = Annotated[
    str, msgspec.Meta(max_length=254, pattern=EMAIL, examples=["a.martin@example.org"])
]
Phone = Annotated[str, msgspec.Meta(pattern=E164, examples=["+33612345678"])]
#: an ISO 8601 (RFC 3339) date-time with its time zone
Moment = Annotated[dt.datetime, msgspec.Meta(tz=True)]

UNSET = msgspec.UNSET
UnsetType = msgspec.UnsetType
T = TypeVar("T")


class InvalidRequestError(ValueError):
    """A request is not acceptable; ``field`` says where."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def in_utc(field: str, moment: dt.datetime) -> dt.datetime:
    """``moment`` in UTC; a 422 when UTC cannot hold it (past 9999-12-31 or before
    0001-01-01 once converted), which neither Python nor the API's answers could."""
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidRequestError(field, "is out of range once converted to UTC") from None


# --- strict decoding


#: how msgspec says where it found a problem: `` - at `$.recipients[3].email` ``
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]*)`")
_PATTERN = re.compile(r"^Expected `str` matching regex (?P<regex>(['\"]).*\2)$", re.DOTALL)
#: an escaped NUL as JSON writes it; a raw NUL byte is not JSON at all
_ESCAPED_NUL = b"\\u0000"


def _field(path: str, name: str | None = None) -> str:
    field = path.removeprefix(".")
    if name is not None:
        field = f"{field}.{name}" if field else name
    return field or "(body)"


def _refusal(problem: msgspec.ValidationError) -> InvalidRequestError:
    """msgspec's ``Expected `str` of length >= 1 - at `$.title``` as the contract's
    field and detail."""
    message = str(problem)
    path = ""
    if (at := _AT.search(message)) is not None:
        path = at["path"]
        message = message[: at.start()]
    named = _FIELD_NAMED.match(message)
    field = _field(path, named["name"] if named else None)
    if (pattern := _PATTERN.match(message)) is not None:
        regex = ast.literal_eval(pattern["regex"])  # written as Python's repr() writes it
        message = _PATTERN_MEANING.get(regex, message)
    return InvalidRequestError(field, message)


def convert(value: Any, kind: type[T]) -> T:
    """Plain values (parsed JSON, query strings) as ``kind``, or the field at fault."""
    try:
        return msgspec.convert(value, kind, strict=False)
    except msgspec.ValidationError as problem:
        raise _refusal(problem) from None


def decode_body(raw: bytes, kind: type[T]) -> T:
    """A JSON request body as ``kind``: 422 naming the field for anything else, a NUL
    included; never a 500, however the body is nested."""
    if _ESCAPED_NUL in raw:  # rare: only then look for which field holds it
        _refuse_nul(raw)
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as problem:
        raise _refusal(problem) from None
    except msgspec.DecodeError as problem:
        # lone surrogates (``\ud800``) and malformed JSON alike
        raise InvalidRequestError("(body)", f"is not valid JSON ({problem})") from None
    except RecursionError:
        raise InvalidRequestError("(body)", "is nested too deeply") from None


def _refuse_nul(raw: bytes) -> None:
    try:
        document = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return  # the typed decoding says what is wrong with it
    field = _unstorable_at(document, "")
    if field is not None:
        raise InvalidRequestError(field or "(body)", "must not contain NUL characters")


def _unstorable_at(value: Any, path: str) -> str | None:
    """The path of the first text holding a NUL (or lone surrogate) in ``value``."""
    # iterative: the document was decoded, but a walk as deep must not recurse
    pending: list[tuple[Any, str]] = [(value, path)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            if has_unstorable(item):
                return where
        elif isinstance(item, dict):
            for key, inner in reversed(item.items()):
                inside = f"{where}.{key}" if where else key
                if has_unstorable(key):
                    return inside
                pending.append((inner, inside))
        elif isinstance(item, list):
            pending.extend((inner, f"{where}[{i}]") for i, inner in reversed(list(enumerate(item))))
    return None


#: per query type and kind of field: the fields of that kind
_FIELDS_OF: dict[tuple[type[Any], type[Any]], frozenset[str]] = {}


def _integers(kind: type[Any]) -> frozenset[str]:
    """The fields of a query type that hold integers."""
    return _fields_of(kind, msgspec.inspect.IntType)


def _lists(kind: type[Any]) -> frozenset[str]:
    """The fields of a query type that a parameter given several times fills."""
    return _fields_of(kind, msgspec.inspect.ListType)


def _fields_of(kind: type[Any], wanted: type[msgspec.inspect.Type]) -> frozenset[str]:
    if (kind, wanted) in _FIELDS_OF:
        return _FIELDS_OF[kind, wanted]
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    _FIELDS_OF[kind, wanted] = frozenset(
        field.encode_name for field in info.fields if isinstance(_unwrapped(field.type), wanted)
    )
    return _FIELDS_OF[kind, wanted]


def _unwrapped(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    if isinstance(info, msgspec.inspect.UnionType):
        kinds = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        return kinds[0] if len(kinds) == 1 else info
    return info


def decode_query(query: Iterable[tuple[str, str]], kind: type[T]) -> T:
    """Query parameters as ``kind``: a parameter named twice keeps its last value, or
    all of them for a list; an integer is ASCII digits and nothing else (not ``²``,
    ``1e2`` or ``5.0``)."""
    values: dict[str, Any] = {}
    lists = _lists(kind)
    for name, value in query:
        if has_unstorable(name) or has_unstorable(value):
            raise InvalidRequestError(
                name if not has_unstorable(name) else "(query)",
                "must not contain NUL characters",
            )
        if name in lists:
            values.setdefault(name, []).append(value)
        else:
            values[name] = value
    for name in _integers(kind) & values.keys():
        raw = values[name]
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
            raise InvalidRequestError(name, "must be an integer written in digits 0-9")
        values[name] = int(raw)
    return convert(values, kind)


def decode_path(params: Mapping[str, str], kind: type[T]) -> T:
    """Path parameters as ``kind``; a NUL is a 422 like anywhere else."""
    for name, value in params.items():
        if has_unstorable(value):
            raise InvalidRequestError(name, "must not contain NUL characters")
    return convert(dict(params), kind)
