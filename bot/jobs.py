"""What happens to a job, from the moment it is accepted until its images are posted.

The runner is the only writer of a job's lifecycle after :func:`bot.db.create_job`:

1. **Queued.** :meth:`JobRunner.submit` records the job (and reserves its images) before anything else,
   so a crash after the member was acknowledged cannot lose it.
2. **Submitting → submitted.** The dispatcher starts queued jobs in order while fewer than
   ``concurrency`` are at the provider. A submit whose outcome is unknown (timeout, dropped connection,
   or the bot stopping mid-request) is never sent again: the job fails, or is *lost* after a restart,
   and nothing is charged.
3. **Polled.** One poller asks the provider about every submitted job in one batched call per tick,
   and gives a job up at its deadline.
4. **Succeeded → posted.** The result images are downloaded at once (their URLs expire) and handed to
   the :class:`Courier`, which posts them to the channel exactly once (the post is idempotent per job).
   Posting charges what was delivered; every failure before that releases the reservation.

After a restart, :meth:`JobRunner.start` marks jobs caught submitting as lost, and the loops pick up
the rest: queued jobs are dispatched, submitted ones polled, succeeded ones posted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from bot import db
from bot.db import Job, JobKind, JobStatus, NewJob, QuotaLimits, QuotaRefusal, Store
from bot.flux import (
    EditRequest,
    FluxClient,
    FluxConnectionError,
    FluxError,
    FluxTimeoutError,
    GenerateRequest,
    Submission,
    TaskState,
    TaskStatus,
)
from bot.images import DownloadedImage, DownloadError, download_image
from bot.tasks import TaskSet

__all__ = [
    "Courier",
    "DeliveryError",
    "JobDone",
    "JobFailed",
    "JobQueued",
    "JobRunner",
    "JobStarted",
    "JobUpdate",
    "PostedResult",
]

log = logging.getLogger(__name__)

#: Progress of one job is reported at most this often (a final word is always reported).
PROGRESS_INTERVAL = 5.0
#: Seconds a stopping bot waits for submits under way (see :meth:`JobRunner.stop`).
STOP_GRACE = 10.0
#: Deliveries (download, fit, post) at once: each holds its images in memory, up to 4 x 25 MiB.
DELIVERY_CONCURRENCY = 4
#: How often a delivery is tried before the job is given up.
DELIVERY_ATTEMPTS = 3

LOST_MESSAGE = (
    "The bot restarted while sending this request to the image service, so it cannot tell whether it "
    "was received. It was not sent again and you were not charged; please try again."
)
UNKNOWN_OUTCOME_MESSAGE = (
    "The image service did not confirm this request. To avoid paying twice it was not sent again, "
    "and you were not charged; please try again."
)
DEADLINE_MESSAGE = "The image service did not finish in time. You were not charged; please try again."


# -- what the runner reports --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobQueued:
    position: int


@dataclass(frozen=True, slots=True)
class JobStarted:
    elapsed: float


@dataclass(frozen=True, slots=True)
class JobDone:
    message_id: int


@dataclass(frozen=True, slots=True)
class JobFailed:
    """``message`` is safe to show the member."""

    message: str


JobUpdate = JobQueued | JobStarted | JobDone | JobFailed


class DeliveryError(Exception):
    """The courier could not post a result. ``retryable`` says whether trying again later may work."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class PostedResult:
    """A result message in the channel and the number of images it carries."""

    message_id: int
    images: int


class Courier(Protocol):
    """What the runner needs from the chat platform (the Discord cogs implement it)."""

    async def deliver(self, job: Job, images: Sequence[DownloadedImage]) -> int:
        """Post the images for ``job`` and return the message id.

        Must be idempotent per job: called again for a job whose post may already have happened (the bot
        stopped right after posting), it returns the earlier message instead of posting a second one.
        Raises :class:`DeliveryError`.
        """
        ...

    async def find_posted(self, job: Job) -> PostedResult | None:
        """The result of ``job`` if it is already in the channel (posted just before the bot stopped).

        Raises :class:`DeliveryError` when it cannot look.
        """
        ...

    async def notify(self, job: Job, update: JobUpdate) -> None:
        """Tell the member where ``job`` stands. Best effort: must not raise."""
        ...


# -- the runner ---------------------------------------------------------------------------------------


