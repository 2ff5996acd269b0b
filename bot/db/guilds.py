"""Per-server settings, the prompt blocklist, blocked members, and the audit trail of changes to them.

Every change writes one ``limit_changes`` row per field that actually changed, in the same transaction
as the change. Column names come from :data:`SETTING_FIELDS` and the SQL is static: user input only
ever travels as parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, TypeGuard, Unpack, cast

from bot.db.models import GuildSettings, LimitChange
from bot.db.store import Reader, Row, Store, Transaction

__all__ = [
    "BLOCKED_MEMBER_FIELD",
    "BLOCKLIST_FIELD",
    "MAX_BLOCK_REASON",
    "SETTING_FIELDS",
    "BlockedMember",
    "SettingsChanges",
    "add_blocked_term",
    "audit_change",
    "block_member",
    "blocked_members",
    "blocked_terms",
    "comparable_text",
    "get_guild_settings",
    "member_block",
    "normalize_reason",
    "normalize_term",
    "recent_limit_changes",
    "remove_blocked_term",
    "reset_guild_settings",
    "unblock_member",
    "update_guild_settings",
    "validate_setting",
]

#: The settings a server may override, i.e. the only accepted keys of :func:`update_guild_settings`.
SETTING_FIELDS: tuple[str, ...] = (
    "user_daily",
    "guild_daily",
    "max_count",
    "max_concurrent",
    "cooldown_seconds",
    "allowed_models",
    "allowed_channels",
    "user_monthly",
    "guild_monthly",
)

#: The ``field`` of audit rows for blocklist changes.
BLOCKLIST_FIELD = "blocklist"

#: The ``field`` of audit rows for blocking and unblocking a member; the values are JSON objects
#: ``{"user_id": ..., "reason": ...}`` (the blocked member, not the admin, who is the row's ``user_id``).
BLOCKED_MEMBER_FIELD = "blocked_member"

#: The longest reason kept for a block: it is shown to the member in a refusal, which must stay short.
MAX_BLOCK_REASON = 300

_MINIMUM = {
    "user_daily": 0,
    "guild_daily": 0,
    "max_count": 1,
    "max_concurrent": 0,
    "user_monthly": 0,
    "guild_monthly": 0,
}

_Value = int | float | tuple[str, ...] | tuple[int, ...] | Mapping[str, int | float | str | None] | None


@dataclass(frozen=True, slots=True)
class BlockedMember:
    """A member a server refuses every request from; ``reason`` (if any) is told to them."""

    guild_id: int
    user_id: int
    reason: str | None
    blocked_by: int
    blocked_at: float


class SettingsChanges(TypedDict, total=False):
    """The keyword arguments :func:`update_guild_settings` accepts; ``None`` restores the default."""

    user_daily: int | None
    guild_daily: int | None
    max_count: int | None
    max_concurrent: int | None
    cooldown_seconds: float | None
    allowed_models: Sequence[str] | None
    allowed_channels: Sequence[int] | None
    user_monthly: int | None
    guild_monthly: int | None


async def get_guild_settings(store: Store, guild_id: int) -> GuildSettings:
    """The server's overrides; all ``None`` if it never changed anything."""
    return await _read_settings(store, guild_id)


async def update_guild_settings(
    store: Store, guild_id: int, changed_by: int, **changes: Unpack[SettingsChanges]
) -> GuildSettings:
    """Change only the given settings, auditing each one that really changed; return the result.

    Raises :class:`ValueError` for an unknown setting or an invalid value, before writing anything.
    """
    wanted = {name: validate_setting(name, value) for name, value in changes.items()}
    async with store.transaction() as tx:
        current = await _read_settings(tx, guild_id)
        changed = {name: value for name, value in wanted.items() if getattr(current, name) != value}
        if not changed:
            return current
        now = store.now()
        updated = dataclasses.replace(current, **cast("dict[str, Any]", changed), updated_at=now, updated_by=changed_by)
        await _write_settings(tx, updated)
        for name, value in changed.items():
            await audit_change(tx, guild_id, name, getattr(current, name), value, by=changed_by, at=now)
    return updated


