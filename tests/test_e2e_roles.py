"""Rules by role and by member, who may use the bot, the report and alerts, end to end on the loopback Discord.

Members carry roles the way Discord sends them: in each interaction's ``member.roles`` (and a message's
``member``), so the bot reads them at request time and a deleted role stops counting at once.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from PIL import Image

from bot import db
from tests.fakediscord import Interaction
from tests.fakediscord.model import Member
from tests.fluxbot_harness import FluxbotHarness, ask, is_result, settled, status_line
from tests.test_e2e_buttons import job_of


async def imagine_all(fluxbot: FluxbotHarness, asks: list[tuple[Member, str]], count: int = 1) -> list[Interaction]:
    """Send every ``(member, prompt)`` at once and wait until each is settled."""
    world = fluxbot.world
    requests = await asyncio.gather(
        *(who.slash(world.channel, "imagine", prompt=prompt, count=count) for who, prompt in asks)
    )
    await world.emu.wait_until(lambda: all(settled(i) for i in requests), timeout=30)
    return list(requests)


async def test_the_most_generous_role_wins_each_limit_and_a_member_rule_beats_roles(
    fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    world = fluxbot.world
    patrons, boosters = world.guild.add_role("Patrons"), world.guild.add_role("Boosters")
    carol = world.guild.add_member("carol", roles=[patrons, boosters])
    dave = world.guild.add_member("dave", roles=[patrons])
    caplog.set_level(logging.INFO, logger="cogs.limits")
    async with fluxbot.running() as bot:
        await ask(world.admin, fluxbot, "limits set", user_daily=1, max_count=1)
        patrons_answer = await ask(world.admin, fluxbot, "limits role set", role=patrons, user_daily=3)
        await ask(world.admin, fluxbot, "limits role set", role=boosters, user_daily=2, max_count=2)
        member_answer = await ask(world.admin, fluxbot, "limits member set", member=dave, user_daily=1)

        # carol: 3 a day from Patrons (more than Boosters' 2), 2 per request from Boosters (more than the server's 1)
        carols = await imagine_all(fluxbot, [(carol, f"carol {n}") for n in range(5)])
        big = await imagine_all(fluxbot, [(carol, "too many")], count=3)
        # dave: a Patron, but his own rule of 1 a day beats the role
        daves = await imagine_all(fluxbot, [(dave, f"dave {n}") for n in range(3)])
        # bob: no role, the server's 1 a day
        bobs = await imagine_all(fluxbot, [(world.member, f"bob {n}") for n in range(3)])
        usage = await carol.slash(world.channel, "usage")
        usage_text = (await usage.wait_followup()).content
        dave_usage = await dave.slash(world.channel, "usage")
        dave_usage_text = (await dave_usage.wait_followup()).content
        cleared = await ask(world.admin, fluxbot, "limits role clear", role=patrons)
        changes = await db.recent_limit_changes(bot.store, world.guild.id)

    accepted = [sum(status_line(i).startswith("✅") for i in batch) for batch in (carols, daves, bobs)]
    assert accepted == [3, 1, 1]
    assert all("Your images today: 3 of 3" in status_line(i) for i in carols if not status_line(i).startswith("✅"))
    assert "this server allows at most 2." in status_line(big[0])
    assert all("Your images today: 1 of 1" in status_line(i) for i in daves if not status_line(i).startswith("✅"))
    assert f"Members with <@&{patrons.id}> now get: images a day: 3." in patrons_answer
    assert f"<@{dave.id}> now gets, whatever their roles: images a day: 1." in member_answer
    assert f"• Images per day: 3 (from role <@&{patrons.id}>)" in usage_text
    assert f"• Images per request: 2 (from role <@&{boosters.id}>)" in usage_text
    assert "• Jobs at a time: no limit (default)" in usage_text
    assert "• Images per day: 1 (set for you)" in dave_usage_text
    assert not usage.followups[0].pinged_role_ids and not usage.followups[0].pinged_ids
    assert f"<@&{patrons.id}> no longer changes any limit." in cleared
    fields = [c.field for c in changes]
    assert fields.count(db.ROLE_RULE_FIELD) == 3 and fields.count(db.MEMBER_RULE_FIELD) == 1
    cleared_change = changes[0]
    assert (cleared_change.field, cleared_change.new_value, cleared_change.user_id) == (
        db.ROLE_RULE_FIELD,
        None,
        world.admin.id,
    )
    assert json.loads(cleared_change.old_value or "{}")["role_id"] == patrons.id
    assert f"user {world.admin.id} set the rule of role {patrons.id}" in caplog.text
    assert fluxbot.flux.count("POST", "/flux/images") == 5


async def test_access_roles_refuse_others_naming_the_roles_and_managers_always_pass(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    artists = world.guild.add_role("Artists")
    carol = world.guild.add_member("carol", roles=[artists])
    async with fluxbot.running():
        first = (await imagine_all(fluxbot, [(carol, "a first lighthouse")]))[0]
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)
        added = await ask(world.admin, fluxbot, "limits access add", role=artists)
        refused, allowed, manager = await imagine_all(
            fluxbot, [(world.member, "a harbour"), (carol, "a harbour"), (world.admin, "a harbour")]
        )
        reroll = await world.member.click(result, f"flux:reroll:{job_of(result)}")
        await world.emu.wait_until(lambda: settled(reroll), timeout=10)
        asked = await world.member.send(world.channel, "make it night", reply_to=result, mention_bot=True)
        reply = await world.emu.wait_for_message(
            world.channel, lambda m: m.reference_id == asked.id, author=world.emu.bot_user
        )
        by_role = await carol.send(world.channel, "make it day", reply_to=result, mention_bot=True)
        carols_reply = await world.emu.wait_for_message(
            world.channel, lambda m: m.reference_id == by_role.id, author=world.emu.bot_user
        )
        everyone = await ask(world.admin, fluxbot, "limits access everyone")
        (served,) = await imagine_all(fluxbot, [(world.member, "a harbour at last")])

    assert status_line(first).startswith("✅")
    assert f"Members with <@&{artists.id}> may use the bot." in added
    assert f"**Who may use the bot:** <@&{artists.id}>" in added
    assert status_line(refused) == f"Only members with one of these roles may use the bot here: <@&{artists.id}>."
    assert status_line(reroll) == status_line(refused)  # Re-roll is a request like any other
    assert reply.content == status_line(refused)  # so is a reply asking for an edit (roles from the message)
    assert not reply.pinged_role_ids and not reply.pinged_ids
    assert "On it" in carols_reply.content
    assert status_line(allowed).startswith("✅") and status_line(manager).startswith("✅")
    assert "Everyone may use the bot here again." in everyone
    assert status_line(served).startswith("✅")
    assert fluxbot.flux.count("POST", "/flux/images") == 5  # carol's edit included


async def test_a_deleted_role_stops_matching_and_limits_show_marks_it_gone(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    artists, patrons = world.guild.add_role("Artists"), world.guild.add_role("Patrons")
    carol = world.guild.add_member("carol", roles=[artists, patrons])
    async with fluxbot.running() as bot:
        await ask(world.admin, fluxbot, "limits access add", role=artists)
        await ask(world.admin, fluxbot, "limits role set", role=patrons, user_daily=5)
        (before,) = await imagine_all(fluxbot, [(carol, "before")])
        world.guild.delete_role(artists)
        world.guild.delete_role(patrons)
        await world.emu.wait_caught_up()
        cached = bot.get_guild(world.guild.id)
        assert cached is not None
        await world.emu.wait_until(lambda: cached.get_role(patrons.id) is None, timeout=5)
        (after,) = await imagine_all(fluxbot, [(carol, "after")])
        shown = await ask(world.admin, fluxbot, "limits show")

    assert status_line(before).startswith("✅")
    assert status_line(after) == "Only members with certain roles may use the bot here. Ask a server admin."
    assert f"**Who may use the bot:** role {artists.id} (gone)" in shown
    assert f"• role {patrons.id} (gone): images a day: 5" in shown


async def test_thirty_simultaneous_requests_by_members_of_a_role_get_exactly_its_daily_limit_each(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    newcomers = world.guild.add_role("Newcomers")
    members = [world.guild.add_member(f"newcomer-{n}", roles=[newcomers]) for n in range(5)]
    async with fluxbot.running() as bot:
        await ask(world.admin, fluxbot, "limits set", user_daily=0)
        await ask(world.admin, fluxbot, "limits role set", role=newcomers, user_daily=3)
        requests = await imagine_all(fluxbot, [(who, f"{who.name} {n}") for who in members for n in range(6)])
        usage = [await db.user_usage(bot.store, world.guild.id, who.id) for who in members]

    assert len(requests) == 30
    by_member = {
        who.id: sum(status_line(i).startswith("✅") for i in requests if i.user.id == who.id) for who in members
    }
    assert set(by_member.values()) == {3}
    assert [u.today for u in usage] == [3] * 5
    assert fluxbot.flux.count("POST", "/flux/images") == 15


async def test_limits_show_pages_long_lists_below_discords_limit(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    regulars = [world.guild.add_member(f"regular-with-a-long-name-{n}") for n in range(90)]
    async with fluxbot.running():
        for who in regulars:
            await ask(world.admin, fluxbot, "limits member set", member=who, user_daily=7, cooldown=15)
        shown = await world.admin.slash(world.channel, "limits show")
        await shown.wait_response()
        await world.emu.wait_until(lambda: bool(shown.followups), timeout=5)
        await asyncio.sleep(0.2)  # any further page

    texts = [shown.original.content if shown.original else "", *(m.content for m in shown.followups)]
    assert len(texts) >= 2 and all(len(text) <= 2000 for text in texts)
    listed = "\n".join(texts)
    assert all(f"<@{who.id}>: images a day: 7, cooldown: 15 s" in listed for who in regulars)
    assert not any(m.pinged_ids for m in shown.followups)


async def test_the_report_attaches_a_png_chart_and_a_summary_that_pings_nobody(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    world.member.nick = "@everyone look"  # a member's name is their own text
    async with fluxbot.running():
        await ask(world.admin, fluxbot, "limits set", user_daily=2)
        await imagine_all(fluxbot, [(world.member, f"a lighthouse {n}") for n in range(3)])
        await imagine_all(fluxbot, [(world.admin, "two boats")], count=2)
        report = await world.admin.slash(world.channel, "limits report", days=7)
        answer = await report.wait_followup(timeout=30)

    (attachment,) = answer.attachments
    assert attachment.filename == "report.png"
    image = Image.open(io.BytesIO(attachment.data))
    image.load()
    assert image.format == "PNG"
    assert 600 <= image.width <= 2400 and 400 <= image.height <= 2400
    assert 10_000 < len(attachment.data) < 8 * 1024 * 1024
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 24) or []) > 2  # drawn, not blank
    assert answer.visible_to == world.admin.id
    assert not answer.pinged_ids and not answer.pinged_role_ids and not answer.pinged_everyone
    assert "Images posted: 4 (jobs: 3)" in answer.content  # bob's 2 of 3, alice's 2 in one
    assert "Refused requests: member's daily limit 1" in answer.content
    assert "everyone look: 2" in answer.content and "@everyone" not in answer.content


async def test_alerts_are_posted_once_at_80_and_once_at_100_percent(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    alerts = world.guild.add_text_channel("bot-alerts")
    async with fluxbot.running():
        set_answer = await ask(world.admin, fluxbot, "limits alerts channel", channel=alerts)
        await ask(world.admin, fluxbot, "limits set", guild_daily=5)
        for n in range(7):  # one at a time: 4 of 5 is 80%, 5 is 100%, then refusals
            await imagine_all(fluxbot, [(world.member, f"a lighthouse {n}")])
        await world.emu.wait_until(lambda: len(alerts.messages) >= 2, timeout=5)
        await asyncio.sleep(0.2)  # a third alert would have come by now
        off = await ask(world.admin, fluxbot, "limits alerts off")

    posted = list(alerts.messages.values())
    assert f"Alerts go to <#{alerts.id}>" in set_answer
    assert len(posted) == 2
    assert "80%" in posted[0].content and "100%" in posted[1].content
    assert not any(m.pinged_ids or m.pinged_role_ids or m.pinged_everyone for m in posted)
    assert "Alerts are off." in off
