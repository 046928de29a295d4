"""Migrations: a fresh database built from them is exactly the schema the code expects;
applying them is idempotent, concurrent-safe and refuses edited or unknown history
(`relaybook migrate`), while services start on a newer schema."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from relaybook.platform import database

SNAPSHOT = Path(__file__).with_name("schema.snapshot")


async def describe_schema(url: str) -> str:
    """Tables, columns, constraints, indexes, functions and triggers of the public schema,
    as stable text."""
    connection = await asyncpg.connect(url)
    try:
        columns = await connection.fetch(
            """
            SELECT table_name, column_name, data_type, is_nullable, column_default
            FROM information_schema.columns WHERE table_schema = 'public'
            ORDER BY table_name, ordinal_position
            """
        )
        constraints = await connection.fetch(
            """
            SELECT conrelid::regclass::text AS table_name, contype::text AS contype,
                   pg_get_constraintdef(oid) AS definition
            FROM pg_constraint
            -- PostgreSQL 18 lists NOT NULL as constraints too; the columns already say it
            WHERE connamespace = 'public'::regnamespace AND contype <> 'n'
            ORDER BY 1, 2, 3
            """
        )
        indexes = await connection.fetch(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname"
        )
        functions = await connection.fetch(
            """
            SELECT proname || '(' || pg_get_function_identity_arguments(oid) || ') returns '
                   || pg_get_function_result(oid) AS signature
            FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1
            """
        )
        triggers = await connection.fetch(
            """
            SELECT pg_get_triggerdef(oid) AS definition FROM pg_trigger
            WHERE NOT tgisinternal ORDER BY tgrelid::regclass::text, tgname
            """
        )
    finally:
        await connection.close()
    lines = [
        f"column {row['table_name']}.{row['column_name']} {row['data_type']}"
        f"{' NOT NULL' if row['is_nullable'] == 'NO' else ''}"
        f"{' DEFAULT ' + row['column_default'] if row['column_default'] else ''}"
        for row in columns
    ]
    lines += [
        f"constraint {row['table_name']} {row['contype']} {row['definition']}"
        for row in constraints
    ]
    lines += [f"index {row['indexdef']}" for row in indexes]
    lines += [f"function {row['signature']}" for row in functions]
    lines += [f"trigger {row['definition']}" for row in triggers]
    return "\n".join(lines) + "\n"


async def test_a_fresh_database_built_from_migrations_matches_the_expected_schema(
    empty_database_url: str,
) -> None:
    """The snapshot is what later code is written against; regenerate it on purpose with
    RELAYBOOK_UPDATE_SNAPSHOT=1 when a migration is added."""
    applied = await database.migrate(empty_database_url)
    assert [m.version for m in applied] == [m.version for m in database.migrations()]
    actual = await describe_schema(empty_database_url)
    if os.environ.get("RELAYBOOK_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(actual)
    assert actual == SNAPSHOT.read_text()


async def test_migrating_twice_applies_nothing_the_second_time(empty_database_url: str) -> None:
    await database.migrate(empty_database_url)
    assert await database.migrate(empty_database_url) == []
    assert await database.pending(empty_database_url) == []


async def test_concurrent_migrations_apply_each_file_once(empty_database_url: str) -> None:
    results = await asyncio.gather(*(database.migrate(empty_database_url) for _ in range(5)))
    assert sorted(len(applied) for applied in results) == [0, 0, 0, 0, len(database.migrations())]
    connection = await asyncpg.connect(empty_database_url)
    try:
        rows = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await connection.close()
    assert [row["version"] for row in rows] == [m.version for m in database.migrations()]


async def test_an_applied_migration_that_was_edited_is_refused(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1"
        )
    finally:
        await connection.close()
    with pytest.raises(database.DatabaseError, match="0001_core was changed after it was applied"):
        await database.migrate(database_url)


async def migrated_by_a_newer_release(database_url: str) -> None:
    """Records a migration 999 this code does not have, as a newer release's would be."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')"
        )
    finally:
        await connection.close()


async def test_a_database_newer_than_the_code_is_refused(database_url: str) -> None:
    await migrated_by_a_newer_release(database_url)
    with pytest.raises(database.DatabaseError, match="newer than this code"):
        await database.migrate(database_url)


