"""Twilio's Messages resource as the real API answers it (created, and listed with the
list API's filters and paging), and the status callbacks that follow. Errors are Twilio's
JSON (``code``, ``message``, ``more_info``, ``status``), which ``twilio-python`` raises as
``TwilioRestException`` with that code."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Mapping
from email.utils import formatdate, parsedate_to_datetime
from random import Random
from typing import Any
from urllib.parse import urlencode

from provider_sandbox.scenarios import sms_story

API_VERSION = "2010-04-01"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

#: inbound keywords Twilio acts on itself: it blocks the sender until they opt back in
OPT_OUT = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
OPT_IN = {"START", "YES", "UNSTOP"}


class TwilioError(Exception):
    """A refusal, in Twilio's words."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def create(
    account_sid: str, form: dict[str, str], draw: Random, opted_out: set[str]
) -> tuple[dict[str, Any], list[str], int | None]:
    """Validates a Messages.json form and accepts it: the 201 resource, the statuses its
    callbacks will report, and the asynchronous error code if it ends in one."""
    to = form.get("To", "").strip()
    sender = form.get("From", "").strip()
    service = form.get("MessagingServiceSid", "").strip()
    body = form.get("Body", "")
    if not to:
        raise TwilioError(400, 21604, "A 'To' phone number is required.")
    if not sender and not service:
        raise TwilioError(400, 21603, "A 'From' phone number is required.")
    if not body and not form.get("MediaUrl"):
        raise TwilioError(400, 21602, "Message body is required.")
    if len(body) > 1600:
        raise TwilioError(
            400, 21617, "The concatenated message body exceeds the 1600 character limit."
        )
    if not _E164.match(to):
        raise TwilioError(400, 21211, f"Invalid 'To' Phone Number: {to}")
    if to in opted_out:
        raise TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
    outcome, error_code = sms_story(to)
    if outcome.error_code is not None:
        raise TwilioError(outcome.http_status, outcome.error_code, outcome.message)
    sid = "SM" + draw.randbytes(16).hex()
    now = formatdate(usegmt=True)
    resource = {
        "sid": sid,
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_updated": now,
        "date_sent": None,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": sender or None,
        "messaging_service_sid": service or None,
        "num_media": "0",
        "num_segments": str(max(1, -(-len(body) // 153))),
        "price": None,
        "price_unit": "USD",
        "status": "accepted" if service else "queued",
        "subresource_uris": {
            "media": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json"
        },
        "to": to,
        "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json",
    }
    return resource, list(outcome.statuses), error_code


def callback_params(
    resource: dict[str, Any], status: str, error_code: int | None
) -> dict[str, str]:
    """The form fields of one status callback."""
    params = {
        "AccountSid": resource["account_sid"],
        "ApiVersion": API_VERSION,
        "From": resource["from"] or "",
        "MessageSid": resource["sid"],
        "MessageStatus": status,
        "SmsSid": resource["sid"],
        "SmsStatus": status,
        "To": resource["to"],
    }
    if resource["messaging_service_sid"]:
        params["MessagingServiceSid"] = resource["messaging_service_sid"]
    if status in {"undelivered", "failed"} and error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params


def inbound_params(
    account_sid: str, sender: str, to: str, body: str, draw: Random
) -> dict[str, str]:
    """The form fields Twilio posts for an SMS a recipient sends back."""
    sid = "SM" + draw.randbytes(16).hex()
    params = {
        "AccountSid": account_sid,
        "ApiVersion": API_VERSION,
        "Body": body,
        "From": sender,
        "MessageSid": sid,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "SmsStatus": "received",
        "To": to,
    }
    keyword = body.strip().upper()
    if keyword in OPT_OUT:
        params["OptOutType"] = "STOP"
    elif keyword in OPT_IN:
        params["OptOutType"] = "START"
    return params


#: seconds between one status of a message's story and the next (its callbacks are posted
#: as each status is reached)
STEP_S = 0.02
#: Twilio's page sizes: 50 unless asked, at most 1000
PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
#: the list API's filters, in the order its page URIs repeat them
FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")


@dataclasses.dataclass(frozen=True)
class _Created:
    resource: dict[str, Any]
    statuses: tuple[str, ...]
    at: float  # epoch seconds


class Messages:
    """Every message created, read back as the Messages list API reads them: newest first,
    each one's ``status`` and ``date_sent`` as far as its story has gone by then (a text is
    ``sent`` once that status is reached; one that never gets there has no ``date_sent``)."""

    def __init__(self) -> None:
        self._created: list[_Created] = []

    def add(self, resource: dict[str, Any], statuses: list[str], at: float) -> None:
        self._created.append(_Created(resource, tuple(statuses), at))

    def page(self, account_sid: str, query: Mapping[str, str], now: float) -> dict[str, Any]:
        """One page of ``GET .../Messages.json`` with Twilio's envelope. Filters: ``To``,
        ``From``, ``DateSent`` (that day or second), ``DateSent<`` / ``DateSent>`` (on or
        before / after it: the SDK's ``date_sent_before`` / ``_after``), each a date
        ``YYYY-MM-DD`` or a time ``YYYY-MM-DDTHH:MM:SSZ``; paging by ``Page`` and
        ``PageSize``, or ``PageToken`` as the page URIs give it."""
        size = _page_size(query.get("PageSize"))
        number = _integer(query.get("Page", "0"), "Page")
        filters = {name: query[name] for name in FILTERS if name in query}
        wanted = _matcher(filters)
        found = [
            shown
            for created in reversed(self._created)  # newest first
            if created.resource["account_sid"] == account_sid
            and wanted(shown := _as_of(created, now))
        ]
        start = _start(found, query.get("PageToken"), number, size)
        items = found[start : start + size]
        base = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"

        def uri(page: int, token: str | None = None) -> str:
            params = {**filters, "PageSize": str(size), "Page": str(page)}
            if token:
                params["PageToken"] = token
            return f"{base}?{urlencode(params)}"

        more = start + size < len(found)
        return {
            "messages": items,
            "page": number,
            "page_size": size,
            "start": number * size,
            "end": number * size + max(len(items) - 1, 0),
            "uri": uri(number, query.get("PageToken")),
            "first_page_uri": uri(0),
            "next_page_uri": uri(number + 1, "PA" + items[-1]["sid"]) if more else None,
            "previous_page_uri": (
                uri(number - 1, "PB" + items[0]["sid"]) if number > 0 and items else None
            ),
        }


def _as_of(created: _Created, now: float) -> dict[str, Any]:
    """The resource as it stands at ``now``: its story's statuses come ``STEP_S`` apart."""
    resource = dict(created.resource)
    reached = [
        (status, created.at + STEP_S * (step + 1))
        for step, status in enumerate(created.statuses)
        if created.at + STEP_S * (step + 1) <= now
    ]
    if reached:
        status, at = reached[-1]
        resource["status"] = status
        resource["date_updated"] = formatdate(at, usegmt=True)
    sent = [at for status, at in reached if status == "sent"]
    if sent:
        resource["date_sent"] = formatdate(sent[0], usegmt=True)
    return resource


def _matcher(filters: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    checks: list[Callable[[dict[str, Any]], bool]] = []
    if "To" in filters:
        checks.append(lambda m: m["to"] == filters["To"])
    if "From" in filters:
        checks.append(lambda m: m["from"] == filters["From"])
    for name, keep in (
        ("DateSent", lambda sent, bound: sent == bound),
        ("DateSent<", lambda sent, bound: sent <= bound),
        ("DateSent>", lambda sent, bound: sent >= bound),
    ):
        if name in filters:
            checks.append(_sent_check(name, filters[name], keep))
    return lambda message: all(check(message) for check in checks)


def _sent_check(
    name: str, raw: str, keep: Callable[[Any, Any], bool]
) -> Callable[[dict[str, Any]], bool]:
    """A ``DateSent`` filter: a date compares days, a time compares seconds; a message not
    sent yet matches none."""
    try:
        if len(raw) == 10:
            day = dt.date.fromisoformat(raw)
            return lambda m: m["date_sent"] is not None and keep(_sent_at(m).date(), day)
        moment = dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise TwilioError(400, 20001, f"Invalid {name}: {raw}") from None
    return lambda m: m["date_sent"] is not None and keep(_sent_at(m), moment)


def _sent_at(message: dict[str, Any]) -> dt.datetime:
    return parsedate_to_datetime(message["date_sent"])


def _page_size(raw: str | None) -> int:
    if raw is None:
        return PAGE_SIZE
    size = _integer(raw, "PageSize")
    if size < 1:
        raise TwilioError(400, 20001, f"Invalid PageSize: {raw}")
    return min(size, MAX_PAGE_SIZE)


def _integer(raw: str, name: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise TwilioError(400, 20001, f"Invalid {name}: {raw}") from None
    if value < 0:
        raise TwilioError(400, 20001, f"Invalid {name}: {raw}")
    return value


def _start(found: list[dict[str, Any]], token: str | None, number: int, size: int) -> int:
    """Where a page begins: after (``PA``) or a page before (``PB``) the message its token
    names, so pages stay put while new messages arrive; else at ``Page`` x ``PageSize``."""
    if token and token[:2] in {"PA", "PB"}:
        sids = [message["sid"] for message in found]
        if token[2:] in sids:
            at = sids.index(token[2:])
            return at + 1 if token[:2] == "PA" else max(at - size, 0)
        raise TwilioError(400, 20001, f"Invalid PageToken: {token}")
    return number * size
