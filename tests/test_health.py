"""``GET /healthz`` on METRICS_LISTEN: the real bot against the fake Discord, with a real SQLite file (and once a
real PostgreSQL database)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from bot import health
from bot.app import FluxBot, open_bot
from bot.settings import SettingsError
from tests.fakediscord.runner import ErrorGuard
from tests.fluxbot_harness import FluxbotHarness

Health = tuple[int, dict[str, Any]]


async def healthz(bot: FluxBot) -> Health:
    assert bot.health_server is not None and bot.health_server.port
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bot.health_server.port}/healthz") as response,
    ):
        return response.status, await response.json()


async def until(check: Callable[[], Awaitable[Health]], wanted: Callable[[Health], bool], what: str) -> Health:
    """Ask again until the answer is the wanted one (fails with the last answer after 10 s)."""
    answer: Health | None = None
    try:
        async with asyncio.timeout(10):
            while True:
                answer = await check()
                if wanted(answer):
                    return answer
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"/healthz never said {what}; last answer: {answer}") from None


async def test_healthz_is_200_while_online_and_503_once_the_gateway_is_gone_for_longer_than_the_grace(
    fluxbot: FluxbotHarness, monkeypatch: pytest.MonkeyPatch, error_guard: ErrorGuard
) -> None:
    discord = fluxbot.discord
    async with fluxbot.running(METRICS_LISTEN="127.0.0.1:0") as bot:
        online = await healthz(bot)
        # a dropped connection the bot resumes at once is no outage
        resumes = discord.resumes
        discord.drop_connections(4000)
        await discord.wait_until(lambda: discord.resumes > resumes, 5, "the bot to resume")
        resumed = await until(lambda: healthz(bot), lambda a: a[1]["gateway"] == "connected", "connected")

        await discord.close()  # Discord is gone: the bot keeps trying to reconnect
        within_grace = await until(lambda: healthz(bot), lambda a: a[1]["gateway"] != "connected", "the disconnect")
        monkeypatch.setattr(health, "GATEWAY_GRACE", 0.2)  # instead of waiting out the real grace
        gone = await until(lambda: healthz(bot), lambda a: a[0] != 200, "the outage")
    while error_guard.expect("Attempting a reconnect"):  # discord.py logs each failed reconnect as an ERROR
        pass

    assert online == (200, {"status": "ok", "gateway": "connected", "database": "ok"})
    assert resumed == online
    assert within_grace == (200, {"status": "ok", "gateway": "reconnecting", "database": "ok"})
    assert gone == (503, {"status": "down", "gateway": "disconnected", "database": "ok"})


async def test_healthz_is_503_while_the_database_does_not_answer_and_200_again_after(
    fluxbot: FluxbotHarness, monkeypatch: pytest.MonkeyPatch, error_guard: ErrorGuard
) -> None:
    monkeypatch.setattr(health, "DATABASE_TIMEOUT", 0.3)
    async with fluxbot.running(METRICS_LISTEN="127.0.0.1:0") as bot:
        release = asyncio.Event()
        holding = asyncio.Event()

        async def hold_the_database() -> None:  # a transaction that never ends, like a stuck write
            async with bot.store.transaction():
                holding.set()
                await release.wait()

        holder = asyncio.create_task(hold_the_database())
        await holding.wait()
        stuck = await healthz(bot)
        release.set()
        await holder
        recovered = await healthz(bot)

        await bot.store.close()  # the database is gone for good
        closed = await healthz(bot)
    # the runner's loops may have met the closed database too; they log it and go on
    while error_guard.expect(lambda record: record.name == "bot.jobs"):
        pass

    assert stuck == (503, {"status": "down", "gateway": "connected", "database": "unusable"})
    assert recovered == (200, {"status": "ok", "gateway": "connected", "database": "ok"})
    assert closed == stuck


async def test_the_bound_port_is_on_the_bot_and_the_server_stops_with_it(fluxbot: FluxbotHarness) -> None:
    async with fluxbot.running(METRICS_LISTEN="127.0.0.1:0") as bot:
        assert bot.health_server is not None
        port = bot.health_server.port
        assert (await healthz(bot))[0] == 200

    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")


@pytest.mark.parametrize("value", ["abc", "9100", "127.0.0.1:99999", "127.0.0.1:port"])
def test_a_metrics_listen_that_is_not_host_and_port_is_refused_naming_the_variable(
    fluxbot: FluxbotHarness, value: str
) -> None:
    with pytest.raises(SettingsError, match="METRICS_LISTEN") as refused:
        fluxbot.settings(METRICS_LISTEN=value)
    assert "\n" not in str(refused.value)


def test_metrics_listen_is_off_unless_set(fluxbot: FluxbotHarness) -> None:
    assert fluxbot.settings().metrics_listen is None
    assert fluxbot.settings(METRICS_LISTEN="0.0.0.0:9100").metrics_listen == "0.0.0.0:9100"


async def test_a_metrics_listen_port_in_use_is_named_and_nothing_is_left_open(fluxbot: FluxbotHarness) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = fluxbot.settings(METRICS_LISTEN=f"127.0.0.1:{port}")
        with pytest.raises(OSError, match=f"METRICS_LISTEN=127.0.0.1:{port}"):
            async with open_bot(settings):
                pytest.fail("the bot was built although its metrics port is taken")
    # the database was closed again: the next bot opens it
    async with fluxbot.running(METRICS_LISTEN="127.0.0.1:0") as bot:
        assert (await healthz(bot))[0] == 200


async def test_healthz_asks_a_postgresql_database_too(
    fluxbot: FluxbotHarness, postgresql_url: str, error_guard: ErrorGuard
) -> None:
    async with fluxbot.running(METRICS_LISTEN="127.0.0.1:0", DATABASE_URL=postgresql_url) as bot:
        online = await until(lambda: healthz(bot), lambda a: a[0] == 200, "online")
        await bot.store.close()  # the database is gone for good
        closed = await healthz(bot)
    while error_guard.expect(lambda record: record.name == "bot.jobs"):
        pass

    assert bot.store.dialect == "postgresql"
    assert online == (200, {"status": "ok", "gateway": "connected", "database": "ok"})
    assert closed == (503, {"status": "down", "gateway": "connected", "database": "unusable"})
