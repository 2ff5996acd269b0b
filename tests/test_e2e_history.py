"""/history end to end: a member's jobs, newest first, ten to a page, with Previous and Next.

The jobs are real ones (``/imagine`` through the provider's emulator, posted in the channel), so the links
on a page can be checked against the results the bot really posted, and a failed job's reason against what
the member was told when it failed.
"""

from __future__ import annotations

from typing import Any

from tests.fakediscord import Channel, Interaction, Member, Message
from tests.fakediscord.fixtures import World
from tests.fluxbot_harness import FluxbotHarness, results_in, status_line


def settled(inter: Interaction) -> bool:
    return status_line(inter).startswith(("✅", "❌"))


async def imagine(world: World, *prompts: str, channel: Channel | None = None) -> list[Interaction]:
    """The member asks for each prompt in turn, each after the previous one ended (so the order is known)."""
    asked = []
    for prompt in prompts:
        inter = await world.member.slash(channel or world.channel, "imagine", prompt=prompt)
        await world.emu.wait_until(lambda inter=inter: settled(inter), 10, f"the job {prompt!r} to end")
        asked.append(inter)
    return asked


async def history(member: Member, channel: Channel, **options: Any) -> Message:
    answer = await (await member.slash(channel, "history", **options)).wait_response()
    assert isinstance(answer, Message) and answer.ephemeral and answer.visible_to == member.id
    return answer


async def click(member: Member, page: Message, label: str) -> Message:
    """Click Previous or Next on ``page``; the same message, edited to the other page."""
    button = next(c for c in buttons(page) if c["label"] == label)
    answer = await (await member.click(page, button["custom_id"])).wait_response()
    assert isinstance(answer, Message) and answer.id == page.id
    return answer


def buttons(page: Message) -> list[dict[str, Any]]:
    return [component for row in page.components for component in row["components"]]


def enabled(page: Message) -> dict[str, bool]:
    return {button["label"]: not button.get("disabled", False) for button in buttons(page)}


def entries(page: Message) -> list[str]:
    """Each job's text on the page, in order."""
    (embed,) = page.embeds
    return str(embed["description"]).split("\n\n")


def prompts(page: Message) -> list[str]:
    """The prompt of each job on the page (the entry's quoted line)."""
    return [entry.split("\n")[1].removeprefix("> ") for entry in entries(page)]


def footer(page: Message) -> str:
    return str(page.embeds[0]["footer"]["text"])


def jobs(*numbers: int) -> list[str]:
    return [f"job {n}" for n in numbers]


async def test_twenty_five_jobs_page_ten_at_a_time_with_previous_and_next(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await imagine(world, *jobs(*range(1, 26)))
        first = await history(world.member, world.channel)
        seen = [(prompts(first), footer(first), enabled(first))]
        for label in ("Next", "Next", "Previous"):
            page = await click(world.member, first, label)
            seen.append((prompts(page), footer(page), enabled(page)))

    assert seen == [
        (jobs(*range(25, 15, -1)), "Page 1 of 3", {"Previous": False, "Next": True}),
        (jobs(*range(15, 5, -1)), "Page 2 of 3", {"Previous": True, "Next": True}),
        (jobs(*range(5, 0, -1)), "Page 3 of 3", {"Previous": True, "Next": False}),
        (jobs(*range(15, 5, -1)), "Page 2 of 3", {"Previous": True, "Next": True}),
    ]
    assert first.embeds[0]["title"] == "Your images in this server"


async def test_each_job_links_to_its_posted_result_and_a_failed_one_says_why(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await imagine(world, "a lighthouse", "a harbour")
        fluxbot.flux.fail_next_task(code="api_error", message="fetch failed")
        (failed,) = await imagine(world, "a storm")
        page = await history(world.member, world.channel)

    posted = {str(result.embeds[0]["description"]): result.id for result in results_in(world.channel)}
    storm, harbour, lighthouse = entries(page)
    link = f"https://discord.com/channels/{world.guild.id}/{world.channel.id}/"
    assert set(posted) == {"a lighthouse", "a harbour"}
    assert f"({link}{posted['a harbour']})" in harbour and "✅ posted" in harbour
    assert f"({link}{posted['a lighthouse']})" in lighthouse
    reason = status_line(failed).removeprefix("❌ ")
    assert "❌ failed" in storm and f"> ↳ {reason}" in storm
    assert link not in storm


async def test_a_page_asked_for_directly_and_a_page_past_the_end(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    other = world.guild.add_member("carol")
    async with fluxbot.running():
        await imagine(world, *jobs(*range(1, 13)))
        second = await history(world.member, world.channel, page=2)
        past = await history(world.member, world.channel, page=3)
        nothing = await history(other, world.channel)

    assert (prompts(second), footer(second), enabled(second)) == (
        jobs(2, 1),
        "Page 2 of 2",
        {"Previous": True, "Next": False},
    )
    assert past.content == "There is no page 3: your history here ends at page 2."
    assert not past.embeds and not past.components
    assert nothing.content == "You have no images here yet. Ask for one with /imagine."


async def test_a_prompt_of_everyone_pings_nobody_from_the_history(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await imagine(world, f"@everyone and @here and <@{world.admin.id}> in **bold**")
        inter = await world.member.slash(world.channel, "history")
        page = await inter.wait_response()

    assert isinstance(page, Message)
    assert not page.pinged_everyone and not page.pinged_ids and not page.pinged_role_ids
    (answer,) = [call for call in inter.calls if call.route.endswith("/callback")]
    assert answer.json["data"]["allowed_mentions"] == {"parse": []}
    (prompt,) = prompts(page)
    assert prompt == f"@\u200beveryone and @\u200bhere and <@\u200b{world.admin.id}> in \\*\\*bold\\*\\*"


async def test_in_direct_messages_the_history_is_the_members_own_dm_jobs(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    dm = world.emu.dm_channel(world.member)
    async with fluxbot.running(ALLOW_DMS="true"):
        await imagine(world, "in the server")
        await imagine(world, "in a DM", channel=dm)
        in_dms = await history(world.member, dm)
        in_server = await history(world.member, world.channel)

    assert (prompts(in_dms), in_dms.embeds[0]["title"]) == (["in a DM"], "Your images in direct messages")
    assert f"https://discord.com/channels/@me/{dm.id}/" in entries(in_dms)[0]
    assert prompts(in_server) == ["in the server"]


async def test_the_buttons_work_after_a_restart(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await imagine(world, *jobs(*range(1, 12)))
        first = await history(world.member, world.channel)

    async with fluxbot.running():  # a new process: nothing in memory, the same database
        second = await click(world.member, first, "Next")

    assert (prompts(second), footer(second)) == (jobs(1), "Page 2 of 2")


async def test_the_page_is_in_the_members_language(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    german = world.guild.add_member("greta", locale="de")
    async with fluxbot.running():
        inter = await german.slash(world.channel, "imagine", prompt="ein Leuchtturm")
        await world.emu.wait_until(lambda: settled(inter), 10, "the job to end")
        page = await history(german, world.channel)

    assert (page.embeds[0]["title"], footer(page)) == ("Deine Bilder auf diesem Server", "Seite 1 von 1")
    assert [button["label"] for button in buttons(page)] == ["Zurück", "Weiter"]
    assert prompts(page) == ["ein Leuchtturm"]  # the prompt as it was typed
