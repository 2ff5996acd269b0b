"""What the PostgreSQL store promises beyond the contract every store keeps (tests/test_store.py runs that on both):
migrations that several processes apply once, quotas exact across stores, transient failures as a typed error,
statements with a timeout, advisory locks, notifications between processes, and a password that never shows.

Everything runs against a real PostgreSQL server (fixture ``postgresql_url``), except the parameter rewriting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from bot.db import (
    Job,
    JobKind,
    MigrationError,
    NewJob,
    Provider,
    QuotaLimits,
    SchemaTooNewError,
    SqliteStore,
    StoreBusyError,
    StoreConnectError,
    StoreUnavailableError,
    create_job,
    open_store,
)
from bot.db.postgres import PostgresStore, load_postgresql_migrations, rewrite_parameters
from bot.db.schema import Migration
from bot.db.store import lock_key
from tests.conftest import free_port

GUILD = 501
USER = 502
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC).timestamp()
PASSWORD = "s3cret-Pa55word"  # a made-up password that must never show


def clock() -> float:
    return NOON


def request(user_id: int = USER, guild_id: int = GUILD) -> NewJob:
    return NewJob(
        guild_id=guild_id,
        channel_id=1,
        user_id=user_id,
        kind=JobKind.GENERATE,
        prompt="a lighthouse",
        model="flux-dev",
        size="1:1",
        count=1,
        provider=Provider.BFL,
    )


def with_password(url: str, password: str = PASSWORD, *, port: int | None = None, database: str | None = None) -> str:
    """``url`` with a password (the test server trusts loopback, so any password is accepted)."""
    parts = urlsplit(url)
    host = f"{parts.hostname}:{port if port is not None else parts.port}"
    path = f"/{database}" if database is not None else parts.path
    return parts._replace(netloc=f"{parts.username}:{password}@{host}", path=path).geturl()


@asynccontextmanager
async def admin(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, beside the store."""
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for a condition that another connection brings about (a deadline, not a measurement)."""
    async with asyncio.timeout(timeout):
        while not await _value(predicate()):
            await asyncio.sleep(0.02)


async def _value(result: object) -> object:
    return await result if asyncio.iscoroutine(result) else result


# --- parameters ------------------------------------------------------------------------------------------


def test_named_and_positional_parameters_become_numbered_ones() -> None:
    named = rewrite_parameters("SELECT * FROM jobs WHERE guild_id = :guild AND (user_id = :user OR :guild = 0)")
    assert named.sql == "SELECT * FROM jobs WHERE guild_id = $1 AND (user_id = $2 OR $1 = 0)"
    assert named.arguments({"user": 7, "guild": 5, "unused": 1}) == [5, 7]
    positional = rewrite_parameters("UPDATE jobs SET status = ? WHERE id = ?")
    assert positional.sql == "UPDATE jobs SET status = $1 WHERE id = $2"
    assert positional.arguments(("failed", 3)) == ["failed", 3]
    assert rewrite_parameters("SELECT 1").arguments(()) == []


def test_casts_strings_names_comments_and_dollar_quotes_are_left_alone() -> None:
    sql = (
        "SELECT :a::bigint, ':not' || 'it''s ?', \"odd:name?\", E'\\':x', $$ :y ? $$, $tag$ :z $tag$ -- :c ?\n"
        "/* :d /* ? */ :e */ FROM t WHERE x = ANY(?::text[])"
    )
    with pytest.raises(ValueError, match="both"):
        rewrite_parameters(sql)
    rewritten = rewrite_parameters(sql.replace("ANY(?::text[])", "ANY(:list::text[])"))
    assert rewritten.sql == (
        "SELECT $1::bigint, ':not' || 'it''s ?', \"odd:name?\", E'\\':x', $$ :y ? $$, $tag$ :z $tag$ -- :c ?\n"
        "/* :d /* ? */ :e */ FROM t WHERE x = ANY($2::text[])"
    )
    assert rewritten.names == ("a", "list")


def test_parameters_that_do_not_fit_the_statement_are_refused() -> None:
    with pytest.raises(ValueError, match=":user"):
        rewrite_parameters("SELECT :guild, :user").arguments({"guild": 1})
    with pytest.raises(ValueError, match="mapping"):
        rewrite_parameters("SELECT :guild").arguments((1,))
    with pytest.raises(ValueError, match="2 \\? parameter"):
        rewrite_parameters("SELECT ?, ?").arguments((1,))
    with pytest.raises(ValueError, match="sequence"):
        rewrite_parameters("SELECT ?").arguments({"a": 1})


def test_lock_keys_are_stable_signed_64_bit_numbers() -> None:
    assert lock_key("quota:1") == lock_key("quota:1") != lock_key("quota:2")
    assert -(2**63) <= lock_key("quota:1") < 2**63
    assert lock_key("fluxbot:migrations") == 401386719867797563  # the same in every process and version


# --- migrations ------------------------------------------------------------------------------------------


async def test_opening_migrates_once_and_opening_again_changes_nothing(postgresql_url: str) -> None:
    latest = load_postgresql_migrations()[-1].version
    async with await PostgresStore.open(postgresql_url, clock=clock) as store:
        assert store.schema_version == latest
        assert store.dialect == "postgresql"
        job = await create_job(store, request(), QuotaLimits())
        assert isinstance(job, Job)
    async with await PostgresStore.open(postgresql_url, clock=clock) as store, admin(postgresql_url) as conn:
        assert store.schema_version == latest
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [(row["version"], row["name"]) for row in rows] == [
            (migration.version, migration.name) for migration in load_postgresql_migrations()
        ]
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 1


async def test_stores_opening_together_migrate_once(postgresql_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(postgresql_url, clock=clock) for _ in range(4)))
    try:
        assert {store.schema_version for store in stores} == {load_postgresql_migrations()[-1].version}
        async with admin(postgresql_url) as conn:
            versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row[0] for row in versions] == [m.version for m in load_postgresql_migrations()]
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_a_database_from_a_newer_version_is_refused_and_left_alone(postgresql_url: str) -> None:
    async with await PostgresStore.open(postgresql_url, clock=clock):
        pass
    known = load_postgresql_migrations()[-1].version
    async with admin(postgresql_url) as conn:
        await conn.execute("INSERT INTO schema_migrations VALUES ($1, 'from_the_future', 0)", known + 1)
    with pytest.raises(SchemaTooNewError, match=f"schema version {known + 1}.*up to {known}"):
        await PostgresStore.open(postgresql_url)
    async with admin(postgresql_url) as conn:
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == known + 1


async def test_a_failing_migration_leaves_the_database_as_it_was(postgresql_url: str) -> None:
    shipped = load_postgresql_migrations()
    broken = Migration(len(shipped) + 1, "broken", "CREATE TABLE extra (x integer); INSERT INTO nowhere VALUES (1);")
    with pytest.raises(MigrationError, match=rf"postgresql/{broken.version:04d}_broken\.sql failed"):
        await PostgresStore.open(postgresql_url, migrations=[*shipped, broken])
    async with admin(postgresql_url) as conn:  # not the good migrations before it either
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables == 0


async def test_open_store_picks_the_backend_from_the_url(postgresql_url: str) -> None:
    async with await open_store(postgresql_url, clock=clock) as store:
        assert isinstance(store, PostgresStore)
    async with await open_store(postgresql_url.replace("postgresql://", "postgres://", 1)) as store:
        assert store.dialect == "postgresql"
    with pytest.raises(ValueError, match="mysql"):
        await open_store("mysql://user:pw@host/db")


# --- quotas across processes -----------------------------------------------------------------------------


async def test_the_server_limit_holds_across_stores_and_members(postgresql_url: str) -> None:
    limits = QuotaLimits(guild_daily=7, max_concurrent=2)
    async with (
        await PostgresStore.open(postgresql_url, clock=clock) as first,
        await PostgresStore.open(postgresql_url, clock=clock) as second,
    ):
        results = await asyncio.gather(
            *(create_job((first, second)[n % 2], request(user_id=n % 5), limits) for n in range(40))
        )
        accepted = [result for result in results if isinstance(result, Job)]
        assert len(accepted) == 7
        per_member = [sum(job.user_id == user for job in accepted) for user in range(5)]
        assert max(per_member) <= 2


# --- transactions and locks ------------------------------------------------------------------------------


async def test_a_transaction_sees_its_own_writes_and_others_see_them_at_commit(postgresql_url: str) -> None:
    async with await PostgresStore.open(postgresql_url, clock=clock) as store:
        seen_outside: list[object] = []
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO bot_state (key, value) VALUES (?, ?)", ("k", "v"))
            assert (await store.fetch_one("SELECT value FROM bot_state WHERE key = ?", ("k",)))[0] == "v"  # type: ignore[index]
            outside = asyncio.create_task(store.fetch_all("SELECT value FROM bot_state"))
            seen_outside = await outside
        assert seen_outside == []
        assert len(await store.fetch_all("SELECT value FROM bot_state")) == 1
        with pytest.raises(RuntimeError, match="nest"):
            async with store.transaction(), store.transaction():
                pass


async def test_a_named_lock_makes_another_stores_transaction_wait_until_commit(postgresql_url: str) -> None:
    async with (
        await PostgresStore.open(postgresql_url, clock=clock) as first,
        await PostgresStore.open(postgresql_url, clock=clock) as second,
        admin(postgresql_url) as conn,
    ):
        order: list[str] = []

        async def later() -> None:
            async with second.transaction() as tx:
                await tx.lock("quota:9")
                order.append("second")

        async with first.transaction() as tx:
            await tx.lock("quota:9")
            waiting = asyncio.create_task(later())
            await wait_until(
                lambda: conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            )
            assert not waiting.done()
            order.append("first")
        await waiting
        assert order == ["first", "second"]


# --- failures --------------------------------------------------------------------------------------------


async def test_a_server_that_cannot_be_reached_is_a_typed_error_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://fluxbot:{PASSWORD}@127.0.0.1:{free_port()}/fluxbot"
    with pytest.raises(StoreUnavailableError) as caught:
        await PostgresStore.open(url, busy_window=0.3)
    assert isinstance(caught.value, StoreBusyError)  # what the runner already retries
    _assert_hidden(caught.value, caplog)


async def test_a_database_that_refuses_the_connection_is_a_typed_error_without_the_password(
    postgresql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreConnectError, match="does not exist") as caught:
        await open_store(with_password(postgresql_url, database="no_such_database"))
    _assert_hidden(caught.value, caplog)


async def test_the_store_never_shows_its_password(postgresql_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with await PostgresStore.open(with_password(postgresql_url), clock=clock) as store:
        assert PASSWORD not in repr(store) and "***" in repr(store)
        with pytest.raises(asyncpg.PostgresError) as caught:
            await store.fetch_all("SELECT * FROM no_such_table")
        _assert_hidden(caught.value, caplog)


def _assert_hidden(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    chain: BaseException | None = error
    while chain is not None:
        assert PASSWORD not in str(chain) and PASSWORD not in repr(chain)
        chain = chain.__cause__ or chain.__context__
    assert all(PASSWORD not in record.getMessage() for record in caplog.records)


async def test_a_lost_connection_is_a_typed_error_and_the_store_carries_on(postgresql_url: str) -> None:
    async with (
        await PostgresStore.open(postgresql_url, clock=clock, max_size=1) as store,
        admin(postgresql_url) as conn,
    ):
        with pytest.raises(StoreUnavailableError, match="unavailable"):
            async with store.transaction() as tx:
                pid = (await tx.fetch_one("SELECT pg_backend_pid()"))[0]  # type: ignore[index]
                await conn.execute("SELECT pg_terminate_backend($1)", pid)
                await tx.fetch_all("SELECT 1")
        assert (await store.fetch_one("SELECT 1"))[0] == 1  # type: ignore[index]  # a new connection


async def test_a_statement_past_its_timeout_is_a_typed_error(postgresql_url: str) -> None:
    async with await PostgresStore.open(postgresql_url, clock=clock, query_timeout=0.2) as store:
        with pytest.raises(StoreUnavailableError):
            await store.fetch_all("SELECT pg_sleep(30)")
        assert (await store.fetch_one("SELECT 2"))[0] == 2  # type: ignore[index]


async def test_a_mistake_in_a_statement_is_not_mistaken_for_unavailability(postgresql_url: str) -> None:
    async with await PostgresStore.open(postgresql_url, clock=clock) as store:
        with pytest.raises(asyncpg.UndefinedColumnError):
            await store.write_alone("UPDATE jobs SET no_such_column = 1")
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await store.write_alone("INSERT INTO usage (guild_id, user_id, day, used) VALUES (1, 1, 'd', -1)")


# --- notifications ---------------------------------------------------------------------------------------


async def test_a_notification_reaches_the_listeners_of_every_store(postgresql_url: str) -> None:
    async with (
        await PostgresStore.open(postgresql_url, clock=clock) as first,
        await PostgresStore.open(postgresql_url, clock=clock) as second,
    ):
        heard_first: list[str] = []
        heard_second: list[str] = []
        await first.listen("fluxbot_work", heard_first.append)
        await second.listen("fluxbot_work", heard_second.append)
        await second.listen("other", heard_second.append)
        await second.notify("fluxbot_work", "job:17")
        await wait_until(lambda: heard_first and heard_second)
        assert heard_first == heard_second == ["job:17"]


async def test_listening_resumes_after_its_connection_is_lost(postgresql_url: str) -> None:
    async with (
        await PostgresStore.open(postgresql_url, clock=clock) as store,
        admin(postgresql_url) as conn,
    ):
        heard: list[str] = []
        await store.listen("fluxbot_work", heard.append)
        listening = "SELECT pid FROM pg_stat_activity WHERE application_name = 'fluxbot-listen' AND datname = $1"
        database = postgresql_url.rpartition("/")[2]
        (old,) = [row[0] for row in await conn.fetch(listening, database)]
        await conn.execute("SELECT pg_terminate_backend($1)", old)

        async def listening_again() -> bool:
            return [row[0] for row in await conn.fetch(listening, database)] not in ([], [old])

        await wait_until(listening_again)
        await conn.execute("SELECT pg_notify('fluxbot_work', 'after')")
        await wait_until(lambda: heard)
        assert heard == ["after"]


async def test_the_postgresql_schema_has_the_tables_columns_indexes_and_triggers_of_the_sqlite_one(
    postgresql_url: str, tmp_path: Path
) -> None:
    async with await SqliteStore.open(tmp_path / "fluxbot.db") as sqlite:
        tables = [row[0] for row in await sqlite.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")]
        sqlite_columns = {
            table: [row["name"] for row in await sqlite.fetch_all(f"SELECT name FROM pragma_table_info('{table}')")]
            for table in tables
        }
        sqlite_indexes = {
            row[0]
            for row in await sqlite.fetch_all(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'"
            )
        }
        sqlite_triggers = {
            row[0] for row in await sqlite.fetch_all("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
    async with await PostgresStore.open(postgresql_url), admin(postgresql_url) as conn:
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name <> 'schema_migrations' ORDER BY table_name, ordinal_position"
        )
        postgresql_columns: dict[str, list[str]] = {}
        for row in rows:
            postgresql_columns.setdefault(row["table_name"], []).append(row["column_name"])
        postgresql_indexes = {
            row[0]
            for row in await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
            if not row[0].endswith("_pkey")
        }
        postgresql_triggers = {
            row[0] for row in await conn.fetch("SELECT DISTINCT trigger_name FROM information_schema.triggers")
        }
    assert postgresql_columns == sqlite_columns
    assert postgresql_indexes == sqlite_indexes
    assert postgresql_triggers == sqlite_triggers == {"jobs_reserve", "jobs_settle", "jobs_drop_inline"}
