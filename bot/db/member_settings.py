"""A member's own defaults for /imagine and /edit: the model, size and count used when a request leaves them out.

Defaults belong to the member, not to a server, so they follow them everywhere (one row per user). Whether a
server allows a default is decided when it is used, by the rules in force there and then; the store only keeps
what the member chose. Nothing here is a server's business, so changes are not audited in ``limit_changes``.

A row holds at least one default (the schema's CHECK): clearing the last one deletes the row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict, Unpack

from bot.db.store import Reader, Row, Store

__all__ = [
    "MEMBER_SETTING_FIELDS",
    "MemberSettings",
    "MemberSettingsChanges",
    "get_member_settings",
    "reset_member_settings",
    "update_member_settings",
]

#: The defaults a member may set, i.e. the only accepted keys of :func:`update_member_settings`.
MEMBER_SETTING_FIELDS: tuple[str, ...] = ("model", "size", "count")


@dataclass(frozen=True, slots=True)
class MemberSettings:
    """A member's defaults; ``None`` = none of their own (the bot's applies). ``updated_at`` is None if never set."""

    user_id: int
    model: str | None = None
    size: str | None = None
    count: int | None = None
    updated_at: float | None = None

    @property
    def is_empty(self) -> bool:
        """Whether the member has no default of their own at all."""
        return self.model is None and self.size is None and self.count is None


class MemberSettingsChanges(TypedDict, total=False):
    """The keyword arguments :func:`update_member_settings` accepts; ``None`` drops that default."""

    model: str | None
    size: str | None
    count: int | None


async def get_member_settings(store: Store, user_id: int) -> MemberSettings:
    """The member's defaults (all ``None`` if they never set any): read on every request, through the primary key."""
    return await _read(store, user_id)


async def update_member_settings(
    store: Store,
    user_id: int,
    *,
    check: Callable[[MemberSettings], None] | None = None,
    **changes: Unpack[MemberSettingsChanges],
) -> MemberSettings:
    """Change only the given defaults (the others stay) and return the member's defaults afterwards.

    ``check`` is called with the merged result before anything is written and may raise to refuse it: the
    caller's rules (which sizes a model can make...) then hold for the pair that is stored, even when two
    changes of one member race, since changes of one member are serialised by a lock. Raises
    :class:`ValueError` for an unknown default or a value of the wrong shape, before writing anything.
    """
    wanted = {name: _validated(name, value) for name, value in changes.items()}
    async with store.transaction() as tx:
        await tx.lock(f"member_settings:{user_id}")
        current = await _read(tx, user_id)
        merged = dataclasses.replace(current, **wanted)  # type: ignore[arg-type]
        if check is not None:
            check(merged)
        if merged == current:
            return current
        if merged.is_empty:
            await tx.execute("DELETE FROM member_settings WHERE user_id = ?", (user_id,))
            return MemberSettings(user_id)
        now = store.now()
        await tx.execute(
            """
            INSERT INTO member_settings (user_id, model, size, count, updated_at)
            VALUES (:user_id, :model, :size, :count, :updated_at)
            ON CONFLICT (user_id) DO UPDATE SET
                model = excluded.model, size = excluded.size, count = excluded.count, updated_at = excluded.updated_at
            """,
            {"user_id": user_id, "model": merged.model, "size": merged.size, "count": merged.count, "updated_at": now},
        )
    return dataclasses.replace(merged, updated_at=now)


async def reset_member_settings(store: Store, user_id: int) -> bool:
    """Drop every default of the member (the bot's apply again). False if they had none."""
    rows = await store.write_alone("DELETE FROM member_settings WHERE user_id = ? RETURNING user_id", (user_id,))
    return bool(rows)


def _validated(name: str, value: object) -> str | int | None:
    """The stored form of one default, or ValueError: what the schema's CHECKs hold, told before writing.

    Only the shape is checked here; whether the bot offers a model or a size is the caller's ``check``.
    """
    if name not in MEMBER_SETTING_FIELDS:
        raise ValueError(f"unknown member setting {name!r}; known: {', '.join(MEMBER_SETTING_FIELDS)}")
    if value is None:
        return None
    if name == "count":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"count must be a whole number of at least 1, not {value!r}")
        return value
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ValueError(f"{name} must be a non-empty name without surrounding spaces, not {value!r}")
    return value


async def _read(db: Reader, user_id: int) -> MemberSettings:
    row = await db.fetch_one("SELECT * FROM member_settings WHERE user_id = ?", (user_id,))
    return MemberSettings(user_id) if row is None else _settings(row)


def _settings(row: Row) -> MemberSettings:
    return MemberSettings(
        user_id=row["user_id"],
        model=row["model"],
        size=row["size"],
        count=row["count"],
        updated_at=row["updated_at"],
    )
