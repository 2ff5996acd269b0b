"""A result's buttons end to end: Re-roll, Edit and Delete, also on results posted before a restart.

The buttons are DynamicItems whose custom_id carries the job id (``flux:<action>:<job>``): the job's
parameters come from the SQLite file, so a restarted bot answers clicks on messages it posted before.
"""

from __future__ import annotations

from typing import Any

import yarl

from bot.db import JobKind, JobStatus, jobs_in
from tests.conftest import png_bytes
from tests.fakediscord import Attachment, Interaction, Message, Perm
from tests.fakediscord.fixtures import World
from tests.fluxbot_harness import FluxbotHarness, is_result


def provider_calls(harness: FluxbotHarness) -> list[dict[str, Any]]:
    bodies = [request.json for request in harness.flux.requests_to("POST", "/flux/images")]
    assert all(isinstance(body, dict) for body in bodies)
    return bodies


def job_of(result: Message) -> int:
    """The job id in the custom_id of the result's buttons."""
    return int(result.custom_ids[0].rsplit(":", 1)[1])


async def delivered(world: World, answered: Interaction, after: int) -> Message:
    """The result posted for the job ``answered`` started (newer than message ``after``), once the job is
    recorded as posted: the member's status line links to the result only then."""
    result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, after=after)
    await world.emu.wait_until(
        lambda: answered.original is not None and str(result.id) in answered.original.content, 5, "the Done line"
    )
    assert answered.ephemeral  # the status line is for the member who clicked only
    return result


async def imagine(world: World, **options: Any) -> Message:
    """The member runs /imagine; returns the posted result."""
    latest = max(world.channel.messages, default=0)
    return await delivered(world, await world.member.slash(world.channel, "imagine", **options), latest)


async def click_reroll(world: World, result: Message) -> Message:
    """The member clicks Re-roll on ``result``; returns the new result."""
    latest = max(world.channel.messages)
    click = await world.member.click(result, f"flux:reroll:{job_of(result)}")
    return await delivered(world, click, latest)


async def click_edit(world: World, result: Message, prompt: str) -> Message:
    """The member clicks Edit on ``result``, answers the modal with ``prompt``; returns the edited result."""
    latest = max(world.channel.messages)
    click = await world.member.click(result, f"flux:edit:{job_of(result)}")
    modal = await click.wait_response()
    assert isinstance(modal, dict) and modal["title"] == "Edit image"
    submitted = await world.member.submit_modal(click, {"prompt": prompt})
    return await delivered(world, submitted, latest)


# -- Re-roll ----------------------------------------------------------------------------------------------


