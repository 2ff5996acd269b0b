"""The composition root: ``fluxbot`` and ``python -m bot`` start here.

``main()`` loads the settings, opens the HTTP session, the database and the Flux client, builds the bot
with them, and closes everything on exit.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import discord

from bot.app import open_bot
from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, load_settings

log = logging.getLogger("bot")

#: Exit status for a configuration the bot cannot start with (like a missing required variable).
EXIT_CONFIG = 2


async def main(settings: Settings) -> None:
    """Run the bot until it is stopped."""
    async with open_bot(settings) as bot:
        await bot.start(settings.discord_token.get_secret_value())


def run() -> None:
    """Entry point of the ``fluxbot`` console script."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"fluxbot: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    configure_logging(settings.log_level, [settings.discord_token, settings.flux_api_key])
    try:
        asyncio.run(main(settings))
    except KeyboardInterrupt:
        log.info("stopped")
    except discord.LoginFailure:
        print(
            "fluxbot: Discord refused DISCORD_TOKEN; copy the bot token again from the developer portal",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_CONFIG) from None


if __name__ == "__main__":
    run()
