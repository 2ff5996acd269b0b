"""A small discord.py bot for testing the emulator itself: commands are added per test.

It syncs its tree in ``setup_hook`` and reports what it saw through ``inbox`` so tests can wait on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import discord
from discord.ext import commands

__all__ = ["GUILD_READY_TIMEOUT", "ProbeBot", "ShardedProbeBot", "probe", "sharded_probe"]

#: discord.py waits this long after the last GUILD_CREATE before on_ready (default 2 s). The emulator sends
#: READY and every GUILD_CREATE back to back, so a tenth of a second is plenty on loopback.
GUILD_READY_TIMEOUT = 0.1


class ProbeBot(commands.Bot):
    def __init__(
        self,
        *,
        intents: discord.Intents | None = None,
        sync: bool = True,
        sync_guilds: tuple[int, ...] = (),
        **options: Any,
    ) -> None:
        options.setdefault("guild_ready_timeout", GUILD_READY_TIMEOUT)
        super().__init__(command_prefix="!", intents=intents or discord.Intents.default(), **options)
        self.sync = sync
        self.sync_guilds = sync_guilds
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.setup_steps: list[Callable[[ProbeBot], Any]] = []

    async def setup_hook(self) -> None:
        for step in self.setup_steps:
            result = step(self)
            if asyncio.iscoroutine(result):
                await result
        if self.sync:
            await self.tree.sync()
            for guild_id in self.sync_guilds:
                await self.tree.sync(guild=discord.Object(guild_id))

    async def on_message(self, message: discord.Message) -> None:
        if message.author != self.user:
            self.report("message", message)

    async def on_guild_join(self, guild: discord.Guild) -> None:
        self.report("guild_join", guild)

    async def on_member_join(self, member: discord.Member) -> None:
        self.report("member_join", member)

    async def on_guild_channel_create(self, channel: discord.abc.GuildChannel) -> None:
        self.report("channel_create", channel)

    async def on_guild_role_create(self, role: discord.Role) -> None:
        self.report("role_create", role)

    async def on_guild_role_update(self, before: discord.Role, after: discord.Role) -> None:
        self.report("role_update", (before, after))

    async def on_guild_role_delete(self, role: discord.Role) -> None:
        self.report("role_delete", role)

    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        self.report("member_update", (before, after))

    def report(self, kind: str, value: Any) -> None:
        self.inbox.put_nowait((kind, value))

    async def take(self, kind: str, timeout: float = 3.0) -> Any:
        """The next report of this kind (others are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                got, value = await self.inbox.get()
                if got == kind:
                    return value


def probe(setup: Callable[[ProbeBot], Any] | None = None, **options: Any) -> Callable[[], ProbeBot]:
    """A factory for ``run_bot``: a fresh ProbeBot with ``setup(bot)`` applied (commands, views...)."""

    def factory() -> ProbeBot:
        bot = ProbeBot(**options)
        if setup is not None:
            setup(bot)
        return bot

    return factory


class ShardedProbeBot(ProbeBot, commands.AutoShardedBot):
    """A :class:`ProbeBot` that runs shards (``shard_count``/``shard_ids`` as discord.py takes them).

    It identifies its shards one after the other without discord.py's default 5 s pause between them: the
    emulator has no identify rate limit.
    """

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        return None


def sharded_probe(**options: Any) -> Callable[[], ShardedProbeBot]:
    """A factory for ``run_bot``: a fresh :class:`ShardedProbeBot` (``shard_count=``, ``shard_ids=``...)."""
    return lambda: ShardedProbeBot(**options)
