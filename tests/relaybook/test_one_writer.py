"""One writer per state (issue 34): a delivery is written only by the deliveries'
transitions (relaybook/deliveries), a notice only by the notices' SQL (relaybook/notices),
an attempt only by sending's (relaybook/sending), an event only by the journal's
(relaybook/journal), so each rule about their state has one place to live."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from relaybook.platform import sql

ROOT = Path(__file__).resolve().parents[2]

#: the tables, and the one package allowed to write each
OWNERS = {
    "deliveries": "relaybook/deliveries",
    "notices": "relaybook/notices",
    "send_attempts": "relaybook/sending",
    "delivery_events": "relaybook/journal",
}

#: not scanned, and why
EXCLUDED = {
    # history: applied migrations never change (database.py refuses an edited one); the
    # definitions they apply from their owners' SQL (defined_*.sql) hold only includes
    "relaybook/migrations",
    # tests set rows up in states the test is about
    "tests",
    # benchmarks seed a database straight into the tables with states only the whole
    # pipeline reaches (a fan-out already "sent", a 60/15/10/10/5 mix of outcomes), at a
    # size and id layout their figures (BENCHMARKS.md) are measured against
    "bench/console_pages.py",
    "bench/ingest.py",
    # tools and environments, not relaybook's code
    ".venv",
    ".git",
    "node_modules",
}


def writes(table: str) -> re.Pattern[str]:
    """INSERT INTO / UPDATE [ONLY] / DELETE FROM ``table``, any case and spacing (across
    lines too), not ``other_table`` nor ``table_other``."""
    return re.compile(
        rf"\b(?:insert\s+into|update(?:\s+only)?|delete\s+from)\s+(?:public\.)?{table}\b",
        re.IGNORECASE,
    )


def writers(root: Path, table: str) -> list[str]:
    """The .sql and .py files under ``root``, outside ``table``'s owner and EXCLUDED, that
    write ``table``."""
    pattern = writes(table)
    found = []
    for path in sorted([*root.rglob("*.sql"), *root.rglob("*.py")]):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(OWNERS[table] + "/") or any(
            relative == excluded or relative.startswith(excluded + "/") for excluded in EXCLUDED
        ):
            continue
        if pattern.search(path.read_text(encoding="utf-8", errors="replace")):
            found.append(relative)
    return found


@pytest.mark.parametrize("table", sorted(OWNERS))
def test_only_its_owner_writes_the_table(table: str) -> None:
    assert writers(ROOT, table) == [], f"write {table} through {OWNERS[table]}'s SQL"


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO deliveries (id) VALUES (1)",
        "insert   into\n  deliveries(id)",
        "UPDATE deliveries d SET status = 'sent'",
        "update only deliveries set x = 1",
        "WITH x AS (\n    UPDATE\n\tdeliveries SET a = 1)",
        "DELETE FROM public.deliveries",
    ],
)
def test_the_scan_sees_a_write_however_it_is_spelled(statement: str) -> None:
    assert writes("deliveries").search(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM deliveries",
        "INSERT INTO delivery_events (id) VALUES (1)",
        "UPDATE deliveries_archive SET a = 1",
        "UPDATE job_pages SET due_at = NULL FROM deliveries",
    ],
)
def test_the_scan_leaves_reads_and_other_tables_be(statement: str) -> None:
    assert not writes("deliveries").search(statement)


async def test_the_functions_a_migrated_database_runs_are_their_owners_sql(
    database_url: str,
) -> None:
    """settle_notices (a notice's final status) and delivery_status_after (the deliveries'
    "only climbs") are defined in their owners' SQL, and the migrations apply them from
    there: the database runs that text, not an older migration's."""
    owners = {
        "settle_notices": sql.load("relaybook.notices")["settle_notices_function"],
        "delivery_status_after": sql.load("relaybook.deliveries")["status_rule"],
        "delivery_statuses": sql.load("relaybook.deliveries")["status_rule"],
    }
    connection = await asyncpg.connect(database_url)
    try:
        for name, owner in owners.items():
            body = await connection.fetchval(
                "SELECT prosrc FROM pg_proc"
                " WHERE proname = $1 AND pronamespace = 'public'::regnamespace",
                name,
            )
            assert body is not None, name
            assert body in owner, name
    finally:
        await connection.close()
