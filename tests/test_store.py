"""The store, specified against a real SQLite file and a real PostgreSQL database: migrations, the job lifecycle,
quotas, and settings."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from bot.db import (
    ACTIVE_STATUSES,
    BLOCKED_MEMBER_FIELD,
    MAX_BLOCK_REASON,
    BlockedMember,
    GuildSettings,
    Job,
    JobKind,
    JobStatus,
    LimitKind,
    Migration,
    MigrationError,
    NewJob,
    PollHandle,
    Provider,
    QuotaLimits,
    QuotaRefusal,
    SchemaTooNewError,
    SqliteStore,
    Store,
    StoreBusyError,
    active_jobs,
    add_blocked_term,
    block_member,
    blocked_members,
    blocked_terms,
    count_in,
    create_job,
    get_guild_settings,
    get_job,
    get_state,
    guild_usage_month,
    guild_usage_today,
    jobs_by_ids,
    jobs_in,
    jobs_owing_final_word,
    load_migrations,
    mark_failed,
    mark_lost,
    mark_posted,
    mark_submitted,
    mark_submitting,
    mark_succeeded,
    mark_told,
    member_block,
    polling_handles,
    queue_position,
    recent_limit_changes,
    remove_blocked_term,
    reset_guild_settings,
    unblock_member,
    update_guild_settings,
    user_usage,
    work,
)
from bot.db.days import month_bounds
from bot.db.schema import split_statements
from bot.db.usage import evaluate_quota
from tests.conftest import FakeClock

GUILD = 111
CHANNEL = 222
USER = 333
ADMIN = 444
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2025, 3, 15, 0, 0, tzinfo=UTC).timestamp()
NO_LIMITS = QuotaLimits()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "fluxbot.db"


#: For tests of what only the SQLite store does (its file, its connection, its pragmas).
sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


def request(**overrides: object) -> NewJob:
    fields: dict[str, object] = {
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "user_id": USER,
        "kind": JobKind.GENERATE,
        "prompt": "a lighthouse at dusk",
        "model": "flux-dev",
        "size": "1024x1024",
        "count": 1,
        "provider": Provider.BFL,
    } | overrides
    return NewJob(**fields)  # type: ignore[arg-type]


async def accepted(store: Store, new: NewJob | None = None, limits: QuotaLimits = NO_LIMITS) -> Job:
    result = await create_job(store, new or request(), limits)
    assert isinstance(result, Job), result
    return result


async def refused(store: Store, new: NewJob | None = None, limits: QuotaLimits = NO_LIMITS) -> QuotaRefusal:
    result = await create_job(store, new or request(), limits)
    assert isinstance(result, QuotaRefusal), result
    return result


async def usage_row(store: Store, day: str, user_id: int = USER) -> tuple[int, int]:
    row = await store.fetch_one(
        "SELECT reserved, used FROM usage WHERE guild_id = ? AND user_id = ? AND day = ?", (GUILD, user_id, day)
    )
    assert row is not None
    return row["reserved"], row["used"]


async def advance(store: Store, job_id: int, to: JobStatus) -> None:
    """Walk a queued job along the happy path until it reaches ``to`` (posting delivers one image)."""
    path = (JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.SUBMITTED, JobStatus.SUCCEEDED, JobStatus.POSTED)
    for status in path[1 : path.index(to) + 1]:
        if status is JobStatus.SUBMITTING:
            assert await mark_submitting(store, job_id)
        elif status is JobStatus.SUBMITTED:
            assert await mark_submitted(store, job_id, f"task-{job_id}")
        elif status is JobStatus.SUCCEEDED:
            assert await mark_succeeded(store, job_id, ["https://img/1.png"], None)
        else:
            assert await mark_posted(store, job_id, 1000 + job_id, 1)


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


# --- opening and migrating -----------------------------------------------------------------------------


async def test_open_creates_the_folder_and_migrates_to_the_latest_version(db_path: Path) -> None:
    latest = load_migrations()[-1].version
    async with await SqliteStore.open(db_path) as store:
        assert db_path.parent.is_dir()
        assert store.schema_version == latest
        tables = {row[0] for row in await store.fetch_all("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "usage", "guild_settings", "blocklist", "limit_changes"} <= tables
    assert user_version(db_path) == latest


@sqlite_only
async def test_connection_uses_wal_foreign_keys_and_a_busy_timeout(store: Store, db_path: Path) -> None:
    assert (await store.fetch_one("PRAGMA journal_mode"))[0] == "wal"  # type: ignore[index]
    assert (await store.fetch_one("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
    assert (await store.fetch_one("PRAGMA busy_timeout"))[0] == 5000  # type: ignore[index]
    assert (await store.fetch_one("PRAGMA synchronous"))[0] == 1  # type: ignore[index]  # NORMAL
    with pytest.raises(sqlite3.IntegrityError):
        await accepted(store, request(parent_job_id=999))


async def test_jobs_survive_a_restart_and_migrations_run_only_once(db_path: Path, clock: FakeClock) -> None:
    async with await SqliteStore.open(db_path, clock=clock) as store:
        job = await accepted(store)
        assert await mark_submitting(store, job.id)
        assert await mark_submitted(store, job.id, "https://api.bfl.ai/v1/get_result?id=abc")
    async with await SqliteStore.open(db_path, clock=clock) as store:  # would fail on "table jobs already exists"
        assert store.schema_version == load_migrations()[-1].version
        (resumed,) = await jobs_in(store, JobStatus.SUBMITTED)
        assert resumed == replace(
            job, status=JobStatus.SUBMITTED, provider_task_id=resumed.provider_task_id, submitted_at=NOON
        )
        assert resumed.provider_task_id == "https://api.bfl.ai/v1/get_result?id=abc"
        assert await usage_row(store, "2025-03-14") == (1, 0)


async def test_a_database_from_a_newer_version_is_refused(db_path: Path) -> None:
    async with await SqliteStore.open(db_path):
        pass
    known = load_migrations()[-1].version
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {known + 1}")
    with pytest.raises(SchemaTooNewError, match=f"schema version {known + 1}.*up to {known}"):
        await SqliteStore.open(db_path)
    assert user_version(db_path) == known + 1  # untouched


async def test_pending_migrations_apply_in_order_in_one_transaction(db_path: Path) -> None:
    shipped = load_migrations()
    broken = Migration(len(shipped) + 1, "broken", "CREATE TABLE extra (x INTEGER);\nINSERT INTO nowhere VALUES (1);")
    with pytest.raises(MigrationError, match=rf"{broken.version:04d}_broken\.sql failed"):
        await SqliteStore.open(db_path, migrations=[*shipped, broken])
    # Nothing at all was applied: not the good migrations before it, nor half of the broken one.
    assert user_version(db_path) == 0
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0

    fixed = Migration(len(shipped) + 1, "extra", "CREATE TABLE extra (x INTEGER);\nINSERT INTO extra VALUES (1);")
    async with await SqliteStore.open(db_path, migrations=[*shipped, fixed]) as store:
        assert store.schema_version == fixed.version
        assert (await store.fetch_one("SELECT x FROM extra"))[0] == 1  # type: ignore[index]
    with pytest.raises(MigrationError, match="out of sequence"):
        await SqliteStore.open(db_path, migrations=[shipped[0], replace(fixed, version=fixed.version + 1)])


def test_statements_are_split_without_breaking_strings_comments_or_triggers() -> None:
    script = """
        -- a comment; with a semicolon
        CREATE TABLE t (x TEXT DEFAULT 'a;b');
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN
            UPDATE t SET x = 'c;d'; DELETE FROM t WHERE x = ';';
        END;
        INSERT INTO t VALUES ('e'); INSERT INTO t VALUES ('f');
        -- trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 4
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    assert all(sqlite3.complete_statement(statement) for statement in statements)
    with pytest.raises(MigrationError, match="incomplete"):
        split_statements("CREATE TABLE t (x INTEGER)")


