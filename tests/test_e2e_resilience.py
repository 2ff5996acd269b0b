"""The bot under load, under slowness and under provider failures, end to end: the real bot, the loopback
Discord, the Flux emulator and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest

from bot.app import FluxBot
from bot.db import JobStatus, jobs_in, user_usage
from tests.fakediscord import Code
from tests.fluxbot_harness import FluxbotHarness, is_result, results_in, status_line
from tests.fluxemu import FluxEmulator

#: Emulated seconds that are "forever" for a test: a task this slow only finishes when the clock is advanced.
FOREVER = 3600.0
MINUTES = 60.0


# -- 30 members at once -------------------------------------------------------------------------------

CROWD = 30
CONCURRENCY = 4
QUEUED = re.compile(r"Queued — #(\d+)")


async def test_thirty_members_at_once_are_all_acknowledged_queued_in_order_and_delivered(
    fluxbot: FluxbotHarness,
) -> None:
    world, discord, flux = fluxbot.world, fluxbot.discord, fluxbot.flux
    channel = world.channel
    members = [world.guild.add_member(f"member-{n:02}") for n in range(CROWD)]
    flux.task_delay = FOREVER  # the first jobs hold the provider's slots until the clock moves

    async with fluxbot.running(FLUX_MAX_CONCURRENCY=str(CONCURRENCY)) as bot:
        started = time.perf_counter()
        crowd = await asyncio.gather(
            *(member.slash(channel, "imagine", prompt=f"picture number {n}") for n, member in enumerate(members))
        )
        await discord.wait_until(lambda: all(inter.acknowledged for inter in crowd), 5, "every member acknowledged")
        acked = time.perf_counter() - started

        def waiting() -> list[int]:
            return [int(m[1]) for inter in crowd if (m := QUEUED.search(status_line(inter)))]

        await discord.wait_until(lambda: len(waiting()) == CROWD - CONCURRENCY, 5, "the queue to be announced")
        positions = sorted(waiting())

        flux.task_delay = 0.05  # from now on a generation takes 50 ms
        flux.advance(FOREVER)
        await discord.wait_until(lambda: len(results_in(channel)) == CROWD, 20, f"{CROWD} results")
        delivered = time.perf_counter() - started
        await discord.wait_until(lambda: all("Done" in status_line(i) for i in crowd), 5, "every status to say Done")
        jobs = await jobs_in(bot.store, *JobStatus)

    ack_delays = [inter.ack_delay for inter in crowd if inter.ack_delay is not None]
    print(
        f"\n{CROWD} members: max ack delay {max(ack_delays):.3f} s (all acked after {acked:.3f} s), "
        f"all {CROWD} delivered {delivered:.3f} s after the commands; provider max in flight {flux.max_in_flight}"
    )
    assert len(ack_delays) == CROWD and max(ack_delays) < 3
    assert all(inter.ephemeral for inter in crowd)
    # every member beyond the provider's slots was told their place, and the places are 1..N without gaps
    assert positions == list(range(1, CROWD - CONCURRENCY + 1))
    # never more than FLUX_MAX_CONCURRENCY at the provider, and all of them used
    assert flux.max_in_flight == CONCURRENCY
    assert flux.count("POST", "/flux/images") == CROWD
    assert [job.status for job in jobs] == [JobStatus.POSTED] * CROWD
    assert sorted(m.id for m in results_in(channel)) == sorted(job.posted_message_id for job in jobs)
    assert {frozenset(m.pinged_ids) for m in results_in(channel)} == {frozenset({m.id}) for m in members}


# -- a 20-minute job ----------------------------------------------------------------------------------


async def test_a_job_that_takes_twenty_minutes_is_still_delivered_to_the_channel(fluxbot: FluxbotHarness) -> None:
    world, discord, flux = fluxbot.world, fluxbot.discord, fluxbot.flux
    channel, member = world.channel, world.member
    flux.task_delay = 20 * MINUTES

    async with fluxbot.running(FLUX_JOB_TIMEOUT=str(30 * MINUTES)) as bot:
        inter = await member.slash(channel, "imagine", prompt="a cathedral, slowly")
        await discord.wait_until(lambda: "Generating" in status_line(inter), 5, "the job to be submitted")

        # Twenty minutes pass, at Discord (the interaction token expires after 15) and at the provider.
        discord.advance(20 * MINUTES)
        expired_at = discord.clock.time()
        assert inter.token_expired
        flux.advance(20 * MINUTES)

        result = await discord.wait_for_message(channel, is_result, author=discord.bot_user, timeout=5)
        # The bot judges the token's age by its own clock, which moved seconds, not minutes: it still
        # tries to say "Done" in the member's response. Discord refuses that; nothing else may suffer.
        await discord.wait_until(
            lambda: any(call.at >= expired_at and not call.ok for call in inter.calls), 5, "the refused edit"
        )
        (job,) = await jobs_in(bot.store, *JobStatus)
        usage = await user_usage(bot.store, world.guild.id, member.id)

    # delivered with the bot token, as a regular channel message that pings the member
    (post,) = [c for c in discord.calls("POST", f"/channels/{channel.id}/messages") if c.files]
    assert post.ok and post.at >= expired_at
    assert result.interaction is None and result.webhook_id is None
    assert result.pinged_ids == {member.id}
    assert job.status is JobStatus.POSTED and job.posted_message_id == result.id
    assert (usage.used_today, usage.reserved_today) == (1, 0)
    # never through the interaction token: no followup, and nothing but status edits on it
    assert discord.calls("POST", "/webhooks/") == []
    after_expiry = [call for call in inter.calls if call.at >= expired_at]
    assert {(call.method, call.status, call.code) for call in after_expiry} == {
        ("PATCH", 401, Code.INVALID_WEBHOOK_TOKEN)
    }
    assert len(after_expiry) <= 2  # the final word, and at most one throttled progress edit
    assert Code.UNKNOWN_INTERACTION not in [call.code for call in discord.rest_log]
    assert "Generating" in status_line(inter)  # what the member saw last; the result pinged them instead


# -- what each provider failure tells the member ------------------------------------------------------

ACCOUNT = "The bot's image service account needs attention"
REPHRASE = "rephrase"
TRY_AGAIN = "try again"


@dataclass(frozen=True)
class ProviderFailure:
    name: str
    stage: Callable[[FluxEmulator, FluxBot], None]
    says: str  # in the member's status line
    logged: str  # in the operator's WARNING
    submits: int = 1  # POST /flux/images requests it takes


def submit_fails(status: int, **fault: Any) -> Callable[[FluxEmulator, FluxBot], None]:
    def stage(flux: FluxEmulator, bot: FluxBot) -> None:
        flux.add_fault("POST", "/flux/images", status=status, **fault)

    return stage


def task_fails(code: str, message: str) -> Callable[[FluxEmulator, FluxBot], None]:
    def stage(flux: FluxEmulator, bot: FluxBot) -> None:
        flux.fail_next_task(code=code, message=message)

    return stage


def submit_times_out(flux: FluxEmulator, bot: FluxBot) -> None:
    # The client's submit timeout is 60 s; the test shortens it on the running bot's client (a setting of
    # the client, not a test hook in the bot) and makes the provider answer later than that.
    bot.flux.timeouts = replace(bot.flux.timeouts, submit=aiohttp.ClientTimeout(total=0.2))
    flux.add_fault("POST", "/flux/images", delay=0.5)


BARE_403 = json.dumps({"success": False, "error": {"message": "request blocked by the safety system"}}).encode()

FAILURES = [
    ProviderFailure("credentials", submit_fails(401, code="invalid_token"), ACCOUNT, "invalid_token"),
    ProviderFailure("balance", submit_fails(403, code="used_up"), ACCOUNT, "used_up"),
    ProviderFailure(
        "moderation-task", task_fails("content_moderated", "the prompt was flagged"), REPHRASE, "content_moderated"
    ),
    ProviderFailure("moderation-bare-403", submit_fails(403, body=BARE_403), REPHRASE, "status=403"),
    ProviderFailure(
        "bad-request",
        submit_fails(400, code="bad_request", message="model is invalid"),
        "model is invalid",
        "bad_request",
    ),
    ProviderFailure(
        "rate-limited",
        submit_fails(429, code="too_many_requests", retry_after=0, times=4),
        TRY_AGAIN,
        "too_many_requests",
        submits=4,  # a 429 refused the request, so the client may retry it; it gives up after 4
    ),
    ProviderFailure("upstream-500", submit_fails(500, code="api_error"), "try again later", "api_error"),
    ProviderFailure(
        "upstream-503", submit_fails(503, code="service_unavailable"), "try again later", "service_unavailable"
    ),
    ProviderFailure("submit-timeout", submit_times_out, TRY_AGAIN, "got no answer"),
]


@pytest.mark.parametrize("failure", FAILURES, ids=[f.name for f in FAILURES])
async def test_each_provider_failure_tells_the_member_what_to_do_and_charges_nothing(
    fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture, failure: ProviderFailure
) -> None:
    world, discord, flux = fluxbot.world, fluxbot.discord, fluxbot.flux
    caplog.set_level(logging.INFO)
    async with fluxbot.running() as bot:
        failure.stage(flux, bot)
        inter = await world.member.slash(world.channel, "imagine", prompt="a lighthouse at dusk")
        await discord.wait_until(lambda: status_line(inter).startswith("❌"), 5, "the failure to be reported")
        (job,) = await jobs_in(bot.store, *JobStatus)
        usage = await user_usage(bot.store, world.guild.id, world.member.id)

    line = status_line(inter)
    assert failure.says.lower() in line.lower(), line
    assert inter.ephemeral
    assert results_in(world.channel) == []
    assert job.status is JobStatus.FAILED
    assert (usage.used_today, usage.reserved_today) == (0, 0)
    assert flux.count("POST", "/flux/images") == failure.submits
    # the operator's detail is a WARNING (an ERROR would fail the test through the error guard)
    warnings = [r for r in caplog.records if r.name == "bot.jobs" and r.levelno == logging.WARNING]
    assert any(failure.logged in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]
