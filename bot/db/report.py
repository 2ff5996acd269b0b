"""What ``/limits report`` shows a server's admins: where the images of a period went, and what was refused.

Images per day and model come from the server's ended jobs (a posted job's ``charged_images``), which
retention keeps for ``JOB_RETENTION_DAYS`` (90 by default, the longest period a report covers). The top
members come from ``usage``, which pruning never touches. Refused requests are counted per server, UTC day
and cause in ``refusals`` as they happen (:func:`count_refusal`): a refusal leaves no job behind.

Each query reads one server's rows of one period through an index whose prefix is the server, and returns
aggregates (at most 90 days x models x outcomes rows), so a report costs the same however long the bot has run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from bot.db.store import Store

__all__ = ["MAX_REPORT_DAYS", "TOP_MEMBERS", "UsageReport", "count_refusal", "usage_report"]

#: The longest period a report covers: no longer than jobs are kept by default (``JOB_RETENTION_DAYS``).
MAX_REPORT_DAYS = 90

#: How many of the members who used most a report names.
TOP_MEMBERS = 10

_DAY = 86_400


@dataclass(frozen=True, slots=True)
class UsageReport:
    """One server's images, failures and refusals over ``days``, the UTC days of the period, oldest first.

    ``images`` and ``per_model`` hold only what was posted (nothing is charged for the rest), and only days
    and models with at least one image. ``failures`` counts failed jobs by ``error_code`` (jobs lost in a
    restart under ``"lost"``); ``refusals`` counts refused requests by cause (see :func:`count_refusal`).
    """

    guild_id: int
    days: tuple[str, ...]
    images: dict[str, dict[str, int]]
    per_model: dict[str, int]
    top_members: tuple[tuple[int, int], ...]
    posted_jobs: int
    failures: dict[str, int]
    refusals: dict[str, int]

    @property
    def total_images(self) -> int:
        """Images posted in the period, every model together."""
        return sum(self.per_model.values())


async def count_refusal(store: Store, guild_id: int, cause: str) -> None:
    """Count one request refused today in the server because of ``cause`` (a short code such as
    ``"user_daily"``, ``"model"``, ``"access"``, ``"member_blocked"``).

    Called for every refused request, so it is one short statement, a transaction of its own. Like any write
    it may raise :class:`~bot.db.store.StoreBusyError`; a caller that must answer the member regardless
    catches it: a lost count only makes a report a little low.
    """
    if not cause:
        raise ValueError("a refusal needs a cause")
    await store.write_alone(
        """
        INSERT INTO refusals (guild_id, day, cause, count) VALUES (?, ?, ?, 1)
        ON CONFLICT (guild_id, day, cause) DO UPDATE SET count = refusals.count + 1
        """,
        (guild_id, store.today(), cause),
    )


async def usage_report(store: Store, guild_id: int, days: int) -> UsageReport:
    """The server's report over the ``days`` UTC days that end today (by the store's clock), today included.

    Raises :class:`ValueError` unless ``1 <= days <=`` :data:`MAX_REPORT_DAYS`.
    """
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_REPORT_DAYS:
        raise ValueError(f"a report covers 1 to {MAX_REPORT_DAYS} days, not {days!r}")
    today_number = math.floor(store.now() / _DAY)
    first_number = today_number - days + 1
    today = date.fromisoformat(store.today())
    period = tuple((today - timedelta(days=back)).isoformat() for back in range(days - 1, -1, -1))
    # A job's usage day is the UTC day of its created_at, so the period's jobs are those created within it:
    # a range on created_at can be checked inside jobs_member_created (guild_id, user_id, created_at), whereas
    # usage_day would have to be read from every one of the server's job rows.
    outcomes = await store.fetch_all(
        """
        SELECT usage_day, model, status, error_code, count(*) AS jobs, coalesce(sum(charged_images), 0) AS images
        FROM jobs
        WHERE guild_id = :guild AND created_at >= :start AND created_at < :end
          AND status IN ('posted', 'failed', 'lost')
        GROUP BY usage_day, model, status, error_code
        """,
        {"guild": guild_id, "start": float(first_number * _DAY), "end": float((today_number + 1) * _DAY)},
    )
    images: dict[str, dict[str, int]] = {}
    per_model: dict[str, int] = {}
    failures: dict[str, int] = {}
    posted_jobs = 0
    for row in outcomes:
        if row["status"] == "posted":
            posted_jobs += int(row["jobs"])
            count = int(row["images"])
            if count:
                day_images = images.setdefault(row["usage_day"], {})
                day_images[row["model"]] = day_images.get(row["model"], 0) + count
                per_model[row["model"]] = per_model.get(row["model"], 0) + count
        else:
            code = row["error_code"] or row["status"]
            failures[code] = failures.get(code, 0) + int(row["jobs"])
    # INDEXED BY: left to itself, SQLite reads all of the server's usage, every day since it joined, through
    # the primary key, to save sorting the period's members; the day index reads only the period's rows.
    members = await store.fetch_all(
        store.pick(
            sqlite="""
            SELECT user_id, sum(used) AS images FROM usage INDEXED BY usage_guild_day
            WHERE guild_id = :guild AND day >= :first AND day <= :last
            GROUP BY user_id HAVING sum(used) > 0
            ORDER BY images DESC, user_id
            LIMIT :top
            """,
            postgresql="""
            SELECT user_id, sum(used) AS images FROM usage
            WHERE guild_id = :guild AND day >= :first AND day <= :last
            GROUP BY user_id HAVING sum(used) > 0
            ORDER BY images DESC, user_id
            LIMIT :top
            """,
        ),
        {"guild": guild_id, "first": period[0], "last": period[-1], "top": TOP_MEMBERS},
    )
    refused = await store.fetch_all(
        """
        SELECT cause, sum(count) AS refused FROM refusals
        WHERE guild_id = :guild AND day >= :first AND day <= :last
        GROUP BY cause
        """,
        {"guild": guild_id, "first": period[0], "last": period[-1]},
    )
    return UsageReport(
        guild_id=guild_id,
        days=period,
        images={day: _most_first(images[day]) for day in period if day in images},
        per_model=_most_first(per_model),
        top_members=tuple((int(row["user_id"]), int(row["images"])) for row in members),
        posted_jobs=posted_jobs,
        failures=_most_first(failures),
        refusals=_most_first({row["cause"]: int(row["refused"]) for row in refused}),
    )


def _most_first(counts: dict[str, int]) -> dict[str, int]:
    """``counts`` ordered by count, largest first, then by name: the order a reader wants them listed in."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
