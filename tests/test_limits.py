"""The rules a request must pass (bot/limits.py), with a real store: a SQLite file and a PostgreSQL database."""

from __future__ import annotations

import pytest

from bot import db
from bot.db import Store
from bot.db.rules import RuleOverrides
from bot.limits import (
    DM_GUILD_ID,
    Limits,
    Member,
    Origin,
    Refusal,
    RefusalKind,
    admit,
    apply_rules,
    contains_blocked_term,
    limits_for,
    member_limits,
)
from bot.settings import Settings, load_settings

GUILD, CHANNEL, ADMIN, MEMBER = 10, 20, 30, 40


@pytest.fixture
def settings() -> Settings:
    return load_settings(DISCORD_TOKEN="t", FLUX_API_KEY="k", DEFAULT_USER_DAILY="25", DEFAULT_MAX_CONCURRENT="3")


async def test_a_server_starts_with_the_defaults_and_zero_means_no_limit(store: Store, settings: Settings) -> None:
    limits = await limits_for(store, settings, GUILD)
    assert (limits.user_daily, limits.guild_daily, limits.max_count, limits.max_concurrent) == (25, 250, 4, 3)
    assert limits.overridden == frozenset()

    await db.update_guild_settings(store, GUILD, ADMIN, user_daily=0, max_concurrent=0, cooldown_seconds=30)
    limits = await limits_for(store, settings, GUILD)
    assert (limits.quota.user_daily, limits.quota.max_concurrent, limits.quota.cooldown) == (None, None, 30)
    assert limits.overridden == {"user_daily", "max_concurrent", "cooldown_seconds"}


async def test_each_rule_refuses_with_what_is_allowed(store: Store, settings: Settings) -> None:
    await db.update_guild_settings(
        store, GUILD, ADMIN, allowed_models=["flux-dev"], allowed_channels=[CHANNEL], max_count=2
    )
    await db.add_blocked_term(store, GUILD, "Gore", changed_by=ADMIN)
    ok = {
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "member": Member(MEMBER),
        "model": "flux-dev",
        "count": 2,
        "prompt": "a calm lake",
    }

    assert (await admit(store, settings, **ok)).max_count == 2  # type: ignore[arg-type]
    cases = [
        ({"channel_id": CHANNEL + 1}, RefusalKind.CHANNEL, (str(CHANNEL),)),
        ({"model": "flux-pro"}, RefusalKind.MODEL, ("flux-dev",)),
        ({"count": 3}, RefusalKind.COUNT, ("2",)),
        ({"prompt": "lots of  GORE here"}, RefusalKind.BLOCKED_TERM, ()),
        ({"guild_id": DM_GUILD_ID}, RefusalKind.DMS_OFF, ()),
    ]
    for change, kind, allowed in cases:
        with pytest.raises(Refusal) as caught:
            await admit(store, settings, **{**ok, **change})  # type: ignore[arg-type]
        assert (caught.value.kind, caught.value.allowed) == (kind, allowed)


async def test_a_blocked_member_is_refused_before_any_other_rule_with_the_reason(
    store: Store, settings: Settings
) -> None:
    request = {"guild_id": GUILD, "channel_id": CHANNEL, "model": "flux-dev", "count": 1, "prompt": "a calm lake"}
    await db.update_guild_settings(store, GUILD, ADMIN, max_count=1)
    await db.block_member(store, GUILD, MEMBER, reason="spamming the channel", changed_by=ADMIN)

    with pytest.raises(Refusal) as caught:  # even a request that breaks another rule names the block
        await admit(store, settings, **{**request, "count": 4}, member=Member(MEMBER))  # type: ignore[arg-type]
    assert (caught.value.kind, caught.value.allowed) == (RefusalKind.MEMBER_BLOCKED, ("spamming the channel",))
    await admit(store, settings, **request, member=Member(ADMIN))  # type: ignore[arg-type]  # others are served
    await admit(store, settings, **{**request, "guild_id": GUILD + 1}, member=Member(MEMBER))  # type: ignore[arg-type]

    await db.block_member(store, GUILD, MEMBER, reason="  ", changed_by=ADMIN)  # no reason given
    with pytest.raises(Refusal) as caught:
        await admit(store, settings, **request, member=Member(MEMBER))  # type: ignore[arg-type]
    assert (caught.value.kind, caught.value.allowed) == (RefusalKind.MEMBER_BLOCKED, ())

    await db.unblock_member(store, GUILD, MEMBER, changed_by=ADMIN)
    assert (await admit(store, settings, **request, member=Member(MEMBER))).max_count == 1  # type: ignore[arg-type]


async def test_direct_messages_have_their_own_limit_when_allowed(store: Store) -> None:
    settings = load_settings(DISCORD_TOKEN="t", FLUX_API_KEY="k", ALLOW_DMS="true", DM_USER_DAILY="3")
    limits = await admit(
        store,
        settings,
        guild_id=DM_GUILD_ID,
        channel_id=5,
        member=Member(MEMBER),
        model="flux-dev",
        count=1,
        prompt="x",
    )
    assert (limits.quota.user_daily, limits.quota.guild_daily) == (3, None)


