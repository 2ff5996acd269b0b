"""Rules finer than a server's: overrides of the per-member limits for members with a role or for one member,
and the roles a server lets use the bot.

Communities are not flat (boosters get more, new members less, one member abuses it), so a server's settings
(:mod:`bot.db.guilds`) can be overridden per role and per member. A rule stores only what it sets: a ``None``
field leaves the value to the member's other roles or to the server. How the rules combine into one member's
limits is :mod:`bot.limits`' business, not the store's.

Changes are audited like the server's settings, in the same transaction. One audit row per change holds the
whole rule before and after (JSON ``{"role_id": ..., <the fields it sets>}``), so the trail reads on its own
even after the rule is gone. Changes to one rule are serialised by a lock, so each row's old value is the rule
it really replaced, whichever process made the change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypedDict, Unpack

from bot.db.guilds import audit_change, validate_setting
from bot.db.store import Reader, Row, Store

__all__ = [
    "ACCESS_ROLE_FIELD",
    "MEMBER_RULE_FIELD",
    "ROLE_RULE_FIELD",
    "RULE_FIELDS",
    "RuleChanges",
    "RuleOverrides",
    "access_roles",
    "add_access_role",
    "clear_access_roles",
    "clear_member_rule",
    "clear_role_rule",
    "member_rule",
    "member_rules",
    "remove_access_role",
    "request_rules",
    "role_rules",
    "set_member_rule",
    "set_role_rule",
]

#: The limits a role or member rule may override: the per-member settings of a server, not its own budgets.
RULE_FIELDS: tuple[str, ...] = ("user_daily", "user_monthly", "max_count", "max_concurrent", "cooldown_seconds")

#: The ``field`` of audit rows for role rules; values are JSON ``{"role_id": ..., <the fields it sets>}``.
ROLE_RULE_FIELD = "role_rule"
#: The ``field`` of audit rows for member rules; values are JSON ``{"user_id": ..., <the fields it sets>}``
#: (the member the rule is for; the admin who changed it is the row's ``user_id``).
MEMBER_RULE_FIELD = "member_rule"
#: The ``field`` of audit rows for access roles; values are the JSON role id (old NULL: added, new NULL: removed).
ACCESS_ROLE_FIELD = "access_role"


@dataclass(frozen=True, slots=True)
class RuleOverrides:
    """One role's or member's overrides; None = this rule does not set the field (0 = no limit / no cooldown)."""

    user_daily: int | None = None
    user_monthly: int | None = None
    max_count: int | None = None
    max_concurrent: int | None = None
    cooldown_seconds: float | None = None

    def fields(self) -> dict[str, int | float]:
        """Only the fields this rule sets, for showing it or auditing it."""
        return {name: value for name in RULE_FIELDS if (value := getattr(self, name)) is not None}


class RuleChanges(TypedDict, total=False):
    """The keyword arguments :func:`set_role_rule` and :func:`set_member_rule` accept: values to set, never None
    (to drop a value, clear the rule and set the rest again)."""

    user_daily: int
    user_monthly: int
    max_count: int
    max_concurrent: int
    cooldown_seconds: float


@dataclass(frozen=True, slots=True)
class _RuleTable:
    """Where one kind of rule lives, and its statements."""

    audit_field: str
    key: str
    select_one: str
    select_all: str
    upsert: str
    delete: str


def _rule_table(table: str, key: str, audit_field: str) -> _RuleTable:
    """The statements of ``table``, whose rows are keyed by (guild_id, ``key``). The two tables have the same
    columns, so their statements are made once, at import, from this module's constant names: no input ever
    becomes SQL text (values travel as parameters, as everywhere)."""
    settable = (*RULE_FIELDS, "updated_at", "updated_by")
    return _RuleTable(
        audit_field=audit_field,
        key=key,
        select_one=f"SELECT * FROM {table} WHERE guild_id = ? AND {key} = ?",  # noqa: S608 - constant names
        select_all=f"SELECT * FROM {table} WHERE guild_id = ? ORDER BY {key}",  # noqa: S608 - constant names
        upsert=(
            f"INSERT INTO {table} (guild_id, {key}, {', '.join(settable)}) "  # noqa: S608 - constant names
            f"VALUES (:guild_id, :key, {', '.join(':' + name for name in settable)}) "
            f"ON CONFLICT (guild_id, {key}) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in settable)
        ),
        delete=f"DELETE FROM {table} WHERE guild_id = ? AND {key} = ?",  # noqa: S608 - constant names
    )


_ROLES = _rule_table("role_limits", "role_id", ROLE_RULE_FIELD)
_MEMBERS = _rule_table("member_limits", "user_id", MEMBER_RULE_FIELD)


async def set_role_rule(
    store: Store, guild_id: int, role_id: int, *, changed_by: int, **changes: Unpack[RuleChanges]
) -> RuleOverrides:
    """Set the given fields of the role's rule (its other fields stay as they were); return the whole rule.

    Raises :class:`ValueError` for an unknown field, an invalid value or no field at all, before writing anything.
    Audited once, with the whole rule before and after, if something changed.
    """
    return await _set_rule(store, _ROLES, guild_id, role_id, changed_by=changed_by, changes=dict(changes))


async def clear_role_rule(store: Store, guild_id: int, role_id: int, *, changed_by: int) -> bool:
    """Drop the role's rule, audited; its members get their other roles' or the server's values. False if none."""
    return await _clear_rule(store, _ROLES, guild_id, role_id, changed_by)