# --- the job lifecycle ---------------------------------------------------------------------------------


async def test_a_job_goes_from_queued_to_posted_and_is_charged(store: Store, clock: FakeClock) -> None:
    job = await accepted(store, request(count=2, seed=7, interaction_application_id=1, interaction_token="tok"))
    assert (job.status, job.reserved_images, job.charged_images, job.usage_day) == (
        JobStatus.QUEUED,
        2,
        0,
        "2025-03-14",
    )
    assert job.created_at == NOON and job.interaction_created_at == NOON
    assert job.interaction_expires_at == NOON + 15 * 60
    assert "tok" not in repr(job)
    assert await queue_position(store, job.id) == 1
    assert [j.id for j in await active_jobs(store, GUILD, USER)] == [job.id]

    assert await mark_submitting(store, job.id)
    assert await queue_position(store, job.id) is None
    clock.advance(1)
    assert await mark_submitted(store, job.id, "task-1")
    clock.advance(30)
    assert await mark_succeeded(store, job.id, ["https://img/1.png", "https://img/2.png"], seed=7)
    succeeded = await get_job(store, job.id)
    assert succeeded is not None
    assert succeeded.image_urls == ("https://img/1.png", "https://img/2.png")
    assert (succeeded.result_seed, succeeded.submitted_at, succeeded.finished_at) == (7, NOON + 1, NOON + 31)
    assert (await user_usage(store, GUILD, USER)).reserved_today == 2

    clock.advance(2)
    assert await mark_posted(store, job.id, message_id=9999, delivered=2)
    posted = await get_job(store, job.id)
    assert posted is not None and posted.is_terminal
    assert (posted.status, posted.posted_message_id, posted.posted_at, posted.charged_images) == (
        JobStatus.POSTED,
        9999,
        NOON + 33,
        2,
    )
    assert await usage_row(store, "2025-03-14") == (0, 2)
    assert await active_jobs(store, GUILD, USER) == []


async def test_a_synchronous_provider_may_go_from_submitting_straight_to_succeeded(store: Store) -> None:
    job = await accepted(store, request(provider=Provider.OPENAI))
    assert await mark_submitting(store, job.id)
    assert await mark_succeeded(store, job.id, ["https://img/1.png"], seed=None)
    done = await get_job(store, job.id)
    assert done is not None and done.provider_task_id is None and done.result_seed is None


async def test_transitions_from_the_wrong_status_are_refused_and_change_nothing(store: Store) -> None:
    job = await accepted(store)
    assert not await mark_submitted(store, job.id, "task")  # not submitting yet
    assert not await mark_succeeded(store, job.id, ["u"], None)
    assert not await mark_posted(store, job.id, 1, 1)
    assert not await mark_lost(store, job.id, "restart")  # only a submitting job can be lost
    assert await get_job(store, job.id) == job

    assert await mark_submitting(store, job.id)
    assert not await mark_submitting(store, job.id)  # never submitted twice
    assert await mark_submitted(store, job.id, "task")
    assert not await mark_lost(store, job.id, "restart")  # its outcome is known: keep polling it
    assert await mark_failed(store, job.id, "moderated", "the provider refused the prompt")
    for attempt in (
        mark_submitting(store, job.id),
        mark_submitted(store, job.id, "again"),
        mark_succeeded(store, job.id, ["u"], None),
        mark_posted(store, job.id, 1, 1),
        mark_failed(store, job.id, "x", "y"),
        mark_lost(store, job.id, "z"),
    ):
        assert not await attempt
    failed = await get_job(store, job.id)
    assert failed is not None
    assert (failed.status, failed.error_code, failed.provider_task_id) == (JobStatus.FAILED, "moderated", "task")
    assert not await mark_submitting(store, 424242)  # no such job
    with pytest.raises(ValueError, match="non-empty"):
        await mark_succeeded(store, job.id, [], None)


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.SUBMITTED, JobStatus.SUCCEEDED])
async def test_failing_an_active_job_releases_its_reservation(store: Store, status: JobStatus) -> None:
    job = await accepted(store, request(count=3))
    await advance(store, job.id, status)
    assert await usage_row(store, "2025-03-14") == (3, 0)
    assert await mark_failed(store, job.id, "timeout", "no result after 10 minutes")
    assert await usage_row(store, "2025-03-14") == (0, 0)
    failed = await get_job(store, job.id)
    assert failed is not None
    assert (failed.status, failed.charged_images, failed.finished_at) == (JobStatus.FAILED, 0, NOON)


async def test_a_lost_job_releases_its_reservation(store: Store) -> None:
    job = await accepted(store, request(count=2))
    assert await mark_submitting(store, job.id)
    assert await mark_lost(store, job.id, "the bot restarted while submitting")
    lost = await get_job(store, job.id)
    assert lost is not None
    assert (lost.status, lost.error_code, lost.charged_images) == (JobStatus.LOST, "lost", 0)
    assert await usage_row(store, "2025-03-14") == (0, 0)
    assert (await user_usage(store, GUILD, USER)).today == 0


async def test_posting_twice_charges_once_and_only_what_was_delivered(store: Store) -> None:
    job = await accepted(store, request(count=4))
    await advance(store, job.id, JobStatus.SUBMITTED)
    assert await mark_succeeded(store, job.id, ["a", "b", "c"], None)
    assert await mark_posted(store, job.id, 1, delivered=3)
    assert not await mark_posted(store, job.id, 1, delivered=3)
    assert await usage_row(store, "2025-03-14") == (0, 3)
    posted = await get_job(store, job.id)
    assert posted is not None and posted.charged_images == 3 and posted.reserved_images == 4


async def test_a_post_of_more_images_than_reserved_is_recorded_and_charged_only_the_reservation(
    store: Store,
) -> None:
    job = await accepted(store, request(count=1))
    await advance(store, job.id, JobStatus.SUBMITTED)
    assert await mark_succeeded(store, job.id, ["a", "b"], None)
    assert await mark_posted(store, job.id, 1, delivered=2)  # the post happened: it must be recorded
    posted = await get_job(store, job.id)
    assert posted is not None and (posted.status, posted.charged_images) == (JobStatus.POSTED, 1)
    assert await usage_row(store, "2025-03-14") == (0, 1)


