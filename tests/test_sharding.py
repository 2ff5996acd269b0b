"""Shards across processes: the real bot against a loopback Discord that serves several shards.

Discord sends each shard the events of its own servers (``(guild_id >> 22) % SHARD_COUNT``), so a bot process
running ``SHARD_IDS`` sees, acknowledges and answers the interactions of those servers only. Bots run in the
test's process (two at once, each with a database of its own) or as ``fluxbot`` processes (started together,
one SIGKILLed); the emulator enforces Discord's shard rules (4010 for a shard running twice, 4011 for too few).
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import discord
import pytest
from PIL import Image

from bot import health
from bot.app import FluxBot, IdentifyPacing
from bot.db import JobStatus, jobs_in
from bot.images import DownloadedImage
from tests.conftest import queued_jobs
from tests.fakediscord import DiscordEmulator, Interaction
from tests.fakediscord.fixtures import World, add_world
from tests.fakediscord.runner import ErrorGuard
from tests.fluxbot_harness import FluxbotHarness, fluxbot_environment, is_result
from tests.fluxbot_process import fluxbot_process, fluxbot_processes, logs_of, wait_all_online
from tests.test_health import healthz, until


def sharded(emu: DiscordEmulator, shard_count: int) -> dict[int, World]:
    """``shard_count`` shards, a server on each (by shard id), all shards allowed to identify at once."""
    emu.shard_count = shard_count
    emu.max_concurrency = 16  # a large bot's identify concurrency: no 5 s pause between a process's shards
    return {shard: add_world(emu, f"server on shard {shard}", shard=shard) for shard in range(shard_count)}


def interactions_seen_by(bot: FluxBot) -> list[int]:
    """The ids of the interactions this bot receives from now on (discord.py's on_interaction)."""
    seen: list[int] = []

    async def record(interaction: discord.Interaction[FluxBot]) -> None:
        seen.append(interaction.id)

    listener: Callable[[discord.Interaction[FluxBot]], Coroutine[Any, Any, None]] = record
    bot.add_listener(listener, "on_interaction")
    return seen


async def imagine_in(world: World, prompt: str) -> Interaction:
    """/imagine by the server's member, acknowledged and its result posted in the server's channel."""
    inter = await world.member.slash(world.channel, "imagine", prompt=prompt)
    await inter.wait_acknowledged(timeout=3)
    await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=10)
    return inter


def shard_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.app" and "shard" in r.getMessage()]


