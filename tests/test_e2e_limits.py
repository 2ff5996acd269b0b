"""Server limits and usage end to end: quotas hold under load, admins change them live, members see them."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from bot import db
from bot.db.days import next_utc_month
from tests.fakediscord import CommandNotAvailable
from tests.fluxbot_harness import FluxbotHarness, is_result, settled, status_line


async def test_fifty_simultaneous_requests_get_exactly_the_daily_limit(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        admin = await world.admin.slash(world.channel, "limits set", user_daily=5)
        await admin.wait_response()
        requests = await asyncio.gather(
            *(world.member.slash(world.channel, "imagine", prompt=f"lighthouse {n}") for n in range(50))
        )
        await world.emu.wait_until(lambda: all(settled(i) for i in requests), timeout=20)
        usage = await world.member.slash(world.channel, "usage")
        usage_text = (await usage.wait_followup()).content
        results = [m for m in world.channel.messages.values() if is_result(m) and m.author.id == world.emu.bot_user.id]
        store_usage = await db.user_usage(bot.store, world.guild.id, world.member.id)

    assert all(i.ack_delay is not None and i.ack_delay < 3 for i in requests)
    assert len(results) == 5
    assert fluxbot.flux.count("POST", "/flux/images") == 5
    refused = [status_line(i) for i in requests if not status_line(i).startswith("✅")]
    assert len(refused) == 45
    assert all("Daily limit reached" in text and "<t:" in text for text in refused)
    assert "5 of 5 (0 left)" in usage_text
    assert store_usage.today == 5


async def test_the_server_total_never_passes_its_daily_limit(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    carol = world.guild.add_member("carol")
    async with fluxbot.running() as bot:
        await (await world.admin.slash(world.channel, "limits set", guild_daily=6)).wait_response()
        requests = await asyncio.gather(
            *(
                who.slash(world.channel, "imagine", prompt="a boat", count=2)
                for who in (world.member, world.admin, carol) * 3
            )
        )
        await world.emu.wait_until(lambda: all(settled(i) for i in requests), timeout=20)
        total = await db.guild_usage_today(bot.store, world.guild.id)

    assert total == 6
    delivered = sum(len(m.attachments) for m in world.channel.messages.values() if is_result(m))
    assert delivered == 6
    assert sum("server's daily limit" in status_line(i) for i in requests) == 6


async def test_only_managers_change_limits_and_changes_apply_at_once(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        sneaky = await world.member.slash(world.channel, "limits set", force=True, user_daily=1000)
        await world.emu.wait_until(lambda: status_line(sneaky) != "", timeout=5)
        shown = await world.admin.slash(world.channel, "limits show")
        await shown.wait_response()
        before = status_line(shown)

        changed = await world.admin.slash(world.channel, "limits set", max_count=1, cooldown=0)
        await changed.wait_response()
        over = await world.member.slash(world.channel, "imagine", prompt="two cats", count=2)
        await world.emu.wait_until(lambda: settled(over), timeout=5)

    assert "permission" in status_line(sneaky)
    assert "Images per member per day:** 0" not in before
    assert "Images per request:** 1 (set here)" in status_line(changed)
    assert "this server allows at most 1." in status_line(over)
    assert fluxbot.flux.count("POST", "/flux/images") == 0


async def test_blocked_words_disallowed_models_and_channels_are_refused_before_the_provider(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    other = world.guild.add_text_channel("art")
    async with fluxbot.running():
        for command, options in [
            ("limits blocklist add", {"term": "Gore"}),
            ("limits models", {"allowed": "flux-dev flux-pro"}),
            ("limits channels add", {"channel": other}),
        ]:
            await (await world.admin.slash(world.channel, command, **options)).wait_response()
        blocked = await world.member.slash(other, "imagine", prompt="so much gore")
        model = await world.member.slash(other, "imagine", prompt="a cat", model="flux-2-pro")
        channel = await world.member.slash(world.channel, "imagine", prompt="a cat")
        await world.emu.wait_until(lambda: all(status_line(i) for i in (blocked, model, channel)), timeout=5)

    assert "rephrase" in status_line(blocked) and "gore" not in status_line(blocked).lower()
    assert "Allowed: flux-dev, flux-pro" in status_line(model)
    assert f"<#{other.id}>" in status_line(channel)
    assert fluxbot.flux.count("POST", "/flux/images") == 0


async def test_a_job_failed_by_the_provider_costs_nothing(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    fluxbot.flux.fail_next_task(code="api_error", message="fetch failed")
    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a cat", count=3)
        await world.emu.wait_until(lambda: settled(inter), timeout=5)
        usage = await db.user_usage(bot.store, world.guild.id, world.member.id)

    assert status_line(inter).startswith("❌")
    assert usage.today == 0


async def test_cooldown_and_concurrency_are_enforced_and_reported(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    fluxbot.flux.task_delay = 3600  # jobs stay in progress
    async with fluxbot.running():
        await (await world.admin.slash(world.channel, "limits set", max_concurrent=2)).wait_response()
        first = [await world.member.slash(world.channel, "imagine", prompt=f"slow {n}") for n in range(3)]
        await world.emu.wait_until(lambda: bool(status_line(first[2])), timeout=5)
        await (await world.admin.slash(world.channel, "limits set", max_concurrent=0, cooldown=600)).wait_response()
        carol = world.guild.add_member("carol")
        one = await carol.slash(world.channel, "imagine", prompt="quick")
        two = await carol.slash(world.channel, "imagine", prompt="again")
        await world.emu.wait_until(lambda: bool(status_line(two)), timeout=5)
        usage = await world.member.slash(world.channel, "usage")
        usage_text = (await usage.wait_followup()).content

    assert "Jobs in progress: 2; the limit is 2" in status_line(first[2])
    assert "Cooldown" in status_line(two) and "<t:" in status_line(two)
    assert not status_line(one).startswith("❌") and "Cooldown" not in status_line(one)
    assert usage_text.count("generating") == 2


async def test_direct_messages_are_off_by_default(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    dm = world.emu.dm_channel(world.member)
    async with fluxbot.running():
        with pytest.raises(CommandNotAvailable):
            await world.member.slash(dm, "imagine", prompt="a cat")
        forced = await world.member.slash(dm, "imagine", force=True, prompt="a cat")
        await world.emu.wait_until(lambda: settled(forced), timeout=5)

    assert "direct messages" in status_line(forced)
    assert fluxbot.flux.count("POST", "/flux/images") == 0


async def test_direct_messages_when_allowed_have_their_own_daily_limit(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    dm = world.emu.dm_channel(world.member)
    async with fluxbot.running(ALLOW_DMS="true", DM_USER_DAILY="1"):
        first = await world.member.slash(dm, "imagine", prompt="a cat")
        await world.emu.wait_until(lambda: settled(first), timeout=5)
        second = await world.member.slash(dm, "imagine", prompt="another cat")
        await world.emu.wait_until(lambda: settled(second), timeout=5)
        posted = await world.emu.wait_for_message(dm, is_result, author=world.emu.bot_user)

    assert status_line(first).startswith("✅")
    assert len(posted.attachments) == 1
    assert "Daily limit reached" in status_line(second)


async def test_every_change_is_recorded_with_who_made_it_and_reset_restores_the_defaults(
    fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    world = fluxbot.world
    caplog.set_level(logging.INFO, logger="cogs.limits")
    async with fluxbot.running() as bot:
        for command, options in [
            ("limits set", {"user_daily": 3, "cooldown": 30}),
            ("limits blocklist add", {"term": "Red Fox"}),
            ("limits blocklist list", {}),
            ("limits reset", {}),
            ("limits show", {}),
        ]:
            last = await world.admin.slash(world.channel, command, **options)
            await last.wait_response()
            if command == "limits blocklist list":
                listed = status_line(last)
        changes = await db.recent_limit_changes(bot.store, world.guild.id)
        settings = await db.get_guild_settings(bot.store, world.guild.id)

    assert "`red fox`" in listed
    assert "Images per member per day:** no limit (default)" in status_line(last)
    assert "Blocked words and phrases:** 1" in status_line(last)  # reset leaves the blocklist
    assert settings.user_daily is None and settings.cooldown_seconds is None
    assert {(c.field, c.user_id) for c in changes} == {
        ("user_daily", world.admin.id),
        ("cooldown_seconds", world.admin.id),
        ("blocklist", world.admin.id),
    }
    assert len(changes) == 5  # two set, one blocked term, two reset
    assert f"user {world.admin.id} changed limits" in caplog.text
    assert f"user {world.admin.id} reset the limits" in caplog.text


async def test_a_monthly_limit_refuses_naming_itself_and_the_first_of_next_month(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        months = {int(next_utc_month(bot.store.now()))}  # (two, should the test run across a month's end)
        changed = await world.admin.slash(world.channel, "limits set", user_monthly=3, guild_monthly=100)
        await changed.wait_response()
        first = await world.member.slash(world.channel, "imagine", prompt="a harbour", count=2)
        await world.emu.wait_until(lambda: settled(first), timeout=10)
        over = await world.member.slash(world.channel, "imagine", prompt="another harbour", count=2)
        await world.emu.wait_until(lambda: settled(over), timeout=10)
        usage = await world.member.slash(world.channel, "usage")
        usage_text = (await usage.wait_followup()).content
        months.add(int(next_utc_month(bot.store.now())))
        changes = await db.recent_limit_changes(bot.store, world.guild.id)

    assert "Images per member per month (UTC):** 3 (set here)" in status_line(changed)
    assert "Images for the server per month (UTC):** 100 (set here)" in status_line(changed)
    assert status_line(first).startswith("✅")
    refusal = status_line(over)
    assert "Monthly limit reached. Your images this month: 2 of 3; this request asks for 2." in refusal
    assert any(f"It resets <t:{month}:R>." in refusal for month in months)
    assert "**This month:** 2 of 3 (1 left)" in usage_text
    assert "**This server this month:** 2 of 100 (98 left)" in usage_text
    assert any(f"monthly ones <t:{month}:R>" in usage_text for month in months)
    assert fluxbot.flux.count("POST", "/flux/images") == 1
    assert {(c.field, c.new_value, c.user_id) for c in changes} == {
        ("user_monthly", "3", world.admin.id),
        ("guild_monthly", "100", world.admin.id),
    }


async def test_a_blocked_member_is_refused_with_the_reason_until_unblocked_and_only_managers_decide(
    fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    world = fluxbot.world
    carol = world.guild.add_member("carol")
    caplog.set_level(logging.INFO, logger="cogs.limits")
    async with fluxbot.running() as bot:
        sneaky = await carol.slash(world.channel, "limits member block", force=True, member=world.member)
        await world.emu.wait_until(lambda: status_line(sneaky) != "", timeout=5)
        blocked = await world.admin.slash(
            world.channel, "limits member block", member=world.member, reason="Spamming the channel"
        )
        blocked_answer = await blocked.wait_response()
        shown = await (await world.admin.slash(world.channel, "limits show")).wait_response()
        refused = await world.member.slash(world.channel, "imagine", prompt="a lighthouse")
        served_other = await carol.slash(world.channel, "imagine", prompt="a lighthouse")
        await world.emu.wait_until(lambda: settled(refused) and settled(served_other), timeout=10)
        providers_calls_while_blocked = fluxbot.flux.count("POST", "/flux/images")

        sneaky_unblock = await carol.slash(world.channel, "limits member unblock", force=True, member=world.member)
        await world.emu.wait_until(lambda: status_line(sneaky_unblock) != "", timeout=5)
        still = await world.member.slash(world.channel, "imagine", prompt="a lighthouse again")
        await world.emu.wait_until(lambda: settled(still), timeout=10)
        unblocked = await world.admin.slash(world.channel, "limits member unblock", member=world.member)
        await unblocked.wait_response()
        again = await world.admin.slash(world.channel, "limits member unblock", member=world.member)
        await again.wait_response()
        served = await world.member.slash(world.channel, "imagine", prompt="a lighthouse at last")
        await world.emu.wait_until(lambda: settled(served), timeout=10)
        shown_after = await (await world.admin.slash(world.channel, "limits show")).wait_response()
        changes = await db.recent_limit_changes(bot.store, world.guild.id)

    assert "permission" in status_line(sneaky) and "permission" in status_line(sneaky_unblock)
    assert f"<@{world.member.id}> is blocked here (reason: Spamming the channel)." in blocked_answer.content
    assert blocked_answer.visible_to == world.admin.id and not blocked_answer.pinged_ids
    assert f"**Blocked members (1):** <@{world.member.id}> (Spamming the channel)" in shown.content
    assert shown.visible_to == world.admin.id and not shown.pinged_ids  # mentioned, never pinged
    assert status_line(refused) == "You are blocked from using the bot in this server. Reason: Spamming the channel"
    assert status_line(still) == status_line(refused)  # a non-manager's unblock changed nothing
    assert status_line(served_other).startswith("✅")
    assert providers_calls_while_blocked == 1  # only carol's request reached the provider
    assert f"<@{world.member.id}> is no longer blocked here." in status_line(unblocked)
    assert "was not blocked here" in status_line(again)
    assert status_line(served).startswith("✅")
    assert "**Blocked members:** none" in shown_after.content
    block_value = json.dumps({"user_id": world.member.id, "reason": "Spamming the channel"})
    assert [(c.field, c.old_value, c.new_value, c.user_id) for c in changes] == [
        (db.BLOCKED_MEMBER_FIELD, block_value, None, world.admin.id),
        (db.BLOCKED_MEMBER_FIELD, None, block_value, world.admin.id),
    ]
    assert f"user {world.admin.id} blocked member {world.member.id}" in caplog.text
    assert f"user {world.admin.id} unblocked member {world.member.id}" in caplog.text
