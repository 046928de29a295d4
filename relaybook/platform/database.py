"""PostgreSQL: connection pools and the migrations that build the schema.

Migrations are the ordered SQL files in ``relaybook/migrations`` (``NNNN_name.sql``), each
applied once in its own transaction and recorded in ``schema_migrations`` with a
checksum. An advisory lock makes concurrent ``migrate`` runs (several replicas starting
at once) wait for each other instead of racing.

Migrations only add (expand, then contract a release later: deploy/README.md), so the
release before a migration runs on the schema after it: a rolling deploy migrates first
while the old pods still serve, and a rollback runs the old code on the newer schema.
Only ``relaybook migrate`` itself refuses a database newer than its code.

Definitions (``defined_<name>.sql`` in the same folder): functions whose text belongs to
a package's SQL rather than to history. Such a file holds ``-- include:
<package>.<name>`` lines (:func:`relaybook.platform.sql.expand`), expanded when
migrating; after the numbered migrations, each definition whose expanded text changed
since it was last applied (``schema_definitions``, by checksum) is applied again, in
its own transaction. So a rule is written once, in its owner's SQL, and a numbered
migration never changes meaning: the definitions' statements must be repeatable
(``CREATE OR REPLACE``). They are applied after every numbered migration: a numbered
migration must not depend on a definition (a fresh database has none yet). A database
newer than the code is left as it is, definitions too; a release that changes a
definition should add a numbered migration as well (an empty one will do), so that the
release before it, starting on the newer database, leaves the new text be.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import asyncpg
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from relaybook.platform import sql
from relaybook.platform.logs import get_logger

log = get_logger(__name__)

# pg_advisory_lock key: "relaybook" in ASCII, truncated to fit a bigint
MIGRATION_LOCK_KEY = 0x72656C6179626F6F
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_DEFINED = re.compile(r"^defined_([a-z0-9_]+)\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS schema_definitions (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    migration   integer NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


#: what a pool hands out and what ``connect`` returns: both run queries the same way
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class DatabaseError(RuntimeError):
    """The database cannot be reached or is not in the state this code expects."""


def checksum(text: str) -> str:
    """What the runner records of a migration's or a definition's text."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return checksum(self.sql)


@dataclasses.dataclass(frozen=True)
class Definition:
    """A repeatable definition (``defined_<name>.sql``), its includes expanded."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return checksum(self.sql)


@functools.cache
def definitions() -> list[Definition]:
    """Every definition shipped with this code, by name (read once per process)."""
    found = []
    for entry in resources.files("relaybook.migrations").iterdir():
        match = _DEFINED.match(entry.name)
        if match:
            found.append(Definition(match[1], sql.expand(entry.read_text(encoding="utf-8"))))
    return sorted(found, key=lambda definition: definition.name)


@functools.cache
def migrations() -> list[Migration]:
    """Every migration shipped with this code, in order (read once per process)."""
    found = []
    for entry in resources.files("relaybook.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise DatabaseError(f"migration files are not numbered 1..n without gaps: {versions}")
    return found


async def migrate(
    dsn: str, *, default_agency: str = "default", newer_ok: bool = False
) -> list[Migration]:
    """Applies the migrations this database lacks; returns those it applied.

    Idempotent, and safe when several processes run it at once. Refuses to run when an
    applied migration's file has changed since. A database newer than the code (a newer
    release migrated it) is refused unless ``newer_ok``: ``relaybook migrate`` of an
    older release must not pass for a success, while a service starting on it (a
    rollback, the old pods of a rolling deploy) works, saying so once (:func:`note_newer`).
    ``default_agency``: the agency rows from before agencies go to (migration 0014).
    """
    connection = await connect(dsn)
    try:
        await connection.execute(
            "SELECT set_config('relaybook.default_agency', $1, false)", default_agency
        )
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await connection.execute(_BOOKKEEPING)
            return await _apply_missing(connection, newer_ok=newer_ok)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await connection.close()


async def _apply_missing(connection: asyncpg.Connection, *, newer_ok: bool) -> list[Migration]:
    applied = {
        row["version"]: row["checksum"]
        for row in await connection.fetch("SELECT version, checksum FROM schema_migrations")
    }
    known = migrations()
    newest_known = known[-1].version if known else 0
    if applied and max(applied) > newest_known:
        if not newer_ok:
            raise DatabaseError(
                f"the database is at migration {max(applied)}, newer than this code "
                f"({newest_known}): upgrade relaybook"
            )
        note_newer(max(applied))
    done = []
    for migration in known:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise DatabaseError(
                    f"migration {migration.version:04d}_{migration.name} was changed after "
                    "it was applied: add a new migration instead"
                )
            continue
        async with connection.transaction():
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info("migration applied", version=migration.version, name=migration.name)
        done.append(migration)
    if not (applied and max(applied) > newest_known):  # a newer release's: left as it is
        await _apply_definitions(connection, newest_known)
    return done


async def _apply_definitions(connection: asyncpg.Connection, newest_known: int) -> None:
    """Applies the definitions whose text changed since they were last applied (or never
    were). One recorded by a newer release (a higher migration) is left be."""
    recorded = {
        row["name"]: (row["checksum"], row["migration"])
        for row in await connection.fetch(
            "SELECT name, checksum, migration FROM schema_definitions"
        )
    }
    for definition in definitions():
        checksum, migration = recorded.get(definition.name, (None, 0))
        if checksum == definition.checksum or migration > newest_known:
            continue
        async with connection.transaction():
            await connection.execute(definition.sql)
            await connection.execute(
                """
                INSERT INTO schema_definitions (name, checksum, migration) VALUES ($1, $2, $3)
                ON CONFLICT (name) DO UPDATE
                SET checksum = excluded.checksum, migration = excluded.migration,
                    applied_at = now()
                """,
                definition.name,
                definition.checksum,
                newest_known,
            )
        log.info("definition applied", name=definition.name)


#: the newer schema versions this process has warned about: once each, not at every probe
_NEWER_NOTED: set[int] = set()


def newest_version() -> int:
    """The migration this code's schema ends with."""
    return migrations()[-1].version


