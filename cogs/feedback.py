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
from bot.i18n import N_, Text, say, tr
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

#: The answer to an error the bot did not expect (its message id; shown with :func:`tr`).
UNEXPECTED_ERROR = N_("Something went wrong on the bot's side. The operators can see what in the log.")
#: What a request to Discord raises when the connection, not Discord, failed (dropped, reset, timed out).
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
#: Everything a request to Discord raises when it failed: Discord's answer, or the connection.
DISCORD_ERRORS = (discord.HTTPException, *TRANSPORT_ERRORS)

#: The answer when the database stayed too busy to take a request (its message id; shown with :func:`tr`).
BUSY = N_("The bot is very busy right now and could not take this request. Nothing was charged; please try again.")


class UserFacingError(Exception):
    """Raised by command code to refuse a request; :attr:`text` is shown to the member, in their language.

    Code deep in a request does not know who reads the refusal, so it gives a :class:`~bot.i18n.Text`
    (:func:`~bot.i18n.lazy`) and the answer renders it; ``str()`` is the English text, for logs.
    """

    def __init__(self, text: Text | str) -> None:
        super().__init__(str(text))
        self.text = text


def user_message_for(error: BaseException, locale: discord.Locale | str | None) -> str | None:
    """The message for one of *our* errors in ``locale``'s language, or None for anything unexpected."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, UserFacingError):
        return say(locale, error.text)
    if isinstance(error, FluxError | ImageError):
        return say(locale, error.user_message)
    if isinstance(error, app_commands.CheckFailure):
        return tr(locale, "You don't have permission to do that here.")
    if isinstance(error, db.StoreBusyError):
        log.warning("refused a request: %s", error)
        return tr(locale, BUSY)
    return None


def explain(error: BaseException, where: str, locale: discord.Locale | str | None) -> str:
    """What to tell the member about ``error``, which happened in ``where`` (for the log), in ``locale``'s
    language.

    Our own errors become their short message; anything else is logged once, with its traceback, and
    the member gets a generic apology — never a traceback. Never longer than a message may be.
    """
    message = user_message_for(error, locale)
    if message is None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        log.error("unhandled error in %s", where, exc_info=cause)
        message = tr(locale, UNEXPECTED_ERROR)
    return shorten(message, MESSAGE_LIMIT)


async def reply_with_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Tell the member what went wrong (see :func:`explain`), ephemerally and in their client's language,
    whether or not the interaction was answered yet."""
    message = explain(error, f"interaction {interaction.id}", interaction.locale)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True)
        else:
            await interaction.response.send_message(message, ephemeral=True)
    except DISCORD_ERRORS as exc:
        log.warning("could not tell the member about an error in interaction %s: %s", interaction.id, exc)


def describe_refusal(refusal: Refusal, locale: discord.Locale | str | None) -> str:
    """The member's explanation of a rule that refused their request (never naming a blocked term), in
    ``locale``'s language; channels, roles and models are named as Discord and the bot name them."""
    allowed = refusal.allowed
    match refusal.kind:
        case RefusalKind.DMS_OFF:
            text = tr(locale, "The bot does not take requests in direct messages. Use it in a server.")
        case RefusalKind.CHANNEL:
            channels = fit_lines([f"<#{channel}>" for channel in allowed], 1000, sep=", ", locale=locale)
            text = tr(locale, "The bot is not used in this channel here. Try {channels}.", channels=channels)
        case RefusalKind.MODEL:
            models = fit_lines(allowed, 1000, sep=", ", locale=locale)
            text = tr(locale, "That model is not allowed in this server. Allowed: {models}.", models=models)
        case RefusalKind.COUNT:
            text = tr(locale, "Too many images for one request: this server allows at most {count}.", count=allowed[0])
        case RefusalKind.BLOCKED_TERM:
            text = tr(locale, "This server does not allow a word or phrase in that prompt. Please rephrase it.")
        case RefusalKind.MEMBER_BLOCKED if allowed:
            text = tr(locale, "You are blocked from using the bot in this server. Reason: {reason}", reason=allowed[0])
        case RefusalKind.MEMBER_BLOCKED:
            text = tr(locale, "You are blocked from using the bot in this server.")
        case RefusalKind.ACCESS if allowed:
            roles = fit_lines([f"<@&{role}>" for role in allowed], 1000, sep=", ", locale=locale)
            text = tr(locale, "Only members with one of these roles may use the bot here: {roles}.", roles=roles)
        case RefusalKind.ACCESS:  # every listed role was deleted since
            text = tr(locale, "Only members with certain roles may use the bot here. Ask a server admin.")
    return text


def describe_quota_refusal(refusal: QuotaRefusal, locale: discord.Locale | str | None) -> str:
    """Which limit stopped the request and when it resets (a Discord relative timestamp), in ``locale``'s
    language. The counts stand alone ("Your images today: 3 of 5"), so no word has to agree with them."""
    values = {"current": int(refusal.current), "limit": int(refusal.limit), "requested": refusal.requested}
    more = refusal.requested > 1
    match refusal.kind:
        case db.LimitKind.USER_DAILY if more:
            text = tr(
                locale,
                "Daily limit reached. Your images today: {current} of {limit}; this request asks for {requested}.",
                **values,
            )
        case db.LimitKind.USER_DAILY:
            text = tr(locale, "Daily limit reached. Your images today: {current} of {limit}.", **values)
        case db.LimitKind.GUILD_DAILY:
            text = tr(
                locale, "This server's daily limit is reached. Images used here today: {current} of {limit}.", **values
            )
        case db.LimitKind.MAX_CONCURRENT:
            text = tr(locale, "Jobs in progress: {current}; the limit is {limit}. Wait for one to finish.", **values)
        case db.LimitKind.COOLDOWN:
            text = tr(locale, "Cooldown: this server allows one request every {limit} s.", **values)
        case db.LimitKind.USER_MONTHLY if more:
            text = tr(
                locale,
                "Monthly limit reached. Your images this month: {current} of {limit}; "
                "this request asks for {requested}.",
                **values,
            )
        case db.LimitKind.USER_MONTHLY:
            text = tr(locale, "Monthly limit reached. Your images this month: {current} of {limit}.", **values)
        case db.LimitKind.GUILD_MONTHLY:
            text = tr(
                locale,
                "This server's monthly limit is reached. Images used here this month: {current} of {limit}.",
                **values,
            )
    if not refusal.resets_at:
        return text
    # The sentence about the limit is a value, so each language joins the two sentences its own way.
    when = f"<t:{int(refusal.resets_at)}:R>"
    return tr(locale, "{refusal} It resets {when}.", refusal=text, when=when)
