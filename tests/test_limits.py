"""The rules a request must pass (bot/limits.py), with a real store: a SQLite file and a PostgreSQL database."""

from __future__ import annotations

import pytest

from bot import db
from bot.db import Store
from bot.limits import DM_GUILD_ID, Refusal, RefusalKind, admit, contains_blocked_term, limits_for
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
        "user_id": MEMBER,
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
        await admit(store, settings, **{**request, "count": 4}, user_id=MEMBER)  # type: ignore[arg-type]
    assert (caught.value.kind, caught.value.allowed) == (RefusalKind.MEMBER_BLOCKED, ("spamming the channel",))
    await admit(store, settings, **request, user_id=ADMIN)  # type: ignore[arg-type]  # others are served
    await admit(store, settings, **{**request, "guild_id": GUILD + 1}, user_id=MEMBER)  # type: ignore[arg-type]

    await db.block_member(store, GUILD, MEMBER, reason="  ", changed_by=ADMIN)  # no reason given
    with pytest.raises(Refusal) as caught:
        await admit(store, settings, **request, user_id=MEMBER)  # type: ignore[arg-type]
    assert (caught.value.kind, caught.value.allowed) == (RefusalKind.MEMBER_BLOCKED, ())

    await db.unblock_member(store, GUILD, MEMBER, changed_by=ADMIN)
    assert (await admit(store, settings, **request, user_id=MEMBER)).max_count == 1  # type: ignore[arg-type]


async def test_direct_messages_have_their_own_limit_when_allowed(store: Store) -> None:
    settings = load_settings(DISCORD_TOKEN="t", FLUX_API_KEY="k", ALLOW_DMS="true", DM_USER_DAILY="3")
    limits = await admit(
        store, settings, guild_id=DM_GUILD_ID, channel_id=5, user_id=MEMBER, model="flux-dev", count=1, prompt="x"
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
