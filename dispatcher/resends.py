"""The resend routes: thin endpoints that call :class:`relaybook.notices.resends.Resends`
and answer."""

from __future__ import annotations

from starlette.responses import Response

from dispatcher.api import Answer, Call, NoticePath, Operation, answer
from relaybook.notices.answers import Resend, ResendHistory, ResendOptions
from relaybook.notices.resends import OptionsQuery, ResendBody, Resends, parse_request, selection
from relaybook.platform.answers import not_found

MAX_BODY_BYTES = 8 * 1024 * 1024


def operations(resends: Resends) -> list[Operation]:
    async def options(call: Call) -> Response:
        selected = selection(call.query.recipient_ids)
        return answer(await resends.options(call.path.notice_id, selected))

    async def create(call: Call) -> Response:
        scope, selected = parse_request(call.body)
        done = await resends.resend(call.path.notice_id, scope, selected, call.caller.name)
        return answer(done, 202)

    async def history(call: Call) -> Response:
        target = call.path.notice_id
        items = await resends.history(target)
        if not items and not await resends.exists(target):
            raise not_found("notice")
        listed: ResendHistory = {"items": items}
        return answer(listed)

    missing = Answer(404, "no such notice", codes=("not_found",))
    return [
        Operation(
            "GET",
            "/v1/notices/{notice_id}/resend-options",
            "What each resend scope would send now, and whom it leaves out",
            options,
            scopes=("journal:read", "notices:write"),
            answers=(
                Answer(200, "per scope, the recipients, emails and texts", ResendOptions),
                missing,
            ),
            path_params=NoticePath,
            missing="notice",
            query=OptionsQuery,
            tag="resends",
        ),
        Operation(
            "POST",
            "/v1/notices/{notice_id}/resends",
            "Resend failures, as new attempts linked to the ones they retry",
            create,
            scopes=("notices:write",),
            answers=(
                Answer(202, "the resend and what it sends", Resend),
                missing,
                Answer(
                    409,
                    "nothing to resend, the notice was never sent, or is still sending",
                    codes=("no_failed_recipients", "notice_not_sent", "notice_sending"),
                ),
                Answer(422, "scope selected without recipient_ids", codes=("no_selection",)),
            ),
            path_params=NoticePath,
            missing="notice",
            body=ResendBody,
            max_body=MAX_BODY_BYTES,
            tag="resends",
        ),
        Operation(
            "GET",
            "/v1/notices/{notice_id}/resends",
            "A notice's resends, newest first",
            history,
            scopes=("journal:read", "notices:write"),
            answers=(Answer(200, "the resends", ResendHistory), missing),
            path_params=NoticePath,
            missing="notice",
            tag="resends",
        ),
    ]
