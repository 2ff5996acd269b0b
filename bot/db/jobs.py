"""What happens to a job in the database: accepting it under quota, its lifecycle, and lookups.

Lifecycle (every ``mark_*`` is one guarded ``UPDATE ... WHERE status IN (...)``, so a call from the
wrong status changes nothing and returns ``False``)::

    queued -> submitting -> submitted -> succeeded -> posted
    submitting -> succeeded            (providers that answer the submit with the images)
    queued | submitting | submitted | succeeded -> failed
    submitting -> lost
    queued | submitting | submitted -> cancelled      (the member's Cancel: :func:`cancel_job`)

Every transition is one statement, a transaction of its own (:meth:`~bot.db.Store.write_alone`). The
reservation is settled by the database in the statement that ends the job (trigger ``jobs_settle``),
which also drops what the job kept inline (trigger ``jobs_drop_inline``):
``posted`` charges what was delivered (at most what was reserved), ``failed`` and ``lost`` charge nothing,
``cancelled`` nothing while queued and what was reserved once the submit may have been sent (it is billed).
Because a terminal job can never transition again, repeating a call can never charge or release twice.
The transition that ends a job also records that its member is owed a last word (done, or why not);
:func:`mark_told` settles that once it is said, and clears the interaction token, a secret of no more use.
It also drops what the job kept inline and no longer needs: an edit's source given as a ``data:`` URI
(up to ~13 MB), and, once posted or failed, result images given inline.

Every query here reads only the rows it needs, through an index (``tests/test_query_plans.py`` checks
each plan): a member's live jobs through a partial index of live jobs, never their whole history.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from bot.db.days import month_bounds, utc_day
from bot.db.models import (
    CancelOutcome,
    Job,
    JobKind,
    JobStatus,
    NewJob,
    PollHandle,
    Provider,
    QuotaLimits,
    QuotaRefusal,
)
from bot.db.store import Row, Store, lock_key
from bot.db.usage import evaluate_quota

__all__ = [
    "active_jobs",
    "cancel_job",
    "count_in",
    "create_job",
    "get_job",
    "job_from_row",
    "jobs_by_ids",
    "jobs_in",
    "jobs_owing_final_word",
    "mark_failed",
    "mark_lost",
    "mark_posted",
    "mark_submitted",
    "mark_submitting",
    "mark_succeeded",
    "mark_told",
    "polling_handles",
    "quota_lock",
    "submitted_job",
]

log = logging.getLogger(__name__)

#: error_code given to jobs marked lost.
LOST_ERROR_CODE = "lost"

#: Tries of :func:`create_job` when its insert is refused but, read a moment later, no limit refuses.
_QUOTA_ATTEMPTS = 3


#: create_job's statement on SQLite: a writing statement takes the file's write lock before it reads, so the
#: limits it checks cannot change before it inserts.
_CREATE_JOB = """
    INSERT INTO jobs (
        guild_id, channel_id, user_id, kind, prompt, model, size, count, seed,
        source_image_url, parent_job_id, interaction_application_id, interaction_token,
        interaction_created_at, locale, provider, status, created_at, reserved_images, usage_day)
    SELECT
        :guild_id, :channel_id, :user_id, :kind, :prompt, :model, :size, :count, :seed,
        :source_image_url, :parent_job_id, :interaction_application_id, :interaction_token,
        :interaction_created_at, :locale, :provider, 'queued', :now, :count, :day
    WHERE (:user_monthly IS NULL OR :count + (
               SELECT coalesce(sum(used + reserved), 0) FROM usage
               WHERE guild_id = :guild_id AND user_id = :user_id
                 AND day >= :month_first AND day < :month_following) <= :user_monthly)
      AND (:guild_monthly IS NULL OR :count + (
               SELECT coalesce(sum(used + reserved), 0) FROM usage
               WHERE guild_id = :guild_id AND day >= :month_first AND day < :month_following) <= :guild_monthly)
      AND (:user_daily IS NULL OR :count + (
               SELECT coalesce(sum(used + reserved), 0) FROM usage
               WHERE guild_id = :guild_id AND user_id = :user_id AND day = :day) <= :user_daily)
      AND (:guild_daily IS NULL OR :count + (
               SELECT coalesce(sum(used + reserved), 0) FROM usage
               WHERE guild_id = :guild_id AND day = :day) <= :guild_daily)
      AND (:max_concurrent IS NULL OR (
               SELECT count(*) FROM jobs
               WHERE guild_id = :guild_id AND user_id = :user_id
                 AND status IN ('queued', 'submitting', 'submitted', 'succeeded')) < :max_concurrent)
      AND (:cooldown <= 0 OR coalesce(:now - (
               SELECT created_at FROM jobs WHERE guild_id = :guild_id AND user_id = :user_id
               ORDER BY created_at DESC LIMIT 1) >= :cooldown, 1))
    RETURNING *
