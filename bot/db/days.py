"""UTC days and months as the usage table keys them (``YYYY-MM-DD``), derived from unix seconds."""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, timedelta

__all__ = ["month_bounds", "next_utc_midnight", "next_utc_month", "utc_day"]

#: Unix time has no leap seconds: every UTC day is exactly this long, and starts at a multiple of it.
_DAY = 86_400


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def utc_day(timestamp: float) -> str:
    """The UTC date of ``timestamp`` as ``YYYY-MM-DD``."""
    return _day_text(math.floor(timestamp / _DAY))


@functools.lru_cache(maxsize=64)
def _day_text(day_number: int) -> str:
    """Day ``day_number`` since 1970-01-01 as ``YYYY-MM-DD`` (every reservation asks: worth remembering)."""
    return _utc(day_number * _DAY).strftime("%Y-%m-%d")


def next_utc_midnight(timestamp: float) -> float:
    """The unix time of the first UTC midnight after ``timestamp`` (when daily limits reset)."""
    return float((math.floor(timestamp / _DAY) + 1) * _DAY)


def month_bounds(timestamp: float) -> tuple[str, str]:
    """The first day of ``timestamp``'s UTC month and the first day of the next, as ``YYYY-MM-DD``."""
    first = _utc(timestamp).date().replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first.isoformat(), following.isoformat()


def next_utc_month(timestamp: float) -> float:
    """The unix time of 00:00 UTC on the first day of the month after ``timestamp``'s (when monthly limits reset)."""
    first = _utc(timestamp).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1).timestamp()