async def reset_guild_settings(store: Store, guild_id: int, changed_by: int) -> GuildSettings:
    """Drop every override (the blocklist stays), auditing each setting that was set."""
    async with store.transaction() as tx:
        current = await _read_settings(tx, guild_id)
        await tx.execute("DELETE FROM guild_settings WHERE guild_id = ?", (guild_id,))
        now = store.now()
        for name in SETTING_FIELDS:
            old = getattr(current, name)
            if old is not None:
                await audit_change(tx, guild_id, name, old, None, by=changed_by, at=now)
    return GuildSettings(guild_id=guild_id)


#: Cyrillic, then Greek letters that look like Latin ones, and those Latin letters. Lower case only:
#: folding comes after casefolding.
_LOOKALIKES = str.maketrans(
    "авеёкмнорстухіїјѕԁԛԝ" + "αβεηικμνορτυχω",
    "abeekmhopctyxiijsdqw" + "abenikuvoptuxw",
)


def normalize_term(term: str) -> str:
    """How blocklist terms are stored and shown: the admin's words without the tricks that hide them.

    Unicode NFKC (fullwidth and other compatibility forms become plain letters), invisible format
    characters (zero-width spaces and joiners, soft hyphens, ...) and control characters other than
    whitespace (NUL, which PostgreSQL text cannot even hold, ...) removed, case-folded, and every run of
    whitespace made one space, trimmed. Idempotent.
    """
    text = unicodedata.normalize("NFKC", term)
    text = "".join(char for char in text if not _invisible(char)).casefold()
    # Casefolding can leave a string NFKC would change again (a letter and a combining mark).
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _invisible(char: str) -> bool:
    """A format character, or a control character that is not whitespace: nothing a reader sees."""
    category = unicodedata.category(char)
    return category == "Cf" or (category == "Cc" and not char.isspace())


def comparable_text(text: str) -> str:
    """The form in which prompts and blocked terms are compared: :func:`normalize_term`, and Cyrillic and
    Greek look-alikes folded to Latin, so "gore" spelled with a Cyrillic "o" is "gore". Idempotent.

    Folding happens only here, not in the stored term, so a blocklist in another script still lists as typed.
    """
    return unicodedata.normalize("NFKC", normalize_term(text).translate(_LOOKALIKES))


async def add_blocked_term(store: Store, guild_id: int, term: str, *, changed_by: int) -> bool:
    """Block ``term`` in the server's prompts. False if it was already blocked (in any spelling that
    compares the same, see :func:`comparable_text`)."""
    normal = _nonempty_term(term)
    async with store.transaction() as tx:
        if await _stored_spellings(tx, guild_id, normal):
            return False
        await tx.execute(
            "INSERT INTO blocklist (guild_id, term, added_by, added_at) VALUES (?, ?, ?, ?)",
            (guild_id, normal, changed_by, store.now()),
        )
        await audit_change(tx, guild_id, BLOCKLIST_FIELD, None, normal, by=changed_by, at=store.now())
    return True


async def remove_blocked_term(store: Store, guild_id: int, term: str, *, changed_by: int) -> bool:
    """Unblock ``term``, in every stored spelling that compares the same. False if it was not blocked."""
    normal = _nonempty_term(term)
    async with store.transaction() as tx:
        stored = await _stored_spellings(tx, guild_id, normal)
        for spelling in stored:
            await tx.execute("DELETE FROM blocklist WHERE guild_id = ? AND term = ?", (guild_id, spelling))
        if stored:
            await audit_change(tx, guild_id, BLOCKLIST_FIELD, normal, None, by=changed_by, at=store.now())
    return bool(stored)


async def blocked_terms(store: Store, guild_id: int) -> list[str]:
    """The server's blocked terms, normalized (see :func:`normalize_term`), alphabetically, each once.

    Terms stored by an older version (only trimmed and case-folded) are normalized here, so they match
    and show like new ones.
    """
    rows = await store.fetch_all("SELECT term FROM blocklist WHERE guild_id = ?", (guild_id,))
    return sorted({normal for row in rows if (normal := _normalize_stored(row[0]))})


async def _stored_spellings(db: Reader, guild_id: int, term: str) -> list[str]:
    """The server's stored terms that compare the same as ``term`` (at most one, except for old rows)."""
    wanted = comparable_text(term)
    rows = await db.fetch_all("SELECT term FROM blocklist WHERE guild_id = ?", (guild_id,))
    return [row[0] for row in rows if _comparable_stored(row[0]) == wanted]


# Stored terms are read for every prompt: normalizing a few thousand of them each time would cost milliseconds.
_normalize_stored = functools.lru_cache(maxsize=65_536)(normalize_term)
_comparable_stored = functools.lru_cache(maxsize=65_536)(comparable_text)