"""

#: create_job's statement on PostgreSQL: the same conditions, in the function reserve_job, which first takes
#: the server's quota lock (several processes insert at once there, and a statement's reads do not lock).
_CREATE_JOB_POSTGRESQL = """
    SELECT * FROM reserve_job(
        :lock, :guild_id, :channel_id, :user_id, :kind, :prompt, :model, :size, :count, :seed,
        :source_image_url, :parent_job_id, :interaction_application_id, :interaction_token,
        :interaction_created_at, :locale, :provider, :now, :day, :user_daily, :guild_daily, :max_concurrent,
        :cooldown, :month_first, :month_following, :user_monthly, :guild_monthly)
"""


def quota_lock(guild_id: int) -> str:
    """The name of the lock (:meth:`~bot.db.store.Transaction.lock`) held while a server's quota is decided:
    code that reserves images in that server some other way takes it too."""
    return f"quota:{guild_id}"


async def create_job(store: Store, new: NewJob, limits: QuotaLimits) -> Job | QuotaRefusal:
    """Check every limit and, if all pass, record the job as queued and reserve its images.

    Atomic: two requests (from coroutines or processes) cannot both see the same remaining quota.
    Returns the new :class:`Job`, or a :class:`QuotaRefusal` naming the limit.

    An accepted job costs one statement, a transaction of its own (:meth:`Store.write_alone`): an
    ``INSERT ... SELECT`` that inserts only if every limit passes, each figure read through an index, and
    whose trigger ``jobs_reserve`` reserves the images. On PostgreSQL the statement calls ``reserve_job``,
    which takes the server's quota lock (:func:`quota_lock`) first, so that processes cannot both see the
    same remaining quota. Only a refusal reads the figures again, to say which
    limit (:func:`~bot.db.usage.evaluate_quota`, which the SQL below mirrors).
    """
    now = store.now()
    day = utc_day(now)
    # A calendar month is a range of usage days: read through the same indexes as one day.
    month_first, month_following = month_bounds(now)
    params = {
        "guild_id": new.guild_id,
        "channel_id": new.channel_id,
        "user_id": new.user_id,
        "kind": new.kind.value,
        "prompt": new.prompt,
        "model": new.model,
        "size": new.size,
        "count": new.count,
        "seed": new.seed,
        "source_image_url": new.source_image_url,
        "parent_job_id": new.parent_job_id,
        "interaction_application_id": new.interaction_application_id,
        "interaction_token": new.interaction_token,
        "interaction_created_at": _interaction_time(new, now),
        "locale": new.locale,
        "provider": new.provider.value,
        "now": now,
        "day": day,
        "user_daily": limits.user_daily,
        "guild_daily": limits.guild_daily,
        "max_concurrent": limits.max_concurrent,
        "cooldown": limits.cooldown,
        "month_first": month_first,
        "month_following": month_following,
        "user_monthly": limits.user_monthly,
        "guild_monthly": limits.guild_monthly,
    }
    sql = store.pick(sqlite=_CREATE_JOB, postgresql=_CREATE_JOB_POSTGRESQL)
    if store.dialect == "postgresql":
        # Under READ COMMITTED two processes could both read the same remaining quota: reserve_job takes the
        # server's quota lock before it reads, in the same round trip (PostgreSQL migration 0001).
        params["lock"] = lock_key(quota_lock(new.guild_id))
    for _ in range(_QUOTA_ATTEMPTS):
        rows = await store.write_alone(
            sql,
            params,
        )
        if rows:
            job = job_from_row(rows[0])
            log.info("job %d queued: %d image(s) for user %d in guild %d", job.id, job.count, job.user_id, job.guild_id)
            return job
        refusal = await _refusal(store, new, limits, now, day)
        if refusal is not None:
            log.debug("job refused for user %d in guild %d: %s", new.user_id, new.guild_id, refusal)
            return refusal
        # Between the refused insert and the read, something freed quota (a job ended): try again.
    raise RuntimeError(f"create_job: a limit refused the job {_QUOTA_ATTEMPTS} times but none could be named")


async def _refusal(store: Store, new: NewJob, limits: QuotaLimits, now: float, day: str) -> QuotaRefusal | None:
    """The limit that refuses ``new`` now, read from the same figures :func:`create_job` checks."""
    first, following = month_bounds(now)
    use = await store.fetch_one(
        """
        SELECT
            (SELECT coalesce(sum(used + reserved), 0) FROM usage
             WHERE guild_id = :guild AND user_id = :user AND day = :day),
            (SELECT coalesce(sum(used + reserved), 0) FROM usage WHERE guild_id = :guild AND day = :day),
            (SELECT count(*) FROM jobs
             WHERE guild_id = :guild AND user_id = :user
               AND status IN ('queued', 'submitting', 'submitted', 'succeeded')),
            (SELECT created_at FROM jobs
             WHERE guild_id = :guild AND user_id = :user ORDER BY created_at DESC LIMIT 1),
            (SELECT coalesce(sum(used + reserved), 0) FROM usage
             WHERE guild_id = :guild AND user_id = :user AND day >= :first AND day < :following),
            (SELECT coalesce(sum(used + reserved), 0) FROM usage
             WHERE guild_id = :guild AND day >= :first AND day < :following)
        """,
        {"guild": new.guild_id, "user": new.user_id, "day": day, "first": first, "following": following},
    )
    assert use is not None
    return evaluate_quota(
        limits,
        requested=new.count,
        member_today=int(use[0]),
        guild_today=int(use[1]),
        active_jobs=int(use[2]),
        last_job_at=use[3],
        now=now,
        member_month=int(use[4]),
        guild_month=int(use[5]),
    )


async def mark_submitting(store: Store, job_id: int) -> bool:
    """queued -> submitting, just before the submit request is sent. False if not queued."""
    rows = await store.write_alone(
        "UPDATE jobs SET status = 'submitting' WHERE id = ? AND status = 'queued' RETURNING id", (job_id,)
    )
    return await _done(store, job_id, rows, JobStatus.SUBMITTING)


async def mark_submitted(store: Store, job_id: int, task_id: str) -> bool:
    """submitting -> submitted, storing the provider's task handle (opaque; a URL for BFL)."""
    rows = await store.write_alone(
        """
        UPDATE jobs SET status = 'submitted', provider_task_id = ?, submitted_at = ?
        WHERE id = ? AND status = 'submitting' RETURNING id
        """,
        (task_id, store.now(), job_id),
    )
    return await _done(store, job_id, rows, JobStatus.SUBMITTED)


