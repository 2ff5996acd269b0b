"""Delivering a result while Discord misbehaves: 5xx, dropped connections and outages that outlast the bot.

Discord's 503 means the post created nothing; discord.py does not retry it itself. A connection dropped
after Discord stored the post leaves the bot not knowing: the next attempt must find that post, not add a
second one. The real bot, the loopback Discord (with injected faults), the Flux emulator and SQLite.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.db import JobStatus, jobs_in, user_usage
from tests.fakediscord.faults import RestFault
from tests.fakediscord.model import RestCall
from tests.fluxbot_harness import FluxbotHarness, results_in, status_line

POSTS = "/channels/{channel_id}/messages"


def first_posts_fail(fault: RestFault, times: int) -> tuple[list[RestCall], Callable[[RestCall], RestFault | None]]:
    """A chooser failing the first ``times`` result posts (posts with images) with ``fault``."""
    failed: list[RestCall] = []

    def choose(call: RestCall) -> RestFault | None:
        if call.files and len(failed) < times:
            failed.append(call)
            return fault
        return None

    return failed, choose


@pytest.mark.parametrize(
    ("fault", "times"),
    [
        (RestFault.server_error(503), 3),  # a short outage: Discord is back a few seconds later
        (RestFault.dropped(after=True), 1),  # the post was made, but its answer never arrived
    ],
    ids=["three-503s", "answer-lost"],
)
async def test_a_result_is_posted_exactly_once_through_failed_posts(
    fluxbot: FluxbotHarness, fault: RestFault, times: int
) -> None:
    world, discord = fluxbot.world, fluxbot.discord
    failed, choose = first_posts_fail(fault, times)
    discord.rest_faults.add("POST", POSTS, choose)

    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a lighthouse in a storm", count=2)
        await discord.wait_until(lambda: status_line(inter).startswith(("✅", "❌")), 20, "the outcome")
        usage = await user_usage(bot.store, world.guild.id, world.member.id)

    assert len(failed) == times
    assert status_line(inter).startswith("✅"), status_line(inter)
    assert len(results_in(world.channel)) == 1
    assert usage.today == 2


async def test_a_result_waiting_out_an_outage_is_delivered_after_a_restart(fluxbot: FluxbotHarness) -> None:
    world, discord = fluxbot.world, fluxbot.discord
    failed, choose = first_posts_fail(RestFault.server_error(503), times=1_000_000)
    rule = discord.rest_faults.add("POST", POSTS, choose)

    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a heron at dawn")
        await discord.wait_until(lambda: len(failed) >= 2, 20, "the outage to be met twice")
        waiting = await jobs_in(bot.store, JobStatus.SUCCEEDED)
    assert [job.prompt for job in waiting] == ["a heron at dawn"], "still waiting to be posted, not failed"
    assert not results_in(world.channel)

    discord.rest_faults.rules.remove(rule)  # Discord is back
    async with fluxbot.running() as bot:
        await discord.wait_until(lambda: results_in(world.channel), 20, "the result")
        await discord.wait_until(lambda: status_line(inter).startswith("✅"), 10, "the member told")
        usage = await user_usage(bot.store, world.guild.id, world.member.id)
    assert len(results_in(world.channel)) == 1
    assert usage.today == 1