async def test_two_processes_split_three_shards_and_each_answers_only_the_servers_of_its_own(
    fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.app")
    emu = fluxbot.discord
    worlds = sharded(emu, 3)
    low_process = fluxbot.with_database(fluxbot.database.with_name("low.db"))
    high_process = fluxbot.with_database(fluxbot.database.with_name("high.db"))
    async with (
        low_process.running(SHARD_COUNT="3", SHARD_IDS="0,1") as low,
        high_process.running(SHARD_COUNT="3", SHARD_IDS="2") as high,
    ):
        assert (low.shard_count, low.running_shards, high.shard_count, high.running_shards) == (3, [0, 1], 3, [2])
        assert {g.id for g in low.guilds} == {worlds[0].guild.id, worlds[1].guild.id} | (
            {fluxbot.world.guild.id} if emu.shard_of(fluxbot.world.guild) < 2 else set()
        )
        assert sorted(map(tuple, (i["shard"] for i in emu.identifies))) == [(0, 3), (1, 3), (2, 3)]
        seen = {"low": interactions_seen_by(low), "high": interactions_seen_by(high)}

        answered = {shard: await imagine_in(world, f"a fox on shard {shard}") for shard, world in worlds.items()}
        recorded = {
            "low": {job.guild_id for job in await jobs_in(low.store, *JobStatus)},
            "high": {job.guild_id for job in await jobs_in(high.store, *JobStatus)},
        }

    assert seen["low"] == [answered[0].id, answered[1].id]
    assert seen["high"] == [answered[2].id]
    to_shards = {d.data["id"]: d.shard for d in emu.gateway_log if d.event == "INTERACTION_CREATE"}
    assert to_shards == {str(inter.id): (shard, 3) for shard, inter in answered.items()}
    # each process recorded the jobs of its own servers only, in its own database
    assert recorded == {"low": {worlds[0].guild.id, worlds[1].guild.id}, "high": {worlds[2].guild.id}}
    assert all(inter.acknowledged and not inter.errors for inter in answered.values())
    lines = shard_lines(caplog)
    assert "running shards 0, 1 of 3" in lines and "running shard 2 of 3" in lines, lines
    logged_in = [line for line in lines if line.startswith("logged in as")]
    assert sorted(line.split("; ")[1] for line in logged_in) == ["shards 0, 1 of 3", "shards 2 of 3"], logged_in


async def test_without_a_shard_count_one_process_runs_every_shard_discord_recommends(
    fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.app")
    emu = fluxbot.discord
    worlds = sharded(emu, 2)
    async with fluxbot.running() as bot:
        assert bot.shard_count == 2 and bot.running_shards == [0, 1]
        assert set(bot.shards) == {0, 1}
        answered = [await imagine_in(world, f"a fox on shard {shard}") for shard, world in worlds.items()]

    assert sorted(i["shard"] for i in emu.identifies) == [[0, 2], [1, 2]]
    assert len(emu.calls("GET", "/gateway/bot")) == 1
    to_shards = [d.shard for d in emu.gateway_log if d.event == "INTERACTION_CREATE"]
    assert to_shards == [(0, 2), (1, 2)]
    assert all(inter.acknowledged and not inter.errors for inter in answered)
    assert "running shards 0, 1 of 2" in shard_lines(caplog)


async def test_a_shard_that_cannot_reconnect_makes_the_process_unhealthy_and_healthz_names_it(
    fluxbot: FluxbotHarness, monkeypatch: pytest.MonkeyPatch, error_guard: ErrorGuard
) -> None:
    emu = fluxbot.discord
    sharded(emu, 2)
    closed = f"ws://127.0.0.1:{emu.port}/no-gateway-here"  # the emulator answers 404: no websocket there
    emu.resume_gateway_url = closed  # where READY tells the shards to RESUME
    async with fluxbot.running(METRICS_LISTEN="127.0.0.1:0") as bot:
        online = await healthz(bot)
        emu.drop_connections(4000, shard=1)  # a resumable close: shard 1 tries to RESUME, and cannot
        reconnecting = await until(lambda: healthz(bot), lambda a: a[1]["gateway"] != "connected", "shard 1 down")
        monkeypatch.setattr(health, "GATEWAY_GRACE", 0.2)
        down = await until(lambda: healthz(bot), lambda a: a[0] != 200, "the outage")
        assert 0 in emu.live_shards() and 1 not in emu.live_shards()
    while error_guard.expect("Attempting a reconnect for shard ID 1"):  # discord.py logs each retry as an ERROR
        pass

    assert online == (
        200,
        {"status": "ok", "gateway": "connected", "database": "ok", "shards": {"0": "connected", "1": "connected"}},
    )
    assert reconnecting == (
        200,
        {
            "status": "ok",
            "gateway": "reconnecting",
            "database": "ok",
            "shards": {"0": "connected", "1": "reconnecting"},
        },
    )
    assert down == (
        503,
        {
            "status": "down",
            "gateway": "disconnected",
            "database": "ok",
            "shards": {"0": "connected", "1": "disconnected"},
        },
    )


async def test_processes_started_together_run_their_shards_and_a_killed_one_leaves_the_others_serving(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    emu = fluxbot.discord
    worlds = sharded(emu, 2)
    envs = [
        fluxbot_environment(emu, fluxbot.flux, tmp_path / f"shard{shard}.db", SHARD_COUNT="2", SHARD_IDS=str(shard))
        for shard in (0, 1)
    ]
    async with fluxbot_processes(envs, tmp_path) as bots:
        await wait_all_online(bots, emu)
        assert [bot.shards for bot in bots] == [(0,), (1,)]
        await wait_for(lambda: all(bot.log_lines("logged in as") for bot in bots), logs_of(bots))
        for world in worlds.values():
            await imagine_in(world, "before the kill")

        assert await bots[1].kill() == -signal.SIGKILL
        await emu.wait_until(lambda: 1 not in emu.live_shards(), 5, "shard 1 gone with its process")
        served = await imagine_in(worlds[0], "shard 0 still served")
        orphaned = await worlds[1].member.slash(worlds[1].channel, "imagine", prompt="nobody runs shard 1")
        emu.advance(4)  # past the 3 s a member waits for an acknowledgement
        await emu.wait_until(lambda: orphaned.ack_expired, 5, "the acknowledgement deadline")

    assert served.acknowledged and not orphaned.acknowledged
    for bot, shard in zip(bots, (0, 1), strict=True):
        assert [line.split("; ")[1] for line in bot.log_lines("logged in as")] == [f"shards {shard} of 2"], logs_of(
            bots
        )
        assert bot.log_lines(f"running shard {shard} of 2", "INFO"), logs_of(bots)
    assert bots[0].log_lines(" ERROR ") == [], logs_of(bots)


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Until ``condition()`` holds (processes' logs are files: read them again every 50 ms)."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not so within {timeout} s:\n{what}") from None


def test_shards_identify_as_fast_as_discords_max_concurrency_allows_and_no_faster() -> None:
    pacing = IdentifyPacing(max_concurrency=2, interval=5.0)
    # shards 0 and 1 are in buckets of their own and go at once; 2 and 3 wait for their bucket's next turn
    assert [pacing.wait_for(shard, now=100.0) for shard in range(5)] == [0.0, 0.0, 5.0, 5.0, 10.0]
    assert pacing.wait_for(1, now=103.0) == 7.0  # bucket 1's turns at 100 and 105 are taken
    assert pacing.wait_for(0, now=200.0) == 0.0  # long after: at once again
    one_bucket = IdentifyPacing()
    assert [one_bucket.wait_for(shard, now=0.0) for shard in range(3)] == [0.0, 5.0, 10.0]


async def test_a_process_with_too_few_shards_for_discord_exits_2_naming_the_close_code(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    emu = fluxbot.discord
    sharded(emu, 2)
    emu.require_shard_count = True  # Discord: this bot is in too many servers for one shard
    env = fluxbot_environment(emu, fluxbot.flux, fluxbot.database, SHARD_COUNT="1")
    async with fluxbot_process(env, tmp_path) as bot:
        status = await bot.wait_exit(20)

    assert status == 2, bot.stderr()
    assert bot.stderr().splitlines()[-1] == (
        "fluxbot: Discord closed the gateway connection with code 4011: "
        "Sharding required (the bot is in too many servers for SHARD_COUNT; raise it, or unset it)"
    ), bot.stderr()
    assert emu.live_shards() == {}


async def test_a_second_process_given_a_shard_that_is_running_exits_2_and_the_first_keeps_it(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    emu = fluxbot.discord
    worlds = sharded(emu, 2)
    envs = [
        fluxbot_environment(emu, fluxbot.flux, tmp_path / f"process{n}.db", SHARD_COUNT="2", SHARD_IDS="0")
        for n in (1, 2)
    ]
    async with fluxbot_process(envs[0], tmp_path, name="first") as first:
        await first.wait_online(emu)
        first_session = emu.live_shards()[0].id
        async with fluxbot_process(envs[1], tmp_path, name="second") as second:
            status = await second.wait_exit(20)
        await imagine_in(worlds[0], "still answered by the first")
        assert first.returncode is None and emu.live_shards()[0].id == first_session

    assert status == 2, second.stderr()
    assert second.stderr().splitlines()[-1] == (
        "fluxbot: Discord closed the gateway connection with code 4010: "
        "Invalid shard (another process runs this shard already, or SHARD_IDS is not below SHARD_COUNT)"
    ), second.stderr()


async def test_a_result_for_a_server_on_another_processs_shard_is_posted_under_that_servers_upload_limit(
    fluxbot: FluxbotHarness,
) -> None:
    """Any process may deliver any job: one that does not run the server's shard asks Discord for the server's
    boosts (once) instead of shrinking a boosted server's images to the smallest limit."""
    emu = fluxbot.discord
    emu.shard_count = 2
    boosted = emu.add_guild("boosted, on shard 1", shard=1, premium_tier=2)  # 50 MiB per file
    channel = boosted.add_text_channel("general")
    member = boosted.add_member("carol")
    big = noisy_png(2048, 2048)  # about 12.6 MB: over the 10 MiB of an unboosted server
    assert 10 * 1024 * 1024 < len(big) < 50 * 1024 * 1024
    async with fluxbot.running(SHARD_COUNT="2", SHARD_IDS="0") as bot:
        assert bot.get_guild(boosted.id) is None  # not this process's shard
        jobs = await queued_jobs(bot.store, boosted.id, channel.id, member.id, 2)
        image = DownloadedImage(big, "PNG", 2048, 2048, "image/png")
        posted = [await bot.courier.deliver(job, [image]) for job in jobs]

    sizes = [[a.size for a in emu.find_message(message_id).attachments] for message_id in posted]  # type: ignore[union-attr]
    assert sizes == [[len(big)], [len(big)]]  # posted as they were, not re-encoded to fit 10 MiB
    assert len(emu.calls("GET", f"/guilds/{boosted.id}")) == 1  # asked once, then kept


def noisy_png(width: int, height: int) -> bytes:
    """A PNG that does not compress (random pixels): its size is about 3 bytes per pixel."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), random.Random(7).randbytes(width * height * 3)).save(buffer, "PNG")
    return buffer.getvalue()