async def mark_succeeded(
    store: Store, job_id: int, image_urls: Sequence[str], seed: int | None, *, owner: str | None = None
) -> bool:
    """submitted (or submitting, for providers that answer at once) -> succeeded, storing the result.

    ``owner``: the process that will post it (see :mod:`bot.db.work`); by default the job keeps its owner.
    """
    if isinstance(image_urls, str) or not image_urls:
        raise ValueError("mark_succeeded needs a non-empty sequence of image URLs")
    result = json.dumps({"images": list(image_urls), "seed": seed})
    rows = await store.write_alone(
        """
        UPDATE jobs SET status = 'succeeded', result = :result, finished_at = :now, owner = coalesce(:owner, owner)
        WHERE id = :job AND status IN ('submitting', 'submitted') RETURNING id
        """,
        {"result": result, "now": store.now(), "owner": owner, "job": job_id},
    )
    return await _done(store, job_id, rows, JobStatus.SUCCEEDED)


async def mark_posted(store: Store, job_id: int, message_id: int, delivered: int) -> bool:
    """succeeded -> posted: release the reservation and charge the ``delivered`` images.

    An inline edit source and inline result images are dropped (the posted message has the images).

    The post has happened, so it is always recorded: more images than were reserved are charged as the
    reserved number (never more). A second call returns False and charges nothing.
    """
    if delivered < 0:
        raise ValueError(f"delivered cannot be negative ({delivered})")
    rows = await store.write_alone(
        store.pick(  # the smaller of two values: min() on SQLite, least() on PostgreSQL (its min() aggregates)
            sqlite="""
            UPDATE jobs SET status = 'posted', posted_message_id = :message, posted_at = :now,
                            charged_images = min(:delivered, reserved_images), final_word_owed = 1
            WHERE id = :job AND status = 'succeeded'
            RETURNING reserved_images, charged_images
            """,
            postgresql="""
            UPDATE jobs SET status = 'posted', posted_message_id = :message, posted_at = :now,
                            charged_images = least(:delivered, reserved_images), final_word_owed = 1
            WHERE id = :job AND status = 'succeeded'
            RETURNING reserved_images, charged_images
            """,
        ),
        {"message": message_id, "now": store.now(), "delivered": delivered, "job": job_id},
    )
    if rows and rows[0]["charged_images"] < delivered:
        log.warning(
            "job %d delivered %d image(s) but reserved %d; charged %d",
            job_id,
            delivered,
            rows[0]["reserved_images"],
            rows[0]["charged_images"],
        )
    return await _done(store, job_id, rows, JobStatus.POSTED)


