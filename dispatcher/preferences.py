"""The preferences routes: thin endpoints that call
:class:`relaybook.reachability.preferences.Preferences` and answer."""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from dispatcher.api import Answer, Call, Operation, answer
from relaybook.platform.answers import not_found
from relaybook.platform.decoding import Id
from relaybook.reachability import authority
from relaybook.reachability.answers import Contact, PreferencesPage, RecipientPreferences
from relaybook.reachability.preferences import (
    ContactChange,
    OverviewQuery,
    PreferenceChange,
    Preferences,
    RecipientQuery,
    parse_change,
)

MAX_BODY_BYTES = 16 * 1024


class RecipientPath(msgspec.Struct):
    recipient_id: Id


def operations(preferences: Preferences) -> list[Operation]:
    async def whose(call: Call) -> str:
        return await preferences.agency_of(call.path.recipient_id, call.query.agency, call.caller)

    async def read(call: Call) -> Response:
        found = await preferences.get(await whose(call), call.path.recipient_id)
        if found is None:
            raise not_found("recipient")
        return answer(found)

    async def write(call: Call) -> Response:
        change = parse_change(call.body)
        changed = await preferences.change(
            await whose(call), call.path.recipient_id, change, call.caller
        )
        if changed is None:
            raise not_found("recipient")
        return answer(changed)

    async def correct(call: Call) -> Response:
        corrected = await preferences.correct(
            await whose(call), call.path.recipient_id, call.body, call.caller.name
        )
        if corrected is None:
            raise not_found("recipient")
        return answer(corrected)

    async def overview(call: Call) -> Response:
        return answer(await preferences.overview(call.query))

    missing = Answer(404, "no such recipient", codes=("not_found",))
    return [
        Operation(
            "GET",
            "/v1/recipients/{recipient_id}/preferences",
            "A recipient's preferences per channel",
            read,
            scopes=("journal:read", "preferences:write"),
            answers=(Answer(200, "the preferences", RecipientPreferences), missing),
            path_params=RecipientPath,
            query=RecipientQuery,
            missing="recipient",
            tag="preferences",
        ),
        Operation(
            "PUT",
            "/v1/recipients/{recipient_id}/preferences",
            "Change a recipient's preferences (audited and announced)",
            write,
            scopes=("preferences:write",),
            answers=(
                Answer(200, "the new preferences", RecipientPreferences),
                missing,
                Answer(
                    403,
                    "bringing back a channel the bounce policy turned off is for support",
                    codes=(authority.SUPPORT_ONLY,),
                ),
                Answer(
                    409,
                    "the owner opted out of this channel: only the owner brings it back "
                    "(START, or changed_by: owner with their evidence)",
                    codes=(authority.OWNER_OPTED_OUT,),
                ),
            ),
            path_params=RecipientPath,
            query=RecipientQuery,
            missing="recipient",
            body=PreferenceChange,
            max_body=MAX_BODY_BYTES,
            tag="preferences",
        ),
        Operation(
            "PATCH",
            "/v1/recipients/{recipient_id}",
            "Correct a recipient's name or addresses",
            correct,
            scopes=("preferences:write",),
            answers=(Answer(200, "the contact details as they now are", Contact), missing),
            path_params=RecipientPath,
            query=RecipientQuery,
            missing="recipient",
            body=ContactChange,
            max_body=MAX_BODY_BYTES,
            tag="preferences",
        ),
        Operation(
            "GET",
            "/v1/preferences",
            "The overview of preferences, filtered and paged",
            overview,
            scopes=("journal:read", "preferences:write"),
            answers=(Answer(200, "one page of recipients, in id order", PreferencesPage),),
            query=OverviewQuery,
            tag="preferences",
        ),
    ]