def note_newer(version: int) -> None:
    """Logs once per process that the database is at ``version``, newer than this code:
    expected while a rolling deploy replaces this release, and after a rollback; harmless
    as long as migrations only add. A warning, so a release left half rolled out shows."""
    if version in _NEWER_NOTED:
        return
    _NEWER_NOTED.add(version)
    log.warning(
        "the database schema is newer than this code: running on it (migrations only add)",
        database_migration=version,
        code_migration=newest_version(),
    )


#: seconds to connect, before PostgreSQL is called away
CONNECT_TIMEOUT_S = 10


@contextlib.contextmanager
def _connecting() -> Iterator[None]:
    """Driver errors while connecting, as :class:`DatabaseError`: why, in one line that
    holds no part of the URL's password."""
    try:
        yield
    except TimeoutError as error:
        raise DatabaseError(
            f"cannot connect to PostgreSQL: no answer in {CONNECT_TIMEOUT_S} s"
        ) from error
    except (OSError, asyncpg.PostgresError) as error:
        # the cause kept: whether this is an outage is read from it
        raise DatabaseError(f"cannot connect to PostgreSQL: {error}") from error
    except ValueError:  # asyncpg's URL parser quotes the part it could not read
        raise DatabaseError(
            "RELAYBOOK_DATABASE_URL is not a PostgreSQL URL asyncpg can read"
        ) from None


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """One connection, with driver errors translated into :class:`DatabaseError`."""
    with _connecting():
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S, **kwargs)


#: The planner's price of reading a page out of order, for relaybook's sessions. The
#: default (4.0) prices disks that seek: with it, updating 1000 deliveries by key
#: scanned and hashed the whole table instead (44 ms a batch instead of 5, the send
#: workers' largest cost). relaybook's rows are read from memory or SSD, where the usual
#: advice is 1.1.
RANDOM_PAGE_COST = "1.1"


class _PoolUsage(Collector):
    """``relaybook_db_pool_connections{state}``: the connections of this process's pools,
    in use, idle and at most, read when scraped (a pool waiting for a free connection shows
    as in_use at max)."""

    def __init__(self) -> None:
        self._pools: list[asyncpg.Pool] = []

    def watch(self, pool: asyncpg.Pool) -> None:
        self._pools = [p for p in self._pools if not p.is_closing()] + [pool]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "relaybook_db_pool_connections",
            "PostgreSQL connections of this process's pools, by state",
            labels=["state"],
        )
        pools = [p for p in self._pools if not p.is_closing()]
        idle = sum(p.get_idle_size() for p in pools)
        family.add_metric(["in_use"], sum(p.get_size() for p in pools) - idle)
        family.add_metric(["idle"], idle)
        family.add_metric(["max"], sum(p.get_max_size() for p in pools))
        yield family


POOLS = _PoolUsage()
REGISTRY.register(POOLS)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A connection pool; fails fast with :class:`DatabaseError` when the server is away."""
    with _connecting():
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=60,
            server_settings={"random_page_cost": RANDOM_PAGE_COST},
        )
    assert pool is not None
    POOLS.watch(pool)
    return pool


async def pending(dsn: str) -> list[Migration]:
    """The migrations this database has not applied yet (empty when it is current)."""
    connection = await connect(dsn)
    try:
        exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        applied = (
            {
                row["version"]
                for row in await connection.fetch("SELECT version FROM schema_migrations")
            }
            if exists
            else set()
        )
    finally:
        await connection.close()
    return [migration for migration in migrations() if migration.version not in applied]
