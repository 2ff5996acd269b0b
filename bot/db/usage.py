"""Images per member and day: reading usage, deciding quotas, reserving and settling images.

A job reserves its images on the day it is accepted (``jobs.usage_day``): the database adds them to
``reserved`` as the job row goes in (trigger ``jobs_reserve``, migration 0006). When the job ends, the
statement that ends it settles it (trigger ``jobs_settle``): posting moves what was delivered from
``reserved`` to ``used``, failing releases it. Daily use is ``used + reserved``.
"""

from __future__ import annotations

from bot.db.days import month_bounds, next_utc_midnight, next_utc_month, utc_day
from bot.db.models import LimitKind, QuotaLimits, QuotaRefusal, UsageSummary
from bot.db.store import Store

__all__ = ["evaluate_quota", "guild_usage_month", "guild_usage_today", "user_usage"]


def evaluate_quota(
    limits: QuotaLimits,
    *,
    requested: int,
    member_today: int,
    guild_today: int,
    active_jobs: int,
    last_job_at: float | None,
    now: float,
    member_month: int = 0,
    guild_month: int = 0,
) -> QuotaRefusal | None:
    """The first limit a request for ``requested`` images would break, or ``None`` if it may proceed.

    Checked in the order user_monthly, guild_monthly, user_daily, guild_daily, max_concurrent, cooldown,
    so that a member hears about the longest wait first. A request that does not fit whole is refused whole.
    ``member_month`` and ``guild_month`` are images used + reserved this calendar month (UTC).
    """
    month_end, midnight = next_utc_month(now), next_utc_midnight(now)
    budgets = (
        (LimitKind.USER_MONTHLY, limits.user_monthly, member_month, month_end),
        (LimitKind.GUILD_MONTHLY, limits.guild_monthly, guild_month, month_end),
        (LimitKind.USER_DAILY, limits.user_daily, member_today, midnight),
        (LimitKind.GUILD_DAILY, limits.guild_daily, guild_today, midnight),
    )
    for kind, limit, used, resets_at in budgets:
        if limit is not None and used + requested > limit:
            return QuotaRefusal(kind, limit, used, requested, resets_at)
    if limits.max_concurrent is not None and active_jobs >= limits.max_concurrent:
        return QuotaRefusal(LimitKind.MAX_CONCURRENT, limits.max_concurrent, active_jobs, requested, None)
    if limits.cooldown > 0 and last_job_at is not None and now - last_job_at < limits.cooldown:
        return QuotaRefusal(
            LimitKind.COOLDOWN, limits.cooldown, now - last_job_at, requested, last_job_at + limits.cooldown
        )
    return None


async def user_usage(store: Store, guild_id: int, user_id: int) -> UsageSummary:
    """The member's images in this server today and this month (UTC, by the store's clock)."""
    now = store.now()
    day = utc_day(now)
    first, following = month_bounds(now)
    row = await store.fetch_one(
        """
        SELECT coalesce(sum(used) FILTER (WHERE day = :day), 0),
               coalesce(sum(reserved) FILTER (WHERE day = :day), 0),
               coalesce(sum(used), 0),
               coalesce(sum(reserved), 0)
        FROM usage
        WHERE guild_id = :guild AND user_id = :user AND day >= :first AND day < :following
        """,
        {"guild": guild_id, "user": user_id, "day": day, "first": first, "following": following},
    )
    assert row is not None
    return UsageSummary(day, int(row[0]), int(row[1]), int(row[2]), int(row[3]))


async def guild_usage_today(store: Store, guild_id: int) -> int:
    """Images used + reserved in the server today (UTC): what ``guild_daily`` is compared with."""
    row = await store.fetch_one(
        "SELECT coalesce(sum(used + reserved), 0) FROM usage WHERE guild_id = ? AND day = ?",
        (guild_id, store.today()),
    )
    assert row is not None
    return int(row[0])


async def guild_usage_month(store: Store, guild_id: int) -> int:
    """Images used + reserved in the server this calendar month (UTC): what ``guild_monthly`` is compared with.

    A month is a range of days in the server's daily index, so this reads at most a month of rows.
    """
    first, following = month_bounds(store.now())
    row = await store.fetch_one(
        "SELECT coalesce(sum(used + reserved), 0) FROM usage WHERE guild_id = ? AND day >= ? AND day < ?",
        (guild_id, first, following),
    )
    assert row is not None
    return int(row[0])
