"""A member's Cancel in the store, on both databases: what each outcome does to the job and to the member's
images, that nothing can happen to a cancelled job any more, and that a Cancel racing the result is decided
by the database, once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from bot import metrics
from bot.db import (
    CancelOutcome,
    Job,
    JobKind,
    JobStatus,
    NewJob,
    Provider,
    QuotaLimits,
    SqliteStore,
    Store,
    active_jobs,
    cancel_job,
    create_job,
    get_job,
    jobs_owing_final_word,
    load_migrations,
    mark_failed,
    mark_lost,
    mark_posted,
    mark_submitted,
    mark_submitting,
    mark_succeeded,
    mark_told,
    polling_handles,
    prune_finished_jobs,
    submitted_job,
    user_usage,
    work,
)
from bot.db.days import utc_day
from bot.flux import AceDataClient, GenerateRequest, Submission
from bot.images import DownloadedImage
from bot.jobs import JobCancelled, JobDone, JobRunner, JobUpdate, PostedResult
from tests.conftest import KEY, NO_WAIT, FakeClock
from tests.fluxemu import FluxEmulator

GUILD = 5001
CHANNEL = 5002
USER = 5003
OTHER = 5004
START = 1_800_000_000.0
INLINE_SOURCE = "data:image/png;base64,iVBORw0KGgo="
REQUEST = NewJob(
    guild_id=GUILD,
    channel_id=CHANNEL,
    user_id=USER,
    kind=JobKind.GENERATE,
    prompt="a kingfisher",
    model="flux-dev",
    size="1:1",
    count=1,
    provider=Provider.ACEDATA,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


async def new_job(store: Store, *, count: int = 2, kind: JobKind = JobKind.GENERATE, user: int = USER) -> Job:
    job = await create_job(
        store,
        NewJob(
            guild_id=GUILD,
            channel_id=CHANNEL,
            user_id=user,
            kind=kind,
            prompt="a heron at dawn",
            model="flux-dev",
            size="1:1",
            count=count,
            provider=Provider.ACEDATA,
            source_image_url=INLINE_SOURCE if kind is JobKind.EDIT else None,
        ),
        QuotaLimits(),
    )
    assert isinstance(job, Job), job
    return job


async def submitted(store: Store, *, count: int = 2, kind: JobKind = JobKind.GENERATE) -> Job:
    job = await new_job(store, count=count, kind=kind)
    assert await mark_submitting(store, job.id)
    assert await mark_submitted(store, job.id, f"task-{job.id}")
    return job


async def usage(store: Store, user: int = USER) -> tuple[int, int]:
    """The member's images today: (used, reserved)."""
    summary = await user_usage(store, GUILD, user)
    return summary.used_today, summary.reserved_today


async def current(store: Store, job: Job) -> Job:
    found = await get_job(store, job.id)
    assert found is not None
    return found


# -- each outcome -------------------------------------------------------------------------------------


async def test_a_queued_job_cancelled_is_never_sent_and_charges_nothing(store: Store, clock: FakeClock) -> None:
    job = await new_job(store, count=3)
    assert await usage(store) == (0, 3)
    clock.advance(7)

    assert await cancel_job(store, job.id, USER) is CancelOutcome.CANCELLED_QUEUED

    ended = await current(store, job)
    assert (ended.status, ended.charged_images, ended.finished_at) == (JobStatus.CANCELLED, 0, START + 7)
    assert ended.is_terminal and not ended.cancellable
    assert await usage(store) == (0, 0)
    assert await active_jobs(store, GUILD, USER) == []
    assert await work.queue_order(store) == []
    assert await work.claim_queued(store, "worker", concurrency=5) == []
    assert not await mark_submitting(store, job.id)
    assert [owed.id for owed in await jobs_owing_final_word(store)] == [job.id]  # "Cancelled. Nothing was charged."


async def test_queue_places_and_the_members_live_jobs_skip_a_cancelled_job(store: Store) -> None:
    first, second, third = await new_job(store), await new_job(store), await new_job(store)
    assert await work.queue_position(store, third.id) == 3

    assert await cancel_job(store, second.id, USER) is CancelOutcome.CANCELLED_QUEUED

    assert await work.queue_order(store) == [first.id, third.id]
    assert await work.queue_position(store, third.id) == 2
    assert [job.id for job in await active_jobs(store, GUILD, USER)] == [first.id, third.id]
    assert [job.id for job in await work.claim_queued(store, "worker", concurrency=5)] == [first.id, third.id]


