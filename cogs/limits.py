"""What /usage and /limits look like: members see their usage; admins set the server's rules.

``/limits`` is hidden from members without Manage Server (``default_permissions``) **and** checked when it
runs, because a server's permission overrides can show it to anyone. The run-time check is attached to every
command under ``/limits``, sub-groups included: discord.py runs only the *direct* parent group's
``interaction_check``, so a check on the top group alone would skip ``/limits channels …``,
``/limits blocklist …``, ``/limits member …`` and the other sub-groups.

Role and member rules, access roles and blocks are changed here; what they mean for one member is computed
in :mod:`bot.limits` only. No answer or report pings anyone: mentions in them only name.

Every answer is in the language of the member who asked (``interaction.locale``, see :mod:`bot.i18n`): a
member's /usage in theirs, an admin's /limits answers and report in the admin's.

Answers whose length depends on data are fitted into Discord's 2,000 characters (:mod:`cogs.text`).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import db
from bot.db import JobStatus
from bot.db.alerts import alert_channel, set_alert_channel
from bot.db.days import next_utc_midnight, next_utc_month
from bot.db.report import usage_report
from bot.db.rules import RuleChanges, RuleOverrides
from bot.i18n import N_, tr
from bot.limits import DM_GUILD_ID, Limits, Origin, limits_for, member_limits
from bot.report import render_report, report_summary
from cogs.feedback import DISCORD_ERRORS, UserFacingError
from cogs.imagine import member_of
from cogs.text import MESSAGE_LIMIT, code, fit_lines, pages, shorten

if TYPE_CHECKING:
    from bot.app import FluxBot

__all__ = ["LimitsCog", "setup"]

log = logging.getLogger(__name__)

#: The locale an answer is written in (``interaction.locale``); see :func:`bot.i18n.tr`.
Locale = discord.Locale | str | None


def _limit(locale: Locale, value: int | None) -> str:
    return tr(locale, "no limit") if value is None else str(value)


def _cooldown(locale: Locale, seconds: float) -> str:
    if not seconds:
        return tr(locale, "none")
    shown = format(seconds, "g")
    return tr(locale, "{seconds} s", seconds=shown)


#: How /limits calls each field of a role or member rule, in the order shown; the value is a number, "no
#: limit" or (cooldown) a duration or "none".
_RULE_PARTS: Mapping[str, str] = {
    "user_daily": N_("images a day: {value}"),
    "user_monthly": N_("images a month: {value}"),
    "max_count": N_("images per request: {value}"),
    "max_concurrent": N_("jobs at a time: {value}"),
    "cooldown_seconds": N_("cooldown: {value}"),
}


def _rule_text(locale: Locale, rule: RuleOverrides) -> str:
    """A rule in one line: "images a day: 5, images a month: no limit, cooldown: 10 s" (the number comes after
    its label, so that no word has to agree with it)."""
    parts = []
    for name, value in rule.fields().items():
        if name == "cooldown_seconds":
            shown = _cooldown(locale, value)
        elif value == 0 and name != "max_count":
            shown = _limit(locale, None)
        else:
            shown = f"{value:g}"
        parts.append(tr(locale, _RULE_PARTS[name], value=shown))
    return ", ".join(parts)


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


#: /usage's count lines: (without a limit, with one).
_TODAY = (N_("**Your images today:** {used}"), N_("**Your images today:** {used} of {limit} ({left} left)"))
_MONTH = (N_("**This month:** {used}"), N_("**This month:** {used} of {limit} ({left} left)"))
_SERVER_TODAY = (
    N_("**This server today:** {used}"),
    N_("**This server today:** {used} of {limit} ({left} left)"),
)
_SERVER_MONTH = (
    N_("**This server this month:** {used}"),
    N_("**This server this month:** {used} of {limit} ({left} left)"),
)


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
        locale = interaction.locale
        store = self.bot.store
        guild_id = interaction.guild_id or DM_GUILD_ID
        limits = await member_limits(store, self.bot.settings, guild_id, member_of(interaction))
        mine = await db.user_usage(store, guild_id, interaction.user.id)
        head = [
            _count(locale, _TODAY, mine.today, limits.user_daily),
            _count(locale, _MONTH, mine.month, limits.user_monthly),
        ]
        jobs = [
            tr(
                locale,
                "• Job #{job} ({count} x {model}): {state}",
                job=job.id,
                count=job.count,
                model=job.model,
                state=await self._job_state(locale, job.id, job.status),
            )
            for job in await db.active_jobs(store, guild_id, interaction.user.id)
        ]
        tail = []
        now = store.now()
        if guild_id != DM_GUILD_ID:
            server = await db.guild_usage_today(store, guild_id)
            tail.append(_count(locale, _SERVER_TODAY, server, limits.guild_daily))
            if limits.guild_monthly is not None:
                month = await db.guild_usage_month(store, guild_id)
                tail.append(_count(locale, _SERVER_MONTH, month, limits.guild_monthly))
        tail.append(tr(locale, "**Your limits here:**"))
        tail.extend(
            tr(locale, "• {label}: {value} ({origin})", label=tr(locale, label), value=value, origin=origin)
            for label, value, origin in _member_rows(locale, limits)
        )
        daily = int(next_utc_midnight(now))
        if limits.user_monthly is not None or limits.guild_monthly is not None:
            monthly = int(next_utc_month(now))
            tail.append(
                tr(
                    locale,
                    "Daily counts reset <t:{daily}:R>, monthly ones <t:{monthly}:R>.",
                    daily=daily,
                    monthly=monthly,
                )
            )
        else:
            tail.append(tr(locale, "Daily counts reset <t:{daily}:R>.", daily=daily))
        # The jobs give way first: the totals and the rules always show.
        room = MESSAGE_LIMIT - len("\n".join(head + tail)) - 2
        lines = [*head, *([fit_lines(jobs, room, locale=locale)] if jobs else []), *tail]
        await interaction.followup.send(
            fit_lines(lines, locale=locale), ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    async def _job_state(self, locale: Locale, job_id: int, status: JobStatus) -> str:
        """A job in progress as /history calls it (the same words, the same message ids)."""
        if status is JobStatus.QUEUED:
            place = await db.queue_position(self.bot.store, job_id)
            return tr(locale, "queued, #{place} in line", place=place)
        if status is JobStatus.SUBMITTING:
            return tr(locale, "starting")
        if status is JobStatus.SUBMITTED:
            return tr(locale, "generating")
        return tr(locale, "being posted")

    # -- /limits -----------------------------------------------------------------------------------

    async def show(self, interaction: discord.Interaction[FluxBot]) -> None:
        """The server's rules, then its role rules, access roles, member rules and blocks, over as many
        messages as they need (a few at most; the rest is counted)."""
        assert interaction.guild_id is not None
        locale = interaction.locale
        store, guild_id = self.bot.store, interaction.guild_id
        limits = await self.limits(guild_id)
        roles = await db.role_rules(store, guild_id)
        members = await db.member_rules(store, guild_id)
        blocked = await db.blocked_members(store, guild_id)
        channel = await alert_channel(store, guild_id)
        role = _role_namer(locale, interaction.guild)
        lines = [
            self._describe(locale, limits),
            tr(locale, "**Alerts:** in <#{channel}>", channel=channel) if channel else tr(locale, "**Alerts:** off"),
            _who_may_use(locale, limits.access_roles, role),
            tr(locale, "**Role rules ({count}):**", count=len(roles)) if roles else tr(locale, "**Role rules:** none"),
            *(f"• {role(role_id)}: {_rule_text(locale, rule)}" for role_id, rule in roles.items()),
            tr(locale, "**Member rules ({count}):**", count=len(members))
            if members
            else tr(locale, "**Member rules:** none"),
            *(f"• <@{user_id}>: {_rule_text(locale, rule)}" for user_id, rule in members.items()),
            _blocked_members_text(locale, blocked),
        ]
        # Roles and members are mentioned so the admin sees who they are; nobody is pinged.
        quiet = discord.AllowedMentions.none()
        first, *more = pages(lines, locale=locale)
        await interaction.response.send_message(first, ephemeral=True, allowed_mentions=quiet)
        for page in more:
            await interaction.followup.send(page, ephemeral=True, allowed_mentions=quiet)

    def _describe(self, locale: Locale, limits: Limits, title: str | None = None) -> str:
        """The server's rules, one per line, within a message's length (with ``title`` above them)."""

        def row(label: str, field: str, value: str) -> str:
            origin = tr(locale, "set here") if field in limits.overridden else tr(locale, "default")
            return tr(locale, "**{label}:** {value} ({origin})", label=tr(locale, label), value=value, origin=origin)

        def limit(value: int | None) -> str:
            return _limit(locale, value)

        # Lists a server can make long are fitted in a share of the message each.
        models = (
            fit_lines(limits.allowed_models, 500, sep=", ", locale=locale)
            if limits.allowed_models
            else tr(locale, "all")
        )
        mentions = [f"<#{c}>" for c in limits.allowed_channels or ()]
        channels = fit_lines(mentions, 1000, sep=", ", locale=locale) if mentions else tr(locale, "everywhere")
        return fit_lines(
            [
                *([title] if title else []),
                row(N_("Images per member per day"), "user_daily", limit(limits.user_daily)),
                row(N_("Images for the server per day"), "guild_daily", limit(limits.guild_daily)),
                row(N_("Images per member per month (UTC)"), "user_monthly", limit(limits.user_monthly)),
                row(N_("Images for the server per month (UTC)"), "guild_monthly", limit(limits.guild_monthly)),
                row(N_("Images per request"), "max_count", str(limits.max_count)),
                row(N_("Jobs per member at a time"), "max_concurrent", limit(limits.max_concurrent)),
                row(N_("Cooldown"), "cooldown_seconds", _cooldown(locale, limits.cooldown)),
                row(N_("Models"), "allowed_models", models),
                row(N_("Channels"), "allowed_channels", channels),
                tr(
                    locale,
                    "**Blocked words and phrases:** {count} (see `/limits blocklist list`)",
                    count=len(limits.blocked_terms),
                ),
            ],
            locale=locale,
        )

    async def change(self, interaction: discord.Interaction[FluxBot], **changes: Any) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        if not changes:
            raise UserFacingError(tr(locale, "Give at least one setting to change."))
        try:
            await db.update_guild_settings(self.bot.store, interaction.guild_id, interaction.user.id, **changes)
        except ValueError as exc:  # the options' ranges keep this from happening; the reason is for admins
            raise UserFacingError(tr(locale, "That setting was refused: {reason}", reason=exc)) from exc
        log.info("guild %d: user %d changed limits %s", interaction.guild_id, interaction.user.id, changes)
        limits = await self.limits(interaction.guild_id)
        await interaction.response.send_message(self._describe(locale, limits, tr(locale, "Updated.")), ephemeral=True)

    async def set_models(self, interaction: discord.Interaction[FluxBot], models: str) -> None:
        names = models.replace(",", " ").split()
        if [name.lower() for name in names] == ["all"]:
            await self.change(interaction, allowed_models=None)
            return
        catalog = self.bot.flux.catalog
        unknown = [name for name in names if name not in catalog.names]
        if unknown or not names:
            raise UserFacingError(
                tr(
                    interaction.locale,
                    "Unknown models: {unknown}. Available: {available}, or `all`.",
                    unknown=", ".join(unknown) or tr(interaction.locale, "(none given)"),
                    available=", ".join(catalog.names),
                )
            )
        await self.change(interaction, allowed_models=names)

    async def set_channel(
        self, interaction: discord.Interaction[FluxBot], channel_id: int | None, *, allow: bool
    ) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        current = (await self.limits(interaction.guild_id)).allowed_channels
        if channel_id is None:
            await self.change(interaction, allowed_channels=None)
            return
        channels = list(current or ())
        if allow and channel_id not in channels:
            channels.append(channel_id)
        elif not allow:
            if channel_id not in channels:
                raise UserFacingError(
                    tr(locale, "<#{channel}> is not on the list of allowed channels.", channel=channel_id)
                )
            channels.remove(channel_id)
            if not channels:
                raise UserFacingError(
                    tr(locale, "That is the last allowed channel. Use `/limits channels everywhere` instead.")
                )
        await self.change(interaction, allowed_channels=channels)

    async def blocklist(self, interaction: discord.Interaction[FluxBot], action: str, term: str | None) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        store, guild_id, user_id = self.bot.store, interaction.guild_id, interaction.user.id
        if action == "list":
            terms = await db.blocked_terms(store, guild_id)
            await interaction.response.send_message(_blocklist_text(locale, terms), ephemeral=True)
            return
        if not term or not db.normalize_term(term):
            raise UserFacingError(tr(locale, "Give the word or phrase."))
        if action == "add":
            changed = await db.add_blocked_term(store, guild_id, term, changed_by=user_id)
            text = tr(locale, "Blocked.") if changed else tr(locale, "That was already blocked.")
        else:
            changed = await db.remove_blocked_term(store, guild_id, term, changed_by=user_id)
            text = tr(locale, "Unblocked.") if changed else tr(locale, "That was not blocked.")
        if changed:
            log.info(
                "guild %d: user %d %s a blocked term", guild_id, user_id, "added" if action == "add" else "removed"
            )
        await interaction.response.send_message(text, ephemeral=True)

    async def block(
        self, interaction: discord.Interaction[FluxBot], member: discord.abc.User, reason: str | None
    ) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        store, guild_id, user_id = self.bot.store, interaction.guild_id, interaction.user.id
        if member.bot:
            raise UserFacingError(tr(locale, "Bots cannot use the image commands; there is nothing to block."))
        if member.id == user_id:
            raise UserFacingError(tr(locale, "You cannot block yourself."))
        changed = await db.block_member(store, guild_id, member.id, reason=reason, changed_by=user_id)
        if changed:
            log.info("guild %d: user %d blocked member %d", guild_id, user_id, member.id)
        stored = db.normalize_reason(reason)
        who = member.mention
        if stored and changed:
            text = tr(locale, "{member} is blocked here (reason: {reason}).", member=who, reason=stored)
        elif stored:
            text = tr(
                locale, "{member} is blocked here (reason: {reason}); that was already so.", member=who, reason=stored
            )
        elif changed:
            text = tr(locale, "{member} is blocked here (no reason given).", member=who)
        else:
            text = tr(locale, "{member} is blocked here (no reason given); that was already so.", member=who)
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    async def unblock(self, interaction: discord.Interaction[FluxBot], member: discord.abc.User) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        store, guild_id, user_id = self.bot.store, interaction.guild_id, interaction.user.id
        changed = await db.unblock_member(store, guild_id, member.id, changed_by=user_id)
        if changed:
            log.info("guild %d: user %d unblocked member %d", guild_id, user_id, member.id)
        text = (
            tr(locale, "{member} is no longer blocked here.", member=member.mention)
            if changed
            else tr(locale, "{member} was not blocked here.", member=member.mention)
        )
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    async def set_role_rule(
        self, interaction: discord.Interaction[FluxBot], role: discord.Role, changes: RuleChanges
    ) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        if not changes:
            raise UserFacingError(tr(locale, "Give at least one limit for this role."))
        rule = await db.set_role_rule(
            self.bot.store, interaction.guild_id, role.id, changed_by=interaction.user.id, **changes
        )
        log.info(
            "guild %d: user %d set the rule of role %d: %s", interaction.guild_id, interaction.user.id, role.id, changes
        )
        await self._answer(
            interaction,
            tr(locale, "Members with {role} now get: {rule}.", role=role.mention, rule=_rule_text(locale, rule)),
        )

    async def clear_role_rule(self, interaction: discord.Interaction[FluxBot], role: discord.Role) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        cleared = await db.clear_role_rule(
            self.bot.store, interaction.guild_id, role.id, changed_by=interaction.user.id
        )
        if cleared:
            log.info(
                "guild %d: user %d cleared the rule of role %d", interaction.guild_id, interaction.user.id, role.id
            )
        await self._answer(
            interaction,
            tr(locale, "{role} no longer changes any limit.", role=role.mention)
            if cleared
            else tr(locale, "{role} had no rule here.", role=role.mention),
        )

    async def set_member_rule(
        self, interaction: discord.Interaction[FluxBot], member: discord.abc.User, changes: RuleChanges
    ) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        if member.bot:
            raise UserFacingError(tr(locale, "Bots cannot use the image commands; they need no limits."))
        if not changes:
            raise UserFacingError(tr(locale, "Give at least one limit for this member."))
        rule = await db.set_member_rule(
            self.bot.store, interaction.guild_id, member.id, changed_by=interaction.user.id, **changes
        )
        log.info(
            "guild %d: user %d set the rule of member %d: %s",
            interaction.guild_id,
            interaction.user.id,
            member.id,
            changes,
        )
        await self._answer(
            interaction,
            tr(
                locale,
                "{member} now gets, whatever their roles: {rule}.",
                member=member.mention,
                rule=_rule_text(locale, rule),
            ),
        )

    async def clear_member_rule(self, interaction: discord.Interaction[FluxBot], member: discord.abc.User) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        store, guild_id, user_id = self.bot.store, interaction.guild_id, interaction.user.id
        cleared = await db.clear_member_rule(store, guild_id, member.id, changed_by=user_id)
        if cleared:
            log.info("guild %d: user %d cleared the rule of member %d", guild_id, user_id, member.id)
        await self._answer(
            interaction,
            tr(locale, "{member} gets the limits of their roles and the server again.", member=member.mention)
            if cleared
            else tr(locale, "{member} had no rule of their own here.", member=member.mention),
        )

    async def change_access(
        self, interaction: discord.Interaction[FluxBot], role: discord.Role | None, *, allow: bool
    ) -> None:
        """Add ``role`` to the roles that may use the bot, remove it, or (``role`` None) let everyone in."""
        assert interaction.guild_id is not None
        locale = interaction.locale
        store, guild_id, user_id = self.bot.store, interaction.guild_id, interaction.user.id
        if role is None:
            removed = await db.clear_access_roles(store, guild_id, changed_by=user_id)
            text = (
                tr(locale, "Everyone may use the bot here again.")
                if removed
                else tr(locale, "Everyone could already use the bot here.")
            )
        elif role.is_default():
            raise UserFacingError(tr(locale, "Every member has @everyone. Use `/limits access everyone` instead."))
        elif allow:
            changed = await db.add_access_role(store, guild_id, role.id, changed_by=user_id)
            text = (
                tr(locale, "Members with {role} may use the bot.", role=role.mention)
                if changed
                else tr(locale, "{role} was on the list.", role=role.mention)
            )
        else:
            changed = await db.remove_access_role(store, guild_id, role.id, changed_by=user_id)
            text = (
                tr(locale, "{role} is off the list.", role=role.mention)
                if changed
                else tr(locale, "{role} was not on the list.", role=role.mention)
            )
        log.info(
            "guild %d: user %d %s",
            guild_id,
            user_id,
            "opened the bot to everyone"
            if role is None
            else f"{'added' if allow else 'removed'} access role {role.id}",
        )
        roles = (await self.limits(guild_id)).access_roles
        await self._answer(
            interaction, f"{text}\n{_who_may_use(locale, roles, _role_namer(locale, interaction.guild))}"
        )

    async def set_alerts(self, interaction: discord.Interaction[FluxBot], channel_id: int | None) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        guild = interaction.guild
        target = guild.get_channel(channel_id) if guild is not None and channel_id is not None else None
        if isinstance(target, discord.abc.GuildChannel) and guild is not None:
            allowed = target.permissions_for(guild.me)
            if not (allowed.view_channel and allowed.send_messages):
                raise UserFacingError(
                    tr(
                        locale,
                        "I cannot post in {channel}. Give me View Channel and Send Messages there.",
                        channel=target.mention,
                    )
                )
        changed = await set_alert_channel(
            self.bot.store, interaction.guild_id, channel_id, changed_by=interaction.user.id
        )
        if changed:
            log.info(
                "guild %d: user %d set the alert channel to %s", interaction.guild_id, interaction.user.id, channel_id
            )
        text = (
            tr(
                locale,
                "Alerts go to <#{channel}>: when this server reaches 80% and 100% of its daily or monthly images, "
                "and when the image provider refuses the bot's account.",
                channel=channel_id,
            )
            if channel_id is not None
            else tr(locale, "Alerts are off.")
        )
        await self._answer(interaction, text)

    async def report(self, interaction: discord.Interaction[FluxBot], days: int) -> None:
        """The server's usage over ``days`` days as a chart (drawn off the event loop) and a summary, in the
        admin's language."""
        assert interaction.guild_id is not None
        locale = interaction.locale
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await usage_report(self.bot.store, interaction.guild_id, days)
        names = await self._names(interaction.guild, [user_id for user_id, _ in report.top_members])
        server = interaction.guild.name if interaction.guild else None
        png = await render_report(report, names=names, server=server, locale=locale)
        await interaction.followup.send(
            report_summary(report, names=names, locale=locale),
            file=discord.File(io.BytesIO(png), filename="report.png"),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    async def _names(self, guild: discord.Guild | None, user_ids: list[int]) -> dict[int, str]:
        """Members' display names for the report; a member who left (or cannot be fetched) keeps no name."""
        if guild is None:
            return {}

        async def name(user_id: int) -> tuple[int, str | None]:
            member = guild.get_member(user_id)
            if member is None:
                try:
                    member = await guild.fetch_member(user_id)
                except DISCORD_ERRORS:
                    return user_id, None
            return user_id, member.display_name

        return {user_id: found for user_id, found in await asyncio.gather(*map(name, user_ids)) if found}

    async def _answer(self, interaction: discord.Interaction[FluxBot], text: str) -> None:
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    async def reset(self, interaction: discord.Interaction[FluxBot]) -> None:
        assert interaction.guild_id is not None
        locale = interaction.locale
        await db.reset_guild_settings(self.bot.store, interaction.guild_id, interaction.user.id)
        log.info("guild %d: user %d reset the limits to the defaults", interaction.guild_id, interaction.user.id)
        limits = await self.limits(interaction.guild_id)
        await interaction.response.send_message(
            self._describe(locale, limits, tr(locale, "Back to the defaults.")), ephemeral=True
        )


def _blocklist_text(locale: Locale, terms: list[str]) -> str:
    if not terms:
        return tr(locale, "No words or phrases are blocked.")
    room = MESSAGE_LIMIT - len(tr(locale, "Blocked ({count}): {terms}", count=len(terms), terms=""))
    listed = fit_lines([code(term) for term in terms], room, sep=", ", locale=locale)
    return tr(locale, "Blocked ({count}): {terms}", count=len(terms), terms=listed)


def _blocked_members_text(locale: Locale, blocked: list[db.BlockedMember]) -> str:
    """The blocked members for ``/limits show``, as mentions with their reasons, within a share of the message."""
    if not blocked:
        return tr(locale, "**Blocked members:** none")
    entries = [f"<@{b.user_id}>" + (f" ({shorten(b.reason, 100)})" if b.reason else "") for b in blocked]
    return tr(
        locale,
        "**Blocked members ({count}):** {members}",
        count=len(blocked),
        members=fit_lines(entries, 600, sep=", ", locale=locale),
    )


def _who_may_use(locale: Locale, roles: tuple[int, ...] | list[int], role: Callable[[int], str]) -> str:
    if not roles:
        return tr(locale, "**Who may use the bot:** everyone")
    return tr(
        locale, "**Who may use the bot:** {roles} (and members with Manage Server)", roles=", ".join(map(role, roles))
    )


def _role_namer(locale: Locale, guild: discord.Guild | None) -> Callable[[int], str]:
    """How /limits names a role: its mention, or "role <id> (gone)" once it was deleted (it matches nobody)."""

    def name(role_id: int) -> str:
        if guild is not None and guild.get_role(role_id) is None:
            return tr(locale, "role {role} (gone)", role=role_id)
        return f"<@&{role_id}>"

    return name


def _member_rows(locale: Locale, limits: Limits) -> list[tuple[str, str, str]]:
    """A member's own limits for /usage: (label to translate, value, where it comes from)."""
    rows = [
        (N_("Images per day"), "user_daily", _limit(locale, limits.user_daily)),
        (N_("Images per month (UTC)"), "user_monthly", _limit(locale, limits.user_monthly)),
        (N_("Images per request"), "max_count", str(limits.max_count)),
        (N_("Jobs at a time"), "max_concurrent", _limit(locale, limits.max_concurrent)),
        (N_("Cooldown"), "cooldown", _cooldown(locale, limits.cooldown)),
    ]
    return [(label, value, _origin(locale, limits, field)) for label, field, value in rows]


def _origin(locale: Locale, limits: Limits, field: str) -> str:
    """Where a member's limit comes from: "from role @Patrons", "set for you", "this server's" or "default"."""
    origin: Origin | None = limits.origins.get(field)
    if origin is not None:
        if origin.kind == "member":
            return tr(locale, "set for you")
        return tr(locale, "from role <@&{role}>", role=origin.role_id)
    stored = "cooldown_seconds" if field == "cooldown" else field
    return tr(locale, "this server's") if stored in limits.overridden else tr(locale, "default")


def _count(locale: Locale, texts: tuple[str, str], used: int, limit: int | None) -> str:
    """One of /usage's count lines: what was used, and of how many with what is left when there is a limit."""
    if limit is None:
        return tr(locale, texts[0], used=used)
    return tr(locale, texts[1], used=used, limit=limit, left=max(0, limit - used))


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

    _add_rule_commands(cog, group, member)
    return group


def _add_rule_commands(cog: LimitsCog, group: LimitsGroup, member: app_commands.Group) -> None:
    """``/limits role``, ``access``, ``member set`` and ``clear``, ``alerts`` and ``report``."""
    role = app_commands.Group(name="role", description="Limits for members with a role", parent=group)
    access = app_commands.Group(name="access", description="Which roles may use the bot", parent=group)
    alerts = app_commands.Group(name="alerts", description="Where the bot warns admins", parent=group)

    @role.command(name="set", description="Limits for members with this role; the most generous of their roles wins")
    @_describe_rule_options
    async def role_set(  # noqa: PLR0917 - one parameter per command option
        interaction: discord.Interaction[FluxBot],
        role: discord.Role,
        user_daily: app_commands.Range[int, 0, 100_000] | None = None,
        user_monthly: app_commands.Range[int, 0, 10_000_000] | None = None,
        max_count: app_commands.Range[int, 1, 4] | None = None,
        max_concurrent: app_commands.Range[int, 0, 100] | None = None,
        cooldown: app_commands.Range[int, 0, 86_400] | None = None,
    ) -> None:
        await cog.set_role_rule(
            interaction, role, _rule_changes(user_daily, user_monthly, max_count, max_concurrent, cooldown)
        )

    @role.command(name="clear", description="Remove this role's limits")
    async def role_clear(interaction: discord.Interaction[FluxBot], role: discord.Role) -> None:
        await cog.clear_role_rule(interaction, role)

    @access.command(name="add", description="Let members with this role use the bot (then only listed roles may)")
    async def access_add(interaction: discord.Interaction[FluxBot], role: discord.Role) -> None:
        await cog.change_access(interaction, role, allow=True)

    @access.command(name="remove", description="Take this role off the list of roles that may use the bot")
    async def access_remove(interaction: discord.Interaction[FluxBot], role: discord.Role) -> None:
        await cog.change_access(interaction, role, allow=False)

    @access.command(name="everyone", description="Let every member use the bot again")
    async def access_everyone(interaction: discord.Interaction[FluxBot]) -> None:
        await cog.change_access(interaction, None, allow=True)

    @member.command(name="set", description="Limits for this member alone; they beat the member's roles")
    @_describe_rule_options
    async def member_set(  # noqa: PLR0917 - one parameter per command option
        interaction: discord.Interaction[FluxBot],
        member: discord.User,
        user_daily: app_commands.Range[int, 0, 100_000] | None = None,
        user_monthly: app_commands.Range[int, 0, 10_000_000] | None = None,
        max_count: app_commands.Range[int, 1, 4] | None = None,
        max_concurrent: app_commands.Range[int, 0, 100] | None = None,
        cooldown: app_commands.Range[int, 0, 86_400] | None = None,
    ) -> None:
        await cog.set_member_rule(
            interaction, member, _rule_changes(user_daily, user_monthly, max_count, max_concurrent, cooldown)
        )

    @member.command(name="clear", description="Remove this member's own limits")
    async def member_clear(interaction: discord.Interaction[FluxBot], member: discord.User) -> None:
        await cog.clear_member_rule(interaction, member)

    @alerts.command(name="channel", description="Post budget and provider alerts in this channel")
    async def alerts_channel(interaction: discord.Interaction[FluxBot], channel: discord.TextChannel) -> None:
        await cog.set_alerts(interaction, channel.id)

    @alerts.command(name="off", description="Stop posting alerts")
    async def alerts_off(interaction: discord.Interaction[FluxBot]) -> None:
        await cog.set_alerts(interaction, None)

    @group.command(name="report", description="A chart of this server's images, members, failures and refusals")
    @app_commands.describe(days="How many days back, today included (1 to 90)")
    async def report(interaction: discord.Interaction[FluxBot], days: app_commands.Range[int, 1, 90] = 30) -> None:
        await cog.report(interaction, days)


#: The options of ``/limits role set`` and ``/limits member set`` besides the role or member.
_describe_rule_options = app_commands.describe(
    user_daily="Images per day (0: no limit)",
    user_monthly="Images per calendar month, UTC (0: no limit)",
    max_count="Images per request",
    max_concurrent="Jobs at a time (0: no limit)",
    cooldown="Seconds between requests (0: none)",
)


def _rule_changes(
    user_daily: int | None,
    user_monthly: int | None,
    max_count: int | None,
    max_concurrent: int | None,
    cooldown: int | None,
) -> RuleChanges:
    """The options given to a ``set`` command, as the rule's changes (options left out do not change)."""
    changes = RuleChanges()
    if user_daily is not None:
        changes["user_daily"] = user_daily
    if user_monthly is not None:
        changes["user_monthly"] = user_monthly
    if max_count is not None:
        changes["max_count"] = max_count
    if max_concurrent is not None:
        changes["max_concurrent"] = max_concurrent
    if cooldown is not None:
        changes["cooldown_seconds"] = cooldown
    return changes


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(LimitsCog(bot))