def normalize_reason(reason: str | None) -> str | None:
    """How a block's reason is stored: one line, runs of whitespace made one space, control and invisible
    characters dropped, at most :data:`MAX_BLOCK_REASON` characters; ``None`` if nothing is left."""
    if reason is None:
        return None
    text = " ".join("".join(char for char in reason if not _invisible(char)).split())
    if len(text) > MAX_BLOCK_REASON:
        text = text[: MAX_BLOCK_REASON - 1].rstrip() + "…"
    return text or None


async def block_member(store: Store, guild_id: int, user_id: int, *, reason: str | None, changed_by: int) -> bool:
    """Refuse every request of ``user_id`` in the server, telling them ``reason`` if given.

    Blocking a blocked member again replaces the reason. False if nothing changed (blocked already, same
    reason). Audited in the same transaction; concurrent changes to one member are serialised by a lock so
    each audit row's old value is what it replaced.
    """
    wanted = normalize_reason(reason)
    async with store.transaction() as tx:
        await tx.lock(f"blocked_member:{guild_id}:{user_id}")
        current = await _read_block(tx, guild_id, user_id)
        if current is not None and current.reason == wanted:
            return False
        now = store.now()
        await tx.execute(
            """
            INSERT INTO blocked_members (guild_id, user_id, reason, blocked_by, blocked_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (guild_id, user_id) DO UPDATE SET
                reason = excluded.reason, blocked_by = excluded.blocked_by, blocked_at = excluded.blocked_at
            """,
            (guild_id, user_id, wanted, changed_by, now),
        )
        old = None if current is None else _block_value(current.user_id, current.reason)
        await audit_change(
            tx, guild_id, BLOCKED_MEMBER_FIELD, old, _block_value(user_id, wanted), by=changed_by, at=now
        )
    return True


async def unblock_member(store: Store, guild_id: int, user_id: int, *, changed_by: int) -> bool:
    """Serve ``user_id`` again in the server; audited. False if they were not blocked."""
    async with store.transaction() as tx:
        await tx.lock(f"blocked_member:{guild_id}:{user_id}")
        current = await _read_block(tx, guild_id, user_id)
        if current is None:
            return False
        await tx.execute("DELETE FROM blocked_members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
        await audit_change(
            tx,
            guild_id,
            BLOCKED_MEMBER_FIELD,
            _block_value(user_id, current.reason),
            None,
            by=changed_by,
            at=store.now(),
        )
    return True


async def member_block(store: Store, guild_id: int, user_id: int) -> BlockedMember | None:
    """The member's block in the server, if any: read on every request, through the primary key."""
    return await _read_block(store, guild_id, user_id)


async def blocked_members(store: Store, guild_id: int) -> list[BlockedMember]:
    """The server's blocked members, the earliest blocked first."""
    rows = await store.fetch_all(
        "SELECT * FROM blocked_members WHERE guild_id = ? ORDER BY blocked_at, user_id", (guild_id,)
    )
    return [_blocked(row) for row in rows]


async def _read_block(db: Reader, guild_id: int, user_id: int) -> BlockedMember | None:
    row = await db.fetch_one("SELECT * FROM blocked_members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))
    return None if row is None else _blocked(row)


def _blocked(row: Row) -> BlockedMember:
    return BlockedMember(row["guild_id"], row["user_id"], row["reason"], row["blocked_by"], row["blocked_at"])


def _block_value(user_id: int, reason: str | None) -> dict[str, int | str | None]:
    return {"user_id": user_id, "reason": reason}


async def recent_limit_changes(store: Store, guild_id: int, limit: int = 25) -> list[LimitChange]:
    """The server's latest settings and blocklist changes, newest first."""
    rows = await store.fetch_all(
        "SELECT * FROM limit_changes WHERE guild_id = ? ORDER BY id DESC LIMIT ?", (guild_id, limit)
    )
    return [
        LimitChange(
            row["id"], row["guild_id"], row["user_id"], row["field"], row["old_value"], row["new_value"], row["at"]
        )
        for row in rows
    ]


def validate_setting(name: str, value: object) -> _Value:
    """The stored form of one setting, or ValueError: the ranges the schema's CHECKs hold, told before writing."""
    if name not in SETTING_FIELDS:
        raise ValueError(f"unknown guild setting {name!r}; known: {', '.join(SETTING_FIELDS)}")
    if value is None:
        return None
    if name in _MINIMUM:
        if not _is_int(value) or value < _MINIMUM[name]:
            raise ValueError(f"{name} must be a whole number of at least {_MINIMUM[name]}, not {value!r}")
        return value
    if name == "cooldown_seconds":
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"cooldown_seconds must be a number of seconds >= 0, not {value!r}")
        return float(value)
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} must be a non-empty list (or None to allow all), not {value!r}")
    if name == "allowed_models":
        if not all(isinstance(item, str) and item for item in value):
            raise ValueError(f"allowed_models must list model names, not {value!r}")
        return tuple(dict.fromkeys(str(item) for item in value))
    if not all(_is_int(item) for item in value):
        raise ValueError(f"allowed_channels must list channel ids, not {value!r}")
    return tuple(dict.fromkeys(int(item) for item in value))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _nonempty_term(term: str) -> str:
    normal = normalize_term(term)
    if not normal:
        raise ValueError("a blocked term cannot be empty")
    return normal


