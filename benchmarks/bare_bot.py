"""The floor of the acknowledgement figures: a discord.py bot that only defers ``/imagine``.

    DISCORD_TOKEN=... DISCORD_API_BASE=... DISCORD_GATEWAY_URL=... python -m benchmarks.bare_bot

It has the same ``/imagine`` parameters as fluxbot, answers every one with the same deferral (ephemeral,
thinking) and does nothing else: no database, no job, no status line. Whatever fluxbot's acknowledgements take
beyond this bot's is fluxbot's own. It does not sync commands (fluxbot registered ``/imagine`` with the
Discord it runs against) and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal

import discord
from discord import app_commands

from bot.endpoints import point_discord_at


class BareBot(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), chunk_guilds_at_startup=False)
        self.tree = app_commands.CommandTree(self)

        @self.tree.command(name="imagine", description="Generate images from a text prompt")
        async def imagine(
            interaction: discord.Interaction,
            prompt: str,
            model: str | None = None,
            size: str | None = None,
            count: int = 1,
        ) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)


async def main() -> None:
    point_discord_at(os.environ["DISCORD_API_BASE"], os.environ["DISCORD_GATEWAY_URL"])
    client = BareBot()
    loop = asyncio.get_running_loop()
    closing: set[asyncio.Task[None]] = set()
    loop.add_signal_handler(signal.SIGTERM, lambda: closing.add(loop.create_task(client.close())))
    async with client:
        await client.start(os.environ["DISCORD_TOKEN"])


if __name__ == "__main__":
    asyncio.run(main())