async def role_rules(store: Store, guild_id: int) -> dict[int, RuleOverrides]:
    """Every role rule of the server, by role id: read on every request (through the primary key's prefix),
    since a member's roles are only known then."""
    rows = await store.fetch_all(_ROLES.select_all, (guild_id,))
    return {row["role_id"]: _overrides(row) for row in rows}


async def set_member_rule(
    store: Store, guild_id: int, user_id: int, *, changed_by: int, **changes: Unpack[RuleChanges]
) -> RuleOverrides:
    """Set the given fields of the member's rule, which beats their roles' (see :func:`set_role_rule`)."""
    return await _set_rule(store, _MEMBERS, guild_id, user_id, changed_by=changed_by, changes=dict(changes))


async def clear_member_rule(store: Store, guild_id: int, user_id: int, *, changed_by: int) -> bool:
    """Drop the member's rule, audited; their roles' and the server's values apply again. False if none."""
    return await _clear_rule(store, _MEMBERS, guild_id, user_id, changed_by)


async def member_rule(store: Store, guild_id: int, user_id: int) -> RuleOverrides | None:
    """The member's own rule, if any: read on every request, through the primary key."""
    return await _read_rule(store, _MEMBERS, guild_id, user_id)


async def member_rules(store: Store, guild_id: int) -> dict[int, RuleOverrides]:
    """Every member rule of the server, by user id (for ``/limits show``)."""
    rows = await store.fetch_all(_MEMBERS.select_all, (guild_id,))
    return {row["user_id"]: _overrides(row) for row in rows}


async def add_access_role(store: Store, guild_id: int, role_id: int, *, changed_by: int) -> bool:
    """Let members with the role use the bot; once a server lists a role, members without one of its listed
    roles (and without Manage Server) may not. Audited. False if the role was listed already."""
    async with store.transaction() as tx:
        now = store.now()
        added = await tx.execute(
            """
            INSERT INTO access_roles (guild_id, role_id, added_by, added_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (guild_id, role_id) DO NOTHING
            """,
            (guild_id, role_id, changed_by, now),
        )
        if added:
            await audit_change(tx, guild_id, ACCESS_ROLE_FIELD, None, role_id, by=changed_by, at=now)
    return bool(added)


async def remove_access_role(store: Store, guild_id: int, role_id: int, *, changed_by: int) -> bool:
    """Stop listing the role (when none is left, everyone may use the bot again). Audited. False if not listed."""
    async with store.transaction() as tx:
        removed = await tx.execute("DELETE FROM access_roles WHERE guild_id = ? AND role_id = ?", (guild_id, role_id))
        if removed:
            await audit_change(tx, guild_id, ACCESS_ROLE_FIELD, role_id, None, by=changed_by, at=store.now())
    return bool(removed)


async def clear_access_roles(store: Store, guild_id: int, *, changed_by: int) -> int:
    """Let everyone use the bot again: unlist every role, auditing each. How many were listed."""
    async with store.transaction() as tx:
        rows = await tx.fetch_all(
            "DELETE FROM access_roles WHERE guild_id = ? RETURNING role_id, added_at", (guild_id,)
        )
        now = store.now()
        for role_id in _in_order_added(rows):
            await audit_change(tx, guild_id, ACCESS_ROLE_FIELD, role_id, None, by=changed_by, at=now)
    return len(rows)


async def access_roles(store: Store, guild_id: int) -> tuple[int, ...]:
    """The roles the server lets use the bot, in the order they were added; empty: everyone may. Read on every
    request, through the primary key's prefix."""
    rows = await store.fetch_all("SELECT role_id, added_at FROM access_roles WHERE guild_id = ?", (guild_id,))
    return _in_order_added(rows)