async def mark_failed(store: Store, job_id: int, code: str, message: str, *, owner: str | None = None) -> bool:
    """Any non-terminal status -> failed, releasing the reservation (nothing is charged).

    An inline edit source and inline result images are dropped. ``owner``: the process that will tell the
    member (see :mod:`bot.db.work`); by default the job keeps its owner.
    """
    rows = await store.write_alone(
        """
        UPDATE jobs SET status = 'failed', error_code = :code, error_message = :message, finished_at = :now,
                        final_word_owed = 1, owner = coalesce(:owner, owner)
        WHERE id = :job AND status IN ('queued', 'submitting', 'submitted', 'succeeded')
        RETURNING id
        """,
        {"code": code, "message": message, "now": store.now(), "owner": owner, "job": job_id},
    )
    return await _done(store, job_id, rows, JobStatus.FAILED)


async def mark_lost(store: Store, job_id: int, message: str, *, owner: str | None = None) -> bool:
    """submitting -> lost (the outcome of the submit is unknown after a restart); nothing is charged.

    An inline edit source is dropped. ``owner``: the process that will tell the member (see
    :mod:`bot.db.work`); by default the job keeps its owner.
    """
    rows = await store.write_alone(
        """
        UPDATE jobs SET status = 'lost', error_code = :code, error_message = :message, finished_at = :now,
                        final_word_owed = 1, owner = coalesce(:owner, owner)
        WHERE id = :job AND status = 'submitting'
        RETURNING id
        """,
        {"code": LOST_ERROR_CODE, "message": message, "now": store.now(), "owner": owner, "job": job_id},
    )
    return await _done(store, job_id, rows, JobStatus.LOST)


