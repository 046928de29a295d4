"""The webhook ingest deployable (port ``RELAYBOOK_INGEST_PORT``): provider webhooks in,
canonical ``delivery-event`` messages out on ``delivery-events``.

Stateless (no database): verify the signature over the raw bytes, parse, normalise, and
publish the whole batch with ``acks=all``; the provider gets its 2xx only once the
broker acknowledged every event, else a 503 with ``Retry-After`` so it posts the batch
again. Duplicates that result are harmless: event ids are the provider's, and the
tracker stores each id once.

Nobody posting can hold the event loop up: a body is read against its route's cap as it
streams in (a Twilio callback is a few hundred bytes: 64 KiB and 200 fields at most; a
SendGrid batch up to ``RELAYBOOK_INGEST_MAX_BODY_BYTES``), and a large SendGrid batch
is checked and normalised on a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import schemas
from relaybook.platform.deployable import Deployable
from relaybook.platform.http import PayloadTooLargeError, create_app, error, read_body
from relaybook.platform.kafka import BrokerError, OverloadedError, Producer, SharedBatches
from relaybook.platform.logs import get_logger
from relaybook.platform.runtime import Infrastructure
from relaybook.platform.settings import section
from relaybook.platform.timestamps import now_iso
from webhook_ingest import WebhookError
from webhook_ingest.events import (
    MalformedError,
    parse_batch,
    sendgrid_event,
    twilio_inbound,
    twilio_status,
)
from webhook_ingest.settings import IngestSettings
from webhook_ingest.signatures import (
    SENDGRID_SIGNATURE,
    SENDGRID_TIMESTAMP,
    TWILIO_SIGNATURE,
    SendGridSignature,
    SendGridVerifier,
    check_twilio_header,
    verify_twilio,
)

log = get_logger(__name__)

EVENTS = Counter(
    "relaybook_webhook_events_total",
    "Provider events published to delivery-events",
    ["provider"],
)
REJECTED = Counter(
    "relaybook_webhook_requests_rejected_total",
    "Webhook requests answered with an error, by provider and error code",
    ["provider", "error"],
)
#: what Twilio expects back from an inbound-message webhook: "do nothing more"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
RETRY_AFTER_S = "5"
#: the largest Twilio form taken: a callback is a few hundred bytes, and an inbound text
#: of 1,600 characters, each URL-encoded to 12 bytes, stays under 20 KiB
TWILIO_MAX_BODY_BYTES = 64 * 1024
#: the most fields a Twilio form has (counted before parsing): a callback has a few dozen
TWILIO_MAX_FIELDS = 200
#: a SendGrid body larger than this is checked, parsed and normalised on a worker thread
ON_LOOP_MAX_BYTES = 64 * 1024

Message = tuple[str | None, dict[str, Any]]


class Ingest:
    def __init__(self, settings: IngestSettings, producer: Producer) -> None:
        self._settings = settings
        # the events of concurrent posts share record batches; past the bound, a post is
        # refused whole at once (503 and Retry-After: the provider posts it again)
        self._publisher = SharedBatches(producer, settings.ingest_max_events_in_flight)
        self._sendgrid = SendGridVerifier(
            settings.sendgrid_webhook_public_keys, settings.sendgrid_webhook_tolerance_s
        )
        if not settings.sendgrid_webhook_public_keys:
            log.warning("no SendGrid webhook public key configured: every SendGrid post is refused")

    async def sendgrid(self, request: Request) -> Response:
        signature = self._sendgrid.check_headers(
            request.headers.get(SENDGRID_SIGNATURE),
            request.headers.get(SENDGRID_TIMESTAMP),
            time.time(),
        )
        body = await self._body(request, self._settings.ingest_max_body_bytes)
        judge = functools.partial(self._sendgrid_events, body, signature, now_iso())
        # normalising a batch of MiBs takes a third of a second of Python: on a thread,
        # the loop runs between its slices (orjson's parse itself keeps the GIL, 10 ms
        # a MiB)
        events = judge() if len(body) <= ON_LOOP_MAX_BYTES else await asyncio.to_thread(judge)
        await self._publish("sendgrid", [(e["delivery_id"] or e["address"], e) for e in events])
        return JSONResponse({"received": len(events)})

    def _sendgrid_events(
        self, body: bytes, signature: SendGridSignature, received: str
    ) -> list[dict[str, Any]]:
        """The canonical events of a signed batch; :class:`SignatureError` or
        :class:`MalformedError` otherwise."""
        self._sendgrid.verify(body, signature)
        batch = parse_batch(body)
        if not isinstance(batch, list):
            raise MalformedError("the body is not a JSON array of events")
        return [sendgrid_event(raw, index, received) for index, raw in enumerate(batch)]

    async def twilio_status(self, request: Request) -> Response:
        form = await self._twilio_form(request)
        delivery_id = request.query_params.get("delivery_id")
        event = twilio_status(form, delivery_id, now_iso())
        await self._publish("twilio", [(event["delivery_id"] or event["address"], event)])
        return Response(status_code=204)

    async def twilio_inbound(self, request: Request) -> Response:
        form = await self._twilio_form(request)
        event = twilio_inbound(form, now_iso())
        await self._publish("twilio", [(event["address"], event)])
        return Response(EMPTY_TWIML, media_type="text/xml")

    async def _body(self, request: Request, limit: int) -> bytes:
        try:
            return await read_body(request, limit)
        except PayloadTooLargeError as problem:
            raise WebhookError(413, "payload_too_large", str(problem)) from None

    async def _twilio_form(self, request: Request) -> dict[str, str]:
        token = self._settings.twilio_auth_token
        signature = check_twilio_header(token, request.headers.get(TWILIO_SIGNATURE))
        assert token is not None  # checked with the header
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise WebhookError(415, "unsupported_media_type", "Twilio posts form-encoded bodies")
        body = await self._body(
            request, min(TWILIO_MAX_BODY_BYTES, self._settings.ingest_max_body_bytes)
        )
        if body.count(b"&") >= TWILIO_MAX_FIELDS:
            raise WebhookError(
                413, "payload_too_large", f"a Twilio form has at most {TWILIO_MAX_FIELDS} fields"
            )
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise MalformedError("the body is not a UTF-8 form") from None
        # Twilio signed the URL it was given, not the one this process sees behind a proxy
        query = request.scope["query_string"].decode("latin-1")
        url = self._settings.webhook_base_url + request.url.path + (f"?{query}" if query else "")
        verify_twilio(token, url, pairs, signature)
        return dict(pairs)

    async def _publish(self, provider: str, messages: list[Message]) -> None:
        if not messages:
            return
        try:
            await asyncio.wait_for(
                self._publisher.send_many("delivery-events", messages),
                self._settings.ingest_publish_timeout_s,
            )
        except OverloadedError:
            raise WebhookError(503, "unavailable", "too many events in flight; retry") from None
        except (BrokerError, TimeoutError) as problem:
            log.warning("webhook not recorded: the broker did not acknowledge", error=str(problem))
            raise WebhookError(503, "unavailable", "cannot record the events now; retry") from None
        except schemas.MessageError as problem:  # a value the normalisation let through
            log.exception("webhook event breaks the delivery-event contract", error=str(problem))
            raise MalformedError(f"an event cannot be recorded: {problem}") from None
        EVENTS.labels(provider).inc(len(messages))


def _answers(provider: str, handler: Callable[[Request], Awaitable[Response]]) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except WebhookError as problem:
            REJECTED.labels(provider, problem.code).inc()
            log.info(
                "webhook refused", provider=provider, error=problem.code, status=problem.status
            )
            headers = {"Retry-After": RETRY_AFTER_S} if problem.status == 503 else None
            return error(problem.status, problem.code, str(problem), headers)

    return endpoint


def routes(settings: IngestSettings, producer: Producer) -> list[Route]:
    ingest = Ingest(settings, producer)
    return [
        Route("/webhooks/sendgrid", _answers("sendgrid", ingest.sendgrid), methods=["POST"]),
        Route("/webhooks/twilio", _answers("twilio", ingest.twilio_status), methods=["POST"]),
        Route(
            "/webhooks/twilio/inbound",
            _answers("twilio", ingest.twilio_inbound),
            methods=["POST"],
        ),
    ]


def build(infra: Infrastructure) -> Deployable:
    """Webhook ingest needs only the broker: it is ready without the database."""
    app = create_app(
        "ingest",
        routes=routes(section(infra.settings, IngestSettings), infra.producer),
        checks={"broker": infra.check_broker},
    )
    return Deployable(app=app)
