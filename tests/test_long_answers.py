"""Answers whose length depends on data stay within Discord's 2,000 characters and say what they left out.

Discord answers an over-long message with 400 (code 50035), and the member would see only a generic error.
"""

from __future__ import annotations

import asyncio
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bot import db
from cogs.feedback import UNEXPECTED_ERROR
from cogs.text import MESSAGE_LIMIT, code, fit_lines, shorten
from tests.fluxbot_harness import FluxbotHarness, status_line

MORE = re.compile(r"… and (\d+) more$")


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(st.text(st.characters(exclude_characters="\n"), max_size=300), max_size=60),
    limit=st.integers(min_value=30, max_value=2500),
)
def test_fit_lines_keeps_whole_lines_in_order_within_the_limit_and_counts_the_rest(
    items: list[str], limit: int
) -> None:
    text = fit_lines(items, limit)

    assert len(text) <= limit
    if len("\n".join(items)) <= limit:
        assert text == "\n".join(items)
        return
    if len(items) == 1:  # nothing more to count: the one item is cut
        assert text == shorten(items[0], limit)
        return
    *shown, note = text.split("\n")
    more = MORE.fullmatch(note)
    assert more is not None, text
    assert len(shown) + int(more.group(1)) == len(items)
    assert shown[:-1] == items[: len(shown) - 1]
    # the last one shown is whole, or the first item cut because not even it fitted
    assert shown[-1] == items[len(shown) - 1] or (len(shown) == 1 and shown[0] == shorten(items[0], len(shown[0])))


def test_fit_lines_with_another_separator_and_single_items() -> None:
    assert fit_lines(["a", "b", "c"], 100, sep=", ") == "a, b, c"
    assert fit_lines([f"term{n}" for n in range(100)], 40, sep=", ") == "term0, term1, term2, … and 97 more"
    assert fit_lines(["x" * 50], 10) == "xxxxxxxxx…"
    assert fit_lines([], 10) == ""


def test_code_cannot_be_broken_out_of() -> None:
    assert code("red fox") == "`red fox`"
    assert code("a`b``c").count("`") == 2
    assert code("") == "` `"


async def test_a_long_blocklist_is_listed_within_one_message(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    terms = [f"forbidden phrase number {n:03}" for n in range(159)] + ["`sneaky` term"]
    async with fluxbot.running() as bot:
        for term in terms:
            await db.add_blocked_term(bot.store, world.guild.id, term, changed_by=world.admin.id)
        listed = await world.admin.slash(world.channel, "limits blocklist list")
        await listed.wait_response()

    text = status_line(listed)
    assert not listed.errors
    assert len(text) <= MESSAGE_LIMIT
    assert text.startswith("Blocked (160): `")
    more = re.search(r"… and (\d+) more$", text)
    assert more is not None
    assert text.count("`") == 2 * (160 - int(more.group(1)))  # every shown term is one closed code span
    assert "`forbidden phrase number 000`" in text


async def test_usage_with_sixty_jobs_in_progress_fits_and_keeps_the_totals(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    fluxbot.flux.task_delay = 3600  # jobs stay in progress
    async with fluxbot.running():
        started = await asyncio.gather(
            *(world.member.slash(world.channel, "imagine", prompt=f"a slow painting {n}") for n in range(60))
        )
        await world.emu.wait_until(lambda: all(status_line(i) for i in started), timeout=20)
        usage = await world.member.slash(world.channel, "usage")
        text = (await usage.wait_followup()).content

    assert not usage.errors
    assert len(text) <= MESSAGE_LIMIT
    assert text.startswith("**Your images today:**")
    assert "Daily counts reset <t:" in text  # the rules after the jobs still show
    more = re.search(r"… and (\d+) more", text)
    assert more is not None
    assert text.count("• Job #") + int(more.group(1)) == 60


async def test_many_allowed_channels_fit_in_show_updated_and_the_refusal(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    elsewhere = world.guild.add_text_channel("elsewhere")
    channels = [world.guild.add_text_channel(f"art-{n}").id for n in range(120)]
    async with fluxbot.running() as bot:
        await db.update_guild_settings(bot.store, world.guild.id, world.admin.id, allowed_channels=channels)
        updated = await world.admin.slash(world.channel, "limits channels add", channel=world.channel)
        shown = await world.admin.slash(world.channel, "limits show")
        refused = await world.member.slash(elsewhere, "imagine", prompt="a cat")
        for inter in (updated, shown):
            await inter.wait_response()
        await world.emu.wait_until(lambda: bool(status_line(refused)), timeout=5)

    for inter in (updated, shown, refused):
        text = status_line(inter)
        assert not inter.errors
        assert len(text) <= MESSAGE_LIMIT
        assert text != UNEXPECTED_ERROR
        assert re.search(r"<#\d+>, … and \d+ more", text), text
    assert status_line(updated).startswith("Updated.\n")
    assert "**Blocked words and phrases:** 0" in status_line(shown)  # the rows after the list still show
    assert "not used in this channel" in status_line(refused)