async def test_migrate_allowed_a_newer_database_leaves_it_as_it_is(database_url: str) -> None:
    """What a rollback's migration step runs (compose's `migrate`, the previous release's
    Job): exit 0 saying so, where plain `relaybook migrate` refuses (exit 1)."""
    await migrated_by_a_newer_release(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYBOOK_")}
    env["RELAYBOOK_DATABASE_URL"] = database_url
    answers = []
    for options in ([], ["--allow-newer"]):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relaybook.tooling.cli",
            "migrate",
            *options,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        answers.append((process.returncode, out.decode().strip(), err.decode().strip()))
    newest = database.newest_version()
    refused, allowed = answers
    assert refused == (
        1,
        "",
        f"relaybook: the database is at migration 999, newer than this code ({newest}): "
        "upgrade relaybook",
    )
    assert allowed[:2] == (
        0,
        f"the database is at migration 999, newer than this code ({newest}): left as it is",
    )


async def test_a_service_starting_on_a_newer_database_runs_on_it_saying_so_once(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback, or the old pods of a rolling deploy: start-up (``newer_ok``) applies
    nothing and warns once per process; `relaybook migrate` (above) still refuses."""
    monkeypatch.setattr(database, "_NEWER_NOTED", set())
    await migrated_by_a_newer_release(database_url)
    with capture_logs() as logged:
        for _ in range(2):
            assert await database.migrate(database_url, newer_ok=True) == []
    assert [entry for entry in logged if entry["log_level"] == "warning"] == [
        {
            "event": "the database schema is newer than this code: running on it "
            "(migrations only add)",
            "log_level": "warning",
            "database_migration": 999,
            "code_migration": database.newest_version(),
        }
    ]


async def test_an_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(database.DatabaseError, match="cannot connect to PostgreSQL"):
        await database.migrate("postgresql://nobody@127.0.0.1:1/none")


async def test_the_core_tables_enforce_their_invariants(database_url: str) -> None:
    """A skipped delivery says why; one current attempt per notice, recipient and channel;
    a delivery's notice and recipient exist and stay, as does a send attempt's delivery; a
    provider event is stored once."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("INSERT INTO recipients (id, email) VALUES ('r1', 'a@b.test')")
        notice = await connection.fetchval(
            """INSERT INTO notices (id, source_service, source_kind, source_reference, title,
                   email_subject, email_text, status, created_by)
               VALUES (gen_random_uuid(), 'accounting', 'deposit_call', 'DC-1', 't', 's', 'x',
                   'sending', 'test') RETURNING id"""
        )
        insert = """INSERT INTO deliveries (id, notice_id, recipient_id, channel, status, reason)
                    VALUES (gen_random_uuid(), $1, 'r1', 'email', $2, $3)"""
        with pytest.raises(asyncpg.CheckViolationError):
            await connection.execute(insert, notice, "skipped", None)
        await connection.execute(insert, notice, "queued", None)
        with pytest.raises(asyncpg.UniqueViolationError):
            await connection.execute(insert, notice, "queued", None)
        await connection.execute("INSERT INTO recipients (id) VALUES ('r2')")
        await connection.execute(  # several rows in one statement, checked together
            """INSERT INTO deliveries (id, notice_id, recipient_id, channel, status)
               VALUES (uuid_v7(), $1, 'r2', 'email', 'queued'),
                      (uuid_v7(), $1, 'r2', 'sms', 'queued')""",
            notice,
        )
        orphans = {
            "notice": "INSERT INTO deliveries (id, notice_id, recipient_id, channel, status)"
            " VALUES (uuid_v7(), gen_random_uuid(), 'r1', 'sms', 'queued')",
            "recipient": "INSERT INTO deliveries (id, notice_id, recipient_id, channel, status)"
            " SELECT uuid_v7(), id, who, 'sms', 'queued' FROM notices,"
            " unnest(ARRAY['r1', 'nobody']) AS who",
        }
        await connection.execute(  # several rows in one statement, checked together
            "INSERT INTO send_attempts (delivery_id, attempt)"
            " SELECT id, 1 FROM deliveries WHERE recipient_id = 'r2'"
        )
        orphans["delivery"] = (
            "INSERT INTO send_attempts (delivery_id, attempt)"
            " SELECT id, 2 FROM deliveries UNION ALL SELECT gen_random_uuid(), 1"
        )
        for parent, orphan in orphans.items():
            with pytest.raises(asyncpg.ForeignKeyViolationError, match=parent):
                await connection.execute(orphan)
        for refused in (
            "DELETE FROM deliveries WHERE recipient_id = 'r1'",
            "TRUNCATE deliveries CASCADE",
            "UPDATE deliveries SET id = gen_random_uuid() WHERE recipient_id = 'r2'",
            "UPDATE send_attempts SET delivery_id = gen_random_uuid()",
            "DELETE FROM recipients WHERE id = 'r1'",
            "TRUNCATE notices CASCADE",
            "UPDATE recipients SET id = 'r3' WHERE id = 'r2'",
            "UPDATE notices SET id = gen_random_uuid()",
            "UPDATE deliveries SET recipient_id = 'r2' WHERE recipient_id = 'r1'",
        ):
            with pytest.raises(asyncpg.RestrictViolationError):
                await connection.execute(refused)
        event = """INSERT INTO delivery_events (event_id, channel, provider, type, occurred_at,
                       received_at, payload)
                   VALUES ('sendgrid:e1', 'email', 'sendgrid', 'delivered', now(), now(), '{}')
                   ON CONFLICT (event_id) DO NOTHING"""
        assert await connection.execute(event) == "INSERT 0 1"
        assert await connection.execute(event) == "INSERT 0 0"
    finally:
        await connection.close()


async def test_pending_send_jobs_survive_the_move_to_job_pages(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0005 replaced the per-delivery "job published" stamp with job pages: each job not
    published yet must still be published once, and none published already again."""
    everything = database.migrations()
    monkeypatch.setattr(database, "migrations", lambda: everything[:4])
    await database.migrate(empty_database_url)
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute(
            """
            INSERT INTO recipients (id) VALUES ('a'), ('b'), ('c'), ('d'), ('e');
            INSERT INTO notices (id, source_service, source_kind, source_reference, title,
                                 sms_text, status, created_by)
            VALUES ('00000000-0000-0000-0000-00000000000a', 's', 'k', 'r', 'sent', 'x',
                    'sending', 'test'),
                   ('00000000-0000-0000-0000-00000000000b', 's', 'k', 'r', 'draft', 'x',
                    'draft', 'test');
            INSERT INTO deliveries (id, notice_id, recipient_id, channel, status,
                                    job_published_at, next_attempt_at)
            VALUES -- released: due now; published; published retry; retry due later
                   ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000a',
                    'a', 'sms', 'queued', NULL, NULL),
                   ('00000000-0000-0000-0000-0000000000a2', '00000000-0000-0000-0000-00000000000a',
                    'b', 'sms', 'queued', now(), NULL),
                   ('00000000-0000-0000-0000-0000000000a3', '00000000-0000-0000-0000-00000000000a',
                    'c', 'sms', 'queued', now(), now() - interval '1 minute'),
                   ('00000000-0000-0000-0000-0000000000a4', '00000000-0000-0000-0000-00000000000a',
                    'd', 'sms', 'queued', NULL, now() + interval '1 hour'),
                   -- a draft's, waiting for its release
                   ('00000000-0000-0000-0000-0000000000b1', '00000000-0000-0000-0000-00000000000b',
                    'd', 'sms', 'queued', NULL, 'infinity'),
                   ('00000000-0000-0000-0000-0000000000b2', '00000000-0000-0000-0000-00000000000b',
                    'e', 'sms', 'queued', NULL, 'infinity');
            """
        )
        monkeypatch.setattr(database, "migrations", lambda: everything)
        await database.migrate(empty_database_url)
        due = await connection.fetch(
            "SELECT id::text, next_attempt_at <= now() AS now FROM deliveries"
            " WHERE next_attempt_at IS NOT NULL ORDER BY id"
        )
        assert [(row["id"][-2:], row["now"]) for row in due] == [("a1", True), ("a4", False)]
        pages = await connection.fetch(
            "SELECT notice_id::text, first_recipient, last_recipient, due_at = 'infinity' AS"
            " waits, published_at FROM job_pages"
        )
        assert [tuple(row.values()) for row in pages] == [
            ("00000000-0000-0000-0000-00000000000b", "d", "e", True, None)
        ]
    finally:
        await connection.close()


async def test_delivery_ids_are_uuid_version_7_ordered_by_time(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        before = await connection.fetchval("SELECT uuid_v7()")
        await asyncio.sleep(0.002)
        ids = await connection.fetchval("SELECT array_agg(uuid_v7()) FROM generate_series(1, 500)")
        now_ms = await connection.fetchval("SELECT (extract(epoch FROM now()) * 1000)::bigint")
    finally:
        await connection.close()
    for value in [before, *ids]:
        assert (value.version, value.variant) == (7, uuid.RFC_4122)
        assert abs((value.int >> 80) - now_ms) < 5_000  # the first 48 bits: milliseconds
    assert all(before < value for value in ids)
    assert len(set(ids)) == len(ids)


async def test_uuid_v7_step_numbers_ids_from_one_and_refuses_steps_out_of_range(
    database_url: str,
) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        first = await connection.fetchval("SELECT uuid_v7()")
        steps = [0, 1, 2, 255, 2**30 - 1]
        ids = [await connection.fetchval("SELECT uuid_v7_step($1, $2)", first, s) for s in steps]
        refused = [
            await connection.fetchval("SELECT uuid_v7_step($1, $2)", first, s) for s in (-1, 2**30)
        ]
        nulls = [
            await connection.fetchval("SELECT uuid_v7_step($1, $2)", *args)
            for args in ((None, 1), (first, None))
        ]
        # inlined into the fan-out's statement, not called once per row (migration 0010)
        plan = await connection.fetch(
            "EXPLAIN VERBOSE SELECT uuid_v7_step($1, g) FROM generate_series(1, 10) g", first
        )
    finally:
        await connection.close()
    assert ids == sorted(ids)
    for step, value in zip(steps, ids, strict=True):
        assert (value.version, value.variant) == (7, uuid.RFC_4122)
        assert value.int >> 64 == first.int >> 64  # timestamp, version and 12 random bits
        assert (value.int >> 32) & (2**30 - 1) == step  # the counter after the variant
        assert value.int & (2**32 - 1) == first.int & (2**32 - 1)  # 32 more random bits
    assert refused == nulls == [None, None]
    assert "uuid_v7_step" not in "\n".join(row[0] for row in plan)
