"""The journal routes: thin endpoints that call :class:`relaybook.journal.reader.JournalReader`
and answer."""

from __future__ import annotations

import uuid

import msgspec
from starlette.responses import Response

from dispatcher.api import Answer, Call, NoticePath, Operation, answer
from relaybook.journal.answers import Delivery, JournalPage, NoticeRecipients
from relaybook.journal.reader import JournalQuery, JournalReader, RecipientsQuery
from relaybook.platform.answers import not_found
from relaybook.platform.paging import decode_cursor


class DeliveryPath(msgspec.Struct):
    delivery_id: uuid.UUID


def operations(reader: JournalReader) -> list[Operation]:
    async def journal(call: Call) -> Response:
        return answer(await reader.page(call.query))

    async def delivery(call: Call) -> Response:
        found = await reader.delivery(call.path.delivery_id)
        if found is None:
            raise not_found("delivery")
        return answer(found)

    async def recipients(call: Call) -> Response:
        notice_id = call.path.notice_id
        cursor = call.query.cursor
        after = decode_cursor(cursor, 1)[0] if cursor is not None else ""
        if not await reader.notice_exists(notice_id):
            raise not_found("notice")
        return answer(await reader.recipients(notice_id, call.query, after))

    return [
        Operation(
            "GET",
            "/v1/journal",
            "Every message, newest first, filtered and paged by keyset",
            journal,
            scopes=("journal:read",),
            answers=(Answer(200, "one page of the journal", JournalPage),),
            query=JournalQuery,
            tag="journal",
        ),
        Operation(
            "GET",
            "/v1/deliveries/{delivery_id}",
            "One message with its event timeline",
            delivery,
            scopes=("journal:read",),
            answers=(
                Answer(200, "the message", Delivery),
                Answer(404, "no such delivery", codes=("not_found",)),
            ),
            path_params=DeliveryPath,
            missing="delivery",
            tag="journal",
        ),
        Operation(
            "GET",
            "/v1/notices/{notice_id}/recipients",
            "A notice's recipients, each with the state of their messages",
            recipients,
            scopes=("journal:read", "notices:write"),
            answers=(
                Answer(200, "one page of recipients, in id order", NoticeRecipients),
                Answer(404, "no such notice", codes=("not_found",)),
            ),
            path_params=NoticePath,
            missing="notice",
            query=RecipientsQuery,
            tag="notices",
        ),
    ]
