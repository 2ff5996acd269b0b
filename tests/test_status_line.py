"""The member's status line while a job runs, and how the bot sends its edits: the real bot, the loopback
Discord and Flux emulators, a real SQLite file."""

from __future__ import annotations

import asyncio
import gc
import re
import time

from bot import db
from bot.app import FluxBot
from bot.db import Job, JobStatus
from bot.images import MULTIPART_HEADROOM, DownloadedImage, fits_unchanged
from bot.jobs import JobDone, JobQueued, JobStarted
from cogs.results import STATUS_EDIT_CONCURRENCY, DiscordCourier
from tests.fakediscord import Interaction
from tests.fluxbot_harness import FluxbotHarness, status_line

#: The route of the edits of a deferred response (the member's status line).
STATUS_EDIT = "/webhooks/{webhook_id}/{token}/messages/{message_id}"


async def started(fluxbot: FluxbotHarness, bot: FluxBot, prompt: str) -> tuple[Interaction, Job]:
    """A member's /imagine that the provider keeps working on, once its line says it is generating."""
    world = fluxbot.world
    fluxbot.flux.task_delay = 3600
    inter = await world.member.slash(world.channel, "imagine", prompt=prompt)
    await world.emu.wait_until(lambda: "Generating" in status_line(inter), 10, "the job to start")
    (job,) = await db.jobs_in(bot.store, JobStatus.SUBMITTED)
    return inter, job


async def test_a_started_job_shows_when_it_started_as_a_time_discord_keeps_current(fluxbot: FluxbotHarness) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 3600
    async with fluxbot.running():
        before = int(time.time())
        inter = await world.member.slash(world.channel, "imagine", prompt="a slow glacier")
        await world.emu.wait_until(lambda: "Generating" in status_line(inter), 10, "the job to start")
        after = int(time.time())
        line = status_line(inter)

    match = re.fullmatch(r"🎨 Generating… started <t:(\d+):R>", line)
    assert match is not None, line
    assert before <= int(match[1]) <= after


async def test_status_edits_under_way_at_once_are_bounded_and_the_rest_follow(fluxbot: FluxbotHarness) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 3600
    members = [world.guild.add_member(f"member-{n}") for n in range(STATUS_EDIT_CONCURRENCY + 6)]
    held = world.emu.hold_responses("PATCH", STATUS_EDIT)
    async with fluxbot.running(FLUX_MAX_CONCURRENCY=str(len(members))):
        sent = await asyncio.gather(*(m.slash(world.channel, "imagine", prompt=f"dunes {m.id}") for m in members))
        await world.emu.wait_until(lambda: len(held.calls) >= STATUS_EDIT_CONCURRENCY, 10, "the first edits")
        # Every job has a line to show, but no further edit is sent while the first ones wait for their answers.
        await asyncio.sleep(0.3)
        in_flight = len(held.calls)
        held.release()
        await world.emu.wait_until(lambda: all("Generating" in status_line(i) for i in sent), 10, "every line")

    assert in_flight == STATUS_EDIT_CONCURRENCY


async def test_the_objects_built_at_start_are_left_out_of_garbage_collection(fluxbot: FluxbotHarness) -> None:
    async with fluxbot.running() as bot:
        await bot.wait_until_ready()
        frozen = gc.get_freeze_count()

    assert frozen > 0


def test_images_that_fit_as_they_are_need_no_fitting() -> None:
    def image(size: int) -> DownloadedImage:
        return DownloadedImage(data=bytes(size), format="PNG", width=64, height=64, content_type="image/png")

    limit = 1024 * 1024
    budget = limit - MULTIPART_HEADROOM
    assert fits_unchanged([image(budget // 2), image(budget - budget // 2)], limit)
    assert not fits_unchanged([image(budget // 2), image(budget - budget // 2 + 1)], limit)
    assert fits_unchanged([], limit)


async def test_a_line_replaced_while_it_waits_is_not_sent_and_a_jobs_lines_keep_their_order(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        inter, job = await started(fluxbot, bot, "a lighthouse at dusk")
        courier = DiscordCourier(bot)
        held = world.emu.hold_responses("PATCH", STATUS_EDIT)
        await courier.notify(job, JobQueued(3))
        await world.emu.wait_until(lambda: len(held.calls) == 1, 10, "the first edit")
        # Asked for while the first is under way: the second is replaced by the third before its turn.
        await courier.notify(job, JobQueued(2))
        await courier.notify(job, JobQueued(1))
        held.release()
        await courier.settled()

    sent = [call.json["content"] for call in world.emu.calls("PATCH", STATUS_EDIT) if inter.token in call.path]
    assert sent[sent.index("⏳ Queued — #3 in line.") :] == ["⏳ Queued — #3 in line.", "⏳ Queued — #1 in line."]
    assert status_line(inter) == "⏳ Queued — #1 in line."


async def test_a_job_done_before_its_progress_is_shown_shows_only_its_result(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        _, job = await started(fluxbot, bot, "a quick sketch")
        courier = DiscordCourier(bot)
        before = len(world.emu.calls("PATCH", STATUS_EDIT))
        await courier.notify(job, JobQueued(1))
        await courier.notify(job, JobStarted(time.time()))
        await courier.notify(job, JobDone(1234))  # sent at once: the lines before it are never shown
        await courier.settled()
        sent = [call.json["content"] for call in world.emu.calls("PATCH", STATUS_EDIT)[before:]]

    assert sent == [f"✅ Done: https://discord.com/channels/{world.guild.id}/{world.channel.id}/1234"]
