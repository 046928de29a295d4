"""Resends: which messages each scope takes (a pure plan, table-driven) and what it leaves
out, and why; why a recipient cannot be contacted now, exactly as the fan-out skips a
message; every answer of the API against a notice with delivered, failed-on-one-channel,
failed-on-both, skipped and since-unsubscribed recipients, concurrent resends, the
history, and the statistics and notice status once the resent messages are processed."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from relaybook.notices.resends import DELIVERIES, Message, Q, plan
from tests.support import notice, until, waiting_on_locks

# --- the plan, pure ------------------------------------------------------------------


def messages(**people: tuple[str | None, str | None]) -> list[Message]:
    """``name=(email status, sms status)``; a trailing ``!`` marks one where the recipient
    cannot be contacted now (opted out)."""
    found = []
    for name, statuses in people.items():
        for channel, status in zip(("email", "sms"), statuses, strict=True):
            if status is not None:
                reason = "opted_out" if status.endswith("!") else None
                found.append(Message(uuid.uuid4(), name, channel, status.rstrip("!"), reason))
    return found


MIX = messages(
    happy=("clicked", "delivered"),
    half=("failed", "delivered"),
    both=("failed", "failed"),
    lost=("failed", "sent"),
    skipped=("skipped", "skipped"),
    emailonly=("delivered", None),
    gone=("failed!", "skipped"),
    waiting=("sent", "sent"),
)


def picked(scope: str, selected: frozenset[str] = frozenset()) -> tuple[set[str], set[str]]:
    chosen = plan(MIX, scope, selected)
    return (
        {f"{m.recipient_id}/{m.channel}" for m in chosen.retry},
        {f"{m.recipient_id}/{m.channel}" for m in chosen.excluded},
    )


def test_failed_takes_only_the_failed_channels() -> None:
    assert picked("failed") == (
        {"half/email", "both/email", "both/sms", "lost/email"},
        {"gone/email"},
    )


def test_undelivered_takes_recipients_reached_on_no_channel() -> None:
    assert picked("undelivered") == (
        {"both/email", "both/sms", "lost/email", "lost/sms", "waiting/email", "waiting/sms"},
        {"gone/email"},
    )


def test_selected_takes_the_failed_channels_of_the_selection() -> None:
    assert picked("selected", frozenset({"happy", "half", "gone"})) == (
        {"half/email"},
        {"gone/email"},
    )
    assert plan(MIX, "failed").counts() == {
        "recipients": 3,
        "email": 3,
        "sms": 1,
        "excluded": {"recipients": 1, "email": 1, "sms": 0},
    }


def test_what_a_scope_leaves_out_says_why_in_recipient_and_channel_order() -> None:
    given = [
        Message(uuid.uuid4(), "b", "sms", "failed", "suppressed"),
        Message(uuid.uuid4(), "b", "email", "failed", "no_address"),
        Message(uuid.uuid4(), "a", "email", "failed", "opted_out"),
        Message(uuid.uuid4(), "a", "sms", "failed", None),
    ]
    chosen = plan(given, "failed")
    assert [(m.recipient_id, m.channel) for m in chosen.retry] == [("a", "sms")]
    assert [(m.recipient_id, m.channel, m.reason) for m in chosen.excluded] == [
        ("a", "email", "opted_out"),
        ("b", "email", "no_address"),
        ("b", "sms", "suppressed"),
    ]


# --- why a recipient cannot be contacted, in step with the fan-out ----------------------

#: id: (recipient columns, suppressions of its addresses, expected email and sms reasons)
REACH: dict[str, tuple[dict[str, Any], list[dict[str, Any]], tuple[str | None, str | None]]] = {
    "fine": ({}, [], (None, None)),
    "no-phone": ({"phone": None}, [], (None, "no_address")),
    "opted": ({"email_wants": "no", "email_changed_by_kind": "manager"}, [], ("opted_out", None)),
    "auto": (
        {"sms_wants": "no", "sms_changed_by_kind": "automatic"}, [], (None, "auto_unsubscribed")
    ),
    "bounced": ({}, [{"channel": "email", "upper": True}], ("auto_unsubscribed", None)),
    "protected": (
        {"never_auto_unsubscribe": True},
        [{"channel": "email"}, {"channel": "sms", "rule": "opt_out"}],
        (None, "opted_out"),
    ),
    "stop-and-bounces": (
        {}, [{"channel": "sms"}, {"channel": "sms", "rule": "opt_out"}], (None, "opted_out")
    ),
    "complained": ({}, [{"channel": "email", "rule": "complaint"}], ("opted_out", None)),
    "lifted": ({}, [{"channel": "email", "lifted": True}], (None, None)),
    "expired": ({}, [{"channel": "sms", "expired": True}], (None, None)),
    "opted-first": (
        {"email_wants": "no", "email_changed_by_kind": "owner"},
        [{"channel": "email"}],
        ("opted_out", None),
    ),
    "address-first": (
        {"email": None, "email_wants": "no", "email_changed_by_kind": "automatic"},
        [],
        ("no_address", None),
    ),
}  # fmt: skip


async def test_the_reasons_a_resend_leaves_out_are_the_fan_outs(db: asyncpg.Connection) -> None:
    """resend_candidates and insert_deliveries both include the contact rule: on the same
    recipients, they give every message the same reason, and the one expected."""
    agency, notice_id = "agency-r", uuid.uuid4()
    await db.execute("INSERT INTO agencies (id) VALUES ($1)", agency)
    for number, (rid, (columns, suppressions, _)) in enumerate(REACH.items()):
        row = {
            "email": f"p{number}@example.org",
            "phone": f"+3361{number:07d}",
            "email_wants": "yes",
            "email_changed_by_kind": "default",
            "sms_wants": "yes",
            "sms_changed_by_kind": "default",
            "never_auto_unsubscribe": False,
            **columns,
        }
        await db.execute(
            "INSERT INTO recipients (agency_id, id, email, phone, email_wants, "
            "email_changed_by_kind, sms_wants, sms_changed_by_kind, never_auto_unsubscribe) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            agency,
            rid,
            *row.values(),
        )
        for suppression in suppressions:
            address = row["email" if suppression["channel"] == "email" else "phone"]
            await db.execute(
                "INSERT INTO suppressions (channel, address, rule, reason, expires_at, lifted_at) "
                "VALUES ($1, $2, $3, 'test', CASE WHEN $4 THEN now() - interval '1 day' END, "
                "CASE WHEN $5 THEN now() END)",
                suppression["channel"],
                address.upper() if suppression.get("upper") else address,
                suppression.get("rule", "hard_bounce"),
                suppression.get("expired", False),
                suppression.get("lifted", False),
            )
    await db.execute(
        "INSERT INTO notices (id, source_service, source_kind, source_reference, title, "
        "email_subject, sms_text, status, created_by, agency_id) "
        "VALUES ($1, 's', 'k', 'r', 't', 'subject', 'text', 'draft', 'test', $2)",
        notice_id,
        agency,
    )
    await db.execute(DELIVERIES["fan_out"], notice_id, list(REACH), ["email", "sms"], agency)

    fanned_out = {
        (row["recipient_id"], row["channel"]): row["reason"]
        for row in await db.fetch(
            "SELECT recipient_id, channel, reason FROM deliveries WHERE notice_id = $1", notice_id
        )
    }
    now = {
        (row["recipient_id"], row["channel"]): row["reason"]
        for row in await db.fetch(Q["resend_candidates"], notice_id)
    }
    expected = {
        (rid, channel): reason
        for rid, (_, _, reasons) in REACH.items()
        for channel, reason in zip(("email", "sms"), reasons, strict=True)
    }
    assert fanned_out == expected
    assert now == expected


# --- the API, with everything running ---------------------------------------------------


@pytest.fixture
def system_options() -> dict[str, Any]:
    return {"sandbox_duplicate_rate": 0.0, "sandbox_reorder_rate": 0.0}


PEOPLE = [
    # id, email, phone
    ("r1-happy", "r1+click@example.org", "+33600000001"),
    ("r2-half", "r2@bounce.sandbox.test", "+33600000002"),
    ("r3-both", "r3@bounce.sandbox.test", "+33600003005"),
    ("r4-emailonly", "r4+click@example.org", None),
    ("r5-gone", "r5@bounce.sandbox.test", None),
]
FINAL = {
    ("r1-happy", "email"): "clicked",
    ("r1-happy", "sms"): "delivered",
    ("r2-half", "email"): "failed",
    ("r2-half", "sms"): "delivered",
    ("r3-both", "email"): "failed",
    ("r3-both", "sms"): "failed",
    ("r4-emailonly", "email"): "clicked",
    ("r4-emailonly", "sms"): "skipped",
    ("r5-gone", "email"): "failed",
    ("r5-gone", "sms"): "skipped",
}


async def settle(api: httpx.AsyncClient, notice_id: str, expect: dict[Any, str]) -> None:
    async def done() -> bool:
        answer = (await api.get(f"/v1/notices/{notice_id}/recipients")).json()
        found = {
            (item["id"], channel): item[channel]["status"]
            for item in answer["items"]
            for channel in ("email", "sms")
            if channel in item
        }
        status = (await api.get(f"/v1/notices/{notice_id}")).json()["status"]
        return status != "sending" and all(found[key] == value for key, value in expect.items())

    await until(done, within=40)


@pytest.fixture
async def sent(api: httpx.AsyncClient) -> str:
    body = notice(0)
    body["recipients"] = [
        {"id": rid, "email": email, **({"phone": phone} if phone else {})}
        for rid, email, phone in PEOPLE
    ]
    created = (await api.post("/v1/notices", json=body)).json()
    await settle(api, created["id"], FINAL)
    # r5 asked not to be emailed any more since
    await api.put("/v1/recipients/r5-gone/preferences", json={"email": "no", "reason": "moved"})
    return str(created["id"])


async def test_the_options_count_each_scope_exactly(api: httpx.AsyncClient, sent: str) -> None:
    answer = await api.get(
        f"/v1/notices/{sent}/resend-options", params={"recipient_ids": "r1-happy,r2-half"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "failed": {
            "recipients": 2,
            "email": 2,
            "sms": 1,
            "excluded": {"recipients": 1, "email": 1, "sms": 0},
        },
        "undelivered": {
            "recipients": 1,
            "email": 1,
            "sms": 1,
            "excluded": {"recipients": 1, "email": 1, "sms": 0},
        },
        "selected": {
            "recipients": 1,
            "email": 1,
            "sms": 0,
            "excluded": {"recipients": 0, "email": 0, "sms": 0},
            "available": True,
        },
    }
    nothing = (await api.get(f"/v1/notices/{sent}/resend-options")).json()
    assert nothing["selected"]["available"] is False


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"scope": "selected"}, 422, "no_selection"),
        ({"scope": "selected", "recipient_ids": []}, 422, "no_selection"),
        ({"scope": "selected", "recipient_ids": ["r2-half", "stranger"]}, 422, "invalid_request"),
        ({"scope": "everything"}, 422, "invalid_request"),
        ({"scope": "failed", "recipient_ids": ["r2-half"]}, 422, "invalid_request"),
        ({"scope": "selected", "recipient_ids": ["r1-happy"]}, 409, "no_failed_recipients"),
    ],
)
async def test_a_refused_resend_says_why_and_changes_nothing(
    api: httpx.AsyncClient, db: asyncpg.Connection, sent: str, body: Any, status: int, code: str
) -> None:
    answer = await api.post(f"/v1/notices/{sent}/resends", json=body)
    assert (answer.status_code, answer.json()["error"]) == (status, code)
    if code == "invalid_request" and "recipient_ids" in body and body["scope"] == "selected":
        assert answer.json()["detail"] == "recipient_ids: not recipients of this notice: stranger"
    assert await db.fetchval("SELECT count(*) FROM resends") == 0
    assert await db.fetchval("SELECT count(*) FROM deliveries WHERE attempt > 1") == 0


async def test_drafts_and_unknown_notices_cannot_be_resent(api: httpx.AsyncClient) -> None:
    draft = (await api.post("/v1/notices", json=notice(2, send=False))).json()
    answer = await api.post(f"/v1/notices/{draft['id']}/resends", json={"scope": "failed"})
    assert (answer.status_code, answer.json()["error"]) == (409, "notice_not_sent")
    for path in ("resends", "resend-options"):
        missing = await api.get(f"/v1/notices/{uuid.uuid4()}/{path}")
        assert missing.status_code == 404


async def test_concurrent_resends_never_send_a_message_twice(
    api: httpx.AsyncClient, db: asyncpg.Connection, sent: str
) -> None:
    answers = await asyncio.gather(
        *(api.post(f"/v1/notices/{sent}/resends", json={"scope": "failed"}) for _ in range(3))
    )
    assert sorted(a.status_code for a in answers) == [202, 409, 409]
    retried = await db.fetch(
        "SELECT retry_of, count(*) FROM deliveries WHERE retry_of IS NOT NULL GROUP BY retry_of"
    )
    assert len(retried) == 3
    assert {row["count"] for row in retried} == {1}


async def test_a_resend_caught_in_a_deadlock_with_the_tracker_goes_through(
    api: httpx.AsyncClient, db: asyncpg.Connection, pool: asyncpg.Pool, sent: str
) -> None:
    """A tracker recording a late event locks the message, then the notice to settle it;
    a resend locks the notice, then its messages. PostgreSQL breaks the circle by failing
    the one that waited first, the resend: it is tried again, not answered 503."""
    failed = await db.fetchval(
        "SELECT id FROM deliveries WHERE notice_id = $1::uuid AND recipient_id = 'r2-half' "
        "AND channel = 'email'",
        sent,
    )
    tracker = db.transaction()
    await tracker.start()
    await db.execute("SELECT 1 FROM deliveries WHERE id = $1 FOR UPDATE", failed)
    resend = asyncio.create_task(api.post(f"/v1/notices/{sent}/resends", json={"scope": "failed"}))

    async def the_resend_waits() -> bool:
        return bool(await waiting_on_locks(pool) - {db.get_server_pid()})

    await until(the_resend_waits, within=10)
    try:
        await db.execute("SELECT settle_notices(ARRAY[$1::uuid])", uuid.UUID(sent))
    except asyncpg.DeadlockDetectedError:
        await tracker.rollback()  # the tracker's batch comes again
    else:
        await tracker.commit()
    assert (await resend).status_code == 202


async def test_a_resend_after_fixing_addresses_updates_the_funnel_and_the_history(
    api: httpx.AsyncClient, db: asyncpg.Connection, sent: str
) -> None:
    await db.execute("UPDATE recipients SET email = 'r2+click@example.org' WHERE id = 'r2-half'")
    before = (await api.get(f"/v1/notices/{sent}")).json()
    assert before["status"] == "partially_failed"
    assert before["stats"]["email"]["failed"] == 3

    answer = await api.post(f"/v1/notices/{sent}/resends", json={"scope": "failed"})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert {k: body[k] for k in ("recipients", "email", "sms")} == {
        "recipients": 2,
        "email": 2,
        "sms": 1,
    }
    assert body["excluded"] == {"recipients": 1, "email": 1, "sms": 0}

    await settle(
        api,
        sent,
        {
            ("r2-half", "email"): "clicked",
            ("r3-both", "email"): "failed",
            ("r3-both", "sms"): "failed",
        },
    )
    after = (await api.get(f"/v1/notices/{sent}")).json()
    assert after["status"] == "partially_failed"
    assert after["stats"]["email"] == {
        "queued": 0,
        "sent": 5,
        "delivered": 3,
        "opened": 3,
        "clicked": 3,
        "failed": 2,
        "skipped": 0,
    }
    # the journal keeps both attempts of r2's email
    journal = (
        await api.get("/v1/journal", params={"recipient_id": "r2-half", "channel": "email"})
    ).json()
    assert sorted((i["attempt"], i["status"]) for i in journal["items"]) == [
        (1, "failed"),
        (2, "clicked"),
    ]

    # r3's number failed permanently twice: the bounce policy (its own consumer, maybe
    # behind the tracker) unsubscribes it from texts
    async def texts_stopped() -> bool:
        answer = (await api.get("/v1/recipients/r3-both/preferences")).json()
        return bool(answer["sms"]["wants"] == "no")

    await until(texts_stopped, within=30)
    selected = await api.post(
        f"/v1/notices/{sent}/resends", json={"scope": "selected", "recipient_ids": ["r3-both"]}
    )
    assert selected.status_code == 202
    assert selected.json()["excluded"] == {"recipients": 1, "email": 0, "sms": 1}
    history = (await api.get(f"/v1/notices/{sent}/resends")).json()["items"]
    assert [(h["scope"], h["recipients"], h["email"], h["sms"], h["full"]) for h in history] == [
        # r3 is the only failed recipient left: a full resend; but its number failed
        # permanently twice, so the bounce policy unsubscribed it meanwhile: no text
        ("selected", 1, 1, 0, True),
        ("failed", 2, 2, 1, True),
    ]
    assert {h["requested_by"] for h in history} == {"admin"}


async def test_a_notice_whose_failures_all_get_through_on_resend_becomes_sent(
    api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    body = notice(0, sms=None)
    body["recipients"] = [
        {"id": "ok", "email": "ok+click@example.org"},
        {"id": "typo", "email": "typo@bounce.sandbox.test"},
    ]
    created = (await api.post("/v1/notices", json=body)).json()
    await settle(api, created["id"], {("typo", "email"): "failed"})
    assert (await api.get(f"/v1/notices/{created['id']}")).json()["status"] == "partially_failed"

    await db.execute("UPDATE recipients SET email = 'typo+click@example.org' WHERE id = 'typo'")
    answer = await api.post(f"/v1/notices/{created['id']}/resends", json={"scope": "undelivered"})
    assert answer.status_code == 202
    await settle(api, created["id"], {("typo", "email"): "clicked"})
    assert (await api.get(f"/v1/notices/{created['id']}")).json()["status"] == "sent"
    again = await api.post(f"/v1/notices/{created['id']}/resends", json={"scope": "failed"})
    assert (again.status_code, again.json()["error"]) == (409, "no_failed_recipients")
