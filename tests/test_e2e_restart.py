"""Killing the bot mid-work and starting it again: every job is delivered exactly once, nothing is sent to
the provider twice, and every member is charged once.

Killed with jobs in every state: queued, being sent to the provider, at the provider, finished but refused
by Discord (rate limited), and posted by Discord but with the answer lost (the post's nonce must make the
repeat return the first message).

The first bot is the ``fluxbot`` console script, killed with SIGKILL (no chance to clean up); the second is
the same bot started in-process on the same database, so the error guard watches its recovery.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from bot.db import JobStatus, jobs_in, user_usage
from tests.fluxbot_harness import FluxbotHarness, fluxbot_environment, results_in, status_line
from tests.fluxbot_process import fluxbot_process
from tests.fluxemu import FluxEmulator

#: Emulated seconds a generation takes while the first bot runs: it never finishes there.
FOREVER = 3600.0
#: FLUX_MAX_CONCURRENCY: one job at the provider and one being sent to it fill the slots.
SLOTS = 2


def submitted_prompts(flux: FluxEmulator) -> list[str]:
    return [request.json["prompt"] for request in flux.requests_to("POST", "/flux/images") if request.json]


def job_states(database: Path) -> dict[str, str]:
    """prompt -> status, read from the bot's SQLite file by another connection, as an operator would."""
    with contextlib.closing(sqlite3.connect(database, timeout=5)) as conn:
        return dict(conn.execute("SELECT prompt, status FROM jobs ORDER BY id").fetchall())


async def test_a_killed_bot_restarts_and_delivers_every_job_exactly_once(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    discord, flux, world = fluxbot.discord, fluxbot.flux, fluxbot.world
    member, general = world.member, world.channel
    second = world.guild.add_text_channel("second")
    env = fluxbot_environment(discord, flux, fluxbot.database, FLUX_MAX_CONCURRENCY=str(SLOTS))
    # Discord refuses every post in #general for an hour (429): a finished job is stuck being delivered.
    refused = discord.rate_limit("POST", f"/channels/{general.id}/messages", limit=0, per_seconds=FOREVER)
    # In #second, Discord stores the post but its answer never reaches the bot.
    unanswered = discord.hold_responses("POST", f"/channels/{second.id}/messages")

    async with fluxbot_process(env, tmp_path) as first:
        await first.wait_online(discord)

        finished = await member.slash(general, "imagine", prompt="finished, not posted")
        await discord.wait_for_call(
            "POST", f"/channels/{general.id}/messages", lambda call: call.status == 429, timeout=10
        )
        posted = await member.slash(second, "imagine", prompt="posted, answer lost")
        await discord.wait_until(lambda: unanswered.calls, 10, "the post in #second")
        assert len(results_in(second)) == 1  # Discord has it; the bot does not know

        flux.task_delay = FOREVER
        at_provider = await member.slash(general, "imagine", prompt="at the provider")
        await discord.wait_until(lambda: "Generating" in status_line(at_provider), 10, "the job to be submitted")
        flux.add_fault("POST", "/flux/images", delay=FOREVER)  # the provider never answers this submit
        sending = await member.slash(general, "imagine", prompt="being sent")
        await flux.wait_until(lambda: "being sent" in submitted_prompts(flux), 10)
        queued = await member.slash(general, "imagine", prompt="queued")
        await discord.wait_until(lambda: "Queued" in status_line(queued), 10, "the job to be queued")

        assert job_states(fluxbot.database) == {
            "finished, not posted": "succeeded",
            "posted, answer lost": "succeeded",
            "at the provider": "submitted",
            "being sent": "submitting",
            "queued": "queued",
        }
        assert await first.kill() == -9
    assert " ERROR " not in first.stderr() and "Traceback" not in first.stderr(), first.stderr()

    discord.rate_limits.remove(refused)
    unanswered.release()
    assert refused.hits >= 1
    flux.task_delay = 0.0
    flux.advance(FOREVER)  # the job at the provider finished while the bot was down

    interactions = [finished, posted, at_provider, queued]
    async with fluxbot.running(FLUX_MAX_CONCURRENCY=str(SLOTS)) as bot:
        await discord.wait_until(
            lambda: all("Done" in status_line(inter) for inter in interactions), 10, "every job to be done"
        )
        await discord.wait_until(lambda: "restarted" in status_line(sending), 5, "the lost job to be explained")
        jobs = {job.prompt: job for job in await jobs_in(bot.store, *JobStatus)}
        usage = await user_usage(bot.store, world.guild.id, member.id)
    lost = jobs.pop("being sent")

    # delivered exactly once: one result message per job, the one the job records
    assert len(results_in(general)) == 3
    assert len(results_in(second)) == 1
    assert all(job.status is JobStatus.POSTED for job in jobs.values())
    by_id = {m.id: m for m in results_in(general) + results_in(second)}
    assert sorted(by_id) == sorted(job.posted_message_id for job in jobs.values())
    for job in jobs.values():
        assert by_id[job.posted_message_id].embeds[0]["footer"]["text"] == f"Job #{job.id}"
    # the post Discord stored before the crash is found in the channel and recorded, not made again
    # (Discord's nonce would catch a repeat only for a few minutes; the bot may be down for longer)
    post_in_second = discord.calls("POST", f"/channels/{second.id}/messages")
    assert [call.status for call in post_in_second] == [200]
    assert discord.calls("GET", f"/channels/{second.id}/messages")
    assert jobs["posted, answer lost"].posted_message_id == results_in(second)[0].id

    # nothing sent to the provider twice: not even the submit whose outcome the crash made unknown
    assert sorted(submitted_prompts(flux)) == sorted([*jobs, lost.prompt])
    assert lost.status is JobStatus.LOST and lost.charged_images == 0
    assert "not charged" in status_line(sending)
    # charged once per image
    assert all(job.charged_images == 1 for job in jobs.values())
    assert (usage.used_today, usage.reserved_today) == (4, 0)
