"""The job runner with a real SQLite file and the Flux emulator; the chat side is a recording courier."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from bot import db
from bot.db import Job, JobKind, JobStatus, NewJob, Provider, QuotaLimits, SqliteStore, Store
from bot.flux import AceDataClient, FluxClient, GenerateRequest, OpenAIRelayClient, RetryPolicy, Timeouts
from bot.flux.models import Submission, TaskStatus
from bot.images import DownloadedImage, MediaHosts
from bot.jobs import (
    LOST_MESSAGE,
    UNKNOWN_OUTCOME_MESSAGE,
    DeliveryError,
    JobDone,
    JobFailed,
    JobQueued,
    JobRunner,
    JobStarted,
    JobUpdate,
    PostedResult,
)
from tests.conftest import KEY, NO_WAIT, open_backend, png_bytes
from tests.fluxemu import FluxEmulator
from tests.fluxemu import acedata as acedata_emu

#: Delivery retries for tests: the same exponential shape as the bot's, in milliseconds.
FAST_BACKOFF = RetryPolicy(attempts=1_000_000, initial_delay=0.01, max_delay=0.05)


class RecordingCourier:
    """Our own chat-side interface, recording what the runner asks of it."""

    def __init__(self) -> None:
        self.posts: dict[int, list[DownloadedImage]] = {}
        self.updates: list[tuple[int, JobUpdate]] = []
        self.failures_to_inject: list[DeliveryError] = []
        self.changed = asyncio.Condition()

    async def deliver(self, job: Job, images: Sequence[DownloadedImage]) -> int:
        if self.failures_to_inject:
            raise self.failures_to_inject.pop(0)
        self.posts.setdefault(job.id, list(images))  # idempotent per job, as the real courier is
        return 1000 + job.id

    async def find_posted(self, job: Job) -> PostedResult | None:
        images = self.posts.get(job.id)
        return None if images is None else PostedResult(1000 + job.id, len(images))

    async def notify(self, job: Job, update: JobUpdate) -> None:
        async with self.changed:
            self.updates.append((job.id, update))
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    def final(self, job_id: int) -> JobUpdate | None:
        finals = [u for j, u in self.updates if j == job_id and isinstance(u, JobDone | JobFailed)]
        return finals[-1] if finals else None


@pytest.fixture
def courier() -> RecordingCourier:
    return RecordingCourier()


@pytest.fixture
def acedata(flux_emulator: FluxEmulator, http_session: aiohttp.ClientSession) -> AceDataClient:
    return AceDataClient(session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, retry=NO_WAIT)


RunnerFactory = Callable[..., JobRunner]


@pytest.fixture
async def make_runner(
    store: Store, courier: RecordingCourier, acedata: AceDataClient, http_session: aiohttp.ClientSession
) -> AsyncIterator[RunnerFactory]:
    runners: list[JobRunner] = []

    def make(flux: FluxClient = acedata, **options: object) -> JobRunner:
        settings: dict[str, object] = {
            "store": store,
            "concurrency": 4,
            "poll_interval": 0.05,
            "job_timeout": 60.0,
            "delivery_backoff": FAST_BACKOFF,
            "courier": courier,
            **options,
        }
        runner = JobRunner(flux=flux, session=http_session, **settings)  # type: ignore[arg-type]
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        await runner.stop()


def request(n: int = 0, **changes: object) -> NewJob:
    fields: dict[str, object] = {
        "guild_id": 1,
        "channel_id": 2,
        "user_id": 100 + n,
        "kind": JobKind.GENERATE,
        "prompt": f"a lighthouse #{n}",
        "model": "flux-dev",
        "size": "1:1",
        "count": 1,
        "provider": Provider.ACEDATA,
        **changes,
    }
    return NewJob(**fields)  # type: ignore[arg-type]


async def accepted(runner: JobRunner, new: NewJob) -> Job:
    job = await runner.submit(new, QuotaLimits())
    assert isinstance(job, Job)
    return job


async def one_job_to_its_end(runner: JobRunner, courier: RecordingCourier, count: int = 2) -> tuple[Job, JobUpdate]:
    """Start ``runner``, ask for one job of ``count`` images, and wait for its last word."""
    await runner.start()
    job = await accepted(runner, request(count=count))
    await courier.wait_for(lambda: courier.final(job.id) is not None)
    final = courier.final(job.id)
    assert final is not None
    return job, final


async def test_a_generation_is_delivered_with_the_providers_images_and_charged(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store, flux_emulator: FluxEmulator
) -> None:
    runner = make_runner()
    await runner.start()

    job = await accepted(runner, request(count=3))
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    assert courier.final(job.id) == JobDone(1000 + job.id)
    task = flux_emulator.tasks[next(iter(flux_emulator.tasks))]
    served = [flux_emulator.image_bytes(url) for url in task.images]
    assert [image.data for image in courier.posts[job.id]] == served
    posted = await db.get_job(store, job.id)
    assert posted is not None
    assert (posted.status, posted.charged_images, posted.posted_message_id) == (JobStatus.POSTED, 3, 1000 + job.id)
    assert (await db.user_usage(store, 1, job.user_id)).today == 3


async def test_no_more_than_the_concurrency_limit_is_at_the_provider(
    make_runner: RunnerFactory, courier: RecordingCourier, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.task_delay = 0.2
    runner = make_runner(concurrency=3)
    await runner.start()

    jobs = await asyncio.gather(*(accepted(runner, request(n)) for n in range(12)))
    await courier.wait_for(lambda: all(courier.final(job.id) for job in jobs), timeout=20)

    assert all(isinstance(courier.final(job.id), JobDone) for job in jobs)
    assert flux_emulator.max_in_flight == 3
    assert flux_emulator.count("POST", "/flux/images") == 12


async def test_a_job_failed_by_the_provider_says_why_and_costs_nothing(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.fail_next_task(code="content_moderated", message="nsfw")
    runner = make_runner()
    await runner.start()

    job = await accepted(runner, request(count=2))
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    final = courier.final(job.id)
    assert isinstance(final, JobFailed)
    assert "rephrase" in final.message
    assert (await db.user_usage(store, 1, job.user_id)).today == 0


async def test_a_submit_that_timed_out_is_not_resent_and_costs_nothing(
    make_runner: RunnerFactory,
    courier: RecordingCourier,
    store: Store,
    flux_emulator: FluxEmulator,
    http_session: aiohttp.ClientSession,
) -> None:
    impatient = AceDataClient(
        session=http_session,
        api_key=SecretStr(KEY),
        base_url=flux_emulator.base_url,
        retry=NO_WAIT,
        timeouts=Timeouts(submit=aiohttp.ClientTimeout(total=0.2)),
    )
    flux_emulator.add_fault("POST", "/flux/images", delay=0.5)
    runner = make_runner(flux=impatient)
    await runner.start()

    job = await accepted(runner, request())
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    final = courier.final(job.id)
    assert isinstance(final, JobFailed)
    assert "not sent again" in final.message
    assert flux_emulator.count("POST", "/flux/images") == 1
    assert (await db.user_usage(store, 1, job.user_id)).today == 0


async def test_a_job_past_its_deadline_is_given_up(
    make_runner: RunnerFactory, courier: RecordingCourier, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.task_delay = 3600
    runner = make_runner(job_timeout=0.3)
    await runner.start()

    job = await accepted(runner, request())
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    final = courier.final(job.id)
    assert isinstance(final, JobFailed)
    assert "in time" in final.message


async def test_a_job_that_takes_twenty_minutes_is_still_delivered(
    make_runner: RunnerFactory, courier: RecordingCourier, flux_emulator: FluxEmulator, store: Store
) -> None:
    flux_emulator.task_delay = 20 * 60
    runner = make_runner(job_timeout=30 * 60)
    await runner.start()

    job = await accepted(runner, request())
    await flux_emulator.wait_until(lambda: flux_emulator.count("POST", "/flux/tasks") >= 2)
    assert courier.final(job.id) is None
    flux_emulator.advance(20 * 60)
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    assert isinstance(courier.final(job.id), JobDone)


async def test_a_relay_job_finishes_inside_its_submit(
    make_runner: RunnerFactory,
    courier: RecordingCourier,
    flux_emulator: FluxEmulator,
    http_session: aiohttp.ClientSession,
) -> None:
    flux_emulator.openai_format = "b64_json"
    relay = OpenAIRelayClient(
        session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, retry=NO_WAIT
    )
    runner = make_runner(flux=relay)
    await runner.start()

    job = await accepted(runner, request(model="flux-kontext-pro", provider=Provider.OPENAI))
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    assert isinstance(courier.final(job.id), JobDone)
    (image,) = courier.posts[job.id]
    assert image.format == "PNG"


async def test_an_edit_sends_the_source_image_url(
    make_runner: RunnerFactory, courier: RecordingCourier, flux_emulator: FluxEmulator
) -> None:
    source = flux_emulator.add_file("cat.png", png_bytes(), "image/png")
    runner = make_runner()
    await runner.start()

    job = await accepted(
        runner, request(kind=JobKind.EDIT, model="flux-kontext-pro", source_image_url=source, size="3:2")
    )
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    assert isinstance(courier.final(job.id), JobDone)
    (sent,) = flux_emulator.requests_to("POST", "/flux/images")
    assert sent.json is not None
    assert (sent.json["action"], sent.json["image_url"], sent.json["size"]) == ("edit", source, "3:2")


async def test_a_delivery_that_fails_for_good_releases_the_reservation(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store
) -> None:
    courier.failures_to_inject = [
        DeliveryError("temporarily down", retryable=True),
        DeliveryError("gone", retryable=False),
    ]
    runner = make_runner()
    await runner.start()

    job = await accepted(runner, request(count=2))
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    assert isinstance(courier.final(job.id), JobFailed)
    assert (await db.user_usage(store, 1, job.user_id)).today == 0


async def test_after_a_restart_every_job_is_finished_once_and_nothing_is_resent(
    make_runner: RunnerFactory,
    courier: RecordingCourier,
    store: Store,
    flux_emulator: FluxEmulator,
    acedata: AceDataClient,
) -> None:
    # The state a crash leaves behind: one job queued, one caught submitting, one submitted, one succeeded.
    before = make_runner()
    queued, caught, submitted, succeeded = [await accepted(before, request(n)) for n in range(4)]
    for job in (caught, submitted, succeeded):
        assert await db.mark_submitting(store, job.id)
    handle = (await acedata.generate(GenerateRequest(prompt=submitted.prompt, model="flux-dev"))).handle
    assert await db.mark_submitted(store, submitted.id, handle)
    done = (await acedata.generate(GenerateRequest(prompt=succeeded.prompt, model="flux-dev"))).handle
    urls = [image.url or "" for image in (await acedata.statuses([done]))[done].images]
    assert await db.mark_succeeded(store, succeeded.id, urls, None)
    submits_before = flux_emulator.count("POST", "/flux/images")

    restarted = make_runner()
    await restarted.start()
    everyone = (queued, caught, submitted, succeeded)
    await courier.wait_for(lambda: all(courier.final(job.id) for job in everyone))

    lost = courier.final(caught.id)
    assert isinstance(lost, JobFailed)
    assert "not sent again" in lost.message
    assert set(courier.posts) == {queued.id, submitted.id, succeeded.id}
    assert flux_emulator.count("POST", "/flux/images") == submits_before + 1  # only the queued job was sent
    statuses = [job.status for job in await db.jobs_in(store, *JobStatus)]
    assert statuses == [JobStatus.POSTED, JobStatus.LOST, JobStatus.POSTED, JobStatus.POSTED]


async def test_a_result_posted_just_before_a_crash_is_found_and_not_posted_again(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store, acedata: AceDataClient
) -> None:
    before = make_runner()
    job = await accepted(before, request(count=2))
    assert await db.mark_submitting(store, job.id)
    done = (await acedata.generate(GenerateRequest(prompt=job.prompt, model="flux-dev", count=2))).handle
    urls = [image.url or "" for image in (await acedata.statuses([done]))[done].images]
    assert await db.mark_succeeded(store, job.id, urls, None)
    courier.posts[job.id] = []  # the post reached the channel; the bot died before recording it

    restarted = make_runner()
    await restarted.start()
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    assert courier.posts[job.id] == []  # deliver() was not called again
    posted = await db.get_job(store, job.id)
    assert posted is not None
    assert (posted.status, posted.posted_message_id) == (JobStatus.POSTED, 1000 + job.id)


async def test_a_job_at_the_provider_is_reported_started_once_however_long_it_takes(
    make_runner: RunnerFactory, courier: RecordingCourier, flux_emulator: FluxEmulator
) -> None:
    now = [1000.0]
    flux_emulator.task_delay = 0.4  # about eight poll ticks at 0.05 s
    runner = make_runner(clock=lambda: now[0])
    await runner.start()

    job = await accepted(runner, request())
    await courier.wait_for(lambda: any(j == job.id and isinstance(u, JobStarted) for j, u in courier.updates))
    now[0] += 120  # minutes pass on the bot's clock while the provider works
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    # The status line names the start time (Discord shows it as a live relative time): no edit keeps it current.
    assert [u for j, u in courier.updates if j == job.id] == [JobStarted(1000.0), JobDone(1000 + job.id)]


async def test_queued_members_hear_their_place_at_once_then_spaced_out_as_they_wait(
    make_runner: RunnerFactory, courier: RecordingCourier, flux_emulator: FluxEmulator
) -> None:
    now = [1000.0]
    flux_emulator.task_delay = 0.3
    runner = make_runner(concurrency=1, clock=lambda: now[0])
    await runner.start()

    jobs = [await accepted(runner, request(n)) for n in range(4)]
    await courier.wait_for(lambda: any(j == jobs[3].id for j, _ in courier.updates))
    now[0] += 6  # past the 5 s after a first report, short of the 15 s after a second one
    await courier.wait_for(lambda: all(isinstance(courier.final(job.id), JobDone) for job in jobs))

    def seen(job: Job) -> list[type[JobUpdate] | JobUpdate]:
        return [type(u) if isinstance(u, JobStarted | JobDone) else u for j, u in courier.updates if j == job.id]

    assert seen(jobs[0]) == [JobStarted, JobDone]
    assert seen(jobs[1]) == [JobQueued(1), JobStarted, JobDone]
    assert seen(jobs[2]) == [JobQueued(2), JobQueued(1), JobStarted, JobDone]
    # Its place changed twice more, but the second change came before the 15 s gap after its second report.
    assert seen(jobs[3]) == [JobQueued(3), JobQueued(2), JobStarted, JobDone]


async def test_poll_ticks_keep_their_period_however_long_each_tick_takes(
    make_runner: RunnerFactory, courier: RecordingCourier, flux_emulator: FluxEmulator
) -> None:
    interval, answer_delay = 0.25, 0.1  # each status answer takes 40% of the interval
    flux_emulator.task_delay = 3600
    for _ in range(40):
        flux_emulator.add_fault("POST", "/flux/tasks", delay=answer_delay)
    runner = make_runner(poll_interval=interval)
    await runner.start()
    await accepted(runner, request())
    await flux_emulator.wait_until(lambda: flux_emulator.count("POST", "/flux/tasks") >= 12, timeout=10)

    times = [r.at for r in flux_emulator.requests_to("POST", "/flux/tasks")]
    periods = sorted(later - earlier for earlier, later in itertools.pairwise(times[1:]))
    # Sleeping a whole interval after each tick would make the period interval + answer delay (0.35 s).
    assert periods[len(periods) // 2] == pytest.approx(interval, abs=0.04)


async def test_a_callback_has_the_one_task_it_names_looked_up(
    make_runner: RunnerFactory, courier: RecordingCourier, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.task_delay = 3600
    runner = make_runner(poll_interval=3600)  # one tick at start, then none: what follows is the callback's
    await runner.start()
    jobs = [await accepted(runner, request(n)) for n in range(3)]
    await courier.wait_for(lambda: sum(isinstance(u, JobStarted) for _, u in courier.updates) == 3)  # all submitted
    before = flux_emulator.count("POST", "/flux/tasks")
    task = next(iter(flux_emulator.tasks.values()))
    task.due_at = flux_emulator.now()  # this one is done now
    flux_emulator.notify()
    await flux_emulator.wait_until(lambda: not task.pending)

    assert await runner.accept_callback(acedata_emu.task_response(task))
    await courier.wait_for(lambda: sum(isinstance(courier.final(job.id), JobDone) for job in jobs) == 1)

    lookups = flux_emulator.requests_to("POST", "/flux/tasks")[before:]
    assert [request.json for request in lookups] == [{"action": "retrieve_batch", "ids": [task.id]}]


async def test_stopping_lets_a_submit_under_way_finish_so_it_is_not_lost(
    make_runner: RunnerFactory, store: Store, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.task_delay = 3600
    flux_emulator.add_fault("POST", "/flux/images", delay=0.3)  # a slow answer, still within the grace
    runner = make_runner()
    await runner.start()
    job = await accepted(runner, request())
    await flux_emulator.wait_until(lambda: flux_emulator.count("POST", "/flux/images") == 1)

    await runner.stop()

    stopped = await db.get_job(store, job.id)
    assert stopped is not None
    assert stopped.status is JobStatus.SUBMITTED
    assert stopped.provider_task_id in flux_emulator.tasks


# -- faults that must not stop the runner ----------------------------------------------------------------


class BrokenStatuses(AceDataClient):
    """The real AceData client whose status parsing fails unexpectedly the first ``breaks`` times."""

    breaks = 3

    async def statuses(self, handles: Sequence[str]) -> dict[str, TaskStatus]:
        if self.breaks:
            self.breaks -= 1
            raise TypeError("can't subtract offset-naive and offset-aware datetimes")
        return await super().statuses(handles)


class BrokenSubmit(AceDataClient):
    """The real AceData client whose submit answer cannot be parsed (a parser's stray exception)."""

    async def generate(self, request: GenerateRequest) -> Submission:
        await super().generate(request)  # the provider received it: the task exists and is billed
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON object")


def ace_client(flux_emulator: FluxEmulator, session: aiohttp.ClientSession, cls: type[AceDataClient]) -> AceDataClient:
    return cls(session=session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, retry=NO_WAIT)


async def test_an_unexpected_error_while_polling_does_not_stop_the_poller(
    make_runner: RunnerFactory,
    courier: RecordingCourier,
    flux_emulator: FluxEmulator,
    http_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.jobs")
    runner = make_runner(ace_client(flux_emulator, http_session, BrokenStatuses))
    await runner.start()

    jobs = [await accepted(runner, request(n)) for n in range(3)]
    await courier.wait_for(lambda: all(isinstance(courier.final(job.id), JobDone) for job in jobs))

    stacks = [record for record in caplog.records if record.exc_info]
    assert len(stacks) == 1, "an unexpected error is logged once with its stack, then in one line"
    assert "polling" in stacks[0].getMessage()


async def test_a_submit_whose_answer_cannot_be_read_fails_that_job_once_and_the_others_go_on(
    make_runner: RunnerFactory,
    courier: RecordingCourier,
    store: Store,
    flux_emulator: FluxEmulator,
    http_session: aiohttp.ClientSession,
    acedata: AceDataClient,
) -> None:
    broken = make_runner(ace_client(flux_emulator, http_session, BrokenSubmit), concurrency=1)
    await broken.start()
    job = await accepted(broken, request(0, count=2))
    await courier.wait_for(lambda: courier.final(job.id) is not None)
    await broken.stop()

    assert courier.final(job.id) == JobFailed(UNKNOWN_OUTCOME_MESSAGE)
    assert flux_emulator.count("POST", "/flux/images") == 1, "an unknown outcome is never sent again"
    assert (await db.user_usage(store, 1, job.user_id)).today == 0
    assert await db.jobs_in(store, JobStatus.QUEUED, JobStatus.SUBMITTING) == []

    healthy = make_runner(acedata, concurrency=1)
    await healthy.start()
    later = await accepted(healthy, request(1))
    await courier.wait_for(lambda: isinstance(courier.final(later.id), JobDone))


async def test_a_finished_job_is_delivered_once_a_long_database_lock_is_gone(
    tmp_path: Path,
    courier: RecordingCourier,
    acedata: AceDataClient,
    http_session: aiohttp.ClientSession,
    flux_emulator: FluxEmulator,
) -> None:
    path = tmp_path / "busy.db"
    async with await SqliteStore.open(path, busy_timeout_ms=20, busy_window=0.1) as store:
        runner = JobRunner(
            store=store,
            flux=acedata,
            courier=courier,
            session=http_session,
            concurrency=4,
            poll_interval=0.02,
            job_timeout=60.0,
            delivery_backoff=FAST_BACKOFF,
        )
        flux_emulator.task_delay = 3600.0
        await runner.start()
        try:
            job = await accepted(runner, request(count=1))
            await courier.wait_for(lambda: any(j == job.id and isinstance(u, JobStarted) for j, u in courier.updates))

            # Another process holds the write lock for far longer than the store waits, while the task finishes.
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            flux_emulator.advance(3600.0)
            await asyncio.sleep(1.0)  # many ticks meet the lock
            assert courier.final(job.id) is None
            holder.rollback()
            holder.close()

            await courier.wait_for(lambda: courier.final(job.id) is not None)
            assert courier.final(job.id) == JobDone(1000 + job.id)
            assert len(courier.posts) == 1
            assert (await db.user_usage(store, 1, job.user_id)).today == 1
        finally:
            await runner.stop()


async def test_a_job_posts_at_most_the_images_it_reserved_and_is_charged_once(
    make_runner: RunnerFactory,
    courier: RecordingCourier,
    store: Store,
    flux_emulator: FluxEmulator,
    http_session: aiohttp.ClientSession,
) -> None:
    two_images = {"created": 1, "data": [{"b64_json": base64.b64encode(png_bytes()).decode()}] * 2}
    flux_emulator.add_fault("POST", "/v1/images/generations", body=json.dumps(two_images).encode())
    relay = OpenAIRelayClient(session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url)
    runner = make_runner(relay)
    await runner.start()

    job = await accepted(runner, request(model="flux-kontext-pro", provider=Provider.OPENAI, count=1))
    await courier.wait_for(lambda: courier.final(job.id) is not None)
    await asyncio.sleep(0.3)  # several more ticks: nothing is delivered again

    assert courier.final(job.id) == JobDone(1000 + job.id)
    assert len(courier.posts[job.id]) == 1
    assert [u for j, u in courier.updates if j == job.id and isinstance(u, JobDone)] == [JobDone(1000 + job.id)]
    posted = await db.get_job(store, job.id)
    assert posted is not None and (posted.status, posted.charged_images) == (JobStatus.POSTED, 1)
    usage = await store.fetch_one("SELECT reserved, used FROM usage WHERE user_id = ?", (job.user_id,))
    assert usage is not None and tuple(usage) == (0, 1)


async def test_a_short_outage_of_the_chat_platform_does_not_lose_the_result(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store
) -> None:
    courier.failures_to_inject = [DeliveryError("503 Service Unavailable", retryable=True)] * 5
    job, final = await one_job_to_its_end(make_runner(), courier)

    assert final == JobDone(1000 + job.id)
    assert (await db.user_usage(store, 1, job.user_id)).today == 2


async def test_an_outage_longer_than_the_delivery_window_fails_the_job_and_charges_nothing(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store
) -> None:
    courier.failures_to_inject = [DeliveryError("503 Service Unavailable", retryable=True)] * 1000
    job, final = await one_job_to_its_end(make_runner(delivery_window=0.3), courier)

    assert isinstance(final, JobFailed)
    assert 5 < 1000 - len(courier.failures_to_inject) < 100, "retried with backoff for the window, then given up"
    assert (await db.user_usage(store, 1, job.user_id)).today == 0


async def test_a_post_that_failed_ambiguously_is_looked_for_before_posting_again(
    make_runner: RunnerFactory, courier: RecordingCourier
) -> None:
    class PostedThenDropped(RecordingCourier):
        """The post reaches the channel, but the answer is lost (a dropped connection)."""

        looked = 0

        async def deliver(self, job: Job, images: Sequence[DownloadedImage]) -> int:
            first = job.id not in self.posts
            await super().deliver(job, images)
            if first:
                raise DeliveryError("connection reset", retryable=True)
            raise AssertionError("posted a second time")

        async def find_posted(self, job: Job) -> PostedResult | None:
            self.looked += 1
            return await super().find_posted(job)

    dropping = PostedThenDropped()
    runner = make_runner(courier=dropping)
    await runner.start()

    job = await accepted(runner, request())
    await dropping.wait_for(lambda: dropping.final(job.id) is not None)
    assert dropping.final(job.id) == JobDone(1000 + job.id)
    assert dropping.looked == 1


async def test_a_submit_accepted_with_an_unreadable_answer_is_an_unknown_outcome_and_not_resent(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store, flux_emulator: FluxEmulator
) -> None:
    flux_emulator.add_fault("POST", "/flux/images", body=b'{"task_id": ' + b"[" * 100_000)
    runner = make_runner()
    await runner.start()

    job = await accepted(runner, request(count=2))
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    assert courier.final(job.id) == JobFailed(UNKNOWN_OUTCOME_MESSAGE)
    assert flux_emulator.count("POST", "/flux/images") == 1
    assert (await db.user_usage(store, 1, job.user_id)).today == 0


async def test_an_edit_queued_with_a_source_off_discord_is_refused_before_anything_is_sent(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store, flux_emulator: FluxEmulator
) -> None:
    # As an older version could have queued it: the member's image as a link to the bot's own network.
    runner = make_runner(media_hosts=MediaHosts.parse("cdn.discordapp.com"))
    await runner.start()
    source = "http://169.254.169.254/latest/meta-data/image.png"
    job = await accepted(runner, request(kind=JobKind.EDIT, model="flux-kontext-pro", source_image_url=source))
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    final = courier.final(job.id)
    assert isinstance(final, JobFailed) and "stored on Discord" in final.message
    assert flux_emulator.count("POST", "/flux/images") == 0
    assert (await db.user_usage(store, 1, job.user_id)).today == 0


async def test_a_post_made_by_the_last_attempt_of_the_window_is_found_not_failed(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store
) -> None:
    class AnswerLost(RecordingCourier):
        async def deliver(self, job: Job, images: Sequence[DownloadedImage]) -> int:
            await super().deliver(job, images)
            raise DeliveryError("connection reset after the post", retryable=True)

    lossy = AnswerLost()
    runner = make_runner(courier=lossy, delivery_window=0.0)  # no time for another attempt
    job, final = await one_job_to_its_end(runner, lossy)

    assert final == JobDone(1000 + job.id)
    assert (await db.user_usage(store, 1, job.user_id)).today == 2


async def test_a_last_word_the_previous_run_could_not_say_is_said_at_the_next_start(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store
) -> None:
    # The previous run ended these jobs and was killed before it told their members.
    before = make_runner()
    failed = await accepted(before, request(0, interaction_token="t0", interaction_application_id=7))
    posted = await accepted(before, request(1, interaction_token="t1", interaction_application_id=7))
    assert await db.mark_failed(store, failed.id, "api_error", "The image service is having trouble.")
    assert await db.mark_submitting(store, posted.id)
    assert await db.mark_submitted(store, posted.id, "task-1")
    assert await db.mark_succeeded(store, posted.id, ["https://cdn.example/x.png"], None)
    assert await db.mark_posted(store, posted.id, 555, 1)

    restarted = make_runner()
    await restarted.start()
    await courier.wait_for(lambda: courier.final(failed.id) is not None and courier.final(posted.id) is not None)

    assert courier.final(failed.id) == JobFailed("The image service is having trouble.")
    assert courier.final(posted.id) == JobDone(555)
    await asyncio.sleep(0.2)  # more ticks: each word is said once
    assert [j for j, u in courier.updates if isinstance(u, JobDone | JobFailed)] == [failed.id, posted.id]
    assert await db.jobs_owing_final_word(store) == []


async def test_finished_jobs_past_the_retention_period_are_pruned_and_usage_is_kept(
    make_runner: RunnerFactory, courier: RecordingCourier, store: Store
) -> None:
    first = make_runner()
    await first.start()
    jobs = [await accepted(first, request(n)) for n in range(3)]
    await courier.wait_for(lambda: all(isinstance(courier.final(job.id), JobDone) for job in jobs))
    while await db.jobs_owing_final_word(store):  # settled just after the word was said
        await asyncio.sleep(0.01)
    await first.stop()
    async with store.transaction() as tx:  # two of them finished long ago
        await tx.execute("UPDATE jobs SET finished_at = finished_at - 100 * 86400 WHERE id <= ?", (jobs[1].id,))
    usage_before = [await db.user_usage(store, 1, job.user_id) for job in jobs]

    second = make_runner(retention=90 * 86400.0)
    await second.start()
    for _ in range(200):  # the pruner's first round runs at start
        if await db.get_job(store, jobs[1].id) is None:
            break
        await asyncio.sleep(0.02)

    assert [await db.get_job(store, job.id) is not None for job in jobs] == [False, False, True]
    assert [await db.user_usage(store, 1, job.user_id) for job in jobs] == usage_before


async def test_a_flood_from_one_member_does_not_hold_back_five_who_ask_once(
    make_runner: RunnerFactory, flux_emulator: FluxEmulator
) -> None:
    """The issue's fairness test: one member queues 40 jobs, then 5 others ask once each; each of the 5 is
    sent to the provider before the flooder's 10th job."""
    flux_emulator.task_delay = 0.1  # two slots, each job there for a while: the queue is what decides
    runner = make_runner(concurrency=2, poll_interval=0.02)
    await runner.start()
    flood = [await accepted(runner, request(0, prompt=f"flood {n}")) for n in range(40)]
    others = [await accepted(runner, request(1 + n, prompt=f"other {n}")) for n in range(5)]

    def sent() -> list[str]:
        return [r.json["prompt"] for r in flux_emulator.requests_to("POST", "/flux/images") if r.json]

    await flux_emulator.wait_until(lambda: len(sent()) == 45, timeout=60)
    order = sent()
    tenth_flood = order.index("flood 9")
    assert all(order.index(f"other {n}") < tenth_flood for n in range(5)), order
    assert [p for p in order if p.startswith("flood")] == [f"flood {n}" for n in range(40)]
    assert len(flood) + len(others) == 45


async def claimed_by(store: Store, owner: str, lease: float, new: NewJob) -> Job:
    """A job claimed for submitting by process ``owner`` whose lease lasts ``lease`` more seconds."""
    await db.work.renew_worker(store, owner, lease)
    job = await db.create_job(store, new, QuotaLimits())
    assert isinstance(job, Job)
    (claimed,) = await db.work.claim_queued(store, owner, concurrency=100)
    return claimed


async def test_a_submit_cut_off_by_a_process_that_died_is_lost_once_its_lease_expires_never_sent_again(
    store: Store, make_runner: RunnerFactory, courier: RecordingCourier, flux_emulator: FluxEmulator
) -> None:
    alive = await claimed_by(store, "alive", 60.0, request(1, prompt="claimed by a live process"))
    dead = await claimed_by(store, "dead", 0.3, request(2, prompt="claimed by a dead process"))
    runner = make_runner(sole=False, lease=5.0)
    await runner.start()
    await courier.wait_for(lambda: courier.final(dead.id) is not None)

    assert courier.final(dead.id) == JobFailed(LOST_MESSAGE)
    assert (await db.get_job(store, dead.id)).status is JobStatus.LOST  # type: ignore[union-attr]
    # The live process's submit is its own business: never touched, however many sweeps go by.
    await asyncio.sleep(1.5)
    assert (await db.get_job(store, alive.id)).status is JobStatus.SUBMITTING  # type: ignore[union-attr]
    assert flux_emulator.count("POST", "/flux/images") == 0  # neither was sent (again) by the runner
    assert [u for j, u in courier.updates if j == dead.id] == [JobFailed(LOST_MESSAGE)]  # told once


async def test_a_result_a_dead_process_posted_but_never_recorded_is_found_not_posted_again(
    store: Store, make_runner: RunnerFactory, courier: RecordingCourier
) -> None:
    job = await claimed_by(store, "dead", 0.3, request(3))
    assert await db.mark_submitted(store, job.id, "task-of-the-dead")
    assert await db.mark_succeeded(store, job.id, ["https://cdn.example/gone.png"], 7, owner="dead")
    # The dead process's post reached the channel; recording it did not happen.
    courier.posts[job.id] = [DownloadedImage(png_bytes(), "PNG", 48, 32, "image/png")]
    runner = make_runner(sole=False, lease=5.0)
    await runner.start()
    await courier.wait_for(lambda: courier.final(job.id) is not None)

    assert courier.final(job.id) == JobDone(1000 + job.id)
    posted = await db.get_job(store, job.id)
    assert posted is not None and posted.status is JobStatus.POSTED and posted.posted_message_id == 1000 + job.id
    assert posted.charged_images == 1
    assert len(courier.posts[job.id]) == 1  # found, not posted a second time


@pytest.fixture
async def second_store(request: pytest.FixtureRequest, store: Store, tmp_path: Path) -> AsyncIterator[Store]:
    """Another connection to the database of ``store``, as a second process would have."""
    async with open_backend(request, store.dialect, tmp_path / "fluxbot.db") as opened:
        yield opened


async def test_one_of_two_processes_polls_and_the_other_takes_over_when_it_stops(
    store: Store,
    second_store: Store,
    make_runner: RunnerFactory,
    courier: RecordingCourier,
    flux_emulator: FluxEmulator,
) -> None:
    runners = [make_runner(store=each, lease=1.5, sole=False) for each in (store, second_store)]
    for runner in runners:
        await runner.start()
    await asyncio.sleep(0.6)  # both have renewed their lease once
    assert [runner.polling for runner in runners].count(True) == 1
    poller, other = sorted(runners, key=lambda runner: not runner.polling)
    first = await accepted(other, request(1))
    await courier.wait_for(lambda: courier.final(first.id) is not None)

    await poller.stop()  # a clean stop hands the role over at once (at the other's next renewal)
    flux_emulator.task_delay = 0.2
    second_job = await accepted(other, request(2))
    await courier.wait_for(lambda: courier.final(second_job.id) is not None)
    assert other.polling
    assert courier.final(second_job.id) == JobDone(1000 + second_job.id)
