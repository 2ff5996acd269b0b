"""``fluxbot run`` ends in one line and exit status 2 for the failures that retrying cannot fix."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.fluxbot_harness import FluxbotHarness, fluxbot_environment
from tests.fluxbot_process import fluxbot_process

EXIT_CONFIG = 2


@pytest.fixture
async def forbidding_discord() -> AsyncIterator[str]:
    """A Discord REST endpoint that answers every request 403 Missing Access, as Discord does."""

    async def forbidden(request: web.Request) -> web.Response:
        return web.json_response({"message": "Missing Access", "code": 50001}, status=403)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forbidden)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v10"
    await runner.cleanup()


def assert_one_line(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert any(all(needle in line for needle in needles) for line in lines), stderr


async def test_a_login_refused_with_403_ends_in_one_line(
    fluxbot: FluxbotHarness, tmp_path: Path, forbidding_discord: str
) -> None:
    env = fluxbot_environment(fluxbot.discord, fluxbot.flux, fluxbot.database, DISCORD_API_BASE=forbidding_discord)
    async with fluxbot_process(env, tmp_path) as bot:
        status = await bot.wait_exit(15)
    assert status == EXIT_CONFIG
    assert_one_line(bot.stderr(), "fluxbot: Discord refused to start the bot", "403")


async def test_a_metrics_port_in_use_ends_in_one_line_naming_the_setting(
    fluxbot: FluxbotHarness, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = fluxbot_environment(fluxbot.discord, fluxbot.flux, fluxbot.database, METRICS_LISTEN=f"127.0.0.1:{port}")
        async with fluxbot_process(env, tmp_path) as bot:
            status = await bot.wait_exit(15)
    assert status == EXIT_CONFIG
    assert_one_line(bot.stderr(), "fluxbot:", "METRICS_LISTEN")
