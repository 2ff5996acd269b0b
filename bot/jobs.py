"""What happens to a job, from the moment it is accepted until its images are posted.

The runner is the only writer of a job's lifecycle after :func:`bot.db.create_job`:

1. **Queued.** :meth:`JobRunner.submit` records the job (and reserves its images) before anything else,
   so a crash after the member was acknowledged cannot lose it.
2. **Submitting → submitted.** The dispatcher starts queued jobs in order while fewer than
   ``concurrency`` are at the provider. A submit whose outcome is unknown (timeout, dropped connection,
   or the bot stopping mid-request) is never sent again: the job fails, or is *lost* after a restart,
   and nothing is charged.
3. **Polled.** One poller asks the provider about every submitted job in one batched call per tick,
   ticking at a fixed rate, and gives a job up at its deadline. A provider's callback has the one task
   it names looked up at once.
4. **Succeeded → posted.** The result images are downloaded at once (their URLs expire) and handed to
   the :class:`Courier`, which posts them to the channel exactly once (the post is idempotent per job).
   Posting charges what was delivered; every failure before that releases the reservation.

After a restart, :meth:`JobRunner.start` marks jobs caught submitting as lost, and the loops pick up
the rest: queued jobs are dispatched, submitted ones polled, succeeded ones posted.

A member may cancel their job until its result is recorded (:meth:`JobRunner.cancel`): a queued one is never
sent, and one at the provider is neither polled nor recorded any more (every transition leaves only live
statuses), so its result is never posted. Once the result is recorded, the Cancel is too late.

Several processes may share one database (PostgreSQL). Each holds a lease it renews, and claims the work it
does (:mod:`bot.db.work`): any of them dispatches (the concurrency counts the jobs at the provider across all
of them, in a fair order), one of them, holding the poller role, polls the provider for the whole bot and
reports places in the queue, and each delivers what it claimed. When a process goes, its lease expires and
the others take its work over with the rules of a restart.

A job at the provider costs the runner no Python object between ticks, and a queued one only the place
last reported to its member: the database holds their state, and each tick reads only the rows it acts
on (light rows for polling, whole jobs only for those that changed).
Finished jobs older than the retention period are pruned in the background, in small batches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol

import aiohttp

from bot import db, metrics
from bot.db import (
    CancelOutcome,
    Job,
    JobKind,
    JobStatus,
    NewJob,
    QuotaLimits,
    QuotaRefusal,
    Store,
    StoreBusyError,
    work,
)
from bot.flux import (
    AccountError,
    EditRequest,
    FluxClient,
    FluxConnectionError,
    FluxError,
    FluxTimeoutError,
    GenerateRequest,
    RetryPolicy,
    Submission,
    TaskState,
    TaskStatus,
    UpstreamError,
)
from bot.i18n import N_, Text
from bot.images import DownloadedImage, DownloadError, ImageError, MediaHosts, download_image
from bot.logs import bind_job, job_context
from bot.tasks import TaskSet

__all__ = [
    "Courier",
    "DeliveryError",
    "JobCancelled",
    "JobDone",
    "JobFailed",
    "JobQueued",
    "JobRunner",
    "JobStarted",
    "JobUpdate",
    "PostedResult",
]

log = logging.getLogger(__name__)

#: The least time between two progress reports of one job that say the same kind of thing (its place in
#: the queue): 5 s after the first, 15 s after the second, 30 s after the third, then a minute. A change of
#: kind (queued -> generating) and a final word are reported at once.
PROGRESS_GAPS = (5.0, 15.0, 30.0, 60.0)
#: Seconds between two sweeps of the poller for work a tick may have left behind (results to post, last
#: words owed): the first tick always sweeps, and a poll interval this long or longer sweeps every tick.
SWEEP_EVERY = 1.0
#: How often old finished jobs are pruned, and how many are deleted per transaction.
PRUNE_EVERY = 3600.0
PRUNE_BATCH = 500
#: The pause between two batches of a prune, so the bot's own work gets the database in between.
PRUNE_PAUSE = 0.05
#: Seconds a process's lease lasts unless renewed (``WORK_LEASE_SECONDS``); it is renewed three times as often.
WORK_LEASE = 15.0
#: How long before its lease expires a process stops counting on it (for a renewal late by a slow database).
LEASE_MARGIN = 1 / 3
#: The notification channel on which a process that queued a job wakes the others' dispatchers (the poller
#: reports places in the queue; any process may have a free provider slot).
QUEUE_CHANNEL = "fluxbot_queue"
#: Turns older than this are forgotten: a member last served a day ago ranks like one never served.
TURNS_KEPT = 86400.0
#: Seconds a stopping bot waits for submits under way (see :meth:`JobRunner.stop`).
STOP_GRACE = 10.0
#: Deliveries (download, fit, post) at once: each holds its images in memory, up to 4 x 25 MiB.
DELIVERY_CONCURRENCY = 4
#: How long a delivery keeps trying through transient failures (Discord 5xx, 429, dropped connections).
DELIVERY_WINDOW = 15 * 60.0
#: The waits between delivery attempts: exponential from 1 s, capped at 60 s, with jitter.
DELIVERY_BACKOFF = RetryPolicy(attempts=1_000_000, initial_delay=1.0, max_delay=60.0)
#: Unexpected failures handling one job (not the database being busy) before the job is given up.
MAX_STRIKES = 3
#: Seconds between attempts to record an outcome while the database is busy.
PERSIST_RETRY_DELAY = 1.0

# Why a job ended without images, as its member is told. Kept in English in the database (a job's
# error_message) and translated where shown, in the language of whoever reads it.
LOST_MESSAGE = N_(
    "The bot restarted while sending this request to the image service, so it cannot tell whether it "
    "was received. It was not sent again and you were not charged; please try again."
)
UNKNOWN_OUTCOME_MESSAGE = N_(
    "The image service did not confirm this request. To avoid paying twice it was not sent again, "
    "and you were not charged; please try again."
)
DEADLINE_MESSAGE = N_("The image service did not finish in time. You were not charged; please try again.")
DELIVERY_FAILED_MESSAGE = N_("The finished image could not be posted. You were not charged.")
INTERNAL_ERROR_MESSAGE = N_("The bot could not finish this request. You were not charged; please try again.")


# -- what the runner reports --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobQueued:
    position: int


@dataclass(frozen=True, slots=True)
class JobStarted:
    """The provider accepted the job at ``started_at`` (unix seconds)."""

    started_at: float


@dataclass(frozen=True, slots=True)
class JobDone:
    message_id: int


@dataclass(frozen=True, slots=True)
class JobFailed:
    """``message`` is safe to show the member: a text to render in their language, or a message id (one of
    the bot's fixed sentences, kept in the database) to look up, or a sentence shown as it is."""

    message: Text | str


@dataclass(frozen=True, slots=True)
class JobCancelled:
    """The member cancelled the job. ``billed``: the provider had it already, so it counts all the same."""

    billed: bool


JobUpdate = JobQueued | JobStarted | JobDone | JobFailed | JobCancelled
#: The last word about a job that ended.
FinalWord = JobDone | JobFailed | JobCancelled


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
    """Runs every job: a dispatcher for queued jobs, one poller for submitted ones, and deliveries.

    Nothing that goes wrong with one job stops the others, and nothing stops a loop: each tick, and each
    job within it, is guarded. A busy database (:class:`~bot.db.StoreBusyError`) is normal: the work is
    done again at the next tick, and every state change is guarded by the job's status, so repeating one
    is harmless. Any other unexpected error counts against its job; after :data:`MAX_STRIKES` the job is
    failed with a message and its reservation released.
    """

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
        delivery_window: float = DELIVERY_WINDOW,
        delivery_backoff: RetryPolicy = DELIVERY_BACKOFF,
        media_hosts: MediaHosts | None = None,
        retention: float | None = None,
        owner: str | None = None,
        lease: float = WORK_LEASE,
        sole: bool = True,
        clock: Callable[[], float] = time.time,
        on_account_error: Callable[[Job, AccountError], Awaitable[None]] | None = None,
    ) -> None:
        """``retention``: seconds a finished job is kept before it is pruned; ``None`` keeps every job.

        ``owner`` names this process in the database (default: host, process id and a random part);
        ``lease`` is how long its claims last unless renewed. ``sole``: no other process uses the database
        (SQLite), so the work of any other owner is a previous run's, taken over at once.

        ``on_account_error`` is awaited when the provider refuses a submit for the bot's account (credentials,
        balance), which only the operator can fix, after the job's failure is recorded: the app alerts the
        job's server. Whatever it raises is logged, never the runner's concern.
        """
        self._store = store
        self._flux = flux
        self._courier = courier
        self._session = session
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._job_timeout = job_timeout
        self._delivery_window = delivery_window
        self._delivery_backoff = delivery_backoff
        self._media_hosts = media_hosts
        self._retention = retention
        self._clock = clock
        self._on_account_error = on_account_error
        self._owner = owner if owner is not None else new_owner_name()
        self._lease = lease
        self._sole = sole
        self._lease_until = -math.inf  # loop time until which this process's own lease is known to hold
        self._polls_until = -math.inf  # loop time until which it holds the poller role
        self._tasks = TaskSet("jobs")
        self._submits = TaskSet("submits")
        self._dispatch_needed = asyncio.Event()
        self._poll_needed = asyncio.Event()
        self._submitting: set[int] = set()
        self._delivering: set[int] = set()
        self._strikes: dict[int, int] = {}
        self._shown: dict[int, _Shown] = {}  # queued jobs' last progress report
        self._own_orphans_possible = False  # recording a submit of ours failed (see _dispatch)
        self._next_sweep = 0.0
        self._reported: set[str] = set()
        self._telling: set[int] = set()
        self._delivery_slots = asyncio.Semaphore(DELIVERY_CONCURRENCY)
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def owner(self) -> str:
        """This process's name in the database (``jobs.owner``, ``workers``)."""
        return self._owner

    @property
    def polling(self) -> bool:
        """Whether this process holds the poller role now (it polls the provider for the whole bot)."""
        return self._polls_until > asyncio.get_running_loop().time()

    async def start(self) -> None:
        """Start the dispatcher and the poller; their first ticks recover what a previous run left behind."""
        self._running = True
        try:
            await self._store.listen(QUEUE_CHANNEL, self._queue_changed)
        except Exception as error:  # the poller then reports new jobs' places at its next round instead
            log.warning("cannot listen for jobs queued by other processes: %s", error)
        self._tasks.spawn(self._lease_loop(), name="lease")
        self._tasks.spawn(self._dispatch_loop(), name="dispatcher")
        self._tasks.spawn(self._poll_loop(), name="poller")
        if self._retention is not None:
            self._tasks.spawn(self._prune_loop(self._retention), name="pruner")

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
        try:  # the work left is free for the other processes at once, not when the lease expires
            await work.retire_worker(self._store, self._owner)
        except Exception as error:
            log.warning("could not end this process's lease; it expires within %.0f s: %s", self._lease, error)

    # -- the front door -------------------------------------------------------------------------

    async def submit(self, new: NewJob, limits: QuotaLimits) -> Job | QuotaRefusal:
        """Record ``new`` under ``limits`` and queue it. Returns the job or the refusal."""
        outcome = await db.create_job(self._store, new, limits)
        if isinstance(outcome, Job):
            with job_context(outcome):
                log.info("job %d queued: %s %s for user %d", outcome.id, outcome.kind, outcome.model, outcome.user_id)
            self._dispatch_needed.set()
            try:
                await self._store.notify(QUEUE_CHANNEL)
            except Exception as error:  # the job is recorded: the others find it at their next round
                log.warning("job %d: could not tell other processes it is queued: %s", outcome.id, error)
        return outcome

    def _queue_changed(self, _payload: str) -> None:
        """A job was queued (maybe by another process): dispatch it, or report its place, now."""
        if self._running:
            self._dispatch_needed.set()

    async def accept_callback(self, body: Any) -> bool:
        """A provider's callback for one of our tasks: ask the provider about that task now.

        Callbacks are not signed, so the body itself is never trusted: it only has to name a task we
        submitted and are still waiting for, and the result is then fetched from the provider, for that
        one task. Returns False for a task we are not waiting for. Raises
        :class:`~bot.flux.errors.CallbackError` for a body that is not a callback.
        """
        status = self._flux.parse_callback(body)
        try:
            job = await db.submitted_job(self._store, status.handle)
        except StoreBusyError:
            self.poll_now()  # cannot tell now; asking the provider about every job is harmless
            return True
        if job is None:
            log.warning("ignoring a callback for a task that no job is waiting for")
            return False
        self._tasks.spawn(self._look_up(job), name=f"callback-{job.id}")
        return True

    def poll_now(self) -> None:
        """Ask the provider at once instead of at the next tick (a callback arrived, or a test wants it)."""
        self._poll_needed.set()

    async def cancel(self, job_id: int, user_id: int) -> CancelOutcome:
        """The member ``user_id`` cancels job ``job_id`` (see :func:`bot.db.cancel_job` for the outcomes).

        A job that ends here frees its place in the queue or its provider slot at once, in every process, and
        its member is given the last word (on their status line, whose Cancel button it removes). A submit
        or poll under way for it finds it cancelled when it comes back and records nothing.
        """
        outcome = await db.cancel_job(self._store, job_id, user_id, owner=self._owner)
        if not outcome.cancelled:
            return outcome
        self._dispatch_needed.set()
        try:
            await self._store.notify(QUEUE_CHANNEL)  # the others' dispatchers, and the places the poller reports
        except Exception as error:
            log.warning("job %d: could not tell other processes it was cancelled: %s", job_id, error)
        self._forget(job_id)
        job = await db.get_job(self._store, job_id)
        if job is None:  # cannot be pruned while its last word is owed; only a manual deletion gets here
            return outcome
        metrics.current().job_cancelled(job.kind, job.charged_images)
        try:
            await self._tell_final(job, JobCancelled(outcome is CancelOutcome.CANCELLED_BILLED))
        except StoreBusyError as error:  # the word stays owed: a sweep says it again
            log.warning("job %d: recording that its member was told of the cancel: %s", job_id, error)
        return outcome

    # -- the lease ------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Renew this process's lease, and take or keep the poller role, three times per lease period."""
        while self._running:
            renewed = await self._tick("renewing this process's lease", self._renew)
            await asyncio.sleep(self._lease / 3 if renewed else min(1.0, self._lease / 3))

    async def _renew(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        if self._sole:  # the database's only process: any other lease is a previous run's
            self._sole = False
            if gone := await work.forget_other_workers(self._store, self._owner):
                log.info("took over the work of %d earlier run(s) of the bot", gone)
        await work.renew_worker(self._store, self._owner, self._lease)
        had_lease = self._lease_until > began
        self._lease_until = began + self._lease * (1 - LEASE_MARGIN)
        polled = self.polling
        if await work.hold_role(self._store, work.POLLER, self._owner, self._lease):
            self._polls_until = began + self._lease * (1 - LEASE_MARGIN)
            if not polled:
                log.info("this process polls the image service for the whole bot")
                self.poll_now()
        elif polled:
            self._polls_until = -math.inf
            log.info("another process polls the image service now")
        if not had_lease:
            self._dispatch_needed.set()

    # -- dispatching ----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while self._running:
            done = await self._tick("dispatching", self._dispatch)
            # After a failed round, try again within a poll interval even if nothing else happens.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dispatch_needed.wait(), timeout=None if done else self._poll_interval)
            self._dispatch_needed.clear()

    async def _dispatch(self) -> None:
        # A job of ours caught submitting by no submit under way had its outcome go unrecorded: whether the
        # provider received it is unknown, so it is never sent again. (Those of processes that are gone are
        # found by the sweep.) Looked for here, in the task that starts submits, so a submit just claimed is
        # never mistaken for one.
        if self._own_orphans_possible:
            self._own_orphans_possible = False
            await self._lose_orphans(own=True)
        if asyncio.get_running_loop().time() >= self._lease_until:
            return  # claiming work needs a live lease: the lease loop dispatches again once it has one
        for job in await work.claim_queued(self._store, self._owner, concurrency=self._concurrency):
            self._submitting.add(job.id)
            self._submits.spawn(self._start_job(job), name=f"submit-{job.id}")
        if self.polling:  # places in the queue are reported by one process, the poller
            await self._report_queue()

    async def _lose_orphans(self, *, own: bool) -> None:
        """Give up the jobs caught submitting by a process that is gone (or, with ``own``, by this one)."""
        for job in await work.orphaned_submits(self._store, self._owner, own=own):
            if job.id not in self._submitting:
                if own:
                    self._own_orphans_possible = True  # until a later dispatch finds it lost
                await self._guarded(job, "giving up an interrupted submit", self._lose(job))

    async def _report_queue(self) -> None:
        """Tell waiting members their place in the queue, reading whole jobs only for the reports due."""
        now = self._clock()
        due = {
            job_id: JobQueued(position)
            for position, job_id in enumerate(await work.queue_order(self._store), start=1)
            if self._progress_due(job_id, JobQueued(position), now)
        }
        if due:
            jobs = await db.jobs_by_ids(self._store, list(due))
            # A job cancelled since the queue was read has had its last word: no place shown over it.
            await asyncio.gather(*(self._progress(job, due[job.id]) for job in jobs if job.status is JobStatus.QUEUED))

    async def _lose(self, job: Job) -> None:
        lost = await db.mark_lost(self._store, job.id, LOST_MESSAGE, owner=self._owner)
        self._dispatch_needed.set()  # a provider slot is free again (set once the database says so)
        if lost:
            metrics.current().job_ended(job.kind, "lost")
            log.warning("job %d was cut off while being submitted; marked lost", job.id)
            await self._tell_final(job, JobFailed(LOST_MESSAGE))
        self._forget(job.id)

    async def _start_job(self, job: Job) -> None:
        """Send one submit, exactly once, and record its outcome (however long the database is busy)."""
        bind_job(job)  # this task handles this one job: what it logs is about it
        try:
            try:
                submission = await self._send(job)
            except FluxError as error:
                unknown = (
                    isinstance(error, FluxTimeoutError)
                    or (isinstance(error, FluxConnectionError) and error.reached_server)
                    # accepted (2xx), but the answer could not be read: the task may well exist
                    or (isinstance(error, UpstreamError) and 200 <= (error.status or 0) < 300)
                )
                log.warning("job %d: submit failed: %s", job.id, error)
                code, message = (
                    error.code or type(error).__name__,
                    UNKNOWN_OUTCOME_MESSAGE if unknown else error.user_message,
                )
                await self._persist(job, partial(self._fail, job, code, message))
                if isinstance(error, AccountError):
                    await self._account_refused(job, error)
            except ImageError as error:  # refused before anything was sent
                log.warning("job %d: refused before submitting: %s", job.id, error)
                await self._persist(job, partial(self._fail, job, "source", error.user_message))
            except Exception:
                log.exception("job %d: the submit failed unexpectedly; it is not sent again", job.id)
                await self._persist(job, partial(self._fail, job, "internal", UNKNOWN_OUTCOME_MESSAGE))
            else:
                await self._persist(job, partial(self._accepted, job, submission))
        except Exception:
            # Recording the outcome failed: the next dispatch gives the job up as lost, never re-sent.
            log.exception("job %d: recording the submit's outcome failed", job.id)
            self._own_orphans_possible = True
        finally:
            self._submitting.discard(job.id)
            self._dispatch_needed.set()

    async def _account_refused(self, job: Job, error: AccountError) -> None:
        if self._on_account_error is None:
            return
        try:
            await self._on_account_error(job, error)
        except Exception:
            log.exception("job %d: handling the provider's refusal of the account failed", job.id)

    async def _send(self, job: Job) -> Submission:
        if job.kind is JobKind.EDIT:
            assert job.source_image_url is not None
            if self._media_hosts is not None and not job.source_image_url.startswith("data:"):
                self._media_hosts.check(job.source_image_url)  # also for jobs queued by an older version
            edit = EditRequest(prompt=job.prompt, model=job.model, image_url=job.source_image_url, size=job.size)
            return await self._flux.edit(edit)
        request = GenerateRequest(prompt=job.prompt, model=job.model, size=job.size, count=job.count, seed=job.seed)
        return await self._flux.generate(request)

    async def _accepted(self, job: Job, submission: Submission) -> None:
        if submission.finished is not None:
            await self._finished(job, submission.finished)
            return
        # Not recorded if its member cancelled it meanwhile: nothing is shown over the last word.
        if await db.mark_submitted(self._store, job.id, submission.handle):
            await self._progress(job, JobStarted(self._clock()))

    # -- polling --------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        """Tick at a fixed rate: each tick is due one interval after the previous one was (not after it
        ended), so the time a tick takes does not stretch the period. A tick that overruns the interval is
        logged, and the ticks it overran are skipped rather than run back to back. An early tick
        (:meth:`poll_now`) does not move the schedule."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self._running:
            began = loop.time()
            await self._tick("polling", self._poll)
            ended = loop.time()
            if ended - began > self._poll_interval:
                log.warning(
                    "a poll tick took %.3f s, longer than the poll interval of %.3f s",
                    ended - began,
                    self._poll_interval,
                )
            if began >= due:  # a scheduled tick: the next one is due an interval later, or at the next slot
                due += self._poll_interval * max(1, math.ceil((ended - due) / self._poll_interval))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await self._poll_needed.wait()
            self._poll_needed.clear()

    async def _poll(self) -> None:
        """One tick: ask the provider about every submitted job (the poller only), then sweep now and then."""
        if self.polling:
            await self._poll_provider()
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_sweep:
            self._next_sweep = loop.time() + SWEEP_EVERY
            await self._sweep()

    async def _poll_provider(self) -> None:
        pending = await db.polling_handles(self._store)
        statuses = await self._statuses([handle.task_id for handle in pending])
        now = self._clock()
        news: dict[int, TaskStatus] = {}
        overdue: set[int] = set()
        for handle in pending:
            status = statuses.get(handle.task_id)
            if status is not None and status.state is not TaskState.PENDING:
                news[handle.job_id] = status
            elif now - handle.started_at > self._job_timeout:
                overdue.add(handle.job_id)
        changed = await db.jobs_by_ids(self._store, [*news, *overdue]) if news or overdue else []
        # The jobs that changed are handled side by side: one job's writes do not hold up another's delivery.
        await asyncio.gather(
            *(
                self._guarded(job, "recording its result", self._finished(job, news[job.id]))
                if job.id in news
                else self._guarded(job, "failing it at its deadline", self._fail(job, "deadline", DEADLINE_MESSAGE))
                for job in changed
            )
        )

    async def _sweep(self) -> None:
        """Pick up what a tick, a delivery or a process that is gone left behind: submits cut off, results not
        being posted (after a restart, or a delivery that met a busy database) and last words still owed.

        A result picked up here may have reached the channel already, so it is looked for there first.
        """
        await self._lose_orphans(own=False)
        for job in await work.claim_results(self._store, self._owner):
            self._deliver_soon(job, look_first=True)
        await self._tell_owed()

    async def _look_up(self, job: Job) -> None:
        """Ask the provider about one job's task (its callback arrived) and record the news, if any."""
        assert job.provider_task_id is not None
        status = (await self._statuses([job.provider_task_id])).get(job.provider_task_id)
        if status is not None and status.state is not TaskState.PENDING:
            await self._guarded(job, "recording its result", self._finished(job, status))

    async def _statuses(self, handles: list[str]) -> dict[str, TaskStatus]:
        """The provider's news about ``handles``; none this tick if it cannot be asked (deadlines still apply)."""
        if not handles:
            return {}
        try:
            return await self._flux.statuses(handles)
        except FluxError as error:
            log.warning("polling %d jobs failed; asking again next tick: %s", len(handles), error)
        except Exception:
            self._log_once("polling", "polling %d jobs failed unexpectedly; asking again next tick", len(handles))
        return {}

    async def _finished(self, job: Job, status: TaskStatus) -> None:
        if status.state is TaskState.FAILED:
            assert status.error is not None
            log.warning("job %d failed at the provider: %s", job.id, status.error)
            await self._fail(job, status.error.code or type(status.error).__name__, status.error.user_message)
            return
        # A job posts at most the images it reserved, whatever the provider returned.
        refs = [image.url if image.url else _data_uri(image.data or b"") for image in status.images][: job.count]
        if len(status.images) > job.count:
            log.warning(
                "job %d: the provider returned %d images for %d; keeping %d",
                job.id,
                len(status.images),
                job.count,
                job.count,
            )
        recorded = await db.mark_succeeded(self._store, job.id, refs, status.seed, owner=self._owner)
        self._dispatch_needed.set()  # a provider slot is free again (set once the database says so)
        if recorded:
            self._deliver_soon(
                replace(job, status=JobStatus.SUCCEEDED, image_urls=tuple(refs), result_seed=status.seed)
            )

    # -- delivering -----------------------------------------------------------------------------

    def _deliver_soon(self, job: Job, *, look_first: bool = False) -> None:
        if job.id not in self._delivering:
            self._delivering.add(job.id)
            self._tasks.spawn(self._deliver(job, look_first=look_first), name=f"deliver-{job.id}")

    async def _deliver(self, job: Job, *, look_first: bool) -> None:
        try:
            await self._guarded(job, "delivering it", self._deliver_patiently(job, look_first=look_first))
        finally:
            self._delivering.discard(job.id)

    async def _deliver_patiently(self, job: Job, *, look_first: bool) -> None:
        """Post the job's result, riding out transient failures (Discord 5xx, 429, dropped connections,
        the result's host) with capped exponential backoff for up to the delivery window.

        A failure that will not go away (no access to the channel, the channel gone, an unusable image)
        fails the job at once. After a failed post the channel is searched before posting again, since
        the post may have reached Discord after all.
        """
        images: list[DownloadedImage] | None = None  # fetched once: result URLs expire
        first_failure: float | None = None
        for attempt in itertools.count():
            try:
                posted = await self._find_posted(job) if look_first else None
                if posted is None:
                    async with self._delivery_slots:  # results are held in memory while they are posted
                        if images is None:
                            images = [await download_image(self._session, ref) for ref in job.image_urls[: job.count]]
                        look_first = True
                        posted = PostedResult(await self._courier.deliver(job, images), len(images))
            except (DownloadError, DeliveryError) as error:
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                delay = self._delivery_backoff.delay(attempt)
                if not error.retryable or delay is None or now + delay - first_failure > self._delivery_window:
                    # The last post may have reached the channel even though its answer did not.
                    found = await self._find_posted(job) if look_first else None
                    if found is not None:
                        await self._persist(job, partial(self._posted, job, found))
                        return
                    log.warning("job %d: giving up delivery after %d attempt(s): %s", job.id, attempt + 1, error)
                    await self._persist(job, partial(self._fail, job, "delivery", DELIVERY_FAILED_MESSAGE))
                    return
                log.warning(
                    "job %d: delivery attempt %d failed; trying again in %.1f s: %s", job.id, attempt + 1, delay, error
                )
                await asyncio.sleep(delay)
            else:
                await self._persist(job, partial(self._posted, job, posted))
                return

    async def _posted(self, job: Job, posted: PostedResult) -> None:
        if await db.mark_posted(self._store, job.id, posted.message_id, posted.images):
            metrics.current().job_posted(job.kind, posted.images, self._clock() - job.created_at)
            log.info("job %d posted as message %d", job.id, posted.message_id)
            await self._tell_final(job, JobDone(posted.message_id))
        self._forget(job.id)

    async def _find_posted(self, job: Job) -> PostedResult | None:
        """The job's post, if an earlier attempt (or a previous run) reached the channel after all.

        Discord's nonce catches a repeated post only for a few minutes; the bot may have been down longer.
        """
        try:
            return await self._courier.find_posted(job)
        except DeliveryError as error:
            log.warning("job %d: could not look for an earlier post; posting with its nonce: %s", job.id, error)
            return None

    # -- endings, guards and progress -----------------------------------------------------------

    async def _fail(self, job: Job, code: str, message: Text | str) -> None:
        kept = kept_message(message)
        failed = await db.mark_failed(self._store, job.id, code, kept, owner=self._owner)
        self._dispatch_needed.set()  # a provider slot (or a queue place) is free again
        if failed:
            metrics.current().job_ended(job.kind, metrics.job_outcome(code))
            # Told now, a text with values in it is still whole, so the member reads all of it in their language;
            # the database has it only in English. Any other is the message id it is kept as.
            told = message if isinstance(message, Text) and message.values else kept
            await self._tell_final(job, JobFailed(told))
        self._forget(job.id)

    async def _tell_final(self, job: Job, update: FinalWord) -> None:
        """Give the member an ended job's last word, then settle it (and forget the interaction token).

        The word is owed in the database from the moment the job ended, so a bot stopped in between, or a
        settling that met a busy database, says it at a later tick instead of never.
        """
        self._telling.add(job.id)
        try:
            await self._notify(job, update)
            await db.mark_told(self._store, job.id)
        finally:
            self._telling.discard(job.id)

    async def _tell_owed(self) -> None:
        """Say the last words still owed, e.g. because the previous run stopped right after a job ended."""
        underway = set(self._telling)  # taken before the read: these are being told right now
        for job in await work.claim_final_words(self._store, self._owner):
            if job.id in underway or job.id in self._telling:
                continue
            if job.status is JobStatus.POSTED and job.posted_message_id is not None:
                await self._tell_final(job, JobDone(job.posted_message_id))
            elif job.status is JobStatus.CANCELLED:  # a job reserves at least one image: charged means billed
                await self._tell_final(job, JobCancelled(job.charged_images > 0))
            else:
                await self._tell_final(job, JobFailed(job.error_message or INTERNAL_ERROR_MESSAGE))

    def _forget(self, job_id: int) -> None:
        self._strikes.pop(job_id, None)
        self._shown.pop(job_id, None)

    # -- pruning --------------------------------------------------------------------------------

    async def _prune_loop(self, retention: float) -> None:
        while self._running:
            await self._tick("pruning old jobs", partial(self._prune, retention))
            await asyncio.sleep(PRUNE_EVERY)

    async def _prune(self, retention: float) -> None:
        """Delete finished jobs older than ``retention`` seconds, a small batch per transaction, so the
        database does not grow without bound. Daily usage totals are kept (they live in ``usage``)."""
        await work.prune_turns(self._store, before=self._clock() - TURNS_KEPT)
        await db.prune_records(self._store)
        before = self._clock() - retention
        pruned = 0
        while self._running:
            batch = await db.prune_finished_jobs(self._store, before=before, batch=PRUNE_BATCH)
            pruned += batch
            if batch < PRUNE_BATCH:
                break
            await asyncio.sleep(PRUNE_PAUSE)
        if pruned:
            log.info("pruned %d finished jobs older than %.0f days", pruned, retention / 86400)

    async def _tick(self, what: str, step: Callable[[], Awaitable[None]]) -> bool:
        """One round of a loop; whatever goes wrong, the loop goes on at its next tick. True if it went well."""
        try:
            await step()
        except StoreBusyError as error:
            log.warning("%s: %s; trying again next tick", what, error)
        except Exception:
            self._log_once(what, "%s failed unexpectedly; trying again next tick", what)
        else:
            return True
        return False

    async def _guarded(self, job: Job, step: str, work: Coroutine[Any, Any, None]) -> None:
        """Do one job's ``step``; an unexpected failure counts against the job, never against the loop."""
        with job_context(job):
            try:
                await work
            except StoreBusyError as error:
                log.warning("job %d: %s: %s; trying again next tick", job.id, step, error)
            except Exception:
                strikes = self._strikes[job.id] = self._strikes.get(job.id, 0) + 1
                if strikes == 1:
                    log.exception("job %d: unexpected error while %s", job.id, step)
                else:
                    log.warning(
                        "job %d: unexpected error while %s again (%d of %d)", job.id, step, strikes, MAX_STRIKES
                    )
                if strikes >= MAX_STRIKES:
                    with contextlib.suppress(Exception):  # if even this fails, the next strike tries again
                        await self._fail(job, "internal", INTERNAL_ERROR_MESSAGE)

    async def _persist(self, job: Job, change: Callable[[], Awaitable[None]]) -> None:
        """Record an outcome that exists only in memory (a submit's answer, a post), waiting out a busy
        database for as long as it takes; losing it would lose a billed task or double a post."""
        for attempt in itertools.count(1):
            try:
                await change()
                return
            except StoreBusyError as error:
                log.warning("job %d: %s; recording its outcome again (attempt %d)", job.id, error, attempt)
                await asyncio.sleep(PERSIST_RETRY_DELAY)

    def _log_once(self, key: str, message: str, *args: object) -> None:
        """Log an unexpected error with its stack the first time, then as one line."""
        if key in self._reported:
            log.warning(message, *args)
        else:
            self._reported.add(key)
            log.exception(message, *args)

    def _progress_due(self, job_id: int, update: JobQueued, now: float) -> bool:
        """Whether a queued job's place should be reported: the first time, and then only when it changed
        and the gap for the number of reports so far (:data:`PROGRESS_GAPS`) has passed."""
        shown = self._shown.get(job_id)
        if shown is None:
            return True
        gap = PROGRESS_GAPS[min(shown.reports, len(PROGRESS_GAPS)) - 1]
        return shown.update != update and now - shown.at >= gap

    async def _progress(self, job: Job, update: JobQueued | JobStarted) -> None:
        """Report where a job stands. A queued job's place is remembered until it starts (to space its
        reports out); a started job's line names its start time, which Discord shows as a live relative
        time, so it is reported once and nothing about it is kept. Final words go through :meth:`_notify`."""
        if isinstance(update, JobQueued):
            shown = self._shown.get(job.id)
            self._shown[job.id] = _Shown(update, self._clock(), 1 if shown is None else shown.reports + 1)
        else:
            self._shown.pop(job.id, None)
        await self._notify(job, update)

    async def _notify(self, job: Job, update: JobUpdate) -> None:
        with job_context(job):  # also for progress reported outside a guarded step
            try:
                await self._courier.notify(job, update)
            except Exception:
                log.exception("job %d: reporting %s failed", job.id, update)


@dataclass(frozen=True, slots=True)
class _Shown:
    """The last place in the queue reported for a job, when, and how many reports it has had."""

    update: JobQueued
    at: float
    reports: int


def new_owner_name() -> str:
    """A name for this process in the database, unique among the processes sharing it: host, pid, random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def kept_message(message: Text | str) -> str:
    """What the database keeps of why a job failed: a fixed sentence as its message id, looked up in the
    reader's language wherever it is shown (the status line, /history); one with values in it (a provider's
    reason, a size) in English, as it cannot be looked up."""
    if isinstance(message, Text):
        return message.message if not message.values else str(message)
    return message


def _data_uri(data: bytes) -> str:
    """Inline result bytes (relays may answer with base64) kept in the store like a URL."""
    return "data:application/octet-stream;base64," + base64.b64encode(data).decode()