async def test_reroll_submits_the_same_request_again_and_posts_a_second_result(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        first = await imagine(world, prompt="a paper boat", model="flux-pro", size="16:9", count=2)
        second = await click_reroll(world, first)
        jobs = await jobs_in(bot.store, *JobStatus)

    original, again = provider_calls(fluxbot)
    same = ("action", "prompt", "model", "size", "count")
    assert [again[key] for key in same] == [original[key] for key in same]
    assert (again["prompt"], again["model"], again["size"], again["count"]) == ("a paper boat", "flux-pro", "16:9", 2)
    assert len(second.attachments) == 2 and second.id != first.id
    assert {file.data for file in second.attachments}.isdisjoint(file.data for file in first.attachments)
    assert [job.parent_job_id for job in jobs] == [None, jobs[0].id]
    assert [job.status for job in jobs] == [JobStatus.POSTED, JobStatus.POSTED]


# -- Edit -------------------------------------------------------------------------------------------------


async def test_edit_button_asks_for_a_prompt_and_edits_the_posted_result(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        first = await imagine(world, prompt="a quiet harbour")
        edited = await click_edit(world, first, "add fireworks")
        jobs = await jobs_in(bot.store, *JobStatus)

    _, edit = provider_calls(fluxbot)
    assert (edit["action"], edit["prompt"]) == ("edit", "add fireworks")
    assert yarl.URL(edit["image_url"]).path == first.attachments[0].path
    assert all(task.source_ok is not False for task in fluxbot.flux.tasks.values())
    assert edited.content.startswith(f"<@{world.member.id}> edited")
    assert [(job.kind, job.parent_job_id) for job in jobs] == [(JobKind.GENERATE, None), (JobKind.EDIT, jobs[0].id)]


# -- Delete -----------------------------------------------------------------------------------------------


async def test_delete_button_deletes_the_result_for_its_requester(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        result = await imagine(world, prompt="a sandcastle")
        click = await world.member.click(result, f"flux:delete:{job_of(result)}")
        await world.emu.wait_until(lambda: result.deleted, 5, "the result to be deleted")

    assert click.acknowledged and not click.errors
    assert world.emu.calls("DELETE", "/channels/{channel_id}/messages/{message_id}")


async def test_delete_button_refuses_other_members_and_keeps_the_result(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    other = world.guild.add_member("carol")
    async with fluxbot.running():
        result = await imagine(world, prompt="a sandcastle")
        click = await other.click(result, f"flux:delete:{job_of(result)}")
        answer = await click.wait_response()

    assert isinstance(answer, Message) and answer.ephemeral and answer.visible_to == other.id
    assert "Only the member who asked for this image, or a moderator" in answer.content
    assert not result.deleted
    assert not world.emu.calls("DELETE")


async def test_delete_button_lets_a_member_with_manage_messages_delete_the_result(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    moderator = world.guild.add_member("dave-mod", permissions=Perm.MANAGE_MESSAGES)
    async with fluxbot.running():
        result = await imagine(world, prompt="a sandcastle")
        click = await moderator.click(result, f"flux:delete:{job_of(result)}")
        await world.emu.wait_until(lambda: result.deleted, 5, "the result to be deleted")

    assert click.acknowledged and not click.errors


# -- after a restart --------------------------------------------------------------------------------------


async def test_buttons_on_a_result_posted_before_a_restart_still_work(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        first = await imagine(world, prompt="an old mill", model="flux-2-pro", size="4:3", count=1)

    async with fluxbot.running() as bot:  # a new process: nothing in memory, the same database
        rerolled = await click_reroll(world, first)
        edited = await click_edit(world, first, "make it winter")
        jobs = await jobs_in(bot.store, *JobStatus)

    original, again, edit = provider_calls(fluxbot)
    assert (again["prompt"], again["model"], again["size"], again["count"]) == ("an old mill", "flux-2-pro", "4:3", 1)
    assert again == original
    assert (edit["action"], edit["prompt"]) == ("edit", "make it winter")
    assert yarl.URL(edit["image_url"]).path == first.attachments[0].path
    assert rerolled.id != edited.id and not first.deleted
    assert [job.status for job in jobs] == [JobStatus.POSTED] * 3
    assert [job.parent_job_id for job in jobs] == [None, jobs[0].id, jobs[0].id]


async def test_reroll_of_an_edit_whose_source_link_expired_refreshes_the_link(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        slash = await world.member.slash(
            world.channel, "edit", image=Attachment("boat.png", png_bytes(64, 64)), prompt="paint it red"
        )
        edited = await delivered(world, slash, 0)
        world.emu.advance(25 * 3600)  # Discord's signed attachment links live about a day
        again = await click_reroll(world, edited)

    first, second = (body["image_url"] for body in provider_calls(fluxbot))
    assert yarl.URL(first).path == yarl.URL(second).path
    assert first != second  # a fresh signature, fetched by the provider after the old one expired
    (_, retry) = fluxbot.flux.tasks.values()
    assert retry.source_ok is True
    assert is_result(again)
    assert world.emu.calls("POST", "/attachments/refresh-urls")


async def test_reroll_of_an_edit_whose_source_is_gone_says_so_without_calling_the_provider(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        slash = await world.member.slash(
            world.channel, "edit", image=Attachment("boat.png", png_bytes(64, 64)), prompt="paint it red"
        )
        edited = await delivered(world, slash, 0)
        source = yarl.URL(provider_calls(fluxbot)[0]["image_url"]).path
        for file_id, stored in list(world.emu.files.items()):
            if stored.path == source:
                del world.emu.files[file_id]  # Discord no longer has the image
        click = await world.member.click(edited, f"flux:reroll:{job_of(edited)}")
        answer = await click.wait_response()

    assert isinstance(answer, Message) and answer.ephemeral
    assert "no longer available" in answer.content
    assert len(provider_calls(fluxbot)) == 1  # only the first edit


async def test_reroll_of_an_edit_whose_inline_source_was_dropped_says_so_without_calling_the_provider(
    fluxbot: FluxbotHarness,
) -> None:
    """Providers that take the source inline get it as a data URI, which the store drops when the job ends."""
    world = fluxbot.world
    async with fluxbot.running(FLUX_PROVIDER="openai") as bot:
        slash = await world.member.slash(
            world.channel, "edit", image=Attachment("boat.png", png_bytes(64, 64)), prompt="paint it red"
        )
        edited = await delivered(world, slash, 0)
        click = await world.member.click(edited, f"flux:reroll:{job_of(edited)}")
        answer = await click.wait_response()
        (job,) = await jobs_in(bot.store, JobStatus.POSTED)

    assert job.kind is JobKind.EDIT and job.source_image_url is None
    assert isinstance(answer, Message) and answer.ephemeral
    assert "no longer kept" in answer.content and "Edit image" in answer.content
    assert len(fluxbot.flux.requests_to("POST", "/v1/images/generations")) == 1  # only the first edit