async def test_a_cancel_while_submitting_charges_what_was_reserved_and_records_no_later_answer(store: Store) -> None:
    job = await new_job(store, count=2)
    [claimed] = await work.claim_queued(store, "worker", concurrency=1)
    assert claimed.id == job.id and claimed.status is JobStatus.SUBMITTING

    assert await cancel_job(store, job.id, USER) is CancelOutcome.CANCELLED_BILLED

    # The submit under way comes back: neither its task nor a result is recorded over the cancel.
    assert not await mark_submitted(store, job.id, "task-late")
    assert not await mark_succeeded(store, job.id, ["https://img.example/late.png"], 1)
    assert not await mark_failed(store, job.id, "timeout", "too slow")
    assert not await mark_lost(store, job.id, "lost")
    ended = await current(store, job)
    assert (ended.status, ended.provider_task_id, ended.image_urls) == (JobStatus.CANCELLED, None, ())
    assert ended.charged_images == ended.reserved_images == 2
    assert await usage(store) == (2, 0)
    assert await work.orphaned_submits(store, "worker", own=True) == []  # ended: never given up as lost


async def test_a_cancel_at_the_provider_charges_what_was_reserved_and_stops_polling_it(store: Store) -> None:
    job = await submitted(store, count=4)

    assert await cancel_job(store, job.id, USER) is CancelOutcome.CANCELLED_BILLED

    assert await polling_handles(store) == []
    assert await submitted_job(store, f"task-{job.id}") is None  # a callback for it names no waiting job
    assert not await mark_succeeded(store, job.id, ["https://img.example/1.png"], 7)
    ended = await current(store, job)
    assert (ended.status, ended.charged_images, ended.result_seed) == (JobStatus.CANCELLED, 4, None)
    assert await usage(store) == (4, 0)
    assert await active_jobs(store, GUILD, USER) == []


@pytest.mark.parametrize("posted", [False, True], ids=["succeeded", "posted"])
async def test_a_cancel_after_the_result_is_recorded_is_too_late(store: Store, posted: bool) -> None:
    job = await submitted(store, count=2)
    assert await mark_succeeded(store, job.id, ["https://img.example/1.png", "https://img.example/2.png"], 3)
    if posted:
        assert await mark_posted(store, job.id, 999, 2)

    assert await cancel_job(store, job.id, USER) is CancelOutcome.TOO_LATE

    after = await current(store, job)
    assert after.status is (JobStatus.POSTED if posted else JobStatus.SUCCEEDED)
    assert await usage(store) == ((2, 0) if posted else (0, 2))
    if not posted:  # the result goes on to be posted, charged as usual
        assert await mark_posted(store, job.id, 999, 2)
        assert await usage(store) == (2, 0)


@pytest.mark.parametrize("ending", ["failed", "lost", "cancelled"])
async def test_a_cancel_of_a_job_that_already_ended_changes_nothing(store: Store, ending: str) -> None:
    job = await new_job(store, count=2)
    if ending == "failed":
        assert await mark_failed(store, job.id, "content", "refused")
    elif ending == "lost":
        assert await mark_submitting(store, job.id)
        assert await mark_lost(store, job.id, "lost")
    else:
        assert await mark_submitting(store, job.id)
        assert await cancel_job(store, job.id, USER) is CancelOutcome.CANCELLED_BILLED
    before = (await current(store, job), await usage(store))

    assert await cancel_job(store, job.id, USER) is CancelOutcome.ALREADY_ENDED

    assert (await current(store, job), await usage(store)) == before  # nothing charged or released twice


async def test_a_cancel_of_a_job_no_longer_known_is_already_ended(store: Store) -> None:
    assert await cancel_job(store, 424242, USER) is CancelOutcome.ALREADY_ENDED


async def test_only_the_member_who_asked_can_cancel(store: Store) -> None:
    queued = await new_job(store, count=2)
    done = await submitted(store, count=1)
    assert await mark_failed(store, done.id, "content", "refused")

    assert await cancel_job(store, queued.id, OTHER) is CancelOutcome.NOT_YOURS
    assert await cancel_job(store, done.id, OTHER) is CancelOutcome.NOT_YOURS  # says nothing about the job

    assert (await current(store, queued)).status is JobStatus.QUEUED
    assert await usage(store) == (0, 2)
    assert await cancel_job(store, queued.id, USER) is CancelOutcome.CANCELLED_QUEUED


async def test_a_cancelled_edit_drops_its_inline_source(store: Store) -> None:
    job = await new_job(store, count=1, kind=JobKind.EDIT)
    assert (await current(store, job)).source_image_url == INLINE_SOURCE

    assert await cancel_job(store, job.id, USER) is CancelOutcome.CANCELLED_QUEUED

    assert (await current(store, job)).source_image_url is None