async def test_ending_a_job_owes_its_member_a_last_word_and_saying_it_clears_the_token(store: Store) -> None:
    ended = []
    for end in ("posted", "failed", "lost"):
        job = await accepted(store, request(interaction_token="secret-token", interaction_application_id=7))
        if end == "lost":
            assert await mark_submitting(store, job.id)
            assert await mark_lost(store, job.id, "lost")
        elif end == "failed":
            assert await mark_failed(store, job.id, "x", "failed")
        else:
            await advance(store, job.id, JobStatus.SUBMITTED)
            assert await mark_succeeded(store, job.id, ["a"], None)
            assert await mark_posted(store, job.id, 1, delivered=1)
        ended.append(job.id)
    running = await accepted(store, request(interaction_token="still-needed"))

    owed = await jobs_owing_final_word(store)
    assert [job.id for job in owed] == ended  # a bot stopped now says them at its next start
    assert all(job.interaction_token == "secret-token" for job in owed)  # kept to say it

    for job_id in ended:
        await mark_told(store, job_id)
    assert await jobs_owing_final_word(store) == []
    rows = await store.fetch_all("SELECT id FROM jobs WHERE interaction_token IS NOT NULL")
    assert [row[0] for row in rows] == [running.id]


async def test_queue_positions_and_status_lookups_follow_job_order(store: Store) -> None:
    jobs = [await accepted(store, request(user_id=USER + n)) for n in range(4)]
    assert await mark_submitting(store, jobs[1].id)
    assert [await queue_position(store, job.id) for job in jobs] == [1, None, 2, 3]
    assert [job.id for job in await jobs_in(store, JobStatus.QUEUED)] == [jobs[0].id, jobs[2].id, jobs[3].id]
    assert [job.id for job in await jobs_in(store, JobStatus.SUBMITTING, JobStatus.QUEUED)] == [job.id for job in jobs]
    assert await jobs_in(store) == []


async def test_edits_need_a_source_and_can_point_at_their_parent(store: Store) -> None:
    with pytest.raises(ValueError, match="source_image_url"):
        request(kind=JobKind.EDIT)
    with pytest.raises(ValueError, match="at least one"):
        request(count=0)
    parent = await accepted(store)
    edit = await accepted(
        store, request(kind=JobKind.EDIT, source_image_url="https://img/1.png", parent_job_id=parent.id)
    )
    assert (edit.kind, edit.parent_job_id, edit.source_image_url) == (JobKind.EDIT, parent.id, "https://img/1.png")


async def test_the_runners_lookups_read_queued_and_submitted_jobs_in_order(store: Store, clock: FakeClock) -> None:
    jobs = [await accepted(store, request(user_id=USER + n)) for n in range(5)]
    assert await mark_submitting(store, jobs[1].id)
    assert await mark_submitting(store, jobs[3].id)
    clock.advance(7)
    assert await mark_submitted(store, jobs[3].id, "task-3")
    assert await work.queue_order(store) == [jobs[0].id, jobs[2].id, jobs[4].id]
    assert await count_in(store, JobStatus.SUBMITTING, JobStatus.SUBMITTED) == 2
    assert await count_in(store, JobStatus.QUEUED) == 3
    assert await count_in(store) == 0
    assert await polling_handles(store) == [PollHandle(jobs[3].id, "task-3", NOON + 7)]
    assert [job.id for job in await jobs_by_ids(store, [jobs[4].id, 999_999, jobs[0].id])] == [jobs[0].id, jobs[4].id]
    assert await jobs_by_ids(store, []) == []
    assert await jobs_by_ids(store, [jobs[2].id]) == [await get_job(store, jobs[2].id)]


INLINE_SOURCE = "data:image/png;base64,iVBORw0KGgo="
INLINE_RESULT = "data:image/png;base64,AAAA"


@pytest.mark.parametrize("end", ["posted", "failed", "lost"])
async def test_an_ended_edit_drops_a_source_kept_inline_but_not_a_link(store: Store, end: str) -> None:
    inline = await accepted(store, request(kind=JobKind.EDIT, source_image_url=INLINE_SOURCE))
    linked = await accepted(store, request(user_id=USER + 1, kind=JobKind.EDIT, source_image_url="https://img/1.png"))
    for job in (inline, linked):
        assert await mark_submitting(store, job.id)
        if end == "lost":
            assert await mark_lost(store, job.id, "the bot stopped")
            continue
        assert await mark_submitted(store, job.id, f"task-{job.id}")
        if end == "failed":
            assert await mark_failed(store, job.id, "provider_error", "no")
            continue
        assert await mark_succeeded(store, job.id, ["https://img/out.png"], 1)
        running = await get_job(store, job.id)
        assert running is not None and running.source_image_url == job.source_image_url  # kept while live
        assert await mark_posted(store, job.id, 77, 1)
    ended_inline, ended_linked = await get_job(store, inline.id), await get_job(store, linked.id)
    assert ended_inline is not None and ended_linked is not None
    assert ended_inline.status == ended_linked.status == JobStatus(end)
    assert ended_inline.kind is JobKind.EDIT and ended_inline.source_image_url is None
    assert ended_linked.source_image_url == "https://img/1.png"


@pytest.mark.parametrize("end", ["posted", "failed"])
async def test_inline_result_images_are_dropped_once_posted_or_failed_and_links_and_seed_kept(
    store: Store, end: str
) -> None:
    job = await accepted(store)
    await advance(store, job.id, JobStatus.SUBMITTED)
    assert await mark_succeeded(store, job.id, [INLINE_RESULT, "https://img/2.png", INLINE_RESULT], 42)
    succeeded = await get_job(store, job.id)
    assert succeeded is not None and succeeded.image_urls == (INLINE_RESULT, "https://img/2.png", INLINE_RESULT)
    if end == "posted":
        assert await mark_posted(store, job.id, 88, 3)
    else:
        assert await mark_failed(store, job.id, "delivery", "could not post")
    ended = await get_job(store, job.id)
    assert ended is not None and (ended.image_urls, ended.result_seed) == (("https://img/2.png",), 42)
    row = await store.fetch_one("SELECT length(result) FROM jobs WHERE id = ?", (job.id,))
    assert row is not None and row[0] < 60


