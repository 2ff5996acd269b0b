"""The Cancel button on a member's status line, end to end: the real bot on the loopback Discord and Flux
emulators and a real SQLite file.

Cancelled while queued, a job is never sent and costs nothing; cancelled at the provider, its result is never
posted but it counts (the provider bills it); a Cancel that comes once the result is being posted is too late,
and the result is posted once. Only the member who asked can cancel.
"""

from __future__ import annotations

from typing import Any

from bot import db
from bot.app import FluxBot
from bot.db import Job, JobStatus
from tests.fakediscord import Interaction, Member, Message
from tests.fakediscord.fixtures import World
from tests.fluxbot_harness import FluxbotHarness, is_result, results_in, status_line

NOTHING_CHARGED = "🛑 Cancelled. Nothing was charged."
STILL_COUNTS = "🛑 Cancelled. The image service had already started, so it still counts toward your limits."
#: Where results are posted (with the bot token, as regular messages).
CHANNEL_POST = "/channels/{channel_id}/messages"


def cancel_id(inter: Interaction) -> str | None:
    """The custom id of the Cancel button on the member's status line, if it shows one."""
    line = inter.original
    return next((cid for cid in line.custom_ids if cid.startswith("flux:cancel:")), None) if line else None


async def showing(world: World, inter: Interaction, text: str) -> str:
    """Until the status line says ``text`` (and offers Cancel); returns the button's custom id."""
    await world.emu.wait_until(lambda: text in status_line(inter) and cancel_id(inter), 10, f"a line with {text!r}")
    found = cancel_id(inter)
    assert found is not None
    return found


async def click_cancel(member: Member, inter: Interaction, custom_id: str) -> Interaction:
    assert inter.original is not None
    return await member.click(inter.original, custom_id)


async def job_of(bot: FluxBot, custom_id: str) -> Job:
    job = await db.get_job(bot.store, int(custom_id.rsplit(":", 1)[1]))
    assert job is not None
    return job


def generate_calls(fluxbot: FluxbotHarness) -> list[dict[str, Any]]:
    return [request.json for request in fluxbot.flux.requests_to("POST", "/flux/images")]


async def usage(bot: FluxBot, world: World, member: Member) -> tuple[int, int]:
    """The member's images today: (used, reserved)."""
    summary = await db.user_usage(bot.store, world.guild.id, member.id)
    return summary.used_today, summary.reserved_today


async def test_a_queued_job_cancelled_is_never_sent_and_costs_nothing(fluxbot: FluxbotHarness) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 3600
    bob = world.guild.add_member("bob")
    async with fluxbot.running(FLUX_MAX_CONCURRENCY="1") as bot:
        ahead = await world.member.slash(world.channel, "imagine", prompt="a lighthouse")
        await showing(world, ahead, "Generating")
        waiting = await bob.slash(world.channel, "imagine", prompt="a windmill", count=3)
        button = await showing(world, waiting, "Queued")

        click = await click_cancel(bob, waiting, button)
        await world.emu.wait_until(lambda: status_line(waiting) == NOTHING_CHARGED, 10, "the last word")
        job = await job_of(bot, button)
        bob_usage = await usage(bot, world, bob)

        # The job ahead finishes and frees the provider: nothing else is sent.
        flux.advance(3600)
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)
        await world.emu.wait_until(lambda: "Done" in status_line(ahead), 10, "the Done line")

    assert click.acknowledged and not click.errors and not click.followups
    assert waiting.original is not None and waiting.original.custom_ids == []  # the button is gone
    assert (job.status, job.charged_images) == (JobStatus.CANCELLED, 0)
    assert bob_usage == (0, 0)
    assert [call["prompt"] for call in generate_calls(fluxbot)] == ["a lighthouse"]
    assert len(results_in(world.channel)) == 1


