"""Roles that change while the bot runs, as Discord reports them to a real discord.py bot.

The rules are Discord's: a new role reaches the bot as GUILD_ROLE_CREATE and a deleted one as
GUILD_ROLE_DELETE ``{guild_id, role_id}`` alone (members lose it without a GUILD_MEMBER_UPDATE each);
a member's role changes reach the bot only with the privileged members intent (its own member always);
interactions and messages carry each member's roles and permissions as they are at that moment; role and
member options resolve to full objects, a channel option to the cached channel; files in an ephemeral followup
can be read back by the test.
"""

from __future__ import annotations

import io
from typing import Any

import discord
import pytest
from discord import app_commands
from PIL import Image

from tests.fakediscord import CommandNotAvailable, DiscordEmulator, Intent, Interaction, Perm, Role, run_bot
from tests.fakediscord.fixtures import World
from tests.fakediscord.probe import ProbeBot, probe


def _intents(*, members: bool = False, message_content: bool = False) -> discord.Intents:
    intents = discord.Intents.default()
    intents.members = members
    intents.message_content = message_content
    return intents


def _events(emu: DiscordEmulator, event: str) -> list[dict[str, Any]]:
    return [d.data for d in emu.gateway_log if d.event == event]


def _delivered(emu: DiscordEmulator, inter: Interaction) -> dict[str, Any]:
    """The INTERACTION_CREATE payload as it was sent, not as it would be rendered now."""
    return next(d.data for d in emu.gateway_log if d.event == "INTERACTION_CREATE" and d.data["id"] == str(inter.id))


def _cached_guild(bot: discord.Client, w: World) -> discord.Guild:
    guild = bot.get_guild(w.guild.id)
    assert guild is not None
    return guild


def _whois(bot: ProbeBot) -> None:
    """``/whois role who``: what the bot's callback sees of the options and of the invoking member."""

    @bot.tree.command(description="Who has what")
    async def whois(interaction: discord.Interaction, role: discord.Role, who: discord.Member) -> None:
        user = interaction.user
        assert isinstance(user, discord.Member)
        perms = who.resolved_permissions
        await interaction.response.send_message("ok", ephemeral=True)  # answered before the test goes on
        bot.report(
            "whois",
            {
                "role": role,
                "role_cached": interaction.guild is not None and interaction.guild.get_role(role.id) is not None,
                "who_roles": {r.id for r in who.roles if not r.is_default()},
                "who_manage": perms is not None and perms.manage_guild,
                "my_roles": {r.id for r in user.roles if not r.is_default()},
            },
        )


def _panel(bot: ProbeBot) -> None:
    """``/panel``, an admin command (Manage Server), reporting the invoker's roles and permissions."""

    @bot.tree.command(description="Admin panel")
    @app_commands.default_permissions(manage_guild=True)
    async def panel(interaction: discord.Interaction) -> None:
        user = interaction.user
        assert isinstance(user, discord.Member)
        await interaction.response.send_message("ok", ephemeral=True)
        bot.report("panel", ({r.id for r in user.roles if not r.is_default()}, interaction.permissions.manage_guild))


# -- roles created and deleted while online --------------------------------------------------------------------
async def test_a_role_created_while_online_reaches_the_bot_and_resolves_in_options(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe(_whois)) as bot:  # default intents: no members
        patrons = w.guild.add_role("Patrons")
        created: discord.Role = await bot.take("role_create")
        assert created.id == patrons.id and created.name == "Patrons"
        assert _cached_guild(bot, w).get_role(patrons.id) is not None
        [event] = _events(w.emu, "GUILD_ROLE_CREATE")
        assert event["guild_id"] == str(w.guild.id) and event["role"]["id"] == str(patrons.id)

        w.member.add_role(patrons)
        assert _events(w.emu, "GUILD_MEMBER_UPDATE") == []  # privileged: not without the members intent

        inter = await w.member.slash(w.channel, "whois", role=patrons, who=w.admin)
        seen = await bot.take("whois")
        assert isinstance(seen["role"], discord.Role) and seen["role"].id == patrons.id and seen["role_cached"]
        assert seen["role"].name == "Patrons"
        assert seen["my_roles"] == {patrons.id}  # the invoker's roles come from the interaction, now
        [admin_role] = w.admin.roles
        assert seen["who_roles"] == {admin_role.id} and seen["who_manage"]
        payload = _delivered(w.emu, inter)
        assert payload["member"]["roles"] == [str(patrons.id)]
        resolved = payload["data"]["resolved"]
        assert set(resolved) == {"roles", "users", "members"}
        assert int(resolved["members"][str(w.admin.id)]["permissions"]) & Perm.MANAGE_GUILD

        # a member added later with Manage Server: its role is created first, so the bot knows it
        late = w.guild.add_member("carol-admin", manage_guild=True)
        [late_role] = late.roles
        assert (await bot.take("role_create")).id == late_role.id
        late_inter = await w.member.slash(w.channel, "whois", role=late_role, who=late)
        seen = await bot.take("whois")
        assert seen["who_roles"] == {late_role.id} and seen["who_manage"]
        assert late_inter.acknowledged and inter.acknowledged


