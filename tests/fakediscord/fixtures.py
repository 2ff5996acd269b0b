"""Pytest fixtures for the Discord emulator (registered as a plugin by tests/conftest.py).

- ``error_guard``: fails the test on ERROR logs and dead tasks (see :class:`ErrorGuard`).
- ``discord_emulator``: a started emulator, with discord.py pointed at it for the test and restored after.
- ``discord_env``: the emulator's ``DISCORD_*`` variables set in the environment, for the real bot's settings.
- ``discord_world``: a server with ``#general``, an admin (Manage Server) and a plain member
  (:func:`add_world` makes more of them, on a chosen shard if wanted).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import discord.gateway
import discord.http
import pytest

from bot.endpoints import point_discord_at

from .emulator import DiscordEmulator
from .model import Channel, Guild, Member
from .runner import ErrorGuard


@pytest.fixture
async def error_guard() -> AsyncIterator[ErrorGuard]:
    guard = ErrorGuard().install()
    try:
        yield guard
    finally:
        guard.uninstall()
    guard.check()


@pytest.fixture
async def discord_emulator(error_guard: ErrorGuard) -> AsyncIterator[DiscordEmulator]:
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    emu = DiscordEmulator()
    await emu.start()
    point_discord_at(emu.api_base, emu.gateway_url)
    try:
        yield emu
    finally:
        discord.http.Route.BASE = base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
        await emu.close()
    assert not emu.unimplemented, f"the bot called routes the emulator does not implement: {emu.unimplemented}"


@pytest.fixture
def discord_env(discord_emulator: DiscordEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[DiscordEmulator]:
    for name, value in discord_emulator.env().items():
        monkeypatch.setenv(name, value)
    yield discord_emulator


@dataclass
class World:
    emu: DiscordEmulator
    guild: Guild
    channel: Channel
    admin: Member
    member: Member


def add_world(emu: DiscordEmulator, name: str = "Flux Test Server", *, shard: int | None = None) -> World:
    """A server with ``#general``, an admin (Manage Server) and a plain member; ``shard``: on that shard of
    ``emu.shard_count`` (see :meth:`DiscordEmulator.add_guild`). Member names carry no server name, as in
    :func:`discord_world`; each server has its own users."""
    guild = emu.add_guild(name, shard=shard)
    channel = guild.add_text_channel("general")
    admin = guild.add_member("alice-admin", manage_guild=True)
    member = guild.add_member("bob")
    return World(emu, guild, channel, admin, member)


@pytest.fixture
def discord_world(discord_emulator: DiscordEmulator) -> World:
    return add_world(discord_emulator)
