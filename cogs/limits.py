"""What /usage and /limits look like: members see their usage; admins set the server's rules.

``/limits`` is hidden from members without Manage Server (``default_permissions``) **and** checked when it
runs, because a server's permission overrides can show it to anyone. The run-time check is attached to every
command under ``/limits``, sub-groups included: discord.py runs only the *direct* parent group's
``interaction_check``, so a check on the top group alone would skip ``/limits channels …``,
``/limits blocklist …`` and ``/limits member …``.

Answers whose length depends on data are fitted into Discord's 2,000 characters (:mod:`cogs.text`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import db
from bot.db import JobStatus
from bot.db.days import next_utc_midnight, next_utc_month
from bot.limits import DM_GUILD_ID, Limits, limits_for
from cogs.feedback import UserFacingError
from cogs.text import MESSAGE_LIMIT, code, fit_lines, shorten

if TYPE_CHECKING:
    from bot.app import FluxBot

__all__ = ["LimitsCog", "setup"]

log = logging.getLogger(__name__)


def _limit(value: int | None) -> str:
    return "no limit" if value is None else str(value)


async def require_manage_guild(interaction: discord.Interaction[Any]) -> bool:
    """The check of every ``/limits`` command: only members with Manage Server, only in a server."""
    if interaction.guild_id is None or not interaction.permissions.manage_guild:
        command = interaction.command.qualified_name if interaction.command else "?"
        log.warning(
            "user %d tried /%s without Manage Server in guild %s", interaction.user.id, command, interaction.guild_id
        )
        raise app_commands.MissingPermissions(["manage_guild"])
    return True


def guard_every_command(group: app_commands.Group) -> None:
    """Attach :func:`require_manage_guild` to every command under ``group``, however deeply nested."""
    for command in group.walk_commands():
        if isinstance(command, app_commands.Command) and require_manage_guild not in command.checks:
            command.add_check(require_manage_guild)


class LimitsGroup(app_commands.Group):
    """``/limits``: the server's rules, for members with Manage Server (see :func:`guard_every_command`)."""

    def __init__(self, cog: LimitsCog) -> None:
        super().__init__(
            name="limits",
            description="See and change how the image bot may be used in this server",
            default_permissions=discord.Permissions(manage_guild=True),
            guild_only=True,
        )
        self.cog = cog