async def test_a_deleted_role_is_gone_from_the_bots_cache_and_from_later_payloads(discord_world: World) -> None:
    w = discord_world
    staff = w.guild.add_role("Staff", Perm.MANAGE_GUILD)
    w.member.add_role(staff)

    def setup(bot: ProbeBot) -> None:
        _panel(bot)
        _whois(bot)

    async with run_bot(w.emu, probe(setup, intents=_intents(members=True, message_content=True))) as bot:
        guild = _cached_guild(bot, w)
        cached = guild.get_member(w.member.id)
        assert cached is not None and staff.id in {r.id for r in cached.roles}
        await w.member.slash(w.channel, "panel")
        assert await bot.take("panel") == ({staff.id}, True)

        w.guild.delete_role(staff)
        assert guild.get_role(staff.id) is not None  # sent, but the bot has not read it yet
        await w.emu.wait_caught_up()
        assert guild.get_role(staff.id) is None
        assert (await bot.take("role_delete")).id == staff.id
        assert _events(w.emu, "GUILD_ROLE_DELETE") == [{"guild_id": str(w.guild.id), "role_id": str(staff.id)}]
        assert _events(w.emu, "GUILD_MEMBER_UPDATE") == []  # Discord sends none per member
        assert staff.id not in {r.id for r in cached.roles}  # discord.py skips role ids it no longer knows
        assert w.member.roles == [] and staff.id not in w.guild.roles

        # the member lost Manage Server with the role: Discord hides the admin command, and a stale
        # client's interaction carries the member without the role and without the permission
        with pytest.raises(CommandNotAvailable):
            await w.member.slash(w.channel, "panel")
        inter = await w.member.slash(w.channel, "panel", force=True)
        assert await bot.take("panel") == (set(), False)
        member_payload = _delivered(w.emu, inter)["member"]
        assert member_payload["roles"] == [] and not int(member_payload["permissions"]) & Perm.MANAGE_GUILD

        sent = await w.member.send(w.channel, "still here")
        got: discord.Message = await bot.take("message")
        assert got.id == sent.id and isinstance(got.author, discord.Member)
        assert [r.id for r in got.author.roles if not r.is_default()] == []

        # the client no longer offers the role, and it can be neither deleted again nor given to anyone
        with pytest.raises(ValueError, match="exist"):
            await w.admin.slash(w.channel, "whois", role=staff, who=w.member)
        with pytest.raises(ValueError, match="deleted"):
            w.guild.delete_role(staff)
        with pytest.raises(ValueError, match="deleted"):
            w.admin.add_role(staff)


def test_everyone_and_managed_roles_cannot_be_deleted_nor_roles_of_another_server(
    discord_emulator: DiscordEmulator,
) -> None:
    emu = discord_emulator
    guild, other = emu.add_guild("Here"), emu.add_guild("There")
    bot_role = next(r for r in guild.roles.values() if r.managed)
    with pytest.raises(ValueError, match="@everyone"):
        guild.delete_role(guild.everyone)
    with pytest.raises(ValueError, match="managed"):
        guild.delete_role(bot_role)
    foreign = other.add_role("Foreign")
    with pytest.raises(ValueError, match="belongs to"):
        guild.delete_role(foreign)
    with pytest.raises(ValueError, match="belongs to"):
        guild.bot_member.add_role(foreign)
    with pytest.raises(ValueError, match="@everyone"):
        guild.bot_member.add_role(guild.everyone)
    assert guild.everyone.id in guild.roles and bot_role in guild.bot_member.roles


async def test_a_role_update_changes_what_the_bot_and_the_members_permissions_see(discord_world: World) -> None:
    w = discord_world
    helpers = w.guild.add_role("Helpers")
    w.member.add_role(helpers)
    async with run_bot(w.emu, probe(_panel)) as bot:
        with pytest.raises(CommandNotAvailable):
            await w.member.slash(w.channel, "panel")
        w.guild.update_role(helpers, name="Moderators", permissions=Perm.MANAGE_GUILD)
        before, after = await bot.take("role_update")
        assert (before.name, after.name) == ("Helpers", "Moderators") and after.permissions.manage_guild
        await w.member.slash(w.channel, "panel")
        assert await bot.take("panel") == ({helpers.id}, True)