def _json(value: _Value | str) -> str | None:
    return None if value is None else json.dumps(list(value) if isinstance(value, tuple) else value)


def _json_list(text: str | None) -> list[Any] | None:
    return None if text is None else list(json.loads(text))


async def _read_settings(db: Reader, guild_id: int) -> GuildSettings:
    row = await db.fetch_one("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
    return GuildSettings(guild_id=guild_id) if row is None else _settings(row)


def _settings(row: Row) -> GuildSettings:
    models = _json_list(row["allowed_models"])
    channels = _json_list(row["allowed_channels"])
    return GuildSettings(
        guild_id=row["guild_id"],
        user_daily=row["user_daily"],
        guild_daily=row["guild_daily"],
        max_count=row["max_count"],
        max_concurrent=row["max_concurrent"],
        cooldown_seconds=row["cooldown_seconds"],
        allowed_models=None if models is None else tuple(str(model) for model in models),
        allowed_channels=None if channels is None else tuple(int(channel) for channel in channels),
        user_monthly=row["user_monthly"],
        guild_monthly=row["guild_monthly"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


async def _write_settings(tx: Transaction, settings: GuildSettings) -> None:
    await tx.execute(
        """
        INSERT INTO guild_settings (
            guild_id, user_daily, guild_daily, max_count, max_concurrent, cooldown_seconds,
            allowed_models, allowed_channels, user_monthly, guild_monthly, updated_at, updated_by)
        VALUES (
            :guild_id, :user_daily, :guild_daily, :max_count, :max_concurrent, :cooldown_seconds,
            :allowed_models, :allowed_channels, :user_monthly, :guild_monthly, :updated_at, :updated_by)
        ON CONFLICT (guild_id) DO UPDATE SET
            user_daily = excluded.user_daily,
            guild_daily = excluded.guild_daily,
            max_count = excluded.max_count,
            max_concurrent = excluded.max_concurrent,
            cooldown_seconds = excluded.cooldown_seconds,
            allowed_models = excluded.allowed_models,
            allowed_channels = excluded.allowed_channels,
            user_monthly = excluded.user_monthly,
            guild_monthly = excluded.guild_monthly,
            updated_at = excluded.updated_at,
            updated_by = excluded.updated_by
        """,
        {
            "guild_id": settings.guild_id,
            "user_daily": settings.user_daily,
            "guild_daily": settings.guild_daily,
            "max_count": settings.max_count,
            "max_concurrent": settings.max_concurrent,
            "cooldown_seconds": settings.cooldown_seconds,
            "allowed_models": _json(settings.allowed_models),
            "allowed_channels": _json(settings.allowed_channels),
            "user_monthly": settings.user_monthly,
            "guild_monthly": settings.guild_monthly,
            "updated_at": settings.updated_at,
            "updated_by": settings.updated_by,
        },
    )


async def audit_change(
    tx: Transaction, guild_id: int, field: str, old: _Value | str, new: _Value | str, *, by: int, at: float
) -> None:
    """One row of the audit trail (``None`` = unset; other values as JSON), in the change's own transaction so
    the change and its record commit, or vanish, together."""
    await tx.execute(
        "INSERT INTO limit_changes (guild_id, user_id, field, old_value, new_value, at) VALUES (?, ?, ?, ?, ?, ?)",
        (guild_id, by, field, _json(old), _json(new), at),
    )
