"""UTC days and months as the usage table keys them (``YYYY-MM-DD``), derived from unix seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["month_bounds", "next_utc_midnight", "utc_day"]


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def utc_day(timestamp: float) -> str:
    """The UTC date of ``timestamp`` as ``YYYY-MM-DD``."""
    return _utc(timestamp).strftime("%Y-%m-%d")


def next_utc_midnight(timestamp: float) -> float:
    """The unix time of the first UTC midnight after ``timestamp`` (when daily limits reset)."""
    today = _utc(timestamp).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=1)).timestamp()


def month_bounds(timestamp: float) -> tuple[str, str]:
    """The first day of ``timestamp``'s UTC month and the first day of the next, as ``YYYY-MM-DD``."""
    first = _utc(timestamp).date().replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first.isoformat(), following.isoformat()
