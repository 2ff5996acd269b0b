"""Telling members what went wrong: the one error policy of every command, button and modal."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bot import db
from bot.db import QuotaRefusal
from bot.flux import FluxError
from bot.images import ImageError
from bot.limits import Refusal, RefusalKind
from cogs.text import MESSAGE_LIMIT, fit_lines, shorten

__all__ = [
    "BUSY",
    "DISCORD_ERRORS",
    "TRANSPORT_ERRORS",
    "UNEXPECTED_ERROR",
    "UserFacingError",
    "describe_quota_refusal",
    "describe_refusal",
    "explain",
    "reply_with_error",
    "user_message_for",
]

log = logging.getLogger(__name__)

UNEXPECTED_ERROR = "Something went wrong on the bot's side. The operators can see what in the log."
#: What a request to Discord raises when the connection, not Discord, failed (dropped, reset, timed out).
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
#: Everything a request to Discord raises when it failed: Discord's answer, or the connection.
DISCORD_ERRORS = (discord.HTTPException, *TRANSPORT_ERRORS)

BUSY = "The bot is very busy right now and could not take this request. Nothing was charged; please try again."


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
    if isinstance(error, db.StoreBusyError):
        log.warning("refused a request: %s", error)
        return BUSY
    return None


def explain(error: BaseException, where: str) -> str:
    """What to tell the member about ``error``, which happened in ``where`` (for the log).

    Our own errors become their short message; anything else is logged once, with its traceback, and
    the member gets a generic apology — never a traceback. Never longer than a message may be.
    """
    message = user_message_for(error)
    if message is None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        log.error("unhandled error in %s", where, exc_info=cause)
        message = UNEXPECTED_ERROR
    return shorten(message, MESSAGE_LIMIT)


async def reply_with_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Tell the member what went wrong (see :func:`explain`), ephemerally, whether or not the interaction
    was answered yet."""
    message = explain(error, f"interaction {interaction.id}")
    try:
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except DISCORD_ERRORS as exc:
        log.warning("could not tell the member about an error in interaction %s: %s", interaction.id, exc)


def describe_refusal(refusal: Refusal) -> str:
    """The member's explanation of a rule that refused their request (never naming a blocked term)."""
    allowed = refusal.allowed
    match refusal.kind:
        case RefusalKind.DMS_OFF:
            text = "The bot does not take requests in direct messages. Use it in a server."
        case RefusalKind.CHANNEL:
            channels = fit_lines([f"<#{channel}>" for channel in allowed], 1000, sep=", ")
            text = f"The bot is not used in this channel here. Try {channels}."
        case RefusalKind.MODEL:
            text = f"That model is not allowed in this server. Allowed: {fit_lines(allowed, 1000, sep=', ')}."
        case RefusalKind.COUNT:
            text = f"This server allows at most {allowed[0]} image{'' if allowed[0] == '1' else 's'} per request."
        case RefusalKind.BLOCKED_TERM:
            text = "This server does not allow a word or phrase in that prompt. Please rephrase it."
        case RefusalKind.MEMBER_BLOCKED:
            text = "You are blocked from using the bot in this server." + (f" Reason: {allowed[0]}" if allowed else "")
        case RefusalKind.ACCESS if allowed:
            roles = fit_lines([f"<@&{role}>" for role in allowed], 1000, sep=", ")
            text = f"Only members with one of these roles may use the bot here: {roles}."
        case RefusalKind.ACCESS:  # every listed role was deleted since
            text = "Only members with certain roles may use the bot here. Ask a server admin."
    return text


def describe_quota_refusal(refusal: QuotaRefusal) -> str:
    """Which limit stopped the request and when it resets, as a Discord relative timestamp."""
    when = f" It resets <t:{int(refusal.resets_at)}:R>." if refusal.resets_at else ""
    limit, current = int(refusal.limit), int(refusal.current)
    match refusal.kind:
        case db.LimitKind.USER_DAILY:
            text = f"Daily limit reached: you have used {current} of your {limit} images today"
            text += f" and asked for {refusal.requested} more." if refusal.requested > 1 else "."
        case db.LimitKind.GUILD_DAILY:
            text = f"This server's daily limit is reached: {current} of {limit} images used today."
        case db.LimitKind.MAX_CONCURRENT:
            text = f"You already have {current} jobs in progress; the limit is {limit}. Wait for one to finish."
        case db.LimitKind.COOLDOWN:
            text = f"Cooldown: this server allows one request every {limit} s."
        case db.LimitKind.USER_MONTHLY:
            text = f"Monthly limit reached: you have used {current} of your {limit} images this month"
            text += f" and asked for {refusal.requested} more." if refusal.requested > 1 else "."
        case db.LimitKind.GUILD_MONTHLY:
            text = f"This server's monthly limit is reached: {current} of {limit} images used this month."
    return text + when
