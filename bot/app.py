"""The Discord client of fluxbot, built from the engine's parts by :func:`create_bot`."""

from __future__ import annotations

import logging

import aiohttp
import discord
from discord.ext import commands

from bot.db import Store
from bot.flux import FluxClient
from bot.settings import Settings
from cogs import EXTENSIONS

__all__ = ["FluxBot", "create_bot"]

log = logging.getLogger(__name__)


class FluxBot(commands.Bot):
    """The bot: holds the engine's shared parts so cogs use them instead of opening their own."""

    def __init__(
        self,
        *,
        settings: Settings,
        session: aiohttp.ClientSession,
        store: Store,
        flux: FluxClient,
        intents: discord.Intents,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            # The bot needs no member list; skipping the chunking makes start-up fast and cheap.
            chunk_guilds_at_startup=False,
            help_command=None,
        )
        self.settings = settings
        self.session = session
        self.store = store
        self.flux = flux

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        log.info("loaded %d extensions", len(EXTENSIONS))


def create_bot(settings: Settings, *, session: aiohttp.ClientSession, store: Store, flux: FluxClient) -> FluxBot:
    """The bot, wired to the engine. Performs no I/O: :meth:`FluxBot.start` connects."""
    intents = discord.Intents.default()
    return FluxBot(settings=settings, session=session, store=store, flux=flux, intents=intents)