async def request_rules(
    store: Store, guild_id: int, user_id: int
) -> tuple[dict[int, RuleOverrides], RuleOverrides | None, tuple[int, ...]]:
    """What :func:`role_rules`, :func:`member_rule` and :func:`access_roles` answer, in one statement.

    A request needs all three before it may go on; one statement is one round trip (and, on PostgreSQL, one
    connection taken from the pool) instead of three. Each part reads through its table's primary key.
    """
    rows = await store.fetch_all(
        """
        -- PostgreSQL types each column of a UNION from its first branch on, so that branch names added_at's type.
        SELECT 'role' AS part, role_id AS id, user_daily, user_monthly, max_count, max_concurrent, cooldown_seconds,
               CAST(NULL AS double precision) AS added_at
        FROM role_limits WHERE guild_id = :guild_id
        UNION ALL
        SELECT 'member', user_id, user_daily, user_monthly, max_count, max_concurrent, cooldown_seconds, NULL
        FROM member_limits WHERE guild_id = :guild_id AND user_id = :user_id
        UNION ALL
        SELECT 'access', role_id, NULL, NULL, NULL, NULL, NULL, added_at
        FROM access_roles WHERE guild_id = :guild_id
        """,
        {"guild_id": guild_id, "user_id": user_id},
    )
    roles = {row["id"]: _overrides(row) for row in sorted(rows, key=lambda row: row["id"]) if row["part"] == "role"}
    member = next((_overrides(row) for row in rows if row["part"] == "member"), None)
    access = _in_order_added([row for row in rows if row["part"] == "access"], key="id")
    return roles, member, access


async def _set_rule(
    store: Store, table: _RuleTable, guild_id: int, key: int, *, changed_by: int, changes: dict[str, object]
) -> RuleOverrides:
    wanted = _validated(changes)
    async with store.transaction() as tx:
        await tx.lock(f"{table.audit_field}:{guild_id}:{key}")
        current = await _read_rule(tx, table, guild_id, key)
        updated = dataclasses.replace(current or RuleOverrides(), **wanted)  # type: ignore[arg-type]
        if updated == current:
            return updated
        now = store.now()
        await tx.execute(
            table.upsert,
            {"guild_id": guild_id, "key": key, **_columns(updated), "updated_at": now, "updated_by": changed_by},
        )
        await audit_change(
            tx,
            guild_id,
            table.audit_field,
            _audit_value(table, key, current),
            _audit_value(table, key, updated),
            by=changed_by,
            at=now,
        )
    return updated


async def _clear_rule(store: Store, table: _RuleTable, guild_id: int, key: int, changed_by: int) -> bool:
    async with store.transaction() as tx:
        await tx.lock(f"{table.audit_field}:{guild_id}:{key}")
        current = await _read_rule(tx, table, guild_id, key)
        if current is None:
            return False
        await tx.execute(table.delete, (guild_id, key))
        await audit_change(
            tx, guild_id, table.audit_field, _audit_value(table, key, current), None, by=changed_by, at=store.now()
        )
    return True


def _validated(changes: dict[str, object]) -> dict[str, int | float]:
    """The stored form of each change, or ValueError: the same ranges as the server's own settings."""
    if not changes:
        raise ValueError(f"a rule needs at least one of {', '.join(RULE_FIELDS)}")
    wanted: dict[str, int | float] = {}
    for name, value in changes.items():
        if name not in RULE_FIELDS:
            raise ValueError(f"unknown rule field {name!r}; known: {', '.join(RULE_FIELDS)}")
        if value is None:
            raise ValueError(f"{name} cannot be None in a rule: clear the rule to drop its values")
        stored = validate_setting(name, value)
        assert isinstance(stored, int | float)  # what validate_setting answers for these fields
        wanted[name] = stored
    return wanted


async def _read_rule(db: Reader, table: _RuleTable, guild_id: int, key: int) -> RuleOverrides | None:
    row = await db.fetch_one(table.select_one, (guild_id, key))
    return None if row is None else _overrides(row)


def _overrides(row: Row) -> RuleOverrides:
    return RuleOverrides(
        user_daily=row["user_daily"],
        user_monthly=row["user_monthly"],
        max_count=row["max_count"],
        max_concurrent=row["max_concurrent"],
        cooldown_seconds=row["cooldown_seconds"],
    )


def _columns(rule: RuleOverrides) -> dict[str, int | float | None]:
    return {name: getattr(rule, name) for name in RULE_FIELDS}


def _audit_value(table: _RuleTable, key: int, rule: RuleOverrides | None) -> dict[str, int | float] | None:
    return None if rule is None else {table.key: key, **rule.fields()}


def _in_order_added(rows: list[Row], key: str = "role_id") -> tuple[int, ...]:
    """Role ids in the order they were added (ties, from one clock tick, by id): the order admins listed them."""
    return tuple(row[key] for row in sorted(rows, key=lambda row: (row["added_at"], row[key])))