class LimitsCog(commands.Cog, name="Limits"):
    """Usage for members, limits for admins."""

    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.group = _build_limits_group(self)
        self.usage_command = _build_usage_command(self)

    async def cog_load(self) -> None:
        guard_every_command(self.group)  # also any command added to the group since it was built
        self.bot.tree.add_command(self.group)
        self.bot.tree.add_command(self.usage_command)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.group.name)
        self.bot.tree.remove_command(self.usage_command.name)

    async def limits(self, guild_id: int) -> Limits:
        return await limits_for(self.bot.store, self.bot.settings, guild_id)

    # -- /usage ------------------------------------------------------------------------------------

    async def usage(self, interaction: discord.Interaction[FluxBot]) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        store = self.bot.store
        guild_id = interaction.guild_id or DM_GUILD_ID
        limits = await self.limits(guild_id)
        mine = await db.user_usage(store, guild_id, interaction.user.id)
        head = [f"**Your images today:** {mine.today}" + _of(limits.user_daily, mine.today)]
        head.append(f"**This month:** {mine.month}" + _of(limits.user_monthly, mine.month))
        jobs = [
            f"• Job #{job.id} ({job.count} x {job.model}): {await self._job_state(job.id, job.status)}"
            for job in await db.active_jobs(store, guild_id, interaction.user.id)
        ]
        tail = []
        now = store.now()
        if guild_id != DM_GUILD_ID:
            server = await db.guild_usage_today(store, guild_id)
            tail.append(f"**This server today:** {server}" + _of(limits.guild_daily, server))
            if limits.guild_monthly is not None:
                month = await db.guild_usage_month(store, guild_id)
                tail.append(f"**This server this month:** {month}" + _of(limits.guild_monthly, month))
        tail.append(
            f"Up to {limits.max_count} images per request, {_limit(limits.max_concurrent)} jobs at a time"
            + (f", one request every {limits.cooldown:g} s" if limits.cooldown else "")
            + f". Daily counts reset <t:{int(next_utc_midnight(now))}:R>"
            + (
                f", monthly ones <t:{int(next_utc_month(now))}:R>."
                if limits.user_monthly is not None or limits.guild_monthly is not None
                else "."
            )
        )
        # The jobs give way first: the totals and the rules always show.
        room = MESSAGE_LIMIT - len("\n".join(head + tail)) - 2
        lines = [*head, *([fit_lines(jobs, room)] if jobs else []), *tail]
        await interaction.followup.send(fit_lines(lines), ephemeral=True)

    async def _job_state(self, job_id: int, status: JobStatus) -> str:
        if status is JobStatus.QUEUED:
            return f"queued #{await db.queue_position(self.bot.store, job_id)}"
        return {JobStatus.SUBMITTING: "starting", JobStatus.SUBMITTED: "generating"}.get(status, "being posted")

    # -- /limits -----------------------------------------------------------------------------------

    async def show(self, interaction: discord.Interaction[FluxBot]) -> None:
        assert interaction.guild_id is not None
        limits = await self.limits(interaction.guild_id)
        blocked = await db.blocked_members(self.bot.store, interaction.guild_id)
        # The blocked members are mentioned so the admin sees who they are; nobody is pinged.
        await interaction.response.send_message(
            fit_lines([self._describe(limits), _blocked_members_text(blocked)]),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    def _describe(self, limits: Limits, title: str | None = None) -> str:
        """The server's rules, one per line, within a message's length (with ``title`` above them)."""

        def row(label: str, field: str, value: str) -> str:
            origin = "set here" if field in limits.overridden else "default"
            return f"**{label}:** {value} ({origin})"

        # Lists a server can make long are fitted in a share of the message each.
        models = fit_lines(limits.allowed_models, 500, sep=", ") if limits.allowed_models else "all"
        mentions = [f"<#{c}>" for c in limits.allowed_channels or ()]
        channels = fit_lines(mentions, 1000, sep=", ") if mentions else "everywhere"
        return fit_lines(
            [
                *([title] if title else []),
                row("Images per member per day", "user_daily", _limit(limits.user_daily)),
                row("Images for the server per day", "guild_daily", _limit(limits.guild_daily)),
                row("Images per member per month (UTC)", "user_monthly", _limit(limits.user_monthly)),
                row("Images for the server per month (UTC)", "guild_monthly", _limit(limits.guild_monthly)),
                row("Images per request", "max_count", str(limits.max_count)),
                row("Jobs per member at a time", "max_concurrent", _limit(limits.max_concurrent)),
                row("Cooldown", "cooldown_seconds", f"{limits.cooldown:g} s" if limits.cooldown else "none"),
                row("Models", "allowed_models", models),
                row("Channels", "allowed_channels", channels),
                f"**Blocked words and phrases:** {len(limits.blocked_terms)} (see `/limits blocklist list`)",
            ]
        )

    async def change(self, interaction: discord.Interaction[FluxBot], **changes: Any) -> None:
        assert interaction.guild_id is not None
        if not changes:
            raise UserFacingError("Give at least one setting to change.")
        try:
            await db.update_guild_settings(self.bot.store, interaction.guild_id, interaction.user.id, **changes)
        except ValueError as exc:
            raise UserFacingError(str(exc)) from exc
        log.info("guild %d: user %d changed limits %s", interaction.guild_id, interaction.user.id, changes)
        limits = await self.limits(interaction.guild_id)
        await interaction.response.send_message(self._describe(limits, "Updated."), ephemeral=True)

    async def set_models(self, interaction: discord.Interaction[FluxBot], models: str) -> None:
        names = models.replace(",", " ").split()
        if [name.lower() for name in names] == ["all"]:
            await self.change(interaction, allowed_models=None)
            return
        catalog = self.bot.flux.catalog
        unknown = [name for name in names if name not in catalog.names]
        if unknown or not names:
            raise UserFacingError(
                f"Unknown model{'s' if len(unknown) > 1 else ''}: {', '.join(unknown) or '(none given)'}. "
                f"Available: {', '.join(catalog.names)}, or `all`."
            )
        await self.change(interaction, allowed_models=names)

    async def set_channel(
        self, interaction: discord.Interaction[FluxBot], channel_id: int | None, *, allow: bool
    ) -> None:
        assert interaction.guild_id is not None
        current = (await self.limits(interaction.guild_id)).allowed_channels
        if channel_id is None:
            await self.change(interaction, allowed_channels=None)
            return
        channels = list(current or ())
        if allow and channel_id not in channels:
            channels.append(channel_id)
        elif not allow:
            if channel_id not in channels:
                raise UserFacingError(f"<#{channel_id}> is not on the list of allowed channels.")
            channels.remove(channel_id)
            if not channels:
                raise UserFacingError("That is the last allowed channel. Use `/limits channels everywhere` instead.")
        await self.change(interaction, allowed_channels=channels)

    async def blocklist(self, interaction: discord.Interaction[FluxBot], action: str, term: str | None) -> None:
        assert interaction.guild_id is not None
        store, guild_id, user_id = self.bot.store, interaction.guild_id, interaction.user.id
        if action == "list":
            terms = await db.blocked_terms(store, guild_id)
            await interaction.response.send_message(_blocklist_text(terms), ephemeral=True)
            return
        if not term or not db.normalize_term(term):
            raise UserFacingError("Give the word or phrase.")
        if action == "add":
            changed = await db.add_blocked_term(store, guild_id, term, changed_by=user_id)
            text = "Blocked." if changed else "That was already blocked."
        else:
            changed = await db.remove_blocked_term(store, guild_id, term, changed_by=user_id)
            text = "Unblocked." if changed else "That was not blocked."
        if changed:
            log.info(
                "guild %d: user %d %s a blocked term", guild_id, user_id, "added" if action == "add" else "removed"
            )
        await interaction.response.send_message(text, ephemeral=True)

    async def block(
        self, interaction: discord.Interaction[FluxBot], member: discord.abc.User, reason: str | None
    ) -> None:
        assert interaction.guild_id is not None
        store, guild_id, user_id = self.bot.store, interaction.guild_id, interaction.user.id
        if member.bot:
            raise UserFacingError("Bots cannot use the image commands; there is nothing to block.")
        if member.id == user_id:
            raise UserFacingError("You cannot block yourself.")
        changed = await db.block_member(store, guild_id, member.id, reason=reason, changed_by=user_id)
        if changed:
            log.info("guild %d: user %d blocked member %d", guild_id, user_id, member.id)
        stored = db.normalize_reason(reason)
        text = (
            f"{member.mention} is blocked here"
            + (f" (reason: {stored})" if stored else " (no reason given)")
            + ("." if changed else "; that was already so.")
        )
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    async def unblock(self, interaction: discord.Interaction[FluxBot], member: discord.abc.User) -> None:
        assert interaction.guild_id is not None
        store, guild_id, user_id = self.bot.store, interaction.guild_id, interaction.user.id
        changed = await db.unblock_member(store, guild_id, member.id, changed_by=user_id)
        if changed:
            log.info("guild %d: user %d unblocked member %d", guild_id, user_id, member.id)
        text = f"{member.mention} is no longer blocked here." if changed else f"{member.mention} was not blocked here."
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    async def reset(self, interaction: discord.Interaction[FluxBot]) -> None:
        assert interaction.guild_id is not None
        await db.reset_guild_settings(self.bot.store, interaction.guild_id, interaction.user.id)
        log.info("guild %d: user %d reset the limits to the defaults", interaction.guild_id, interaction.user.id)
        limits = await self.limits(interaction.guild_id)
        await interaction.response.send_message(self._describe(limits, "Back to the defaults."), ephemeral=True)


def _blocklist_text(terms: list[str]) -> str:
    if not terms:
        return "No words or phrases are blocked."
    head = f"Blocked ({len(terms)}): "
    return head + fit_lines([code(term) for term in terms], MESSAGE_LIMIT - len(head), sep=", ")


def _blocked_members_text(blocked: list[db.BlockedMember]) -> str:
    """The blocked members for ``/limits show``, as mentions with their reasons, within a share of the message."""
    if not blocked:
        return "**Blocked members:** none"
    entries = [f"<@{b.user_id}>" + (f" ({shorten(b.reason, 100)})" if b.reason else "") for b in blocked]
    return f"**Blocked members ({len(blocked)}):** " + fit_lines(entries, 600, sep=", ")


def _of(limit: int | None, used: int) -> str:
    return "" if limit is None else f" of {limit} ({max(0, limit - used)} left)"


def _build_usage_command(cog: LimitsCog) -> app_commands.Command[Any, ..., Any]:
    @app_commands.command(name="usage", description="Your image usage, limits and jobs in progress")
    async def usage(interaction: discord.Interaction[FluxBot]) -> None:
        await cog.usage(interaction)

    return usage


def _build_limits_group(cog: LimitsCog) -> LimitsGroup:
    group = LimitsGroup(cog)
    channels = app_commands.Group(name="channels", description="Where the bot may be used", parent=group)
    blocklist = app_commands.Group(name="blocklist", description="Words and phrases refused in prompts", parent=group)
    member = app_commands.Group(name="member", description="Rules for one member", parent=group)

    @group.command(name="show", description="This server's current limits")
    async def show(interaction: discord.Interaction[FluxBot]) -> None:
        await cog.show(interaction)

    @group.command(name="set", description="Change limits; 0 means no limit (only the options given change)")
    @app_commands.describe(
        user_daily="Images per member per day (0: no limit)",
        guild_daily="Images for the whole server per day (0: no limit)",
        max_count="Images per request",
        max_concurrent="Jobs per member at a time (0: no limit)",
        cooldown="Seconds between a member's requests (0: none)",
        user_monthly="Images per member per calendar month, UTC (0: no limit)",
        guild_monthly="Images for the whole server per calendar month, UTC (0: no limit)",
    )
    async def set_(  # noqa: PLR0917 - one parameter per command option
        interaction: discord.Interaction[FluxBot],
        user_daily: app_commands.Range[int, 0, 100_000] | None = None,
        guild_daily: app_commands.Range[int, 0, 1_000_000] | None = None,
        max_count: app_commands.Range[int, 1, 4] | None = None,
        max_concurrent: app_commands.Range[int, 0, 100] | None = None,
        cooldown: app_commands.Range[int, 0, 86_400] | None = None,
        user_monthly: app_commands.Range[int, 0, 10_000_000] | None = None,
        guild_monthly: app_commands.Range[int, 0, 100_000_000] | None = None,
    ) -> None:
        given = {
            "user_daily": user_daily,
            "guild_daily": guild_daily,
            "max_count": max_count,
            "max_concurrent": max_concurrent,
            "cooldown_seconds": cooldown,
            "user_monthly": user_monthly,
            "guild_monthly": guild_monthly,
        }
        await cog.change(interaction, **{name: value for name, value in given.items() if value is not None})

    @group.command(name="models", description="Allow only these models (space-separated), or `all`")
    async def models(interaction: discord.Interaction[FluxBot], allowed: str) -> None:
        await cog.set_models(interaction, allowed)

    @channels.command(name="add", description="Allow the bot in this channel (then only in the listed ones)")
    async def channels_add(interaction: discord.Interaction[FluxBot], channel: discord.TextChannel) -> None:
        await cog.set_channel(interaction, channel.id, allow=True)

    @channels.command(name="remove", description="Stop allowing the bot in this channel")
    async def channels_remove(interaction: discord.Interaction[FluxBot], channel: discord.TextChannel) -> None:
        await cog.set_channel(interaction, channel.id, allow=False)

    @channels.command(name="everywhere", description="Allow the bot in every channel again")
    async def channels_everywhere(interaction: discord.Interaction[FluxBot]) -> None:
        await cog.set_channel(interaction, None, allow=True)

    @blocklist.command(name="add", description="Refuse prompts containing this word or phrase")
    async def blocklist_add(interaction: discord.Interaction[FluxBot], term: str) -> None:
        await cog.blocklist(interaction, "add", term)

    @blocklist.command(name="remove", description="Stop refusing this word or phrase")
    async def blocklist_remove(interaction: discord.Interaction[FluxBot], term: str) -> None:
        await cog.blocklist(interaction, "remove", term)

    @blocklist.command(name="list", description="The blocked words and phrases")
    async def blocklist_list(interaction: discord.Interaction[FluxBot]) -> None:
        await cog.blocklist(interaction, "list", None)

    @member.command(name="block", description="Refuse every image request of this member here")
    @app_commands.describe(member="The member to block", reason="Told to the member when they are refused")
    async def member_block(
        interaction: discord.Interaction[FluxBot],
        member: discord.User,
        reason: app_commands.Range[str, 1, db.MAX_BLOCK_REASON] | None = None,
    ) -> None:
        await cog.block(interaction, member, reason)

    @member.command(name="unblock", description="Serve this member again")
    @app_commands.describe(member="The member to unblock")
    async def member_unblock(interaction: discord.Interaction[FluxBot], member: discord.User) -> None:
        await cog.unblock(interaction, member)

    @group.command(name="reset", description="Back to the bot's default limits (the blocklist stays)")
    async def reset(interaction: discord.Interaction[FluxBot]) -> None:
        await cog.reset(interaction)

    return group


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(LimitsCog(bot))
