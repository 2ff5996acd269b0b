"""Where discord.py sends its REST calls and opens its gateway.

discord.py keeps both as class attributes. Setting them from ``DISCORD_API_BASE`` and
``DISCORD_GATEWAY_URL`` lets an operator run the bot behind a REST or gateway proxy, and lets the tests
run the unmodified bot against a Discord emulator on loopback.
"""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl

__all__ = ["point_discord_at"]


def point_discord_at(api_base: str, gateway_url: str) -> None:
    """Send discord.py's REST calls to ``api_base`` and open its gateway at ``gateway_url``.

    Never call ``discord.http._set_api_version`` afterwards: it resets the REST base.
    """
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
