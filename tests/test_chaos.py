"""The seeded chaos run: 150 jobs from 20 members while everything around the bot goes wrong.

For about 15 s members ask for images while Discord fails the bot's posts (5xx, 429, connections dropped
before or after the message was made), the provider fails submits and polls (5xx, 429 with ``Retry-After`` in
seconds or as an HTTP date, malformed and oversized bodies, slow answers, dropped connections, tasks that fail
or never finish), another connection holds SQLite's write lock for 0.5 to 7 s at random moments, and the
``fluxbot`` process is SIGKILLed and started again 3 times. The faults go on while jobs are still running, then
stop; every job is given time to end, one more job is asked for, and the bot is stopped (``tests.chaos.run``).
The seed decides everything random (``tests.chaos.plan``): ``CHAOS_SEED=7`` (or ``7,8,9``) runs those seeds
instead of the default five.

Invariants, checked on what the run left (``tests.chaos.verdict``):

- every accepted job (a row in ``jobs``) is posted exactly once, or failed (or lost to a kill while it was being
  sent) with its member told so (their status line, or a message in the channel) and no result in the channel;
- no prompt is sent to the provider again unless the provider refused it for certain (429);
- per member, ``used`` is what was posted in the channel and nothing stays ``reserved``;
- no ended job keeps its member's interaction token;
- no loop stops: none dies in the bot's log, and the final job is posted within two poll intervals of its
  task finishing.

``pytest -s tests/test_chaos.py`` shows each run's figures; they are also attached to the test's report
(``record_property``). A failure lists each broken invariant with examples and the story of one job.
"""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import discord
import pytest

from tests.chaos.plan import ChaosPlan
from tests.chaos.run import ChaosRun
from tests.fakediscord import Channel, RestCall, run_bot
from tests.fakediscord.faults import Chooser, RestFault
from tests.fakediscord.fixtures import World
from tests.fakediscord.probe import probe

DEFAULT_SEEDS = (1, 2, 3, 4, 5)


def chaos_seeds() -> list[int]:
    """``CHAOS_SEED`` (one seed, or several separated by commas or spaces), else the default five."""
    configured = os.environ.get("CHAOS_SEED", "").replace(",", " ").split()
    return [int(seed) for seed in configured] or list(DEFAULT_SEEDS)


@pytest.mark.timeout(150)  # a healthy run takes about 30 s; a broken bot makes the run wait out its timeouts
@pytest.mark.parametrize("seed", chaos_seeds())
async def test_chaos_every_job_ends_once_charged_right_and_the_loops_survive(
    seed: int,
    discord_world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record_property: pytest.RecordProperty,
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env file is read
    run = ChaosRun(ChaosPlan.draw(seed), discord_world, tmp_path)
    verdict = await run()
    print("\n" + run.figures.text())
    record_property("chaos", run.figures.as_dict())
    assert not verdict, f"{run.figures.text()}\n{verdict.report()}"


# -- the fake Discord's faults, as discord.py sees them ----------------------------------------------------------


async def _post(bot: discord.Client, channel: Channel, nonce: str) -> discord.Message:
    return await bot.get_partial_messageable(channel.id).send("hello", nonce=nonce)


def _only(fault: RestFault) -> Chooser:
    used: list[RestCall] = []

    def choose(call: RestCall) -> RestFault | None:
        if used:
            return None
        used.append(call)
        return fault

    return choose


async def test_a_discord_5xx_on_a_post_creates_nothing(discord_world: World) -> None:
    emu, channel = discord_world.emu, discord_world.channel
    emu.rest_faults.add("POST", "/channels/{channel_id}/messages", _only(RestFault.server_error(503)))
    async with run_bot(emu, probe()) as bot:
        with pytest.raises(discord.DiscordServerError):
            await _post(bot, channel, "n-1")
    assert [m for m in channel.messages.values() if m.content == "hello"] == []
    assert [i.fault.name for i in emu.rest_faults.injected] == ["server_error_503"]


async def test_a_discord_429_on_a_post_is_waited_out_by_discord_py_and_posts_once(discord_world: World) -> None:
    emu, channel = discord_world.emu, discord_world.channel
    emu.rest_faults.add("POST", "/channels/{channel_id}/messages", _only(RestFault.rate_limited(0.2)))
    async with run_bot(emu, probe()) as bot:
        message = await _post(bot, channel, "n-2")
    posts = emu.calls("POST", "/channels/{channel_id}/messages")
    assert [call.status for call in posts] == [429, 200]
    assert [m.id for m in channel.messages.values() if m.content == "hello"] == [message.id]


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
async def test_a_dropped_post_may_or_may_not_have_happened_and_its_nonce_finds_it_again(
    discord_world: World, after: bool
) -> None:
    emu, channel = discord_world.emu, discord_world.channel
    emu.rest_faults.add("POST", "/channels/{channel_id}/messages", _only(RestFault.dropped(after=after)))
    async with run_bot(emu, probe()) as bot:
        with pytest.raises(aiohttp.ClientError):
            await _post(bot, channel, "n-3")
        made = [m.id for m in channel.messages.values() if m.content == "hello"]
        assert len(made) == (1 if after else 0)
        again = await _post(bot, channel, "n-3")
    assert [m.id for m in channel.messages.values() if m.content == "hello"] == [again.id]
    if after:
        assert made == [again.id]  # the repeat with the same nonce got the first message back
