"""Role rules, member rules and access roles in the store, specified on a real SQLite file and a real PostgreSQL
database: what is kept, what is audited, what is refused, and that concurrent changes lose nothing."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.db import (
    ACCESS_ROLE_FIELD,
    MEMBER_RULE_FIELD,
    ROLE_RULE_FIELD,
    RULE_FIELDS,
    LimitChange,
    RuleOverrides,
    Store,
    access_roles,
    add_access_role,
    clear_access_roles,
    clear_member_rule,
    clear_role_rule,
    member_rule,
    member_rules,
    recent_limit_changes,
    remove_access_role,
    request_rules,
    role_rules,
    set_member_rule,
    set_role_rule,
)
from tests.conftest import FakeClock, open_backend

GUILD = 111
OTHER_GUILD = 112
ADMIN = 444
OTHER_ADMIN = 445
PATRONS = 9_001
BOOSTERS = 9_002
NEWCOMERS = 9_003
MEMBER = 333
OTHER_MEMBER = 334
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


@pytest.fixture
async def other_store(
    request: pytest.FixtureRequest, store: Store, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Store]:
    """A second connection to the database of ``store``, as another process would have."""
    async with open_backend(request, store.dialect, tmp_path / "fluxbot.db", clock) as opened:
        yield opened


def audit_rows(changes: list[LimitChange]) -> list[tuple[str, Any, Any, int, float]]:
    """The audit rows oldest first, with their values decoded: (field, old, new, who, when)."""
    return [
        (
            change.field,
            None if change.old_value is None else json.loads(change.old_value),
            None if change.new_value is None else json.loads(change.new_value),
            change.user_id,
            change.at,
        )
        for change in reversed(changes)
    ]


async def test_a_role_rule_keeps_only_what_it_sets_merges_changes_and_audits_the_whole_rule(
    store: Store, clock: FakeClock
) -> None:
    assert await role_rules(store, GUILD) == {}

    assert await set_role_rule(store, GUILD, PATRONS, changed_by=ADMIN, user_daily=20) == RuleOverrides(user_daily=20)
    clock.advance(60)
    merged = await set_role_rule(store, GUILD, PATRONS, changed_by=OTHER_ADMIN, max_count=4, cooldown_seconds=5)
    assert merged == RuleOverrides(user_daily=20, max_count=4, cooldown_seconds=5.0)
    assert isinstance(merged.cooldown_seconds, float)
    # Setting what is already set changes nothing and audits nothing.
    assert await set_role_rule(store, GUILD, PATRONS, changed_by=ADMIN, user_daily=20, max_count=4) == merged
    clock.advance(60)
    # 0 is a value like any other (no limit), not "unset".
    zeroed = await set_role_rule(store, GUILD, PATRONS, changed_by=ADMIN, user_daily=0, user_monthly=0)
    assert zeroed == RuleOverrides(user_daily=0, user_monthly=0, max_count=4, cooldown_seconds=5.0)
    assert zeroed.fields() == {"user_daily": 0, "user_monthly": 0, "max_count": 4, "cooldown_seconds": 5.0}
    await set_role_rule(store, GUILD, BOOSTERS, changed_by=ADMIN, max_concurrent=3)

    assert await role_rules(store, GUILD) == {PATRONS: zeroed, BOOSTERS: RuleOverrides(max_concurrent=3)}
    assert audit_rows(await recent_limit_changes(store, GUILD)) == [
        (ROLE_RULE_FIELD, None, {"role_id": PATRONS, "user_daily": 20}, ADMIN, NOON),
        (
            ROLE_RULE_FIELD,
            {"role_id": PATRONS, "user_daily": 20},
            {"role_id": PATRONS, "user_daily": 20, "max_count": 4, "cooldown_seconds": 5.0},
            OTHER_ADMIN,
            NOON + 60,
        ),
        (
            ROLE_RULE_FIELD,
            {"role_id": PATRONS, "user_daily": 20, "max_count": 4, "cooldown_seconds": 5.0},
            {"role_id": PATRONS, "user_daily": 0, "user_monthly": 0, "max_count": 4, "cooldown_seconds": 5.0},
            ADMIN,
            NOON + 120,
        ),
        (ROLE_RULE_FIELD, None, {"role_id": BOOSTERS, "max_concurrent": 3}, ADMIN, NOON + 120),
    ]


async def test_clearing_a_role_rule_removes_it_audited_and_says_whether_there_was_one(
    store: Store, clock: FakeClock
) -> None:
    await set_role_rule(store, GUILD, PATRONS, changed_by=ADMIN, user_daily=20, cooldown_seconds=1.5)
    await set_role_rule(store, GUILD, BOOSTERS, changed_by=ADMIN, max_count=2)
    clock.advance(30)

    assert await clear_role_rule(store, GUILD, PATRONS, changed_by=OTHER_ADMIN)
    assert not await clear_role_rule(store, GUILD, PATRONS, changed_by=OTHER_ADMIN)  # nothing left: not audited
    assert not await clear_role_rule(store, GUILD, NEWCOMERS, changed_by=OTHER_ADMIN)
    assert await role_rules(store, GUILD) == {BOOSTERS: RuleOverrides(max_count=2)}
    # A role cleared can be given a rule again, starting from nothing.
    assert await set_role_rule(store, GUILD, PATRONS, changed_by=ADMIN, max_count=3) == RuleOverrides(max_count=3)

    assert audit_rows(await recent_limit_changes(store, GUILD))[2:] == [
        (
            ROLE_RULE_FIELD,
            {"role_id": PATRONS, "user_daily": 20, "cooldown_seconds": 1.5},
            None,
            OTHER_ADMIN,
            NOON + 30,
        ),
        (ROLE_RULE_FIELD, None, {"role_id": PATRONS, "max_count": 3}, ADMIN, NOON + 30),
    ]


async def test_a_member_rule_is_read_by_member_merged_cleared_and_audited_with_the_member_named(
    store: Store, clock: FakeClock
) -> None:
    assert await member_rule(store, GUILD, MEMBER) is None
    assert await set_member_rule(store, GUILD, MEMBER, changed_by=ADMIN, user_daily=0) == RuleOverrides(user_daily=0)
    clock.advance(10)
    both = await set_member_rule(store, GUILD, MEMBER, changed_by=ADMIN, max_concurrent=1, user_monthly=100)
    assert both == RuleOverrides(user_daily=0, user_monthly=100, max_concurrent=1)
    await set_member_rule(store, GUILD, OTHER_MEMBER, changed_by=ADMIN, cooldown_seconds=0)

    assert await member_rule(store, GUILD, MEMBER) == both
    assert await member_rule(store, GUILD, OTHER_MEMBER) == RuleOverrides(cooldown_seconds=0.0)
    assert await member_rule(store, GUILD, ADMIN) is None
    assert await member_rules(store, GUILD) == {MEMBER: both, OTHER_MEMBER: RuleOverrides(cooldown_seconds=0.0)}
    # A role rule for a role whose id happens to be the member's is another thing.
    assert await role_rules(store, GUILD) == {}

    assert await clear_member_rule(store, GUILD, MEMBER, changed_by=OTHER_ADMIN)
    assert not await clear_member_rule(store, GUILD, MEMBER, changed_by=OTHER_ADMIN)
    assert await member_rule(store, GUILD, MEMBER) is None
    assert await member_rules(store, GUILD) == {OTHER_MEMBER: RuleOverrides(cooldown_seconds=0.0)}

    rows = audit_rows(await recent_limit_changes(store, GUILD))
    assert [row for row in rows if row[2] is None or row[2]["user_id"] == MEMBER] == [
        (MEMBER_RULE_FIELD, None, {"user_id": MEMBER, "user_daily": 0}, ADMIN, NOON),
        (
            MEMBER_RULE_FIELD,
            {"user_id": MEMBER, "user_daily": 0},
            {"user_id": MEMBER, "user_daily": 0, "user_monthly": 100, "max_concurrent": 1},
            ADMIN,
            NOON + 10,
        ),
        (
            MEMBER_RULE_FIELD,
            {"user_id": MEMBER, "user_daily": 0, "user_monthly": 100, "max_concurrent": 1},
            None,
            OTHER_ADMIN,
            NOON + 10,
        ),
    ]
    assert len(rows) == 4


INVALID_CHANGES: list[dict[str, object]] = [
    {},
    {"guild_daily": 10},  # a server's budget, not a member's limit
    {"allowed_models": ["flux-dev"]},
    {"bogus": 1},
    {"user_daily": -1},
    {"user_monthly": -5},
    {"max_count": 0},
    {"max_concurrent": -1},
    {"max_concurrent": 1.5},
    {"user_daily": True},
    {"user_daily": "3"},
    {"user_daily": None},
    {"cooldown_seconds": -0.5},
    {"cooldown_seconds": math.nan},
    {"cooldown_seconds": math.inf},
    {"cooldown_seconds": "10"},
    {"user_daily": 3, "max_count": 0},  # one bad field spoils the whole change
]


@pytest.mark.parametrize("changes", INVALID_CHANGES, ids=repr)
@pytest.mark.parametrize("kind", ["role", "member"])
async def test_invalid_rule_changes_are_refused_with_a_reason_and_write_nothing(
    store: Store, kind: str, changes: dict[str, Any]
) -> None:
    setter = set_role_rule if kind == "role" else set_member_rule
    before = await setter(store, GUILD, PATRONS, changed_by=ADMIN, user_daily=7)
    audited = await recent_limit_changes(store, GUILD)

    with pytest.raises(ValueError, match=r"\S") as refused:
        await setter(store, GUILD, PATRONS, changed_by=ADMIN, **changes)
    with pytest.raises(ValueError):
        await setter(store, GUILD, NEWCOMERS, changed_by=ADMIN, **changes)  # a rule that does not exist yet

    if changes and not set(changes) <= set(RULE_FIELDS):
        assert "unknown rule field" in str(refused.value)
    rules = await role_rules(store, GUILD) if kind == "role" else await member_rules(store, GUILD)
    assert rules == {PATRONS: before}
    assert await recent_limit_changes(store, GUILD) == audited


async def test_access_roles_are_listed_in_the_order_added_and_each_change_is_audited(
    store: Store, clock: FakeClock
) -> None:
    assert await access_roles(store, GUILD) == ()
    assert await add_access_role(store, GUILD, PATRONS, changed_by=ADMIN)
    clock.advance(1)
    assert await add_access_role(store, GUILD, NEWCOMERS, changed_by=ADMIN)
    clock.advance(1)
    assert await add_access_role(store, GUILD, BOOSTERS, changed_by=OTHER_ADMIN)  # a lower id, added later
    assert not await add_access_role(store, GUILD, PATRONS, changed_by=OTHER_ADMIN)  # listed already
    assert await access_roles(store, GUILD) == (PATRONS, NEWCOMERS, BOOSTERS)

    clock.advance(1)
    assert await remove_access_role(store, GUILD, NEWCOMERS, changed_by=OTHER_ADMIN)
    assert not await remove_access_role(store, GUILD, NEWCOMERS, changed_by=OTHER_ADMIN)
    assert await access_roles(store, GUILD) == (PATRONS, BOOSTERS)
    assert await add_access_role(store, GUILD, NEWCOMERS, changed_by=ADMIN)  # back, now the latest
    assert await access_roles(store, GUILD) == (PATRONS, BOOSTERS, NEWCOMERS)

    clock.advance(1)
    assert await clear_access_roles(store, GUILD, changed_by=ADMIN) == 3
    assert await clear_access_roles(store, GUILD, changed_by=ADMIN) == 0
    assert await access_roles(store, GUILD) == ()

    assert audit_rows(await recent_limit_changes(store, GUILD)) == [
        (ACCESS_ROLE_FIELD, None, PATRONS, ADMIN, NOON),
        (ACCESS_ROLE_FIELD, None, NEWCOMERS, ADMIN, NOON + 1),
        (ACCESS_ROLE_FIELD, None, BOOSTERS, OTHER_ADMIN, NOON + 2),
        (ACCESS_ROLE_FIELD, NEWCOMERS, None, OTHER_ADMIN, NOON + 3),
        (ACCESS_ROLE_FIELD, None, NEWCOMERS, ADMIN, NOON + 3),
        (ACCESS_ROLE_FIELD, PATRONS, None, ADMIN, NOON + 4),
        (ACCESS_ROLE_FIELD, BOOSTERS, None, ADMIN, NOON + 4),
        (ACCESS_ROLE_FIELD, NEWCOMERS, None, ADMIN, NOON + 4),
    ]


async def test_access_roles_added_in_one_clock_tick_are_listed_by_id(store: Store) -> None:
    for role in (NEWCOMERS, PATRONS, BOOSTERS):
        assert await add_access_role(store, GUILD, role, changed_by=ADMIN)
    assert await access_roles(store, GUILD) == (PATRONS, BOOSTERS, NEWCOMERS)


async def test_each_server_has_its_own_rules_and_access_roles(store: Store) -> None:
    for guild in (GUILD, OTHER_GUILD):
        await set_role_rule(store, guild, PATRONS, changed_by=ADMIN, user_daily=guild)
        await set_member_rule(store, guild, MEMBER, changed_by=ADMIN, max_count=guild % 4 + 1)
        await add_access_role(store, guild, PATRONS, changed_by=ADMIN)
        await add_access_role(store, guild, guild, changed_by=ADMIN)

    await set_role_rule(store, GUILD, PATRONS, changed_by=ADMIN, cooldown_seconds=9)
    await set_member_rule(store, GUILD, MEMBER, changed_by=ADMIN, user_monthly=9)
    assert await clear_role_rule(store, GUILD, PATRONS, changed_by=ADMIN)
    assert await clear_member_rule(store, GUILD, MEMBER, changed_by=ADMIN)
    assert await remove_access_role(store, GUILD, PATRONS, changed_by=ADMIN)
    assert await clear_access_roles(store, GUILD, changed_by=ADMIN) == 1

    assert await role_rules(store, OTHER_GUILD) == {PATRONS: RuleOverrides(user_daily=OTHER_GUILD)}
    assert await member_rule(store, OTHER_GUILD, MEMBER) == RuleOverrides(max_count=OTHER_GUILD % 4 + 1)
    assert await member_rules(store, OTHER_GUILD) == {MEMBER: RuleOverrides(max_count=OTHER_GUILD % 4 + 1)}
    assert await access_roles(store, OTHER_GUILD) == (OTHER_GUILD, PATRONS)  # added in one clock tick: by id
    assert len(await recent_limit_changes(store, OTHER_GUILD)) == 4  # only its own changes
    assert await request_rules(store, GUILD, MEMBER) == ({}, None, ())


async def test_request_rules_answers_what_the_three_reads_do_in_one_statement(store: Store, clock: FakeClock) -> None:
    assert await request_rules(store, GUILD, MEMBER) == ({}, None, ())

    await set_role_rule(store, GUILD, PATRONS, changed_by=ADMIN, user_daily=0, cooldown_seconds=2.5)
    await set_role_rule(store, GUILD, BOOSTERS, changed_by=ADMIN, max_count=4, user_monthly=500)
    await set_role_rule(store, OTHER_GUILD, NEWCOMERS, changed_by=ADMIN, user_daily=1)
    await set_member_rule(store, GUILD, OTHER_MEMBER, changed_by=ADMIN, max_concurrent=2)
    await set_member_rule(store, OTHER_GUILD, MEMBER, changed_by=ADMIN, max_concurrent=3)
    await add_access_role(store, GUILD, NEWCOMERS, changed_by=ADMIN)
    clock.advance(1)
    await add_access_role(store, GUILD, PATRONS, changed_by=ADMIN)
    await add_access_role(store, OTHER_GUILD, BOOSTERS, changed_by=ADMIN)

    async def separately(user: int) -> tuple[object, ...]:
        return (
            await role_rules(store, GUILD),
            await member_rule(store, GUILD, user),
            await access_roles(store, GUILD),
        )

    # MEMBER has no rule of their own here (only in the other server); OTHER_MEMBER does.
    roles = {
        BOOSTERS: RuleOverrides(user_monthly=500, max_count=4),
        PATRONS: RuleOverrides(user_daily=0, cooldown_seconds=2.5),
    }
    assert await request_rules(store, GUILD, MEMBER) == (roles, None, (NEWCOMERS, PATRONS))
    assert await request_rules(store, GUILD, OTHER_MEMBER) == (
        roles,
        RuleOverrides(max_concurrent=2),
        (NEWCOMERS, PATRONS),
    )
    for user in (MEMBER, OTHER_MEMBER):
        assert await request_rules(store, GUILD, user) == await separately(user)
    rules, own, access = await request_rules(store, GUILD, OTHER_MEMBER)
    assert own is not None and type(own.max_concurrent) is int
    assert isinstance(rules[PATRONS].cooldown_seconds, float) and type(rules[BOOSTERS].max_count) is int
    assert access == (NEWCOMERS, PATRONS)


Setter = Callable[..., Awaitable[RuleOverrides]]


@pytest.mark.parametrize("kind", ["role", "member"])
async def test_concurrent_changes_of_one_rule_from_two_processes_lose_nothing(
    store: Store, other_store: Store, kind: str
) -> None:
    """Each change is a read of the rule, a merge and a write: without serialisation two changes read the same
    rule and the later write drops the earlier one's field. The audit trail shows it: every row's old value must
    be the previous row's new one."""
    setter: Setter = set_role_rule if kind == "role" else set_member_rule
    changes = [(RULE_FIELDS[n % len(RULE_FIELDS)], n + 1) for n in range(40)]
    await asyncio.gather(
        *(
            setter(store if n % 2 else other_store, GUILD, PATRONS, changed_by=ADMIN, **{name: value})
            for n, (name, value) in enumerate(changes)
        )
    )

    rows = audit_rows(await recent_limit_changes(store, GUILD, limit=100))
    assert len(rows) == len(changes)  # every change changed something, and was audited once
    previous = None
    made = []
    for _, old, new, _, _ in rows:
        assert old == previous, "a change was made from a rule that another change had already replaced"
        made.extend(
            (name, value) for name, value in new.items() if name in RULE_FIELDS and (old or {}).get(name) != value
        )
        previous = new
    assert sorted(made) == sorted(changes)  # each change is in the trail, once
    final = await (role_rules(store, GUILD) if kind == "role" else member_rules(store, GUILD))
    assert final[PATRONS].fields() == {name: value for name, value in previous.items() if name in RULE_FIELDS}
    assert set(final[PATRONS].fields()) == set(RULE_FIELDS)
