"""SendGrid's Mail Send v3 as the real API checks it, and the events each email produces.

Validation answers the way SendGrid does: 400 with ``{"errors": [{"field", "message",
"help"}]}``, one entry per problem, so the SDK's ``BadRequestsError`` carries them.
"""

from __future__ import annotations

import base64
import re
import time
from random import Random
from typing import Any

from provider_sandbox.scenarios import Rates, email_story

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LINK = re.compile(r"https?://[^\s\"'<>]+")


def error(field: str | None, message: str) -> dict[str, Any]:
    return {"field": field, "message": message, "help": None}


def validate(body: Any) -> list[dict[str, Any]]:
    """Every problem SendGrid would report for this request body (empty when it is valid)."""
    if not isinstance(body, dict):
        return [error(None, "Bad Request")]
    problems: list[dict[str, Any]] = []
    sender = body.get("from")
    if not isinstance(sender, dict) or not _is_email(sender.get("email")):
        problems.append(error("from.email", "The from email does not contain a valid address."))
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(
            error(
                "personalizations",
                "The personalizations field is required and must have at least one "
                "personalization.",
            )
        )
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        problems.append(
            error("personalizations", "The personalizations field has a maximum of 1000 items.")
        )
    recipients = 0
    for index, personalization in enumerate(personalizations):
        problems += _check_personalization(index, personalization, body)
        if isinstance(personalization, dict):
            recipients += sum(len(personalization.get(kind) or []) for kind in ("to", "cc", "bcc"))
    if recipients > MAX_RECIPIENTS:
        problems.append(
            error("personalizations", "The total number of recipients must be no more than 1000.")
        )
    if "template_id" not in body:
        problems += _check_content(body.get("content"))
    problems += _check_custom_args("custom_args", body.get("custom_args"))
    return problems


def _check_personalization(index: int, item: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    where = f"personalizations.{index}"
    if not isinstance(item, dict):
        return [error(where, "Invalid type. Expected: object.")]
    problems = []
    to = item.get("to")
    if not isinstance(to, list) or not to:
        problems.append(
            error(
                f"{where}.to",
                "The to array is required for all personalization objects, "
                "and must have at least one email object with a valid email address.",
            )
        )
    else:
        for position, recipient in enumerate(to):
            if not isinstance(recipient, dict) or not _is_email(recipient.get("email")):
                problems.append(
                    error(f"{where}.to.{position}.email", "Does not contain a valid address.")
                )
    if "subject" not in item and not body.get("subject") and "template_id" not in body:
        problems.append(
            error(
                "subject",
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
            )
        )
    problems += _check_custom_args(f"{where}.custom_args", item.get("custom_args"))
    return problems


def _check_content(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list) or not content:
        return [
            error(
                "content",
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
            )
        ]
    problems = []
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not block.get("type"):
            problems.append(error(f"content.{index}.type", "The content type is required."))
        elif not isinstance(block.get("value"), str) or not block["value"]:
            problems.append(
                error(
                    f"content.{index}.value",
                    "The content value must be a string at least one character in length.",
                )
            )
    return problems


def _check_custom_args(field: str, args: Any) -> list[dict[str, Any]]:
    if args is None:
        return []
    if not isinstance(args, dict):
        return [error(field, "Invalid type. Expected: object.")]
    problems = [
        error(f"{field}.{key}", f"Invalid type. Expected: string, given: {type(value).__name__}.")
        for key, value in args.items()
        if not isinstance(value, str)
    ]
    size = sum(len(str(key).encode()) + len(str(value).encode()) for key, value in args.items())
    if size > MAX_CUSTOM_ARGS_BYTES:
        problems.append(error(field, "The custom arguments must total no more than 10000 bytes."))
    return problems


def _is_email(value: Any) -> bool:
    return isinstance(value, str) and bool(_EMAIL.match(value))


def random_id(draw: Random, size: int = 16) -> str:
    """URL-safe, like SendGrid's message and event ids."""
    return base64.urlsafe_b64encode(draw.randbytes(size)).decode().rstrip("=")


def accept(
    body: dict[str, Any],
    message_id: str,
    draw: Random,
    rates: Rates,
    async_bounce_rate: float,
    *,
    with_events: bool = True,
) -> tuple[list[dict[str, Any]], list[tuple[float, dict[str, Any]]]]:
    """Accepts a valid request: one record per recipient for the inspection endpoint, and
    the events to post, each with its delay after now (none unless ``with_events``: a
    sandbox posting no webhooks does not build them)."""
    link = _first_link(body)
    categories = body.get("categories") or []
    category: Any = categories[0] if len(categories) == 1 else categories or None
    subject = body.get("subject")
    records: list[dict[str, Any]] = []
    events: list[tuple[float, dict[str, Any]]] = []
    now = time.time()
    for index, personalization in enumerate(body["personalizations"]):
        custom_args = {
            **(body.get("custom_args") or {}),
            **(personalization.get("custom_args") or {}),
        }
        for position, recipient in enumerate(personalization["to"]):
            address = recipient["email"]
            sg_message_id = (
                f"{message_id}.filterdrecv-{index:04d}-{position}.{random_id(draw, 6)}.0"
            )
            story = email_story(address, rates, draw, link)
            records.append(
                {
                    "provider": "sendgrid",
                    "message_id": message_id,
                    "sg_message_id": sg_message_id,
                    "to": address,
                    "from": body["from"]["email"],
                    "subject": personalization.get("subject", subject),
                    "custom_args": custom_args,
                    "events": [name for _, name, _ in story],
                    "created_at": now,
                }
            )
            if not with_events:
                continue
            for delay, name, extra in story:
                event: dict[str, Any] = {
                    "email": address,
                    "timestamp": int(now + delay),
                    "event": name,
                    "sg_event_id": random_id(draw),
                    "sg_message_id": sg_message_id,
                    "smtp-id": f"<{message_id}@ismtpd-sandbox>",
                    **extra,
                }
                if category is not None:
                    event["category"] = category
                asynchronous = (
                    name == "bounce"
                    and extra.get("type") == "bounce"
                    and draw.random() < async_bounce_rate
                )
                if asynchronous:
                    # An asynchronous bounce comes back from the recipient's server later,
                    # with no trace of the message it answers: match it on the address.
                    event["sg_message_id"] = ""
                else:
                    event = {**custom_args, **event}  # custom args: top-level keys
                events.append((delay, event))
    return records, events


def _first_link(body: dict[str, Any]) -> str | None:
    for block in body.get("content") or []:
        match = _LINK.search(str(block.get("value", "")))
        if match:
            return match.group(0)
    return None
