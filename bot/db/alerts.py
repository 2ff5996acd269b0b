"""Where a server wants its alerts, and which alerts were posted already.

An alert is posted once per event, whichever process sees the event first: :func:`claim_alert` is one
statement that inserts the event's key or finds it there, so exactly one caller wins it, on one database
connection or on many.
"""

from __future__ import annotations

from bot.db.guilds import audit_change
from bot.db.store import Reader, Store

__all__ = ["ALERT_CHANNEL_FIELD", "alert_channel", "claim_alert", "set_alert_channel"]

#: The ``field`` of audit rows for setting and removing the alert channel (values: the channel id, as JSON).
ALERT_CHANNEL_FIELD = "alert_channel"


async def set_alert_channel(store: Store, guild_id: int, channel_id: int | None, *, changed_by: int) -> bool:
    """Post the server's alerts in ``channel_id`` from now on (``None``: post none). False if unchanged.

    Audited in the same transaction; concurrent changes of one server are serialised by a lock so that each
    audit row's old value is the one it replaced.
    """
    async with store.transaction() as tx:
        await tx.lock(f"alert_channel:{guild_id}")
        current = await _read_channel(tx, guild_id)
        if current == channel_id:
            return False
        now = store.now()
        if channel_id is None:
            await tx.execute("DELETE FROM alert_channels WHERE guild_id = ?", (guild_id,))
        else:
            await tx.execute(
                """
                INSERT INTO alert_channels (guild_id, channel_id, set_by, set_at) VALUES (?, ?, ?, ?)
                ON CONFLICT (guild_id) DO UPDATE SET
                    channel_id = excluded.channel_id, set_by = excluded.set_by, set_at = excluded.set_at
                """,
                (guild_id, channel_id, changed_by, now),
            )
        await audit_change(tx, guild_id, ALERT_CHANNEL_FIELD, current, channel_id, by=changed_by, at=now)
    return True


async def alert_channel(store: Store, guild_id: int) -> int | None:
    """The channel the server's alerts go to, if it set one: read after every accepted request, through the
    primary key."""
    return await _read_channel(store, guild_id)


async def claim_alert(store: Store, guild_id: int, key: str, *, again_after: float | None = None) -> bool:
    """Take the right to post the alert ``key`` of the server: True for exactly one caller, across processes.

    Without ``again_after`` a key is claimed once for good (keys name their period: ``guild_daily:80:2026-12-03``).
    With it, a key last claimed more than ``again_after`` seconds ago may be claimed again, for events that
    last (``provider:credentials``): one caller wins each renewal, the others see the fresh claim.
    """
    now = store.now()
    rows = await store.write_alone(
        """
        INSERT INTO alerts_sent (guild_id, key, sent_at) VALUES (:guild, :key, :now)
        ON CONFLICT (guild_id, key) DO UPDATE SET sent_at = excluded.sent_at
        WHERE alerts_sent.sent_at < :renewable_before
        RETURNING sent_at
        """,
        # NULL compares as unknown: without again_after, a conflicting row is never updated.
        {
            "guild": guild_id,
            "key": key,
            "now": now,
            "renewable_before": None if again_after is None else now - again_after,
        },
    )
    return bool(rows)


async def _read_channel(db: Reader, guild_id: int) -> int | None:
    row = await db.fetch_one("SELECT channel_id FROM alert_channels WHERE guild_id = ?", (guild_id,))
    return None if row is None else int(row[0])
