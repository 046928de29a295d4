"""The bounce policy with everything running and the sandbox standing in for the
providers: repeated hard bounces unsubscribe, sender-side blocks never do, a spam report
does at once, STOP and START through Twilio's inbound webhook, and support's override
brings the recipient back for the next notice."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import notice, until


@pytest.fixture
def system_options() -> dict[str, Any]:
    # bounces come back quickly and tidily: the disorder is ingest's and the tracker's
    # business, tested there
    return {"sandbox_duplicate_rate": 0.3, "sandbox_reorder_rate": 0.0}


def to(*people: tuple[str, str | None, str | None], sms: bool = False) -> dict[str, Any]:
    body = notice(0)
    body["recipients"] = [
        {"id": rid, **({"email": email} if email else {}), **({"phone": phone} if phone else {})}
        for rid, email, phone in people
    ]
    if not sms:
        body["sms"] = None
    return body


async def send_and_settle(
    api: httpx.AsyncClient, body: dict[str, Any], expect: dict[tuple[str, str], str]
) -> dict[str, Any]:
    """Sends the notice and waits until each ``(recipient, channel)`` of ``expect`` has
    the status given (the providers' webhooks in); returns the recipients' rows."""
    created = (await api.post("/v1/notices", json=body)).json()
    rows: dict[str, Any] = {}

    async def settled() -> bool:
        nonlocal rows
        answer = (await api.get(f"/v1/notices/{created['id']}/recipients")).json()
        rows = {item["id"]: item for item in answer["items"]}
        return all(
            rows[rid][channel]["status"] == status for (rid, channel), status in expect.items()
        )

    await until(settled, within=30)
    return rows


async def preference(api: httpx.AsyncClient, recipient: str, channel: str) -> dict[str, Any]:
    answer: dict[str, Any] = (await api.get(f"/v1/recipients/{recipient}/preferences")).json()
    return answer[channel]  # type: ignore[no-any-return]


async def test_three_hard_bounces_unsubscribe_and_the_override_brings_the_owner_back(
    api: httpx.AsyncClient,
) -> None:
    bad = ("bad", "owner@bounce.sandbox.test", None)
    blocked = ("blocked", "owner@blocked.sandbox.test", None)
    expect = {("bad", "email"): "failed", ("blocked", "email"): "failed"}
    for _ in range(3):
        await send_and_settle(api, to(bad, blocked), expect)

    async def unsubscribed() -> bool:
        return (await preference(api, "bad", "email"))["wants"] == "no"

    await until(unsubscribed, within=30)
    bad_email = await preference(api, "bad", "email")
    assert bad_email["changed_by"] == "automatic"
    assert bad_email["reason"].startswith("3 hard failures in 30 days")

    fourth = await send_and_settle(
        api, to(bad, blocked), {("bad", "email"): "skipped", ("blocked", "email"): "failed"}
    )
    assert fourth["bad"]["email"]["reason"] == "auto_unsubscribed"
    # the blocked address was sent to and blocked a fourth time, and still counts nothing
    assert (await preference(api, "blocked", "email"))["wants"] == "yes"  # ...never counted

    overview = (await api.get("/v1/preferences", params={"reason": "automatic"})).json()
    assert [item["recipient_id"] for item in overview["items"]] == ["bad"]

    override = await api.put(
        "/v1/recipients/bad/preferences",
        json={"email": "yes", "reason": "the owner fixed their mailbox (ticket 4411)"},
    )
    assert override.status_code == 200, override.text
    assert override.json()["email"]["changed_by"] == "support"
    fixed = ("bad", "owner+click@example.org", None)  # ...and gave a working address
    await send_and_settle(api, to(fixed), {("bad", "email"): "clicked"})


async def test_a_spam_report_unsubscribes_at_once(api: httpx.AsyncClient) -> None:
    await send_and_settle(
        api, to(("annoyed", "owner@spam.sandbox.test", None)), {("annoyed", "email"): "delivered"}
    )

    async def unsubscribed() -> bool:
        return (await preference(api, "annoyed", "email"))["wants"] == "no"

    await until(unsubscribed, within=30)
    assert (await preference(api, "annoyed", "email"))["reason"] == "marked as spam"


async def test_stop_and_start_by_text_message(
    api: httpx.AsyncClient, sandbox: httpx.AsyncClient
) -> None:
    owner = ("texter", None, "+33633333333")
    texts = to(owner, sms=True) | {"email": None}
    await send_and_settle(api, texts, {("texter", "sms"): "delivered"})
    await sandbox.post("/_sandbox/twilio/inbound", json={"from": "+33633333333", "body": "STOP"})

    async def wants(value: str) -> bool:
        return bool((await preference(api, "texter", "sms"))["wants"] == value)

    await until(lambda: wants("no"), within=30)
    assert (await preference(api, "texter", "sms"))["changed_by"] == "owner"
    await send_and_settle(api, texts, {("texter", "sms"): "skipped"})

    await sandbox.post("/_sandbox/twilio/inbound", json={"from": "+33633333333", "body": "START"})
    await until(lambda: wants("yes"), within=30)
    await send_and_settle(api, texts, {("texter", "sms"): "delivered"})