async def test_a_job_cancelled_at_the_provider_is_never_posted_and_counts(fluxbot: FluxbotHarness) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 3600
    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a glacier", count=2)
        button = await showing(world, inter, "Generating")

        click = await click_cancel(world.member, inter, button)
        await world.emu.wait_until(lambda: status_line(inter) == STILL_COUNTS, 10, "the last word")
        cancelled = await job_of(bot, button)

        # The provider finishes the cancelled task; a later job's result, polled after it, is the only post.
        flux.advance(3600)
        assert all(not task.pending for task in flux.tasks.values())
        flux.task_delay = 0
        later = await world.member.slash(world.channel, "imagine", prompt="a fjord")
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)
        await world.emu.wait_until(lambda: "Done" in status_line(later), 10, "the later job's Done line")
        after = await db.get_job(bot.store, cancelled.id)
        member_usage = await usage(bot, world, world.member)

    assert click.acknowledged and not click.errors and not click.followups
    assert inter.original is not None and inter.original.custom_ids == []
    assert (cancelled.status, cancelled.charged_images) == (JobStatus.CANCELLED, 2)
    assert after is not None  # nothing recorded over the cancel
    assert (after.status, after.image_urls, after.posted_message_id, after.charged_images) == (
        JobStatus.CANCELLED,
        (),
        None,
        2,
    )
    [result] = results_in(world.channel)
    assert "a fjord" in result.embeds[0]["description"]
    assert member_usage == (2 + 1, 0)  # the cancelled job's two images count, with the later one


async def test_a_cancel_while_the_result_is_being_posted_is_too_late_and_the_result_is_posted_once(
    fluxbot: FluxbotHarness,
) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 3600
    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a comet", count=2)
        button = await showing(world, inter, "Generating")
        # The result is recorded and its post reaches the channel, but the answer is held: still no Done line.
        held = world.emu.hold_responses("POST", CHANNEL_POST)
        flux.advance(3600)
        await world.emu.wait_until(lambda: held.calls, 10, "the result's post")
        assert cancel_id(inter) == button

        click = await click_cancel(world.member, inter, button)
        answer = await click.wait_followup()
        held.release()
        await world.emu.wait_until(lambda: "Done" in status_line(inter), 10, "the Done line")
        job = await job_of(bot, button)
        member_usage = await usage(bot, world, world.member)

    assert answer.ephemeral and answer.visible_to == world.member.id
    assert answer.content == "Too late to cancel: the result is being posted."
    assert len(results_in(world.channel)) == 1
    assert (job.status, job.charged_images) == (JobStatus.POSTED, 2)
    assert member_usage == (2, 0)
    assert inter.original is not None and inter.original.custom_ids == []  # the Done line offers no Cancel


async def test_only_the_member_who_asked_can_cancel(fluxbot: FluxbotHarness) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 3600
    carol = world.guild.add_member("carol")
    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a kite")
        button = await showing(world, inter, "Generating")
        assert isinstance(inter.original, Message)
        # Discord shows the ephemeral status line to its member only, but a custom id is no secret: a forged
        # click by another member.
        click = carol._deliver_component(inter.original, {"custom_id": button, "component_type": 2})
        answer = await click.wait_followup()
        job = await job_of(bot, button)

    assert answer.ephemeral and answer.visible_to == carol.id
    assert answer.content == "Only the member who asked for this image can cancel it."
    assert job.status is JobStatus.SUBMITTED
    assert "Generating" in status_line(inter) and cancel_id(inter) == button


async def test_a_cancel_once_the_requests_own_token_is_too_old_answers_on_the_status_line_through_the_click(
    fluxbot: FluxbotHarness,
) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 3600
    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a slow tide")
        button = await showing(world, inter, "Generating")
        # The job was asked for 15 minutes ago: its own token can no longer edit the line, the click's can.
        await bot.store.write_alone(
            "UPDATE jobs SET interaction_created_at = interaction_created_at - 900 WHERE id = ?",
            (int(button.rsplit(":", 1)[1]),),
        )

        click = await click_cancel(world.member, inter, button)
        await world.emu.wait_until(lambda: status_line(inter) == STILL_COUNTS, 10, "the last word")

    assert click.acknowledged and not click.errors and not click.followups
    assert [call.method for call in click.calls if call.method == "PATCH"] == ["PATCH"]  # by the click's token
    assert inter.original is not None and inter.original.custom_ids == []
