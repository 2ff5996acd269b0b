"""A member's past jobs in one server (or in direct messages), newest first, a page at a time: ``/history``.

Members look for their past work a few pages back at most, so a page is read with ``LIMIT``/``OFFSET`` through
the index ``jobs_member_created (guild_id, user_id, created_at)``: the first pages cost the same however long the
history behind them. An ``OFFSET`` walks the rows it skips, which is why pages stop at :data:`MAX_PAGE`: the
deepest read skips 9,990 index entries of one member, and retention prunes older jobs long before most members
get there. A keyset (``created_at < the last one shown``) would cost nothing more per page, but would put a
timestamp in the buttons and could not jump to ``/history page:7``.

Only the columns a page shows are read: no result JSON, no interaction token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bot.db.models import JobKind, JobStatus
from bot.db.store import Row, Store

__all__ = ["MAX_PAGE", "PAGE_SIZE", "HistoryEntry", "HistoryPage", "member_history"]

#: Jobs on one page.
PAGE_SIZE = 10
#: The deepest page that can be read (see the module's docstring for why there is one).
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryEntry:
    """One past job as ``/history`` shows it."""

    id: int
    guild_id: int
    channel_id: int
    kind: JobKind
    prompt: str
    model: str
    size: str
    count: int
    status: JobStatus | str
    """A status this version of the bot does not know (written by a newer one) stays its stored text."""
    error_message: str | None
    created_at: float
    posted_message_id: int | None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Page ``page`` of ``pages`` of a member's jobs; ``entries`` is empty when ``page`` is past the end."""

    page: int
    pages: int
    """How many pages there are (0 for a member with no jobs here), at most :data:`MAX_PAGE`."""
    total: int
    """The member's jobs here, counted up to the last one :data:`MAX_PAGE` pages can show (and one more)."""
    entries: tuple[HistoryEntry, ...]

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


async def member_history(store: Store, guild_id: int, user_id: int, page: int) -> HistoryPage:
    """Page ``page`` (from 1) of the member's jobs in ``guild_id`` (0: direct messages), newest first.

    Jobs made in the same instant keep the order they were recorded in (newest id first). Raises
    :class:`ValueError` for a page outside 1..:data:`MAX_PAGE`.
    """
    if not 1 <= page <= MAX_PAGE:
        raise ValueError(f"a history page is between 1 and {MAX_PAGE}, not {page}")
    # Counted in the index alone (no job row is read), and no further than the pages reach.
    counted = await store.fetch_one(
        """
        SELECT count(*) FROM (
            SELECT 1 FROM jobs WHERE guild_id = ? AND user_id = ? LIMIT ?
        ) AS shown
        """,
        (guild_id, user_id, MAX_PAGE * PAGE_SIZE + 1),
    )
    assert counted is not None
    total = int(counted[0])
    pages = min(math.ceil(total / PAGE_SIZE), MAX_PAGE)
    if page > pages:
        return HistoryPage(page, pages, total, ())
    rows = await store.fetch_all(
        """
        SELECT id, guild_id, channel_id, kind, prompt, model, size, count, status, error_message, created_at,
               posted_message_id
        FROM jobs WHERE guild_id = ? AND user_id = ?
        ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?
        """,
        (guild_id, user_id, PAGE_SIZE, (page - 1) * PAGE_SIZE),
    )
    return HistoryPage(page, pages, total, tuple(_entry(row) for row in rows))


def _entry(row: Row) -> HistoryEntry:
    return HistoryEntry(
        id=int(row["id"]),
        guild_id=int(row["guild_id"]),
        channel_id=int(row["channel_id"]),
        kind=JobKind(row["kind"]),
        prompt=row["prompt"],
        model=row["model"],
        size=row["size"],
        count=int(row["count"]),
        status=_status(row["status"]),
        error_message=row["error_message"],
        created_at=float(row["created_at"]),
        posted_message_id=row["posted_message_id"],
    )


def _status(value: str) -> JobStatus | str:
    try:
        return JobStatus(value)
    except ValueError:
        return value