async def test_monthly_limits_come_from_the_defaults_and_the_server_overrides_them(store: Store) -> None:
    settings = load_settings(
        DISCORD_TOKEN="t", FLUX_API_KEY="k", DEFAULT_USER_MONTHLY="300", ALLOW_DMS="true", DEFAULT_GUILD_MONTHLY="0"
    )
    limits = await limits_for(store, settings, GUILD)
    assert (limits.quota.user_monthly, limits.quota.guild_monthly) == (300, None)  # 0: no limit

    await db.update_guild_settings(store, GUILD, ADMIN, user_monthly=0, guild_monthly=5_000)
    limits = await limits_for(store, settings, GUILD)
    assert (limits.quota.user_monthly, limits.quota.guild_monthly) == (None, 5_000)
    assert limits.overridden == {"user_monthly", "guild_monthly"}
    dms = await limits_for(store, settings, DM_GUILD_ID)  # direct messages have their own daily limit only
    assert (dms.quota.user_monthly, dms.quota.guild_monthly) == (None, None)


@pytest.mark.parametrize(
    ("prompt", "blocked"),
    [
        ("a classic car", False),  # "ass" is not a word of it
        ("an ass in a field", True),
        ("ASS!", True),
        ("red  fox", True),  # the phrase "red fox", with extra space
        ("redfox", False),
    ],
)
def test_blocked_terms_match_whole_words_and_phrases_ignoring_case(prompt: str, blocked: bool) -> None:
    assert contains_blocked_term(prompt, ("ass", "red fox")) is blocked


async def test_a_member_gets_the_most_generous_value_among_their_roles_and_their_own_rule_beats_them(
    store: Store, settings: Settings
) -> None:
    patrons, boosters, newcomers = 101, 102, 103
    await db.update_guild_settings(store, GUILD, ADMIN, user_daily=10, cooldown_seconds=60, max_count=2)
    await db.set_role_rule(store, GUILD, patrons, changed_by=ADMIN, user_daily=50, cooldown_seconds=30)
    await db.set_role_rule(store, GUILD, boosters, changed_by=ADMIN, user_daily=0, max_count=4, cooldown_seconds=45)
    await db.set_role_rule(store, GUILD, newcomers, changed_by=ADMIN, user_daily=2, max_concurrent=1)

    both = await member_limits(store, settings, GUILD, Member(MEMBER, frozenset({GUILD, patrons, boosters})))
    assert (both.user_daily, both.max_count, both.cooldown) == (None, 4, 30.0)  # 0 = no limit beats 50
    assert both.origins["user_daily"] == Origin("role", boosters)
    assert both.origins["cooldown"] == Origin("role", patrons)  # the shortest cooldown
    assert both.max_concurrent == 3 and "max_concurrent" not in both.origins  # no role sets it: the server's
    assert both.quota.user_daily is None and both.quota.guild_daily == 250

    new = await member_limits(store, settings, GUILD, Member(MEMBER, frozenset({GUILD, newcomers})))
    assert (new.user_daily, new.max_concurrent, new.cooldown) == (2, 1, 60.0)  # a role may also give less
    nobody = await member_limits(store, settings, GUILD, Member(MEMBER, frozenset({GUILD})))
    assert (nobody.user_daily, nobody.origins) == (10, {})

    await db.set_member_rule(store, GUILD, MEMBER, changed_by=ADMIN, user_daily=7, cooldown_seconds=0)
    own = await member_limits(store, settings, GUILD, Member(MEMBER, frozenset({GUILD, patrons, boosters})))
    assert (own.user_daily, own.cooldown, own.max_count) == (7, 0.0, 4)  # the member's rule beats every role
    assert own.origins["user_daily"] == own.origins["cooldown"] == Origin("member")
    other = await member_limits(store, settings, GUILD + 1, Member(MEMBER, frozenset({patrons})))
    assert (other.user_daily, other.origins) == (25, {})  # rules belong to their server


def test_ties_between_roles_go_to_the_lowest_role_id_whatever_the_order() -> None:
    base = Limits(
        guild_id=GUILD,
        user_daily=10,
        guild_daily=None,
        max_count=1,
        max_concurrent=None,
        cooldown=0.0,
        user_monthly=None,
        guild_monthly=None,
        allowed_models=None,
        allowed_channels=None,
        blocked_terms=(),
        overridden=frozenset(),
    )
    rules = {9: RuleOverrides(user_daily=5), 3: RuleOverrides(user_daily=5), 7: RuleOverrides(user_daily=4)}
    forward = apply_rules(base, rules, None)
    backward = apply_rules(base, dict(reversed(rules.items())), None)
    assert forward == backward
    assert (forward.user_daily, forward.origins["user_daily"]) == (5, Origin("role", 3))


async def test_access_roles_let_in_only_their_members_and_those_who_manage_the_server(
    store: Store, settings: Settings
) -> None:
    artists, guests = 201, 202
    request = {"guild_id": GUILD, "channel_id": CHANNEL, "model": "flux-dev", "count": 1, "prompt": "a calm lake"}
    await admit(store, settings, **request, member=Member(MEMBER))  # type: ignore[arg-type]  # no list: everyone
    await db.add_access_role(store, GUILD, artists, changed_by=ADMIN)
    await db.add_access_role(store, GUILD, guests, changed_by=ADMIN)

    with pytest.raises(Refusal) as caught:
        await admit(store, settings, **request, member=Member(MEMBER, frozenset({GUILD, 999})))  # type: ignore[arg-type]
    assert (caught.value.kind, caught.value.allowed) == (RefusalKind.ACCESS, (str(artists), str(guests)))
    await admit(store, settings, **request, member=Member(MEMBER, frozenset({GUILD, guests})))  # type: ignore[arg-type]
    await admit(store, settings, **request, member=Member(ADMIN, manages_guild=True))  # type: ignore[arg-type]

    await db.clear_access_roles(store, GUILD, changed_by=ADMIN)
    await admit(store, settings, **request, member=Member(MEMBER))  # type: ignore[arg-type]
