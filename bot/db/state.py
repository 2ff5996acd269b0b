"""Key-value facts the bot keeps about itself (``bot_state``)."""

from __future__ import annotations

from bot.db.store import Store

__all__ = ["get_state", "set_state"]


async def get_state(store: Store, key: str) -> str | None:
    """The value stored under ``key``, or None."""
    row = await store.fetch_one("SELECT value FROM bot_state WHERE key = ?", (key,))
    return None if row is None else str(row["value"])


async def set_state(store: Store, key: str, value: str) -> None:
    """Store ``value`` under ``key``, replacing any earlier value."""
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO bot_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
