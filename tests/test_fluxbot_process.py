"""The ``fluxbot`` console script itself, as operators run it: configured only by environment variables,
started as a process, stopped with a signal. Discord and the Flux vendor are the loopback emulators."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.fakediscord import Intent
from tests.fluxbot_harness import FluxbotHarness, fluxbot_environment
from tests.fluxbot_process import fluxbot_process

#: A stopped bot must be gone this fast (Docker sends SIGKILL 10 s after SIGTERM).
EXIT_WITHIN = 5.0


def env_for(fluxbot: FluxbotHarness, **overrides: str) -> dict[str, str]:
    return fluxbot_environment(fluxbot.discord, fluxbot.flux, fluxbot.database, **overrides)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_fluxbot_comes_online_syncs_its_commands_and_stops_cleanly_on_a_signal(
    fluxbot: FluxbotHarness, tmp_path: Path, signum: signal.Signals
) -> None:
    discord = fluxbot.discord
    async with fluxbot_process(env_for(fluxbot), tmp_path) as bot:
        online = await bot.wait_online(discord)
        stopping = time.perf_counter()
        bot.send_signal(signum)
        status = await bot.wait_exit(EXIT_WITHIN)
        stopped = time.perf_counter() - stopping
        print(f"\nfluxbot online in {online:.3f} s; exited {stopped:.3f} s after {signum.name}")

    stderr = bot.stderr()
    assert status == 0, stderr
    assert "Traceback" not in stderr and " ERROR " not in stderr, stderr
    assert discord.intents is not None and discord.intents & Intent.MESSAGE_CONTENT
    synced = {(c.name, c.type) for c in discord.commands(None)}
    assert {("imagine", 1), ("edit", 1), ("Edit image", 3)} <= synced
    # it said goodbye to the gateway instead of vanishing
    await discord.wait_until(lambda: all(s.conn is None for s in discord.sessions.values()), 2, "the gateway closed")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_fluxbot_stopped_while_it_is_still_starting_exits_cleanly(
    fluxbot: FluxbotHarness, tmp_path: Path, signum: signal.Signals
) -> None:
    discord = fluxbot.discord
    # Discord takes the command sync but does not answer yet: the bot is deterministically mid-start-up.
    sync = discord.hold_responses("PUT", "/applications/{application_id}/commands")
    async with fluxbot_process(env_for(fluxbot), tmp_path) as bot:
        await discord.wait_until(lambda: sync.calls, 10, "the command sync")
        bot.send_signal(signum)
        status = await bot.wait_exit(EXIT_WITHIN)
    sync.release()

    assert status == 0, bot.stderr()
    assert "Traceback" not in bot.stderr() and " ERROR " not in bot.stderr(), bot.stderr()
    assert discord.identifies == []  # it stopped instead of going on to connect


async def test_fluxbot_with_a_token_discord_refuses_says_so_in_one_line_and_exits_2(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    env = env_for(fluxbot, DISCORD_TOKEN="MTIz.not-the.token", LOG_LEVEL="ERROR")
    async with fluxbot_process(env, tmp_path) as bot:
        status = await bot.wait_exit(EXIT_WITHIN * 2)

    assert status == 2
    assert bot.stderr().splitlines() == [
        "fluxbot: Discord refused DISCORD_TOKEN; copy the bot token again from the developer portal"
    ]
    assert bot.stdout() == ""
    assert fluxbot.discord.identifies == []


async def test_fluxbot_without_the_message_content_intent_names_it_and_the_fix_in_one_line_and_exits_2(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    discord = fluxbot.discord
    discord.reject_privileged_intents = True  # the switch is off in the developer portal
    async with fluxbot_process(env_for(fluxbot, LOG_LEVEL="ERROR"), tmp_path) as bot:
        status = await bot.wait_exit(EXIT_WITHIN * 2)

    assert status == 2
    (line,) = bot.stderr().splitlines()
    assert line.startswith("fluxbot: ")
    assert "Message Content intent" in line and "developer portal" in line
    assert "MESSAGE_CONTENT_INTENT=false" in line
    assert "Traceback" not in bot.stderr()

    # the fix the line offers works: without the intent the bot comes online
    async with fluxbot_process(env_for(fluxbot, MESSAGE_CONTENT_INTENT="false"), tmp_path) as bot:
        await bot.wait_online(discord)
        bot.send_signal(signal.SIGTERM)
        assert await bot.wait_exit(EXIT_WITHIN) == 0, bot.stderr()
    assert discord.intents is not None and not discord.intents & Intent.MESSAGE_CONTENT
