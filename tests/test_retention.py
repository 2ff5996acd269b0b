"""Pruning old finished jobs, specified against a real SQLite file and a real PostgreSQL database: what goes,
what stays, and what a stop in the middle of it does."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import db
from bot.db import Job, JobKind, JobStatus, NewJob, Provider, QuotaLimits, SqliteStore, Store
from bot.db.alerts import claim_alert
from bot.db.report import count_refusal
from bot.db.retention import ALERTS_KEPT, REFUSALS_KEPT_DAYS
from tests.conftest import FakeClock

GUILD = 5
CHANNEL = 6
USER = 7
DAY = 86_400.0
NOW = datetime(2025, 9, 20, 12, 0, tzinfo=UTC).timestamp()
RETENTION = 90 * DAY
CUTOFF = NOW - RETENTION


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW - 200 * DAY)


def request(user_id: int = USER, parent: int | None = None) -> NewJob:
    return NewJob(
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=user_id,
        kind=JobKind.GENERATE,
        prompt="a harbour",
        model="flux-dev",
        size="1:1",
        count=2,
        provider=Provider.BFL,
        parent_job_id=parent,
        interaction_token="token",
    )


async def new_job(store: Store, user_id: int = USER, parent: int | None = None) -> Job:
    job = await db.create_job(store, request(user_id, parent), QuotaLimits())
    assert isinstance(job, Job)
    return job


async def ended(store: Store, how: str, *, told: bool = True, user_id: int = USER, parent: int | None = None) -> Job:
    """A job run to its end (posted, failed or lost) now, by the store's clock; its last word said if ``told``."""
    job = await new_job(store, user_id, parent)
    assert await db.mark_submitting(store, job.id)
    if how == "lost":
        assert await db.mark_lost(store, job.id, "stopped")
    else:
        assert await db.mark_submitted(store, job.id, f"task-{job.id}")
        if how == "failed":
            assert await db.mark_failed(store, job.id, "provider_error", "no")
        else:
            assert await db.mark_succeeded(store, job.id, [f"https://img/{job.id}.png"], 3)
            assert await db.mark_posted(store, job.id, 10_000 + job.id, 1)
    if told:
        await db.mark_told(store, job.id)
    return job


async def all_ids(store: Store) -> set[int]:
    return {int(row[0]) for row in await store.fetch_all("SELECT id FROM jobs")}


async def usage_table(store: Store) -> list[tuple[object, ...]]:
    return [tuple(row) for row in await store.fetch_all("SELECT * FROM usage ORDER BY guild_id, user_id, day")]


async def history(store: Store, clock: FakeClock) -> dict[str, set[int]]:
    """Old ended jobs (every kind of end), old jobs still owing a last word, an old job still running,
    and recent ended jobs; the clock ends at NOW."""
    groups: dict[str, set[int]] = {"old": set(), "owed": set(), "running": set(), "recent": set()}
    for n in range(25):
        clock.now = NOW - 150 * DAY + n * 3600.0
        groups["old"].add((await ended(store, ("posted", "failed", "lost")[n % 3], user_id=USER + n % 4)).id)
    for how in ("posted", "failed"):
        groups["owed"].add((await ended(store, how, told=False)).id)
    running = await new_job(store)
    assert await db.mark_submitting(store, running.id)
    assert await db.mark_submitted(store, running.id, "still-going")
    groups["running"] = {running.id, (await new_job(store)).id}
    for n in range(5):
        clock.now = NOW - 10 * DAY + n * 3600.0
        groups["recent"].add((await ended(store, "posted")).id)
    clock.now = NOW
    return groups


async def test_old_finished_jobs_go_in_batches_oldest_first_and_the_rest_stays(store: Store, clock: FakeClock) -> None:
    groups = await history(store, clock)
    oldest_ten = sorted(groups["old"])[:10]

    assert await db.prune_finished_jobs(store, before=CUTOFF, batch=10) == 10
    assert not set(oldest_ten) & await all_ids(store)
    assert await db.prune_finished_jobs(store, before=CUTOFF, batch=10) == 10
    assert await db.prune_finished_jobs(store, before=CUTOFF, batch=10) == 5
    assert await db.prune_finished_jobs(store, before=CUTOFF, batch=10) == 0

    assert await all_ids(store) == groups["owed"] | groups["running"] | groups["recent"]
    assert {job.id for job in await db.jobs_owing_final_word(store)} == groups["owed"]
    assert len(await db.jobs_in(store, JobStatus.SUBMITTED, JobStatus.QUEUED)) == 2


async def test_a_job_owing_its_last_word_is_pruned_only_once_it_is_said(store: Store, clock: FakeClock) -> None:
    groups = await history(store, clock)
    while await db.prune_finished_jobs(store, before=CUTOFF, batch=100):
        pass
    assert groups["owed"] <= await all_ids(store)
    for job_id in groups["owed"]:
        await db.mark_told(store, job_id)
    assert await db.prune_finished_jobs(store, before=CUTOFF) == 2
    assert not groups["owed"] & await all_ids(store)