async def test_a_channel_option_resolves_to_the_cached_text_channel_even_one_created_while_online(
    discord_world: World,
) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Where alerts go")
        async def alerts(interaction: discord.Interaction, channel: discord.TextChannel) -> None:
            await interaction.response.send_message(f"alerts go to {channel.mention}", ephemeral=True)
            await channel.send("alerts will appear here")
            bot.report("alerts", channel)

    async with run_bot(w.emu, probe(setup)) as bot:
        [option] = w.emu.commands()[0].options
        assert discord.ChannelType.text.value in option["channel_types"]  # text and announcement channels
        ops = w.guild.add_text_channel("ops-alerts")
        assert (await bot.take("channel_create")).id == ops.id
        inter = await w.admin.slash(w.channel, "alerts", channel=ops)
        picked = await bot.take("alerts")
        assert isinstance(picked, discord.TextChannel) and picked.id == ops.id and picked.name == "ops-alerts"
        assert (await inter.wait_response()).content == f"alerts go to <#{ops.id}>"
        posted = await w.emu.wait_for_message(ops, author=w.emu.bot_user)
        assert posted.content == "alerts will appear here"
        resolved = _delivered(w.emu, inter)["data"]["resolved"]["channels"][str(ops.id)]
        assert int(resolved["permissions"]) == w.admin.permissions_in(ops)


# -- a member's roles ------------------------------------------------------------------------------------------
async def test_member_role_changes_reach_the_bot_only_with_the_members_intent(discord_world: World) -> None:
    w = discord_world
    patrons: Role = w.guild.add_role("Patrons")
    async with run_bot(w.emu, probe(intents=_intents(members=True))) as bot:
        w.member.add_role(patrons)
        before, after = await bot.take("member_update")
        assert after.id == w.member.id
        assert patrons not in before.roles and [r.id for r in after.roles if not r.is_default()] == [patrons.id]
        w.member.add_role(patrons)  # already has it: nothing changes, nothing is sent
        w.member.remove_role(patrons)
        before, after = await bot.take("member_update")
        assert patrons.id in {r.id for r in before.roles} and patrons.id not in {r.id for r in after.roles}
        w.member.remove_role(patrons)  # no longer has it
        assert len(_events(w.emu, "GUILD_MEMBER_UPDATE")) == 2

    sessions_before = set(w.emu.sessions)
    async with run_bot(w.emu, probe()) as bot:  # default intents
        [session] = [s for s in w.emu.sessions.values() if s.id not in sessions_before]
        assert not session.intents & Intent.GUILD_MEMBERS
        w.member.add_role(patrons)
        # the bot's own member is reported whatever the intents
        w.guild.bot_member.add_role(patrons)
        before, after = await bot.take("member_update")
        assert after.id == w.emu.bot_user.id and patrons.id in {r.id for r in _cached_guild(bot, w).me.roles}
        sent = [d for d in w.emu.gateway_log if d.session_id == session.id and d.event == "GUILD_MEMBER_UPDATE"]
        assert [d.data["user"]["id"] for d in sent] == [str(w.emu.bot_user.id)]


async def test_a_role_mention_in_a_message_is_parsed(discord_world: World) -> None:
    w = discord_world
    patrons = w.guild.add_role("Patrons")
    async with run_bot(w.emu, probe(intents=_intents(message_content=True))) as bot:
        sent = await w.member.send(w.channel, f"thanks {patrons.mention}!")
        got: discord.Message = await bot.take("message")
        assert got.id == sent.id and sent.mention_role_ids == [patrons.id]
        assert got.raw_role_mentions == [patrons.id] and [r.id for r in got.role_mentions] == [patrons.id]


# -- files in ephemeral followups ------------------------------------------------------------------------------
async def test_a_png_in_an_ephemeral_followup_is_readable_by_the_test(discord_world: World) -> None:
    w = discord_world
    buf = io.BytesIO()
    Image.new("RGB", (320, 200), "navy").save(buf, format="PNG")
    png = buf.getvalue()

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Usage report")
        async def report(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            file = discord.File(io.BytesIO(png), "report.png")
            await interaction.followup.send("Last 30 days", file=file, ephemeral=True)
            # only the first followup inherits the deferral's ephemerality; later ones ask for it
            again = discord.File(io.BytesIO(png), "again.png")
            await interaction.followup.send("and again", file=again, ephemeral=True)

    async with run_bot(w.emu, probe(setup)):
        inter = await w.admin.slash(w.channel, "report")
        await inter.wait_followup(2)
        first, second = inter.followups
        # the first followup replaced the ephemeral "thinking" message; the second is a new ephemeral one
        assert first is inter.original and second is not first
        for msg, name in ((first, "report.png"), (second, "again.png")):
            assert msg.ephemeral and msg.visible_to == w.admin.id and msg not in w.member.sees(w.channel)
            [stored] = msg.attachments
            assert (stored.filename, stored.content_type, stored.data) == (name, "image/png", png)
            assert stored.image_size() == (320, 200)
        with Image.open(io.BytesIO(inter.followups[-1].attachments[0].data)) as img:
            assert img.format == "PNG" and img.size == (320, 200)
