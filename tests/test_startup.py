"""Start-up of the real ``fluxbot`` process against a network that is not there yet, and one bot per database.

Discord is the loopback emulator, reached through a port of the test's own: closed (connection refused),
held by a server that accepts and never answers (a login that hangs), or forwarding to the emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.settings import load_settings
from bot.startup import hold_database
from tests.conftest import free_port
from tests.fakediscord import DiscordEmulator
from tests.fluxbot_harness import FluxbotHarness, fluxbot_environment
from tests.fluxbot_process import FluxbotProcess, fluxbot_process

#: Short retry timings for the tests (the bot's own: 1 s doubling to 60 s, and 30 s for a login).
FAST = {"FLUXBOT_RETRY_MAX_DELAY": "1", "FLUXBOT_LOGIN_TIMEOUT": "1"}
EXIT_WITHIN = 5.0


@contextlib.asynccontextmanager
async def serving(
    port: int, handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
) -> AsyncIterator[None]:
    """Listen on ``port`` for the block; its connections are cut when it ends."""
    connections: set[asyncio.StreamWriter] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.add(writer)
        try:
            await handle(reader, writer)
        finally:
            connections.discard(writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", port, reuse_address=True)
    try:
        yield
    finally:
        server.close()
        for writer in list(connections):
            writer.close()
        await server.wait_closed()


def forward_to(target_port: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A connection handler that pipes bytes both ways to ``target_port`` (the emulator)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target_reader, target_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, target_writer), pipe(target_reader, writer))

    return handle


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts the connection, reads the request, and never says a word."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(65536):
            pass
    writer.close()


def lines_in(bot: FluxbotProcess, what: str, level: str = "WARNING") -> list[str]:
    return [line for line in bot.stderr().splitlines() if f" {level} " in line and what in line]


async def wait_for_lines(
    bot: FluxbotProcess, what: str, count: int, timeout: float = 20.0, level: str = "WARNING"
) -> list[str]:
    """Until the bot logged ``count`` lines at ``level`` that contain ``what``; fails if it exits first."""
    async with asyncio.timeout(timeout):
        while len(lines := lines_in(bot, what, level)) < count:
            if bot.returncode is not None:
                raise AssertionError(f"fluxbot exited ({bot.returncode}):\n{bot.stderr()}")
            await asyncio.sleep(0.05)
    return lines


def via(discord: DiscordEmulator, *, api_port: int | None = None, gateway_port: int | None = None) -> dict[str, str]:
    env = {}
    if api_port is not None:
        env["DISCORD_API_BASE"] = discord.api_base.replace(f":{discord.port}/", f":{api_port}/")
    if gateway_port is not None:
        env["DISCORD_GATEWAY_URL"] = discord.gateway_url.replace(f":{discord.port}/", f":{gateway_port}/")
    return env


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert " ERROR " not in stderr, stderr
    assert "voice will NOT be supported" not in stderr, stderr


async def test_started_while_discord_refuses_connections_the_bot_keeps_trying_and_comes_online_by_itself(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    discord = fluxbot.discord
    port = free_port()
    env = fluxbot_environment(discord, fluxbot.flux, fluxbot.database, **FAST, **via(discord, api_port=port))
    async with fluxbot_process(env, tmp_path) as bot:
        refused = await wait_for_lines(bot, "logging in to Discord failed", 3)
        assert discord.identifies == []
        async with serving(port, forward_to(discord.port)):  # Discord is back
            await bot.wait_online(discord, timeout=20)
            # discord.py is ready once the servers have arrived (it waits 2 s for more after the last one)
            ready = await wait_for_lines(bot, "logged in as", 1, level="INFO")
            bot.send_signal(signal.SIGTERM)
            status = await bot.wait_exit(EXIT_WITHIN)

    stderr = bot.stderr()
    assert status == 0, stderr
    assert_clean(stderr)
    assert all("attempt" in line and "retrying in" in line for line in refused), refused
    assert any("Connect" in line for line in refused), refused  # names what failed: the connection
    assert len(lines_in(bot, "logged in as", "INFO")) == 1, stderr
    assert f"id {discord.application_id}" in ready[0] and "in 1 servers" in ready[0], ready
    assert "provider acedata" in ready[0] and str(fluxbot.database) in ready[0], ready
    assert env["DISCORD_TOKEN"] not in stderr and env["FLUX_API_KEY"] not in stderr


async def test_an_unreachable_gateway_is_retried_instead_of_crashing_inside_discord_py(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    discord = fluxbot.discord
    port = free_port()
    env = fluxbot_environment(discord, fluxbot.flux, fluxbot.database, **FAST, **via(discord, gateway_port=port))
    async with fluxbot_process(env, tmp_path) as bot:
        await wait_for_lines(bot, "connecting to the Discord gateway failed", 2)
        async with serving(port, forward_to(discord.port)):
            await bot.wait_online(discord, timeout=20)
            bot.send_signal(signal.SIGINT)
            status = await bot.wait_exit(EXIT_WITHIN)

    stderr = bot.stderr()
    assert status == 0, stderr
    assert_clean(stderr)
    assert "'NoneType' object has no attribute 'sequence'" not in stderr
    # logged in once: the retries were the gateway's, and the job runner started once
    assert len(discord.calls("GET", "/users/@me")) == 1, discord.calls("GET", "/users/@me")


async def test_a_login_that_hangs_is_cut_off_and_retried(fluxbot: FluxbotHarness, tmp_path: Path) -> None:
    discord = fluxbot.discord
    port = free_port()
    env = fluxbot_environment(discord, fluxbot.flux, fluxbot.database, **FAST, **via(discord, api_port=port))
    async with fluxbot_process(env, tmp_path) as bot:
        async with serving(port, never_answer):
            hung = await wait_for_lines(bot, "logging in to Discord failed", 2)
        async with serving(port, forward_to(discord.port)):
            await bot.wait_online(discord, timeout=20)
            bot.send_signal(signal.SIGTERM)
            status = await bot.wait_exit(EXIT_WITHIN)

    assert status == 0, bot.stderr()
    assert_clean(bot.stderr())
    assert all("no answer within 1 s" in line for line in hung), hung


async def test_a_signal_stops_the_bot_while_it_waits_to_retry(fluxbot: FluxbotHarness, tmp_path: Path) -> None:
    discord = fluxbot.discord
    # the default timings: the wait before the next attempt would be long, the signal must not wait for it
    env = fluxbot_environment(discord, fluxbot.flux, fluxbot.database, **via(discord, gateway_port=free_port()))
    async with fluxbot_process(env, tmp_path) as bot:
        await wait_for_lines(bot, "connecting to the Discord gateway failed", 2, timeout=30)
        bot.send_signal(signal.SIGTERM)
        status = await bot.wait_exit(EXIT_WITHIN)

    assert status == 0, bot.stderr()
    assert_clean(bot.stderr())


async def test_a_second_bot_on_the_same_database_exits_2_and_the_first_keeps_running(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    discord = fluxbot.discord
    env = fluxbot_environment(discord, fluxbot.flux, fluxbot.database)
    async with fluxbot_process(env, tmp_path) as first:
        await first.wait_online(discord)
        async with fluxbot_process(env, tmp_path) as second:
            status = await second.wait_exit(EXIT_WITHIN * 2)
        assert status == 2
        assert second.stderr().splitlines() == [
            f"fluxbot: another fluxbot instance (pid {first.pid}) is using the database {fluxbot.database} "
            f"(it holds {fluxbot.database}.lock); stop it first, or give this one its own DATABASE_URL"
        ]
        assert first.returncode is None
        assert sum(1 for s in discord.sessions.values() if s.conn is not None) == 1  # the second never connected
        await first.kill()  # SIGKILL: the operating system releases the lock

        async with fluxbot_process(env, tmp_path) as third:
            await third.wait_online(discord)
            third.send_signal(signal.SIGTERM)
            assert await third.wait_exit(EXIT_WITHIN) == 0, third.stderr()
    assert_clean(third.stderr())


async def test_a_gateway_lost_after_start_up_is_reconnected_with_one_warning_line_per_attempt(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    discord = fluxbot.discord
    port = free_port()
    discord.resume_gateway_url = via(discord, gateway_port=port)["DISCORD_GATEWAY_URL"]
    env = fluxbot_environment(discord, fluxbot.flux, fluxbot.database, **via(discord, gateway_port=port))
    async with fluxbot_process(env, tmp_path) as bot:
        async with serving(port, forward_to(discord.port)):
            await bot.wait_online(discord)
        # the connection is cut and the gateway is gone: discord.py's own reconnection (RESUME) takes over
        lost = await wait_for_lines(bot, "the Discord gateway connection failed", 1)
        async with serving(port, forward_to(discord.port)):
            await discord.wait_until(lambda: discord.resumes >= 1, 20, "the bot to RESUME")
            bot.send_signal(signal.SIGTERM)
            status = await bot.wait_exit(EXIT_WITHIN)

    assert status == 0, bot.stderr()
    assert_clean(bot.stderr())
    assert all("Connect" in line and "reconnecting in" in line for line in lost), lost
    assert len(discord.identifies) == 1  # resumed, not identified anew


def test_on_postgresql_processes_share_the_database_without_a_lock_file(tmp_path: Path) -> None:
    # Several processes on one PostgreSQL database are the point of it: none waits for or refuses another.
    settings = load_settings(
        DISCORD_TOKEN="t", FLUX_API_KEY="k", DATABASE_URL="postgresql://fluxbot:pw@127.0.0.1:5432/fluxbot"
    )
    sqlite = load_settings(DISCORD_TOKEN="t", FLUX_API_KEY="k", DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}")
    with hold_database(settings), hold_database(settings):
        with pytest.raises(SystemExit) as refused, hold_database(sqlite), hold_database(sqlite):
            pass  # (a second holder of one SQLite file is refused, as the bot process test above shows)
        assert refused.value.code == 2
    assert [path.name for path in tmp_path.iterdir()] == ["bot.db.lock"]  # SQLite's lock file only