class JobRunner:
    """Runs every job: a dispatcher for queued jobs, one poller for submitted ones, and deliveries."""

    def __init__(
        self,
        *,
        store: Store,
        flux: FluxClient,
        courier: Courier,
        session: aiohttp.ClientSession,
        concurrency: int,
        poll_interval: float,
        job_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._flux = flux
        self._courier = courier
        self._session = session
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._job_timeout = job_timeout
        self._clock = clock
        self._tasks = TaskSet("jobs")
        self._submits = TaskSet("submits")
        self._dispatch_needed = asyncio.Event()
        self._poll_needed = asyncio.Event()
        self._delivering: set[int] = set()
        self._delivery_failures: dict[int, int] = {}
        self._last_progress: dict[int, tuple[float, JobUpdate]] = {}
        self._recovered: set[int] = set()
        self._delivery_slots = asyncio.Semaphore(DELIVERY_CONCURRENCY)
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous run left behind, then start the dispatcher and the poller."""
        for job in await db.jobs_in(self._store, JobStatus.SUBMITTING):
            if await db.mark_lost(self._store, job.id, LOST_MESSAGE):
                log.warning("job %d was being submitted when the bot stopped; marked lost", job.id)
                await self._notify(job, JobFailed(LOST_MESSAGE))
        self._recovered = {job.id for job in await db.jobs_in(self._store, JobStatus.SUCCEEDED)}
        self._running = True
        self._tasks.spawn(self._dispatch_loop(), name="dispatcher")
        self._tasks.spawn(self._poll_loop(), name="poller")

    async def stop(self, *, grace: float = STOP_GRACE) -> None:
        """Stop every loop and in-flight task. Jobs stay in the database for the next start.

        Submits already under way get ``grace`` seconds to finish first: one cut off mid-request would
        have an unknown outcome, and the next start would have to give it up as lost.
        """
        self._running = False
        await self._tasks.close()
        if len(self._submits):
            log.info("waiting up to %.0f s for %d submits under way", grace, len(self._submits))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._submits.wait()
        await self._submits.close()

    # -- the front door -------------------------------------------------------------------------

    async def submit(self, new: NewJob, limits: QuotaLimits) -> Job | QuotaRefusal:
        """Record ``new`` under ``limits`` and queue it. Returns the job or the refusal."""
        outcome = await db.create_job(self._store, new, limits)
        if isinstance(outcome, Job):
            log.info("job %d queued: %s %s for user %d", outcome.id, outcome.kind, outcome.model, outcome.user_id)
            self._dispatch_needed.set()
        return outcome

    async def in_flight(self) -> int:
        """Jobs at the provider now (being submitted, or submitted and not yet finished)."""
        return len(await db.jobs_in(self._store, JobStatus.SUBMITTING, JobStatus.SUBMITTED))

    async def accept_callback(self, body: Any) -> bool:
        """A provider's callback for one of our tasks: ask the provider about it now.

        Callbacks are not signed, so the body itself is never trusted: it only has to name a task we
        submitted and are still waiting for, and the result is then fetched from the provider by the
        poller. Returns False for a task we are not waiting for. Raises
        :class:`~bot.flux.errors.CallbackError` for a body that is not a callback.
        """
        status = self._flux.parse_callback(body)
        if await db.submitted_job(self._store, status.handle) is None:
            log.warning("ignoring a callback for a task that no job is waiting for")
            return False
        self.poll_now()
        return True

    def poll_now(self) -> None:
        """Ask the provider at once instead of at the next tick (a callback arrived, or a test wants it)."""
        self._poll_needed.set()

    # -- dispatching ----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while self._running:
            await self._dispatch()
            await self._dispatch_needed.wait()
            self._dispatch_needed.clear()

    async def _dispatch(self) -> None:
        queued = await db.jobs_in(self._store, JobStatus.QUEUED)
        free = self._concurrency - await self.in_flight()
        for job in queued[: max(free, 0)]:
            if await db.mark_submitting(self._store, job.id):
                self._submits.spawn(self._start_job(job), name=f"submit-{job.id}")
        waiting = enumerate(queued[max(free, 0) :], start=1)
        await asyncio.gather(*(self._progress(job, JobQueued(position)) for position, job in waiting))

    async def _start_job(self, job: Job) -> None:
        try:
            submission = await self._send(job)
        except FluxError as error:
            unknown = isinstance(error, FluxTimeoutError) or (
                isinstance(error, FluxConnectionError) and error.reached_server
            )
            message = UNKNOWN_OUTCOME_MESSAGE if unknown else error.user_message
            log.warning("job %d: submit failed: %s", job.id, error)
            await self._fail(job, error.code or type(error).__name__, message)
        else:
            if submission.finished is not None:
                await self._finished(job, submission.finished)
            else:
                await db.mark_submitted(self._store, job.id, submission.handle)
                await self._progress(job, JobStarted(0.0))
                self._poll_needed.set()
        finally:
            self._dispatch_needed.set()

    async def _send(self, job: Job) -> Submission:
        if job.kind is JobKind.EDIT:
            assert job.source_image_url is not None
            edit = EditRequest(prompt=job.prompt, model=job.model, image_url=job.source_image_url, size=job.size)
            return await self._flux.edit(edit)
        request = GenerateRequest(prompt=job.prompt, model=job.model, size=job.size, count=job.count, seed=job.seed)
        return await self._flux.generate(request)

    # -- polling --------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while self._running:
            await self._poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_needed.wait(), timeout=self._poll_interval)
            self._poll_needed.clear()

    async def _poll(self) -> None:
        submitted = await db.jobs_in(self._store, JobStatus.SUBMITTED)
        handles = [job.provider_task_id for job in submitted if job.provider_task_id]
        statuses: dict[str, TaskStatus] = {}
        if handles:
            try:
                statuses = await self._flux.statuses(handles)
            except FluxError as error:
                log.warning("polling %d jobs failed; asking again next tick: %s", len(handles), error)
        now = self._clock()
        still_running: list[Job] = []
        for job in submitted:
            status = statuses.get(job.provider_task_id or "")
            if status is not None and status.state is not TaskState.PENDING:
                await self._finished(job, status)
            elif now - (job.submitted_at or job.created_at) > self._job_timeout:
                await self._fail(job, "deadline", DEADLINE_MESSAGE)
            else:
                still_running.append(job)
        # Status edits go out together, so many jobs do not hold up the next tick one edit at a time.
        await asyncio.gather(*(self._progress(job, JobStarted(now - job.created_at)) for job in still_running))
        for job in await db.jobs_in(self._store, JobStatus.SUCCEEDED):
            self._deliver_soon(job)

    async def _finished(self, job: Job, status: TaskStatus) -> None:
        self._dispatch_needed.set()  # a provider slot is free again
        if status.state is TaskState.FAILED:
            assert status.error is not None
            log.warning("job %d failed at the provider: %s", job.id, status.error)
            await self._fail(job, status.error.code or type(status.error).__name__, status.error.user_message)
            return
        refs = [image.url if image.url else _data_uri(image.data or b"") for image in status.images]
        if await db.mark_succeeded(self._store, job.id, refs, status.seed):
            refreshed = await db.get_job(self._store, job.id)
            if refreshed is not None:
                self._deliver_soon(refreshed)

    # -- delivering -----------------------------------------------------------------------------

    def _deliver_soon(self, job: Job) -> None:
        if job.id not in self._delivering:
            self._delivering.add(job.id)
            self._tasks.spawn(self._deliver(job), name=f"deliver-{job.id}")

    async def _deliver(self, job: Job) -> None:
        try:
            posted = await self._already_posted(job)
            if posted is None:
                async with self._delivery_slots:  # results are held in memory while they are posted
                    images = [await download_image(self._session, ref) for ref in job.image_urls]
                    posted = PostedResult(await self._courier.deliver(job, images), len(images))
        except (DownloadError, DeliveryError) as error:
            attempts = self._delivery_failures.get(job.id, 0) + 1
            self._delivery_failures[job.id] = attempts
            if error.retryable and attempts < DELIVERY_ATTEMPTS:
                log.warning("job %d: delivery attempt %d failed, will retry: %s", job.id, attempts, error)
                return
            log.warning("job %d: giving up delivery: %s", job.id, error)
            await self._fail(job, "delivery", "The finished image could not be posted. You were not charged.")
        else:
            if await db.mark_posted(self._store, job.id, posted.message_id, posted.images):
                log.info("job %d posted as message %d", job.id, posted.message_id)
            await self._notify(job, JobDone(posted.message_id))
            self._forget(job.id)
        finally:
            self._delivering.discard(job.id)

    async def _already_posted(self, job: Job) -> PostedResult | None:
        """For a job that was being delivered when the bot stopped: its post, if that reached the channel.

        Discord's nonce catches a repeated post only for a few minutes; the bot may have been down longer.
        """
        if job.id not in self._recovered:
            return None
        self._recovered.discard(job.id)
        try:
            return await self._courier.find_posted(job)
        except DeliveryError as error:
            log.warning("job %d: could not look for an earlier post; posting with its nonce: %s", job.id, error)
            return None

    # -- endings and progress -------------------------------------------------------------------

    async def _fail(self, job: Job, code: str, message: str) -> None:
        self._dispatch_needed.set()
        if await db.mark_failed(self._store, job.id, code, message):
            await self._notify(job, JobFailed(message))
        self._forget(job.id)

    def _forget(self, job_id: int) -> None:
        self._delivery_failures.pop(job_id, None)
        self._last_progress.pop(job_id, None)

    async def _progress(self, job: Job, update: JobQueued | JobStarted) -> None:
        """Report progress at most every :data:`PROGRESS_INTERVAL` seconds per job, and only when it changed.

        Final words (done, failed) are not throttled: they go through :meth:`_notify` at once.
        """
        now = self._clock()
        last = self._last_progress.get(job.id)
        if last is not None and (last[1] == update or now - last[0] < PROGRESS_INTERVAL):
            return
        self._last_progress[job.id] = (now, update)
        await self._notify(job, update)

    async def _notify(self, job: Job, update: JobUpdate) -> None:
        try:
            await self._courier.notify(job, update)
        except Exception:
            log.exception("job %d: reporting %s failed", job.id, update)


def _data_uri(data: bytes) -> str:
    """Inline result bytes (relays may answer with base64) kept in the store like a URL."""
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode()
