"""Keeping the database from growing without bound: old finished jobs are deleted in small batches.

Only job rows go. What usage reports need stays: images per member and day live in ``usage``, which
pruning never touches, so ``/usage`` and the daily limits read the same after a prune as before. A job
whose member is still owed its last word (see :func:`bot.db.mark_told`) is kept until it has been said.
"""

from __future__ import annotations

import logging

from bot.db.days import utc_day
from bot.db.store import Store

__all__ = ["ALERTS_KEPT", "REFUSALS_KEPT_DAYS", "prune_finished_jobs", "prune_records"]

#: Seconds an alert's record is kept: longer than the month its key may name, so no alert is posted twice.
ALERTS_KEPT = 62 * 86400
#: Days of refusal counts kept: the longest period ``/limits report`` shows, and a day to spare.
REFUSALS_KEPT_DAYS = 91

log = logging.getLogger(__name__)


async def prune_finished_jobs(store: Store, *, before: float, batch: int = 500) -> int:
    """Delete up to ``batch`` ended jobs (posted, failed, lost or cancelled) that finished before ``before``
    (unix seconds) and owe their member nothing any more, oldest first; return how many were deleted.

    One short transaction per call, so a caller prunes a large backlog by calling again until it gets
    fewer than ``batch``, and other writers get the database in between. A batch is all or nothing: a
    bot stopped during one leaves every job of it in place, and the next call picks them up. Jobs made
    from a deleted one (re-rolls, edits) keep their rows; their ``parent_job_id`` becomes NULL.
    """
    if batch <= 0:
        raise ValueError(f"a prune batch must delete at least one job, not {batch}")
    # INDEXED BY: left to itself, SQLite reads every ended job through jobs_status and sorts them all.
    # PostgreSQL has no such hint and needs none: it picks jobs_ended (tests/test_query_plans.py checks).
    async with store.transaction() as tx:
        rows = await tx.fetch_all(
            store.pick(
                sqlite="""
                DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs INDEXED BY jobs_ended
                    WHERE status IN ('posted', 'failed', 'lost', 'cancelled') AND finished_at < :before
                      AND final_word_owed = 0
                    ORDER BY finished_at LIMIT :batch)
                RETURNING id
                """,
                postgresql="""
                DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs
                    WHERE status IN ('posted', 'failed', 'lost', 'cancelled') AND finished_at < :before
                      AND final_word_owed = 0
                    ORDER BY finished_at LIMIT :batch)
                RETURNING id
                """,
            ),
            {"before": before, "batch": batch},
        )
    log.debug("pruned %d finished job(s) older than %.0f", len(rows), before)  # the caller sums the batches up
    return len(rows)


async def prune_records(store: Store) -> int:
    """Delete the records that only serve a while: alerts posted more than :data:`ALERTS_KEPT` seconds ago and
    refusal counts older than :data:`REFUSALS_KEPT_DAYS` days. Both tables are small (a few rows per server and
    day), so one short transaction. Returns how many rows went."""
    now = store.now()
    first_day = utc_day(now - REFUSALS_KEPT_DAYS * 86400)
    async with store.transaction() as tx:
        alerts = await tx.execute("DELETE FROM alerts_sent WHERE sent_at < ?", (now - ALERTS_KEPT,))
        refusals = await tx.execute("DELETE FROM refusals WHERE day < ?", (first_day,))
    return alerts + refusals