async def cancel_job(store: Store, job_id: int, user_id: int, *, owner: str | None = None) -> CancelOutcome:
    """The member ``user_id`` cancels their job: queued, submitting or submitted -> cancelled.

    Still queued, nothing was sent: the reservation is released (``CANCELLED_QUEUED``). Once the submit may
    have been sent, the provider bills the job whatever happens to it: what it reserved is charged
    (``CANCELLED_BILLED``), and its result, if it comes, is never recorded (``mark_succeeded`` and the other
    transitions leave only live statuses). A job whose result is recorded is past cancelling (``TOO_LATE``),
    as is one that ended otherwise (``ALREADY_ENDED``); another member's job is refused (``NOT_YOURS``).

    One conditional ``UPDATE``, so a Cancel racing the result (or a submit's answer, or another Cancel) either
    ends the job before it or finds it moved on: on PostgreSQL a concurrent writer's change is waited for
    and the condition checked again against it. The settle trigger charges ``charged_images``: a job reserves
    at least one image, so a charged one tells a billed cancel from a free one. ``owner``: the process that
    will tell the member (see :mod:`bot.db.work`); by default the job keeps its owner.
    """
    rows = await store.write_alone(
        """
        UPDATE jobs SET status = 'cancelled', finished_at = :now, final_word_owed = 1, owner = coalesce(:owner, owner),
                        charged_images = CASE WHEN status = 'queued' THEN 0 ELSE reserved_images END
        WHERE id = :job AND user_id = :user AND status IN ('queued', 'submitting', 'submitted')
        RETURNING charged_images
        """,
        {"now": store.now(), "owner": owner, "user": user_id, "job": job_id},
    )
    if rows:
        billed = int(rows[0]["charged_images"]) > 0
        log.info("job %d cancelled by its member (%s)", job_id, "billed" if billed else "nothing charged")
        return CancelOutcome.CANCELLED_BILLED if billed else CancelOutcome.CANCELLED_QUEUED
    row = await store.fetch_one("SELECT user_id, status FROM jobs WHERE id = ?", (job_id,))
    if row is None:
        return CancelOutcome.ALREADY_ENDED  # pruned long ago
    if int(row["user_id"]) != user_id:
        return CancelOutcome.NOT_YOURS
    if row["status"] in (JobStatus.SUCCEEDED, JobStatus.POSTED):
        return CancelOutcome.TOO_LATE
    return CancelOutcome.ALREADY_ENDED


async def mark_told(store: Store, job_id: int) -> None:
    """The member has been given the ended job's last word: forget the interaction token."""
    await store.write_alone(
        "UPDATE jobs SET final_word_owed = 0, interaction_token = NULL WHERE id = ? AND final_word_owed = 1",
        (job_id,),
    )


async def jobs_owing_final_word(store: Store) -> list[Job]:
    """Ended jobs whose member was not yet given the last word (the bot stopped in between), oldest first."""
    rows = await store.fetch_all("SELECT * FROM jobs WHERE final_word_owed = 1 ORDER BY id")
    return [job_from_row(row) for row in rows]


async def get_job(store: Store, job_id: int) -> Job | None:
    """The job with this id, or None."""
    row = await store.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    return None if row is None else job_from_row(row)


async def submitted_job(store: Store, task_id: str) -> Job | None:
    """The submitted job following provider task ``task_id``, or None (unknown, or no longer waiting)."""
    row = await store.fetch_one(
        "SELECT * FROM jobs WHERE provider_task_id = ? AND status = 'submitted' ORDER BY id LIMIT 1", (task_id,)
    )
    return None if row is None else job_from_row(row)


async def jobs_in(store: Store, *statuses: JobStatus) -> list[Job]:
    """Every job in any of ``statuses``, oldest first (e.g. to resume work after a restart)."""
    if not statuses:
        return []
    rows = await store.fetch_all(
        store.pick(
            sqlite="SELECT * FROM jobs WHERE status IN (SELECT value FROM json_each(?)) ORDER BY id",
            postgresql="SELECT * FROM jobs WHERE status = ANY(?::text[]) ORDER BY id",
        ),
        _statuses(store, statuses),
    )
    return [job_from_row(row) for row in rows]


async def count_in(store: Store, *statuses: JobStatus) -> int:
    """How many jobs are in any of ``statuses``, counted in the status index."""
    if not statuses:
        return 0
    row = await store.fetch_one(
        store.pick(
            sqlite="SELECT count(*) FROM jobs WHERE status IN (SELECT value FROM json_each(?))",
            postgresql="SELECT count(*) FROM jobs WHERE status = ANY(?::text[])",
        ),
        _statuses(store, statuses),
    )
    assert row is not None
    return int(row[0])