async def test_cancelled_jobs_are_pruned_like_other_ended_ones_once_their_member_was_told(
    store: Store, clock: FakeClock
) -> None:
    told, owed = await new_job(store), await new_job(store)
    assert await cancel_job(store, told.id, USER) is CancelOutcome.CANCELLED_QUEUED
    assert await cancel_job(store, owed.id, USER) is CancelOutcome.CANCELLED_QUEUED
    await mark_told(store, told.id)
    clock.advance(3600)

    assert await prune_finished_jobs(store, before=clock.now - 60) == 1

    assert await get_job(store, told.id) is None
    assert (await current(store, owed)).status is JobStatus.CANCELLED


# -- races ----------------------------------------------------------------------------------------------


async def test_a_cancel_racing_the_result_either_ends_the_job_or_is_too_late_never_both(
    store: Store, other_store: Store
) -> None:
    """The result is recorded by another connection (another process, or the poller's), many times over."""
    outcomes: set[CancelOutcome] = set()
    for _ in range(30):
        job = await submitted(store, count=1)
        cancelled, recorded = await asyncio.gather(
            cancel_job(store, job.id, USER),
            mark_succeeded(other_store, job.id, ["https://img.example/1.png"], 1),
        )
        after = await current(store, job)
        if cancelled is CancelOutcome.CANCELLED_BILLED:
            assert not recorded
            assert (after.status, after.image_urls, after.charged_images) == (JobStatus.CANCELLED, (), 1)
        else:
            assert cancelled is CancelOutcome.TOO_LATE and recorded
            assert after.status is JobStatus.SUCCEEDED
            assert await mark_posted(store, job.id, job.id, 1)
        outcomes.add(cancelled)
    # Every job charged its one image exactly once, whichever side won.
    assert await usage(store) == (30, 0)
    assert outcomes <= {CancelOutcome.CANCELLED_BILLED, CancelOutcome.TOO_LATE}


async def test_two_cancels_at_once_end_the_job_once(store: Store, other_store: Store) -> None:
    for _ in range(10):
        job = await new_job(store, count=2)
        first, second = await asyncio.gather(cancel_job(store, job.id, USER), cancel_job(other_store, job.id, USER))
        assert sorted([first, second]) == sorted([CancelOutcome.CANCELLED_QUEUED, CancelOutcome.ALREADY_ENDED])
    assert await usage(store) == (0, 0)


async def test_a_cancel_racing_the_dispatcher_is_either_free_or_billed_and_never_sent_after_a_free_one(
    store: Store, other_store: Store
) -> None:
    for _ in range(15):
        job = await new_job(store, count=1)
        cancelled, claimed = await asyncio.gather(
            cancel_job(store, job.id, USER), work.claim_queued(other_store, "worker", concurrency=100)
        )
        sent = [claim.id for claim in claimed]
        if cancelled is CancelOutcome.CANCELLED_QUEUED:
            assert sent == []  # never claimed, so never sent
        else:  # claimed first: the submit may go out, and the job counts
            assert (cancelled, sent) == (CancelOutcome.CANCELLED_BILLED, [job.id])
        assert (await current(store, job)).status is JobStatus.CANCELLED


# -- the migration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        "status = 'cancelled', charged_images = reserved_images + 1",  # never more than was reserved
        "status = 'failed', error_code = 'x', charged_images = 1",  # only posted and cancelled jobs are charged
        "status = 'posted', result = '{}'",  # a posted job names its message
        "status = 'succeeded'",  # a result is recorded with it
        "status = 'lost'",  # says why
        "status = 'abandoned'",
    ],
)
async def test_the_jobs_checks_other_than_those_cancelling_loosened_still_hold(store: Store, change: str) -> None:
    job = await new_job(store, count=1)
    with pytest.raises((sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError)):
        await store.write_alone(f"UPDATE jobs SET {change} WHERE id = ?", (job.id,))
    assert (await current(store, job)).status is JobStatus.QUEUED


async def v11_job(store: Store, kind: JobKind = JobKind.GENERATE) -> int:
    """A queued job of two images recorded as the bot did at schema version 11 (before jobs had a locale)."""
    rows = await store.write_alone(
        """
        INSERT INTO jobs (guild_id, channel_id, user_id, kind, prompt, model, size, count, source_image_url,
                          provider, status, created_at, reserved_images, usage_day)
        VALUES (?, ?, ?, ?, 'a heron at dawn', 'flux-dev', '1:1', 2, ?, 'acedata', 'queued', ?, 2, ?)
        RETURNING id
        """,
        (GUILD, CHANNEL, USER, kind.value, INLINE_SOURCE if kind is JobKind.EDIT else None, START, utc_day(START)),
    )
    return int(rows[0][0])