@sqlite_only  # (PostgreSQL keeps old row versions until VACUUM; the tests above check the rows themselves)
async def test_a_database_keeps_only_what_its_ended_jobs_need(store: Store, db_path: Path) -> None:
    big_source = "data:image/png;base64," + "A" * 200_000
    for n in range(40):
        job = await accepted(store, request(user_id=USER + n, kind=JobKind.EDIT, source_image_url=big_source))
        await advance(store, job.id, JobStatus.POSTED)
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, free = (conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_count", "freelist_count"))
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    assert (pages - free) * page_size < 1_000_000  # 40 sources of 200 kB would be 8 MB


# --- quotas ----------------------------------------------------------------------------------------------


async def test_fifty_concurrent_requests_on_one_store_accept_exactly_the_daily_limit(store: Store) -> None:
    limits = QuotaLimits(user_daily=5)
    results = await asyncio.gather(*(create_job(store, request(), limits) for _ in range(50)))
    assert sum(isinstance(result, Job) for result in results) == 5
    assert all(r.kind is LimitKind.USER_DAILY for r in results if isinstance(r, QuotaRefusal))
    assert (await user_usage(store, GUILD, USER)).today == 5
    assert len(await jobs_in(store, JobStatus.QUEUED)) == 5


async def test_fifty_concurrent_requests_across_two_stores_accept_exactly_the_daily_limit(
    store: Store, other_store: Store
) -> None:
    limits = QuotaLimits(user_daily=5)
    results = await asyncio.gather(*(create_job(store if n % 2 else other_store, request(), limits) for n in range(50)))
    assert sum(isinstance(result, Job) for result in results) == 5
    assert all(r.kind is LimitKind.USER_DAILY for r in results if isinstance(r, QuotaRefusal))
    assert (await user_usage(store, GUILD, USER)).today == 5
    assert (await user_usage(other_store, GUILD, USER)).today == 5
    assert len(await jobs_in(other_store, *ACTIVE_STATUSES)) == 5


async def test_the_server_daily_limit_holds_across_members(store: Store) -> None:
    limits = QuotaLimits(guild_daily=10)
    results = await asyncio.gather(
        *(create_job(store, request(user_id=USER + n % 3, count=1 + n % 2), limits) for n in range(30))
    )
    accepted_images = sum(result.count for result in results if isinstance(result, Job))
    assert 9 <= accepted_images <= 10  # full, short of at most one 2-image request
    assert await guild_usage_today(store, GUILD) == accepted_images
    refusal = next(result for result in results if isinstance(result, QuotaRefusal))
    assert (refusal.kind, refusal.limit, refusal.resets_at) == (LimitKind.GUILD_DAILY, 10, MIDNIGHT)
    assert await guild_usage_today(store, GUILD + 1) == 0


async def test_a_request_that_does_not_fit_is_refused_whole(store: Store) -> None:
    limits = QuotaLimits(user_daily=5)
    await accepted(store, request(count=4), limits)
    refusal = await refused(store, request(count=2), limits)
    assert refusal == QuotaRefusal(LimitKind.USER_DAILY, limit=5, current=4, requested=2, resets_at=MIDNIGHT)
    assert await usage_row(store, "2025-03-14") == (4, 0)
    assert len(await jobs_in(store, JobStatus.QUEUED)) == 1
    await accepted(store, request(count=1), limits)  # exactly fills the day
    assert (await user_usage(store, GUILD, USER)).today == 5


async def test_used_images_count_towards_the_daily_limit_but_failed_ones_do_not(store: Store) -> None:
    limits = QuotaLimits(user_daily=2)
    kept = await accepted(store, limits=limits)
    dropped = await accepted(store, limits=limits)
    await advance(store, kept.id, JobStatus.POSTED)
    assert await mark_failed(store, dropped.id, "provider_error", "500")
    await accepted(store, limits=limits)  # the failed job's image came back
    assert (await refused(store, limits=limits)).current == 2


async def test_too_many_active_jobs_are_refused_until_one_ends(store: Store) -> None:
    limits = QuotaLimits(max_concurrent=2)
    first = await accepted(store, limits=limits)
    await accepted(store, limits=limits)
    refusal = await refused(store, limits=limits)
    assert (refusal.kind, refusal.limit, refusal.current, refusal.resets_at) == (LimitKind.MAX_CONCURRENT, 2, 2, None)
    await accepted(store, request(guild_id=GUILD + 1), limits)  # counted per server
    assert await mark_failed(store, first.id, "cancelled", "cancelled by the member")
    await accepted(store, limits=limits)


async def test_a_cooldown_refuses_until_it_ends(store: Store, clock: FakeClock) -> None:
    limits = QuotaLimits(cooldown=30)
    await accepted(store, limits=limits)
    clock.advance(10)
    refusal = await refused(store, limits=limits)
    assert (refusal.kind, refusal.limit, refusal.current, refusal.resets_at) == (LimitKind.COOLDOWN, 30, 10, NOON + 30)
    await accepted(store, request(user_id=USER + 1), limits)  # another member is not affected
    clock.advance(20)
    job = await accepted(store, limits=limits)
    assert job.created_at == NOON + 30


async def test_the_database_accepts_exactly_when_the_quota_rules_say_so(store: Store, clock: FakeClock) -> None:
    # create_job decides in SQL and explains a refusal with evaluate_quota: the two must agree, limit by limit.
    rng = random.Random(20250314)
    members = [USER, USER + 1, USER + 2]
    live: list[Job] = []
    decided: set[str] = set()
    for _ in range(300):
        clock.advance(rng.choice([0.0, 0.5, 3.0, 40.0, 3_600.0]))
        if live and rng.random() < 0.3:
            job = live.pop(rng.randrange(len(live)))
            if rng.random() < 0.5:
                await advance(store, job.id, JobStatus.POSTED)
            else:
                assert await mark_failed(store, job.id, "test", "ended")
        limits = QuotaLimits(
            user_daily=rng.choice([None, 0, 3, 8, 20]),
            guild_daily=rng.choice([None, 5, 15, 40]),
            max_concurrent=rng.choice([None, 1, 2, 4]),
            cooldown=rng.choice([0.0, 0.0, 2.0, 30.0]),
            user_monthly=rng.choice([None, None, 0, 12, 40]),
            guild_monthly=rng.choice([None, None, 30, 90]),
        )
        new = request(user_id=rng.choice(members), count=rng.randint(1, 4))
        first, following = month_bounds(store.now())
        use = await store.fetch_one(
            """
            SELECT (SELECT coalesce(sum(used + reserved), 0) FROM usage WHERE guild_id = :g AND user_id = :u
                    AND day = :d),
                   (SELECT coalesce(sum(used + reserved), 0) FROM usage WHERE guild_id = :g AND day = :d),
                   (SELECT count(*) FROM jobs WHERE guild_id = :g AND user_id = :u
                    AND status IN ('queued', 'submitting', 'submitted', 'succeeded')),
                   (SELECT max(created_at) FROM jobs WHERE guild_id = :g AND user_id = :u),
                   (SELECT coalesce(sum(used + reserved), 0) FROM usage WHERE guild_id = :g AND user_id = :u
                    AND day >= :first AND day < :following),
                   (SELECT coalesce(sum(used + reserved), 0) FROM usage WHERE guild_id = :g
                    AND day >= :first AND day < :following)
            """,
            {"g": GUILD, "u": new.user_id, "d": store.today(), "first": first, "following": following},
        )
        assert use is not None
        expected = evaluate_quota(
            limits,
            requested=new.count,
            member_today=use[0],
            guild_today=use[1],
            active_jobs=use[2],
            last_job_at=use[3],
            now=store.now(),
            member_month=use[4],
            guild_month=use[5],
        )
        outcome = await create_job(store, new, limits)
        if expected is None:
            assert isinstance(outcome, Job), (limits, tuple(use), outcome)
            live.append(outcome)
            decided.add("accepted")
        else:
            assert outcome == expected, (limits, tuple(use))
            decided.add(expected.kind.value)
    assert decided == {"accepted", *(kind.value for kind in LimitKind)}  # every rule was put to the test


async def test_daily_limits_are_checked_before_concurrency_and_cooldown(store: Store) -> None:
    limits = QuotaLimits(user_daily=1, max_concurrent=1, cooldown=60)
    await accepted(store, limits=limits)
    assert (await refused(store, limits=limits)).kind is LimitKind.USER_DAILY
    assert (await refused(store, limits=replace(limits, user_daily=None))).kind is LimitKind.MAX_CONCURRENT
    only_cooldown = QuotaLimits(cooldown=60)
    assert (await refused(store, limits=only_cooldown)).kind is LimitKind.COOLDOWN


async def test_the_day_rolls_over_at_utc_midnight(store: Store, clock: FakeClock) -> None:
    limits = QuotaLimits(user_daily=2)
    clock.now = MIDNIGHT - 10
    evening = await accepted(store, request(count=2), limits)
    assert (await refused(store, limits=limits)).resets_at == MIDNIGHT

    clock.now = MIDNIGHT + 5
    morning = await accepted(store, request(count=2), limits)
    assert (evening.usage_day, morning.usage_day) == ("2025-03-14", "2025-03-15")
    # Settling yesterday's job after midnight touches yesterday's row, not today's.
    await advance(store, evening.id, JobStatus.POSTED)  # delivers 1 of 2
    assert await usage_row(store, "2025-03-14") == (0, 1)
    assert await usage_row(store, "2025-03-15") == (2, 0)
    summary = await user_usage(store, GUILD, USER)
    assert (summary.day, summary.today, summary.month) == ("2025-03-15", 2, 3)


async def test_monthly_usage_counts_only_this_utc_month(store: Store, clock: FakeClock) -> None:
    clock.now = datetime(2025, 2, 28, 23, 0, tzinfo=UTC).timestamp()
    await accepted(store, request(count=4))
    clock.now = datetime(2025, 3, 1, 1, 0, tzinfo=UTC).timestamp()
    await accepted(store, request(count=1))
    clock.now = datetime(2025, 3, 31, 23, 59, tzinfo=UTC).timestamp()
    await accepted(store, request(count=2))
    summary = await user_usage(store, GUILD, USER)
    assert (summary.day, summary.today, summary.month, summary.used_month) == ("2025-03-31", 2, 3, 0)


async def test_a_monthly_limit_refuses_until_the_first_of_next_month_and_counts_every_day_of_this_one(
    store: Store, clock: FakeClock
) -> None:
    limits = QuotaLimits(user_monthly=5, user_daily=4)
    clock.now = datetime(2025, 2, 28, 23, 0, tzinfo=UTC).timestamp()
    await accepted(store, request(count=4), limits)  # February's images do not count in March
    clock.now = datetime(2025, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    kept = await accepted(store, request(count=3), limits)
    await advance(store, kept.id, JobStatus.POSTED)  # delivers 1 of 3: the other 2 come back
    clock.now = NOON  # 14 March: a new day, the same month
    await accepted(store, request(count=4), limits)
    refusal = await refused(store, limits=limits)
    april = datetime(2025, 4, 1, tzinfo=UTC).timestamp()
    assert refusal == QuotaRefusal(LimitKind.USER_MONTHLY, limit=5, current=5, requested=1, resets_at=april)
    assert (await user_usage(store, GUILD, USER)).month == 5
    await accepted(store, request(user_id=USER + 1), limits)  # per member
    await accepted(store, request(guild_id=GUILD + 1), limits)  # per server
    clock.now = april + 1
    await accepted(store, request(count=4), limits)


async def test_a_monthly_limit_gives_back_the_images_of_a_failed_job(store: Store) -> None:
    limits = QuotaLimits(user_monthly=3)
    job = await accepted(store, request(count=3), limits)
    assert (await refused(store, limits=limits)).kind is LimitKind.USER_MONTHLY
    assert await mark_failed(store, job.id, "provider_error", "500")
    await accepted(store, request(count=3), limits)


async def test_monthly_limits_are_named_before_daily_ones(store: Store) -> None:
    limits = QuotaLimits(user_daily=2, user_monthly=2, guild_monthly=10)
    await accepted(store, request(count=2), limits)
    assert (await refused(store, limits=limits)).kind is LimitKind.USER_MONTHLY
    assert (await refused(store, limits=replace(limits, user_monthly=None))).kind is LimitKind.USER_DAILY
    others = replace(limits, user_daily=None, user_monthly=None)
    await accepted(store, request(user_id=USER + 1, count=4), others)
    await accepted(store, request(user_id=USER + 2, count=4), others)
    refusal = await refused(store, limits=others)
    assert (refusal.kind, refusal.limit, refusal.current) == (LimitKind.GUILD_MONTHLY, 10, 10)
    assert await guild_usage_month(store, GUILD) == 10
    assert await guild_usage_month(store, GUILD + 1) == 0


async def test_thirty_concurrent_requests_across_two_stores_accept_exactly_the_monthly_limit(
    store: Store, other_store: Store
) -> None:
    limits = QuotaLimits(user_monthly=3)
    results = await asyncio.gather(*(create_job(store if n % 2 else other_store, request(), limits) for n in range(30)))
    assert sum(isinstance(result, Job) for result in results) == 3
    assert all(r.kind is LimitKind.USER_MONTHLY for r in results if isinstance(r, QuotaRefusal))
    assert (await user_usage(other_store, GUILD, USER)).month == 3


async def test_the_server_monthly_limit_holds_across_members_under_concurrency(store: Store) -> None:
    limits = QuotaLimits(guild_monthly=10)
    results = await asyncio.gather(
        *(create_job(store, request(user_id=USER + n % 3, count=1 + n % 2), limits) for n in range(30))
    )
    accepted_images = sum(result.count for result in results if isinstance(result, Job))
    assert 9 <= accepted_images <= 10  # full, short of at most one 2-image request
    assert await guild_usage_month(store, GUILD) == accepted_images


async def test_direct_messages_are_server_zero(store: Store) -> None:
    job = await accepted(store, request(guild_id=0), QuotaLimits(user_daily=1))
    assert job.guild_id == 0
    assert (await user_usage(store, 0, USER)).today == 1
    assert (await user_usage(store, GUILD, USER)).today == 0


# --- transactions --------------------------------------------------------------------------------------


async def test_a_notification_reaches_the_stores_listeners_of_its_channel_only(store: Store) -> None:
    heard: list[str] = []
    elsewhere: list[str] = []
    await store.listen("fluxbot_work", heard.append)
    await store.listen("fluxbot_other", elsewhere.append)
    await store.notify("fluxbot_work", "job:5")
    await store.notify("fluxbot_work")
    async with asyncio.timeout(10):  # PostgreSQL delivers it through the server
        while len(heard) < 2:
            await asyncio.sleep(0.01)
    assert heard == ["job:5", ""]
    assert elsewhere == []


async def test_a_transaction_may_take_named_locks(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.lock("quota:1")
        await tx.lock("quota:1")  # taken again by its holder: no wait
        await tx.lock("quota:2")
        assert await tx.execute("INSERT INTO bot_state (key, value) VALUES ('k', 'v')") == 1
    assert await get_state(store, "k") == "v"
    assert store.pick(sqlite="a", postgresql="b") == ("a" if store.dialect == "sqlite" else "b")


async def test_a_failing_transaction_rolls_back_and_transactions_do_not_nest(store: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO blocklist VALUES (1, 'x', 1, 0)")
            raise RuntimeError("boom")
    assert await blocked_terms(store, 1) == []
    async with store.transaction() as tx:
        await tx.execute("INSERT INTO blocklist VALUES (1, 'y', 1, 0)")
        assert await blocked_terms(store, 1) == ["y"]  # reads inside your own transaction see it
        with pytest.raises(RuntimeError, match="do not nest"):
            async with store.transaction():
                pass
    assert await blocked_terms(store, 1) == ["y"]


@pytest.mark.parametrize(
    ("limits", "target", "accepted_whole"),
    [
        (NO_LIMITS, 1, True),  # accepted: one statement, the insert (whose trigger reserves), done or not at all
        (QuotaLimits(user_daily=0), 1, False),  # refused: the insert that inserts nothing ...
        (QuotaLimits(user_daily=0), 2, False),  # ... and the read that names the limit
    ],
)
@sqlite_only  # (cancels from SQLite's trace callback)
async def test_cancelling_a_request_at_any_statement_leaves_the_store_consistent(
    store: Store, limits: QuotaLimits, target: int, accepted_whole: bool
) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(create_job(store, request(), limits))
    seen: list[str] = []

    def cancel_at_target(sql: str) -> None:
        if seen and seen[-1] == sql:
            return  # the same statement traced again (its trigger)
        seen.append(sql)
        if len(seen) == target:
            loop.call_soon_threadsafe(task.cancel)

    await store._conn.set_trace_callback(cancel_at_target)  # runs in the connection's thread
    assert isinstance((await asyncio.gather(task, return_exceptions=True))[0], asyncio.CancelledError)
    await store._conn.set_trace_callback(None)  # type: ignore[arg-type]
    assert len(seen) == target
    # A statement the thread already runs still completes: job and reservation went in together, or neither ...
    queued = len(await jobs_in(store, JobStatus.QUEUED))
    assert queued == (1 if accepted_whole else 0)
    assert (await user_usage(store, GUILD, USER)).reserved_today == queued
    # ... and no transaction was left open on the shared connection.
    job = await accepted(store)
    assert await mark_failed(store, job.id, "test", "cleanup")


async def test_the_database_refuses_a_reservation_going_negative(store: Store) -> None:
    with pytest.raises((sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError)):
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO usage (guild_id, user_id, day, reserved) VALUES (1, 1, 'd', -1)")


# --- server settings -----------------------------------------------------------------------------------


async def test_server_settings_default_to_none(store: Store) -> None:
    settings = await get_guild_settings(store, GUILD)
    assert settings == GuildSettings(guild_id=GUILD)
    defaults = QuotaLimits(user_daily=20, guild_daily=200, max_concurrent=2, cooldown=15)
    assert settings.quota_limits(defaults) == defaults
    assert settings.allows_model("anything") and settings.allows_channel(1)


async def test_updating_settings_changes_only_given_fields_and_audits_them(store: Store, clock: FakeClock) -> None:
    updated = await update_guild_settings(
        store, GUILD, ADMIN, user_daily=5, allowed_models=["flux-dev", "flux-pro"], cooldown_seconds=10
    )
    assert (updated.user_daily, updated.allowed_models, updated.cooldown_seconds) == (5, ("flux-dev", "flux-pro"), 10)
    assert (updated.guild_daily, updated.updated_at, updated.updated_by) == (None, NOON, ADMIN)
    assert updated.quota_limits(QuotaLimits(user_daily=20, guild_daily=200)) == QuotaLimits(
        user_daily=5, guild_daily=200, cooldown=10
    )
    assert not updated.allows_model("flux-schnell")

    clock.advance(60)
    again = await update_guild_settings(store, GUILD, ADMIN + 1, user_daily=5, guild_daily=50)  # user_daily same
    assert again == replace(updated, guild_daily=50, updated_at=NOON + 60, updated_by=ADMIN + 1)
    assert await get_guild_settings(store, GUILD) == again

    changes = await recent_limit_changes(store, GUILD)
    assert [(c.field, c.old_value, c.new_value, c.user_id) for c in changes] == [
        ("guild_daily", None, "50", ADMIN + 1),
        ("cooldown_seconds", None, "10.0", ADMIN),
        ("allowed_models", None, '["flux-dev", "flux-pro"]', ADMIN),
        ("user_daily", None, "5", ADMIN),
    ]
    assert await recent_limit_changes(store, GUILD + 1) == []


async def test_monthly_settings_are_kept_audited_and_override_the_defaults(store: Store) -> None:
    updated = await update_guild_settings(store, GUILD, ADMIN, user_monthly=100, guild_monthly=0)
    assert await get_guild_settings(store, GUILD) == updated
    assert updated.quota_limits(QuotaLimits(user_monthly=50, guild_monthly=500)) == QuotaLimits(
        user_monthly=100, guild_monthly=0
    )
    assert updated.quota_limits(QuotaLimits(user_monthly=50)).user_monthly == 100
    await update_guild_settings(store, GUILD, ADMIN + 1, user_monthly=None)
    changes = await recent_limit_changes(store, GUILD)
    assert [(c.field, c.old_value, c.new_value, c.user_id) for c in changes] == [
        ("user_monthly", "100", None, ADMIN + 1),
        ("guild_monthly", None, "0", ADMIN),
        ("user_monthly", None, "100", ADMIN),
    ]
    with pytest.raises(ValueError, match="user_monthly must be a whole number"):
        await update_guild_settings(store, GUILD, ADMIN, user_monthly=-1)
    await reset_guild_settings(store, GUILD, ADMIN)
    assert (await recent_limit_changes(store, GUILD, 1))[0].field == "guild_monthly"
    assert await get_guild_settings(store, GUILD) == GuildSettings(guild_id=GUILD)


async def test_blocking_a_member_is_kept_per_server_audited_and_undone_by_unblocking(
    store: Store, clock: FakeClock
) -> None:
    assert await block_member(store, GUILD, USER, reason="  spamming\n the\u200b channel ", changed_by=ADMIN)
    assert await member_block(store, GUILD, USER) == BlockedMember(GUILD, USER, "spamming the channel", ADMIN, NOON)
    assert await member_block(store, GUILD + 1, USER) is None  # another server
    assert await member_block(store, GUILD, USER + 1) is None  # another member
    assert not await block_member(store, GUILD, USER, reason="spamming the channel", changed_by=ADMIN + 1)

    clock.advance(60)
    assert await block_member(store, GUILD, USER, reason=None, changed_by=ADMIN + 1)  # the reason is replaced
    assert await block_member(store, GUILD, USER + 1, reason="x" * 1000, changed_by=ADMIN)
    listed = await blocked_members(store, GUILD)
    assert [(b.user_id, b.blocked_by, b.blocked_at) for b in listed] == [
        (USER, ADMIN + 1, NOON + 60),
        (USER + 1, ADMIN, NOON + 60),
    ]
    assert listed[0].reason is None
    assert listed[1].reason is not None and len(listed[1].reason) == MAX_BLOCK_REASON
    assert await blocked_members(store, GUILD + 1) == []

    assert await unblock_member(store, GUILD, USER, changed_by=ADMIN)
    assert not await unblock_member(store, GUILD, USER, changed_by=ADMIN)  # nothing to undo, nothing audited
    assert await member_block(store, GUILD, USER) is None
    assert [b.user_id for b in await blocked_members(store, GUILD)] == [USER + 1]

    changes = await recent_limit_changes(store, GUILD)
    assert all(c.field == BLOCKED_MEMBER_FIELD for c in changes)
    first = json.dumps({"user_id": USER, "reason": "spamming the channel"})
    second = json.dumps({"user_id": USER, "reason": None})
    assert [
        (c.old_value, c.new_value, c.user_id)
        for c in changes
        if c.new_value != json.dumps({"user_id": USER + 1, "reason": listed[1].reason})
    ] == [
        (second, None, ADMIN),
        (first, second, ADMIN + 1),
        (None, first, ADMIN),
    ]
    assert len(changes) == 4


async def test_invalid_settings_are_refused_before_anything_is_written(store: Store) -> None:
    invalid: list[dict[str, object]] = [
        {"user_daily": -1},
        {"max_concurrent": -1},
        {"user_daily": True},
        {"cooldown_seconds": -5},
        {"allowed_models": "flux-dev"},
        {"allowed_channels": ["general"]},
        {"allowed_models": []},
        {"user_daily": 3, "colour": "red"},
        {"guild_id; DROP TABLE jobs": 1},
    ]
    for bad in invalid:
        with pytest.raises(ValueError, match=r"must (be|list)|unknown guild setting"):
            await update_guild_settings(store, GUILD, ADMIN, **bad)  # type: ignore[arg-type]
    assert await get_guild_settings(store, GUILD) == GuildSettings(guild_id=GUILD)
    assert await recent_limit_changes(store, GUILD) == []


async def test_resetting_settings_restores_defaults_and_audits_each_cleared_field(store: Store) -> None:
    await update_guild_settings(store, GUILD, ADMIN, max_count=2, allowed_channels=[CHANNEL])
    await add_blocked_term(store, GUILD, "gore", changed_by=ADMIN)
    reset = await reset_guild_settings(store, GUILD, ADMIN + 1)
    assert reset == GuildSettings(guild_id=GUILD) == await get_guild_settings(store, GUILD)
    latest = await recent_limit_changes(store, GUILD, limit=2)
    assert {(c.field, c.old_value, c.new_value, c.user_id) for c in latest} == {
        ("max_count", "2", None, ADMIN + 1),
        ("allowed_channels", json.dumps([CHANNEL]), None, ADMIN + 1),
    }
    assert await blocked_terms(store, GUILD) == ["gore"]  # the blocklist is not a limit


async def test_settings_survive_a_restart(db_path: Path) -> None:
    async with await SqliteStore.open(db_path) as store:
        await update_guild_settings(store, GUILD, ADMIN, allowed_channels=[CHANNEL, CHANNEL + 1], max_concurrent=3)
    async with await SqliteStore.open(db_path) as store:
        settings = await get_guild_settings(store, GUILD)
    assert (settings.allowed_channels, settings.max_concurrent) == ((CHANNEL, CHANNEL + 1), 3)
    assert settings.allows_channel(CHANNEL) and not settings.allows_channel(CHANNEL + 2)


async def test_the_blocklist_is_trimmed_case_insensitive_unique_and_per_server(store: Store) -> None:
    assert await add_blocked_term(store, GUILD, "  Gore ", changed_by=ADMIN)
    assert not await add_blocked_term(store, GUILD, "GORE", changed_by=ADMIN)
    assert await add_blocked_term(store, GUILD, "Straße", changed_by=ADMIN)
    assert await blocked_terms(store, GUILD) == ["gore", "strasse"]
    assert await blocked_terms(store, GUILD + 1) == []
    assert await remove_blocked_term(store, GUILD, "gORe", changed_by=ADMIN)
    assert not await remove_blocked_term(store, GUILD, "gore", changed_by=ADMIN)
    assert await blocked_terms(store, GUILD) == ["strasse"]
    with pytest.raises(ValueError, match="empty"):
        await add_blocked_term(store, GUILD, "   ", changed_by=ADMIN)
    audit = [(c.field, c.old_value, c.new_value) for c in await recent_limit_changes(store, GUILD)]
    assert audit == [("blocklist", '"gore"', None), ("blocklist", None, '"strasse"'), ("blocklist", None, '"gore"')]


async def test_upgrading_keeps_server_settings_and_then_accepts_no_concurrency_limit(tmp_path: Path) -> None:
    path = tmp_path / "upgrade.db"
    before_rebuild = [m for m in load_migrations() if m.version < 3]
    async with await SqliteStore.open(path, migrations=before_rebuild) as old:
        # As that version wrote it (today's code writes columns it did not have yet).
        await old.write_alone(
            """
            INSERT INTO guild_settings (guild_id, user_daily, max_concurrent, allowed_models, updated_at, updated_by)
            VALUES (?, 7, 2, '["flux-dev"]', 0, ?)
            """,
            (GUILD, ADMIN),
        )

    async with await SqliteStore.open(path) as upgraded:
        kept = await get_guild_settings(upgraded, GUILD)
        changed = await update_guild_settings(upgraded, GUILD, ADMIN, max_concurrent=0)
        assert upgraded.schema_version == load_migrations()[-1].version

    assert (kept.user_daily, kept.max_concurrent, kept.allowed_models) == (7, 2, ("flux-dev",))
    assert changed.max_concurrent == 0


# -- another connection holding the write lock ------------------------------------------------------------


def hold_write_lock(db_path: Path) -> sqlite3.Connection:
    """Another process's connection in the middle of a write transaction (it holds the write lock)."""
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


async def test_a_write_that_meets_another_connections_lock_waits_and_then_succeeds(
    db_path: Path, clock: FakeClock
) -> None:
    async with await SqliteStore.open(db_path, clock=clock, busy_timeout_ms=50, busy_window=10.0) as store:
        job = await accepted(store)
        holder = hold_write_lock(db_path)
        loop = asyncio.get_running_loop()
        loop.call_later(0.5, holder.rollback)  # longer than one busy_timeout: SQLite alone would give up
        try:
            assert await mark_submitting(store, job.id)
        finally:
            holder.close()
        assert (await get_job(store, job.id)).status is JobStatus.SUBMITTING  # type: ignore[union-attr]


async def test_a_lock_held_past_the_busy_window_is_a_typed_error_and_the_write_can_be_done_later(
    db_path: Path, clock: FakeClock
) -> None:
    async with await SqliteStore.open(db_path, clock=clock, busy_timeout_ms=20, busy_window=0.2) as store:
        job = await accepted(store)
        holder = hold_write_lock(db_path)
        try:
            with pytest.raises(StoreBusyError):
                await mark_submitting(store, job.id)
            assert (await get_job(store, job.id)).status is JobStatus.QUEUED  # type: ignore[union-attr]
        finally:
            holder.close()
        assert await mark_submitting(store, job.id)  # the store is usable again: nothing was left half-done


async def test_a_reservation_meeting_another_connections_lock_waits_or_is_a_typed_error_and_writes_nothing(
    db_path: Path, clock: FakeClock
) -> None:
    async with await SqliteStore.open(db_path, clock=clock, busy_timeout_ms=20, busy_window=0.2) as store:
        holder = hold_write_lock(db_path)
        try:
            with pytest.raises(StoreBusyError):
                await create_job(store, request(), NO_LIMITS)
        finally:
            holder.close()
        assert await jobs_in(store, JobStatus.QUEUED) == []
        assert (await user_usage(store, GUILD, USER)).today == 0
    async with await SqliteStore.open(db_path, clock=clock, busy_timeout_ms=50, busy_window=10.0) as store:
        holder = hold_write_lock(db_path)
        asyncio.get_running_loop().call_later(0.5, holder.rollback)  # longer than one busy_timeout
        try:
            job = await accepted(store)
        finally:
            holder.close()
        assert (await user_usage(store, GUILD, USER)).reserved_today == job.count


# -- migration 0006: the jobs table rebuilt --------------------------------------------------------------


def _v5_rows(conn: sqlite3.Connection) -> None:
    """Jobs in every status, as version 5 stored them: edits with inline and linked sources, inline
    results, a parent link, a last word owed, and the usage the live ones hold."""
    common = "guild_id, channel_id, user_id, kind, prompt, model, size, count, provider, created_at, usage_day"
    rows = [
        # id, status, kind, source, parent, result, error_code, posted message, charged, owed, task
        (1, "posted", "generate", None, None, '{"images": ["https://img/1.png"], "seed": 1}', None, 501, 1, 0, "t1"),
        (2, "posted", "edit", INLINE_SOURCE, 1, f'{{"images": ["{INLINE_RESULT}"], "seed": 2}}', None, 502, 1, 1, "t2"),
        (3, "failed", "edit", INLINE_SOURCE, 1, None, "provider_error", None, 0, 0, "t3"),
        (4, "lost", "edit", "https://img/src.png", None, None, "lost", None, 0, 0, None),
        (5, "queued", "edit", INLINE_SOURCE, 2, None, None, None, 0, 0, None),
        (6, "submitting", "generate", None, None, None, None, None, 0, 0, None),
        (7, "submitted", "edit", INLINE_SOURCE, None, None, None, None, 0, 0, "t7"),
        (
            8,
            "succeeded",
            "edit",
            INLINE_SOURCE,
            7,
            f'{{"images": ["{INLINE_RESULT}"], "seed": 8}}',
            None,
            None,
            0,
            0,
            "t8",
        ),
    ]
    for job_id, status, kind, source, parent, result, code, message, charged, owed, task in rows:
        conn.execute(
            f"""
            INSERT INTO jobs (id, {common}, status, source_image_url, parent_job_id, result, error_code,
                              posted_message_id, reserved_images, charged_images, final_word_owed,
                              provider_task_id, interaction_token, finished_at)
            VALUES (?, {GUILD}, {CHANNEL}, {USER}, ?, 'prompt', 'flux-dev', '1:1', 1, 'bfl', ?, '2025-03-14',
                    ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, 'token', ?)
            """,
            (
                job_id,
                kind,
                NOON + job_id,
                status,
                source,
                parent,
                result,
                code,
                message,
                charged,
                owed,
                task,
                NOON + 100 + job_id if status in ("posted", "failed", "lost", "succeeded") else None,
            ),
        )
    conn.execute(f"INSERT INTO usage VALUES ({GUILD}, {USER}, '2025-03-14', 4, 1)")


def _table(conn: sqlite3.Connection, sql: str) -> list[dict[str, object]]:
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql)]
    finally:
        conn.row_factory = None


async def test_migration_6_rebuilds_jobs_keeping_every_row_link_and_index(db_path: Path, clock: FakeClock) -> None:
    async with await SqliteStore.open(db_path, clock=clock, migrations=load_migrations()[:5]):
        pass
    with sqlite3.connect(db_path) as conn:
        _v5_rows(conn)
    conn.close()
    with sqlite3.connect(db_path) as conn:
        before = _table(conn, "SELECT * FROM jobs ORDER BY id")
        usage_before = _table(conn, "SELECT * FROM usage")
    conn.close()

    async with await SqliteStore.open(db_path, clock=clock, migrations=load_migrations()[:6]) as store:
        assert store.schema_version == 6
        after = [dict(row) for row in await store.fetch_all("SELECT * FROM jobs ORDER BY id")]
        assert [dict(row) for row in await store.fetch_all("SELECT * FROM usage")] == usage_before  # no trigger ran

        # Every row and column survives, parent links included; what ended jobs kept inline is dropped.
        expected = [dict(row) for row in before]
        for row in expected:
            if row["status"] in ("posted", "failed", "lost") and str(row["source_image_url"]).startswith("data:"):
                row["source_image_url"] = None
            if row["id"] == 2:
                row["result"] = '{"images":[],"seed":2}'
        assert [{**row, "result": _json(row["result"])} for row in after] == [
            {**row, "result": _json(row["result"])} for row in expected
        ]
        assert [row["parent_job_id"] for row in after] == [None, 1, 1, None, 2, None, None, 7]

        indexes = {
            row[0]
            for row in await store.fetch_all(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"
            )
        }
        assert {
            "jobs_status",
            "jobs_member_created",
            "jobs_provider_task",
            "jobs_final_word_owed",
            "jobs_member_live",
            "jobs_ended",
            "jobs_parent",
        } <= indexes
        assert await store.fetch_all("PRAGMA foreign_key_check") == []
        assert (await store.fetch_one("PRAGMA integrity_check"))[0] == "ok"  # type: ignore[index]

        # The constraints still hold: a live edit needs its source, a posted job its result and message ...
        with pytest.raises(sqlite3.IntegrityError):
            async with store.transaction() as tx:
                await tx.execute("UPDATE jobs SET source_image_url = NULL WHERE id = 5")
        with pytest.raises(sqlite3.IntegrityError):
            async with store.transaction() as tx:
                await tx.execute("UPDATE jobs SET result = NULL WHERE id = 1")
        with pytest.raises(sqlite3.IntegrityError):
            async with store.transaction() as tx:
                await tx.execute("UPDATE jobs SET parent_job_id = 999 WHERE id = 6")

    # ... and the migrated jobs carry on, on today's schema: the owed word, the live ones to their end.
    async with await SqliteStore.open(db_path, clock=clock) as store:
        assert [job.id for job in await jobs_owing_final_word(store)] == [2]
        assert await mark_posted(store, 8, 503, 1)
        assert await mark_failed(store, 5, "cancelled", "no")
        assert (await user_usage(store, GUILD, USER)).used_today == 2
        ended = await get_job(store, 8)
        assert ended is not None and ended.source_image_url is None and ended.image_urls == ()
        # Deleting a parent sets its children's link to NULL (the self-reference points at the new table).
        async with store.transaction() as tx:
            await tx.execute("DELETE FROM jobs WHERE id = 1")
        assert [row[0] for row in await store.fetch_all("SELECT id FROM jobs WHERE parent_job_id IS NULL")] == [
            2,
            3,
            4,
            6,
            7,
        ]


def _json(text: object) -> object:
    return None if text is None else json.loads(str(text))


async def test_a_nul_in_a_prompt_is_dropped_so_every_backend_can_store_it(store: Store) -> None:
    job = await accepted(store, request(prompt="a red\x00 fox"))
    assert job.prompt == "a red fox"
    assert (await get_job(store, job.id)).prompt == "a red fox"  # type: ignore[union-attr]
