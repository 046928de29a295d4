"""What a started service stands on (relaybook/tooling/infrastructure.py): its readiness against the
database's schema, the settings a single deployable refuses to start without, the
process-wide tuning it applies."""

from __future__ import annotations

import subprocess
import sys
import traceback

import pytest
from structlog.testing import capture_logs

from relaybook.platform import database
from relaybook.platform.settings import SettingsError
from relaybook.tooling.infrastructure import infrastructure, require_configured
from relaybook.tooling.settings import Settings, load
from tests.support import PROVIDER_SETTINGS

SERVERS = {
    "RELAYBOOK_DATABASE_URL": "postgresql://relaybook@db.internal/relaybook",
    "RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS": "kafka.internal:9092",
}


def test_a_started_service_collects_garbage_rarely_and_skips_what_startup_made() -> None:
    # in a process of its own: the tuning is process-wide and for good
    code = (
        "import gc, relaybook.tooling.system\n"
        "from relaybook.platform.runtime import settle_garbage_collector\n"
        "settle_garbage_collector()\n"
        "print(gc.get_threshold(), gc.get_freeze_count() > 10_000)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "(20000, 20, 20) True"


async def test_ready_on_the_schema_or_a_newer_one_not_on_an_older_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling deploy migrates first: the old release stays ready on the newer schema
    (one warning a process, not one a probe); a schema behind the code is not ready."""
    monkeypatch.setattr(database, "_NEWER_NOTED", set())
    newest = database.newest_version()
    async with infrastructure(settings, pool_size=1) as infra:
        await infra.check_database()
        await infra.pool.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, 'next', 'x')",
            newest + 1,
        )
        with capture_logs() as logged:
            for _ in range(3):
                await infra.check_database()
        noted = [entry for entry in logged if "database_migration" in entry]
        assert [(e["log_level"], e["database_migration"], e["code_migration"]) for e in noted] == [
            ("warning", newest + 1, newest)
        ]
        await infra.pool.execute("DELETE FROM schema_migrations WHERE version >= $1", newest)
        with pytest.raises(
            database.DatabaseError,
            match=rf"^schema at migration {newest - 1}, the code needs {newest}: "
            r"run `relaybook migrate`$",
        ):
            await infra.check_database()


async def test_a_deployable_starts_on_a_schema_a_newer_release_migrated(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rollback: start-up applies nothing, warns once, and the deployable is ready."""
    monkeypatch.setattr(database, "_NEWER_NOTED", set())
    assert settings.database_url is not None
    await database.migrate(settings.database_url)
    connection = await database.connect(settings.database_url)
    try:
        await connection.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, 'next', 'x')",
            database.newest_version() + 1,
        )
    finally:
        await connection.close()
    with capture_logs() as logged:
        async with infrastructure(settings, pool_size=1) as infra:
            await infra.check_database()
    assert len([entry for entry in logged if "database_migration" in entry]) == 1


@pytest.mark.parametrize(
    ("command", "left_out", "refused"),
    [
        ("dispatcher", "RELAYBOOK_SENDGRID_API_KEY", False),
        ("tracker", "RELAYBOOK_TWILIO_AUTH_TOKEN", False),
        ("worker", "RELAYBOOK_SENDGRID_API_KEY", True),
        ("worker", "RELAYBOOK_TWILIO_ACCOUNT_SID", True),
        ("worker", "RELAYBOOK_TWILIO_FROM", True),
        ("worker", "RELAYBOOK_SENDGRID_WEBHOOK_PUBLIC_KEYS", False),
        ("ingest", "RELAYBOOK_SENDGRID_WEBHOOK_PUBLIC_KEYS", True),
        ("ingest", "RELAYBOOK_TWILIO_AUTH_TOKEN", True),
        ("ingest", "RELAYBOOK_SENDGRID_API_KEY", False),
        ("ingest", "RELAYBOOK_PUBLIC_WEBHOOK_BASE_URL", True),
        ("worker", "RELAYBOOK_PUBLIC_WEBHOOK_BASE_URL", True),
    ],
)
def test_a_single_deployable_requires_the_provider_settings_it_works_with(
    command: str, left_out: str, refused: bool
) -> None:
    settings = load(SERVERS | {k: v for k, v in PROVIDER_SETTINGS.items() if k != left_out})
    if refused:
        with pytest.raises(SettingsError, match=rf"^relaybook {command} needs {left_out} "):
            require_configured(settings, command)
    else:
        require_configured(settings, command)
    # `up` starts its deployables without the check: its sandbox stands in for providers
    require_configured(settings, command, providers=False)


def test_the_servers_are_named_before_the_providers() -> None:
    with pytest.raises(
        SettingsError,
        match=r"^relaybook worker needs RELAYBOOK_DATABASE_URL and "
        r"RELAYBOOK_KAFKA_BOOTSTRAP_SERVERS \(only `relaybook up`",
    ):
        require_configured(load({}), "worker", providers=False)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        # asyncpg's parser quotes the piece it cannot read: here a piece of the password
        ("postgresql://relay:s3cr/et@127.0.0.1:5432/db", "is not a PostgreSQL URL"),
        ("postgresql://relay:s3cret@127.0.0.1:1/db", "cannot connect to PostgreSQL: "),
    ],
)
async def test_a_database_out_of_reach_is_said_without_the_password(url: str, said: str) -> None:
    for opening in (database.connect(url), database.create_pool(url)):
        with pytest.raises(database.DatabaseError) as refused:
            await opening
        shown = "".join(traceback.format_exception(refused.value))
        assert said in str(refused.value)
        assert "s3cr" not in shown
