"""Twilio's Messages resource as the real API answers it, and the status callbacks that
follow. Errors are Twilio's JSON (``code``, ``message``, ``more_info``, ``status``), which
``twilio-python`` raises as ``TwilioRestException`` with that code."""

from __future__ import annotations

import re
from email.utils import formatdate
from random import Random
from typing import Any

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