async def test_migration_12_rebuilds_jobs_keeping_every_row_link_and_reservation(
    db_path: Path, clock: FakeClock
) -> None:
    async with await SqliteStore.open(db_path, clock=clock, migrations=load_migrations()[:11]) as old:
        parent = await v11_job(old)
        assert await mark_submitting(old, parent)
        assert await mark_submitted(old, parent, "task-1")
        assert await mark_succeeded(old, parent, ["https://img.example/1.png"], 1)
        assert await mark_posted(old, parent, 77, 2)
        await old.write_alone("UPDATE jobs SET owner = 'me'")
        child = await v11_job(old, kind=JobKind.EDIT)
        await old.write_alone("UPDATE jobs SET parent_job_id = ? WHERE id = ?", (parent, child))
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        before = [dict(row) for row in conn.execute("SELECT * FROM jobs ORDER BY id")]
        usage_before = [tuple(row) for row in conn.execute("SELECT * FROM usage")]
    conn.close()

    # Up to the latest version: the rows of version 11 as they were, with a locale (0013) nobody recorded.
    async with await SqliteStore.open(db_path, clock=clock) as store:
        assert store.schema_version >= 12
        after = [dict(row) for row in await store.fetch_all("SELECT * FROM jobs ORDER BY id")]
        assert after == [{**row, "locale": None} for row in before]
        assert [tuple(row) for row in await store.fetch_all("SELECT * FROM usage")] == usage_before
        assert await store.fetch_all("PRAGMA foreign_key_check") == []
        # The rebuilt table's triggers still settle: the queued edit's cancel releases its two images.
        assert await cancel_job(store, child, USER) is CancelOutcome.CANCELLED_QUEUED
        assert await usage(store) == (2, 0)
        # ... and its self-reference points at the new table: deleting the parent unlinks the child.
        await store.write_alone("DELETE FROM jobs WHERE id = ?", (parent,))
        unlinked = await get_job(store, child)
        assert unlinked is not None and unlinked.parent_job_id is None


# -- the runner -------------------------------------------------------------------------------------------


class Courier:
    """The chat side, recording what the runner tells members."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, JobUpdate]] = []
        self.changed = asyncio.Condition()

    async def deliver(self, job: Job, images: Sequence[DownloadedImage]) -> int:
        return 1000 + job.id

    async def find_posted(self, job: Job) -> PostedResult | None:
        return None

    async def notify(self, job: Job, update: JobUpdate) -> None:
        async with self.changed:
            self.updates.append((job.id, update))
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], object]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), 10)

    def told(self, job_id: int) -> list[JobUpdate]:
        return [update for job, update in self.updates if job == job_id]


class FirstAnswerHeld(AceDataClient):
    """The first submit reaches the provider (its task exists), but its answer waits for ``release``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def generate(self, request: GenerateRequest) -> Submission:
        submission = await super().generate(request)
        if not self.reached.is_set():
            self.reached.set()
            await self.release.wait()
        return submission


async def test_a_job_cancelled_while_its_submit_is_answered_frees_its_slot_and_is_never_shown_started(
    store: Store, flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession
) -> None:
    flux = FirstAnswerHeld(session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, retry=NO_WAIT)
    courier = Courier()
    runner = JobRunner(
        store=store, flux=flux, courier=courier, session=http_session, concurrency=1, poll_interval=0.05,
        job_timeout=60.0,
    )  # fmt: skip
    recorded = metrics.Metrics()
    using = metrics.using(recorded)
    await runner.start()
    try:
        first = await runner.submit(replace(REQUEST, count=2), QuotaLimits())
        second = await runner.submit(REQUEST, QuotaLimits())
        assert isinstance(first, Job) and isinstance(second, Job)
        await flux.reached.wait()
        assert (await current(store, second)).status is JobStatus.QUEUED  # the one provider slot is taken

        assert await runner.cancel(first.id, USER) is CancelOutcome.CANCELLED_BILLED

        # The slot is free at once: the next job is sent and posted while the first submit's answer is held.
        await courier.wait_for(lambda: any(isinstance(update, JobDone) for update in courier.told(second.id)))
    finally:
        flux.release.set()
        await runner.stop()  # lets the held submit's answer be recorded (or not) first
        metrics.stop_using(using)

    assert courier.told(first.id) == [JobCancelled(billed=True)]  # never shown as started
    ended = await current(store, first)
    assert (ended.status, ended.provider_task_id, ended.charged_images) == (JobStatus.CANCELLED, None, 2)
    assert first.id not in [job.id for job in await jobs_owing_final_word(store)]  # told, once
    assert not [update for update in courier.told(second.id) if isinstance(update, JobCancelled)]
    assert isinstance(courier.told(second.id)[-1], JobDone)
    assert flux_emulator.count("POST", "/flux/images") == 2
    sample = recorded.registry.get_sample_value
    assert sample("fluxbot_jobs_total", {"kind": "generate", "outcome": "cancelled"}) == 1
    assert sample("fluxbot_cancelled_images_total") == 2