async def polling_handles(store: Store) -> list[PollHandle]:
    """Submitted jobs as light rows (id, provider task, start), oldest first: what a poll needs, no job decoded.

    ``started_at`` is when the provider accepted the job (``submitted_at``; ``created_at`` if unknown).
    """
    rows = await store.fetch_all(
        """
        SELECT id, provider_task_id, coalesce(submitted_at, created_at) FROM jobs
        WHERE status = 'submitted' AND provider_task_id IS NOT NULL ORDER BY id
        """
    )
    return [PollHandle(int(row[0]), str(row[1]), float(row[2])) for row in rows]


async def jobs_by_ids(store: Store, ids: Sequence[int]) -> list[Job]:
    """The jobs with these ids, in id order; ids of no job (pruned, say) are skipped."""
    if not ids:
        return []
    wanted = [int(job_id) for job_id in ids]
    rows = await store.fetch_all(
        store.pick(
            sqlite="SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            postgresql="SELECT * FROM jobs WHERE id = ANY(?::bigint[]) ORDER BY id",
        ),
        (json.dumps(wanted) if store.dialect == "sqlite" else wanted,),
    )
    return [job_from_row(row) for row in rows]


async def active_jobs(store: Store, guild_id: int, user_id: int) -> list[Job]:
    """The member's jobs in this server that have not ended yet (what ``max_concurrent`` counts)."""
    rows = await store.fetch_all(
        """
        SELECT * FROM jobs
        WHERE guild_id = ? AND user_id = ? AND status IN ('queued', 'submitting', 'submitted', 'succeeded')
        ORDER BY id
        """,
        (guild_id, user_id),
    )
    return [job_from_row(row) for row in rows]


async def _done(store: Store, job_id: int, rows: Sequence[Row], target: JobStatus) -> bool:
    """Report whether the guarded UPDATE matched; log why not if it did not."""
    if rows:
        log.debug("job %d is now %s", job_id, target)
        return True
    current = await store.fetch_one("SELECT status FROM jobs WHERE id = ?", (job_id,))
    if current is None:
        log.warning("job %d: cannot mark %s: no such job", job_id, target)
    elif current[0] == JobStatus.CANCELLED:  # its member cancelled it meanwhile: nothing more happens to it
        log.info("job %d: not marked %s: its member cancelled it", job_id, target)
    else:
        log.warning("job %d: cannot mark %s from status %s", job_id, target, current[0])
    return False


def _statuses(store: Store, statuses: Sequence[JobStatus]) -> tuple[object]:
    """``statuses`` as the one parameter of a status list: a JSON list for SQLite's ``json_each``, an array
    for PostgreSQL's ``= ANY``."""
    values = [JobStatus(status).value for status in statuses]
    return (json.dumps(values) if store.dialect == "sqlite" else values,)


def _interaction_time(new: NewJob, now: float) -> float | None:
    if new.interaction_created_at is not None:
        return new.interaction_created_at
    return now if new.interaction_token is not None else None


def job_from_row(row: Row) -> Job:
    """A whole ``jobs`` row (``SELECT *`` or ``RETURNING *``, either backend) as a :class:`Job`."""
    result = json.loads(row["result"]) if row["result"] is not None else {}
    return Job(
        id=row["id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        user_id=row["user_id"],
        kind=JobKind(row["kind"]),
        prompt=row["prompt"],
        model=row["model"],
        size=row["size"],
        count=row["count"],
        seed=row["seed"],
        source_image_url=row["source_image_url"],
        parent_job_id=row["parent_job_id"],
        interaction_application_id=row["interaction_application_id"],
        interaction_token=row["interaction_token"],
        interaction_created_at=row["interaction_created_at"],
        locale=row["locale"],
        provider=Provider(row["provider"]),
        provider_task_id=row["provider_task_id"],
        status=JobStatus(row["status"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        created_at=row["created_at"],
        submitted_at=row["submitted_at"],
        finished_at=row["finished_at"],
        posted_at=row["posted_at"],
        image_urls=tuple(result.get("images", ())),
        result_seed=result.get("seed"),
        posted_message_id=row["posted_message_id"],
        reserved_images=row["reserved_images"],
        charged_images=row["charged_images"],
        usage_day=row["usage_day"],
    )