async def test_pruning_leaves_usage_and_what_usage_reports_show_unchanged(store: Store, clock: FakeClock) -> None:
    await history(store, clock)
    # Jobs that ended this month, and whose usage /usage shows, are old enough to prune with a short retention.
    clock.now = NOW - 2 * DAY
    for how in ("posted", "failed", "posted"):
        await ended(store, how)
    clock.now = NOW
    await ended(store, "posted")  # today's: kept
    table = await usage_table(store)
    member = await db.user_usage(store, GUILD, USER)
    server = await db.guild_usage_today(store, GUILD)
    assert (member.used_today, member.used_month, server) == (1, 8, 1)  # 5 recent + 2 + today's, 1 image each

    pruned = 0
    while batch := await db.prune_finished_jobs(store, before=NOW - DAY, batch=7):
        pruned += batch
    assert pruned == 25 + 5 + 3

    assert await usage_table(store) == table
    assert await db.user_usage(store, GUILD, USER) == member
    assert await db.guild_usage_today(store, GUILD) == server


async def test_jobs_made_from_a_pruned_job_keep_their_rows_without_the_link(store: Store, clock: FakeClock) -> None:
    clock.now = NOW - 200 * DAY
    parent = await ended(store, "posted")
    clock.now = NOW - DAY
    child = await ended(store, "posted", parent=parent.id)
    clock.now = NOW
    assert await db.prune_finished_jobs(store, before=CUTOFF) == 1
    kept = await db.get_job(store, child.id)
    assert kept is not None and kept.parent_job_id is None
    assert await db.get_job(store, parent.id) is None


async def test_a_stop_between_batches_loses_nothing_and_the_next_start_carries_on(
    db_path: Path, clock: FakeClock
) -> None:
    async with await SqliteStore.open(db_path, clock=clock) as store:
        groups = await history(store, clock)
        assert await db.prune_finished_jobs(store, before=CUTOFF, batch=10) == 10
        left = await all_ids(store)
    async with await SqliteStore.open(db_path, clock=clock) as store:
        assert await all_ids(store) == left
        assert await db.prune_finished_jobs(store, before=CUTOFF, batch=10) == 10
        assert await db.prune_finished_jobs(store, before=CUTOFF, batch=10) == 5
        assert await all_ids(store) == groups["owed"] | groups["running"] | groups["recent"]


async def test_a_batch_stopped_in_the_middle_is_all_or_nothing(db_path: Path, clock: FakeClock) -> None:
    async with await SqliteStore.open(db_path, clock=clock) as store:
        groups = await history(store, clock)
        before = await all_ids(store)
        task = asyncio.create_task(db.prune_finished_jobs(store, before=CUTOFF, batch=20))
        loop = asyncio.get_running_loop()

        def stop_at_the_delete(sql: str) -> None:
            if sql.lstrip().startswith("DELETE"):
                loop.call_soon_threadsafe(task.cancel)

        await store._conn.set_trace_callback(stop_at_the_delete)  # runs in the connection's thread
        outcome = (await asyncio.gather(task, return_exceptions=True))[0]
        await store._conn.set_trace_callback(None)  # type: ignore[arg-type]
        assert isinstance(outcome, asyncio.CancelledError)
        assert await all_ids(store) == before  # the cancelled batch was rolled back whole
    with sqlite3.connect(db_path) as conn:  # and nothing of it is waiting in the file
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == len(before)
    conn.close()
    async with await SqliteStore.open(db_path, clock=clock) as store:
        assert await db.prune_finished_jobs(store, before=CUTOFF, batch=20) == 20
        assert await db.prune_finished_jobs(store, before=CUTOFF, batch=20) == 5
        assert await all_ids(store) == groups["owed"] | groups["running"] | groups["recent"]


async def test_a_batch_must_delete_something(store: Store) -> None:
    with pytest.raises(ValueError, match="at least one"):
        await db.prune_finished_jobs(store, before=NOW, batch=0)


async def test_old_alert_records_and_refusal_counts_are_pruned_and_recent_ones_kept(
    store: Store, clock: FakeClock
) -> None:
    await claim_alert(store, GUILD, "guild_daily:80:old")
    await count_refusal(store, GUILD, "user_daily")
    assert await db.prune_records(store) == 0  # all recent

    clock.now += max(ALERTS_KEPT, REFUSALS_KEPT_DAYS * DAY) + DAY
    await claim_alert(store, GUILD, "guild_daily:80:new")
    await count_refusal(store, GUILD, "model")
    assert await db.prune_records(store) == 2  # the old alert and the old day's refusals

    alerts = await store.fetch_all("SELECT key FROM alerts_sent")
    refusals = await store.fetch_all("SELECT cause FROM refusals")
    assert [row[0] for row in alerts] == ["guild_daily:80:new"]
    assert [row[0] for row in refusals] == ["model"]
