"""What /settings looks like: a member's own defaults for /imagine and /edit.

Defaults are the member's, not a server's: they are kept once for every server and checked, when set, only
against what the bot offers (its model catalog). Whether a server allows one is decided where and when it is
used (:func:`cogs.imagine.generate_options`); ``/settings show`` tells the member how that turns out where they
ask. Every answer is for the member alone (ephemeral) and in their language.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import db
from bot.db import MemberSettings
from bot.flux import MAX_COUNT, InvalidParameters, ModelCatalog
from bot.flux.catalog import check_size
from bot.i18n import tr
from bot.limits import DM_GUILD_ID, member_limits
from cogs.feedback import UserFacingError
from cogs.imagine import DefaultUse, generate_options, member_of, model_choices, size_choices

if TYPE_CHECKING:
    from bot.app import FluxBot

__all__ = ["SettingsCog", "setup"]

log = logging.getLogger(__name__)

Locale = discord.Locale | str | None


class SettingsCog(commands.Cog, name="Settings"):
    """A member's own defaults."""

    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.catalog: ModelCatalog = bot.flux.catalog
        self.group = _build_settings_group(self)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.group)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.group.name)

    async def show(self, interaction: discord.Interaction[FluxBot]) -> None:
        own = await db.get_member_settings(self.bot.store, interaction.user.id)
        await self._answer(interaction, None, own)

    async def set(
        self,
        interaction: discord.Interaction[FluxBot],
        *,
        model: str | None,
        size: str | None,
        count: int | None,
    ) -> None:
        """Change the defaults given (the others stay), refusing what the bot's models cannot do."""
        locale = interaction.locale
        given = db.MemberSettingsChanges()
        if model is not None:
            given["model"] = model
        if size is not None:
            given["size"] = size
        if count is not None:
            given["count"] = count
        if not given:
            raise UserFacingError(tr(locale, "Give at least one default to change: model, size or count."))
        try:
            own = await db.update_member_settings(
                self.bot.store,
                interaction.user.id,
                check=_catalog_check(self.catalog, locale, given=frozenset(given)),
                **given,
            )
        except ValueError as exc:  # a value of the wrong shape: Discord's choices and ranges keep these out
            raise UserFacingError(tr(locale, "That is not a default the bot can keep: {problem}", problem=exc)) from exc
        log.info("user %d set their defaults: %s", interaction.user.id, given)
        await self._answer(interaction, tr(locale, "Your defaults are saved."), own)

    async def reset(self, interaction: discord.Interaction[FluxBot]) -> None:
        locale = interaction.locale
        dropped = await db.reset_member_settings(self.bot.store, interaction.user.id)
        if dropped:
            log.info("user %d reset their defaults", interaction.user.id)
        title = (
            tr(locale, "Your defaults are cleared: the bot's apply again.")
            if dropped
            else tr(locale, "You had no defaults of your own: the bot's apply.")
        )
        await self._answer(interaction, title, db.MemberSettings(interaction.user.id))

    async def _answer(self, interaction: discord.Interaction[FluxBot], title: str | None, own: MemberSettings) -> None:
        """The member's defaults as they stand, and how each fares where they ask (after ``title``, if any)."""
        locale = interaction.locale
        limits = await member_limits(
            self.bot.store, self.bot.settings, interaction.guild_id or DM_GUILD_ID, member_of(interaction)
        )
        options = generate_options(self.catalog, own, limits, model=None, size=None, count=None)
        uses = {use.option: use for use in options.defaults}
        lines = [title] if title else []
        lines.append(
            tr(locale, "**Your defaults** (the same in every server):")
            if not own.is_empty
            else tr(locale, "**Your defaults:** none of your own yet; `/settings set` chooses them.")
        )
        lines.append(_model_line(locale, uses.get("model"), options.model))
        assert options.size is not None
        lines.append(_size_line(locale, uses.get("size"), options.size))
        lines.append(_count_line(locale, uses.get("count"), options.count))
        lines.extend(f"⚠️ {note}" for note in options.notes(locale))
        await interaction.response.send_message(
            "\n".join(lines), ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )


def _model_line(locale: Locale, use: DefaultUse | None, used: str) -> str:
    if use is None:
        return tr(locale, "**Model:** {model} (the bot's default)", model=used)
    if use.unused is None:
        return tr(locale, "**Model:** {model} (yours, used here)", model=use.default)
    return tr(locale, "**Model:** {model} (yours, not used here)", model=use.default)


def _size_line(locale: Locale, use: DefaultUse | None, used: str) -> str:
    if use is None:
        return tr(locale, "**Size:** {size} (the bot's default)", size=used)
    if use.unused is None:
        return tr(locale, "**Size:** {size} (yours, used here)", size=use.default)
    return tr(locale, "**Size:** {size} (yours, not used here)", size=use.default)


def _count_line(locale: Locale, use: DefaultUse | None, used: int) -> str:
    if use is None:
        return tr(locale, "**Images per request:** {count} (the bot's default)", count=used)
    if use.unused is None:
        return tr(locale, "**Images per request:** {count} (yours, used here)", count=use.default)
    return tr(locale, "**Images per request:** {count} (yours, not used here)", count=use.default)


def _catalog_check(catalog: ModelCatalog, locale: Locale, *, given: frozenset[str]) -> Callable[[MemberSettings], None]:
    """The check of the defaults a member would have after a change: a model the bot offers, a size that model
    (or, without a default model, the bot's) can make, and no more images than it makes at once.

    Only the catalog counts, not the server where they ask: defaults are kept for every server. A stored default
    the change would leave unusable (a size the newly chosen model cannot make) is refused too, naming it.
    """

    def check(merged: MemberSettings) -> None:
        if merged.model is not None and merged.model not in catalog.names:
            raise UserFacingError(
                tr(
                    locale,
                    "The bot has no model {model}. Models: {models}.",
                    model=merged.model,
                    models=", ".join(catalog.names),
                )
            )
        spec = catalog.get(merged.model or catalog.default_model)
        if merged.size is not None:
            try:
                check_size(spec, merged.size)
            except InvalidParameters:
                values = {"size": merged.size, "model": spec.name, "sizes": ", ".join(spec.sizes)}
                if "size" in given:
                    raise UserFacingError(
                        tr(locale, "{model} cannot make the size {size}. Sizes it can make: {sizes}.", **values)
                    ) from None
                raise UserFacingError(
                    tr(
                        locale,
                        "{model} cannot make your default size {size}. Choose a size it can make in the same "
                        "command: {sizes}.",
                        **values,
                    )
                ) from None
        if merged.count is not None and merged.count > spec.max_count:
            raise UserFacingError(
                tr(
                    locale,
                    "Images at once with {model}: at most {limit}, so a default of {count} cannot be used with it.",
                    model=spec.name,
                    limit=spec.max_count,
                    count=merged.count,
                )
            )

    return check


def _build_settings_group(cog: SettingsCog) -> app_commands.Group:
    catalog = cog.catalog
    group = app_commands.Group(
        name="settings",
        description="Your own defaults for /imagine and /edit, the same in every server",
        allowed_contexts=app_commands.AppCommandContext(
            guild=True, dm_channel=cog.bot.settings.allow_dms, private_channel=False
        ),
    )

    @group.command(name="show", description="Your defaults, and whether this server allows them")
    async def show(interaction: discord.Interaction[FluxBot]) -> None:
        await cog.show(interaction)

    @group.command(name="set", description="Choose your defaults (only the options given change)")
    @app_commands.describe(
        model="The model to use when you leave it out",
        size="The aspect ratio or size to use when you leave it out",
        count="How many images to make when you leave it out",
    )
    @app_commands.choices(model=model_choices(catalog), size=size_choices(catalog))
    async def set_(
        interaction: discord.Interaction[FluxBot],
        model: str | None = None,
        size: str | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
    ) -> None:
        await cog.set(interaction, model=model, size=size, count=count)

    @group.command(name="reset", description="Forget your defaults: the bot's apply again")
    async def reset(interaction: discord.Interaction[FluxBot]) -> None:
        await cog.reset(interaction)

    return group


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(SettingsCog(bot))
