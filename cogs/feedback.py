"""Telling members what went wrong: the one error policy of every command, button and modal."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.flux import FluxError
from bot.images import ImageError

__all__ = ["UNEXPECTED_ERROR", "UserFacingError", "reply_with_error", "user_message_for"]

log = logging.getLogger(__name__)

UNEXPECTED_ERROR = "Something went wrong on the bot's side. The operators can see what in the log."


class UserFacingError(Exception):
    """Raised by command code to refuse a request; ``str()`` is shown to the member as it is."""


def user_message_for(error: BaseException) -> str | None:
    """The message for one of *our* errors, or None for anything unexpected."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, UserFacingError):
        return str(error)
    if isinstance(error, FluxError | ImageError):
        return error.user_message
    if isinstance(error, app_commands.CheckFailure):
        return "You don't have permission to do that here."
    return None


async def reply_with_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Tell the member what went wrong, ephemerally, whether or not the interaction was answered yet.

    Our own errors become their short message; anything else is logged once, with its traceback, and
    the member gets a generic apology — never a traceback.
    """
    message = user_message_for(error)
    if message is None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        log.error("unhandled error in interaction %s", interaction.id, exc_info=cause)
        message = UNEXPECTED_ERROR
    try:
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell the member about an error in interaction %s: %s", interaction.id, exc)
