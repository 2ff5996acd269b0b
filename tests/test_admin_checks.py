"""Every ``/limits`` command, however deeply nested, refuses a member without Manage Server.

Discord hides ``/limits`` from such members, but a server's permission overrides can show it to anyone, so
the bot checks again when a command runs. discord.py only runs the *direct* parent group's
``interaction_check``: a check on ``/limits`` alone lets ``/limits blocklist …`` and ``/limits channels …``
through. The test walks the real bot's command tree, so a command added later is covered without a change here.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
import pytest
from discord import app_commands

from bot import db
from bot.db import Store
from cogs.limits import LimitsGroup, guard_every_command, require_manage_guild
from tests.fakediscord import Channel, Member, Role
from tests.fluxbot_harness import FluxbotHarness, status_line

REFUSED = "You don't have permission to do that here."


def admin_commands(tree: app_commands.CommandTree[Any]) -> list[app_commands.Command[Any, ..., Any]]:
    """Every command a member can invoke under ``/limits``, found by walking the tree."""
    root = tree.get_command("limits")
    assert isinstance(root, app_commands.Group)
    return [command for command in root.walk_commands() if isinstance(command, app_commands.Command)]


def options_for(
    command: app_commands.Command[Any, ..., Any], channel: Channel, member: Member, role: Role
) -> dict[str, Any]:
    """A value for every option of ``command``, one that would change or reveal something if it ran."""
    values: dict[str, Any] = {}
    for param in command.parameters:
        match param.type:
            case discord.AppCommandOptionType.string:
                values[param.display_name] = "gore"
            case discord.AppCommandOptionType.integer | discord.AppCommandOptionType.number:
                values[param.display_name] = 1 if param.min_value is None else max(int(param.min_value), 1)
            case discord.AppCommandOptionType.boolean:
                values[param.display_name] = True
            case discord.AppCommandOptionType.channel:
                values[param.display_name] = channel
            case discord.AppCommandOptionType.user:
                values[param.display_name] = member
            case discord.AppCommandOptionType.role:
                values[param.display_name] = role
            case other:
                pytest.fail(f"/{command.qualified_name} has an option of type {other}: teach options_for about it")
    return values


async def server_state(store: Store, guild_id: int) -> tuple[Any, ...]:
    settings = await db.get_guild_settings(store, guild_id)
    changes = await db.recent_limit_changes(store, guild_id, limit=1000)
    return settings, await db.blocked_terms(store, guild_id), len(changes)


async def test_every_limits_command_refuses_a_member_without_manage_server(
    fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    world = fluxbot.world
    art = world.guild.add_text_channel("art")
    patrons = world.guild.add_role("Patrons")
    caplog.set_level(logging.INFO)
    async with fluxbot.running() as bot:
        # Something for every command to change or reveal.
        for command, options in [
            ("limits blocklist add", {"term": "Gore"}),
            ("limits channels add", {"channel": world.channel}),
            ("limits channels add", {"channel": art}),
            ("limits set", {"user_daily": 7, "cooldown": 30}),
        ]:
            await (await world.admin.slash(world.channel, command, **options)).wait_response()
        commands = admin_commands(bot.tree)
        before = await server_state(bot.store, world.guild.id)
        caplog.clear()

        refused = {}
        for command in commands:
            options = options_for(command, art, world.member, patrons)
            # force: a permission override shows /limits to this member
            inter = await world.member.slash(world.channel, command.qualified_name, force=True, **options)
            await inter.wait_response()
            refused[command.qualified_name] = inter
        after = await server_state(bot.store, world.guild.id)
        records = list(caplog.records)

        # The same invocations by an admin do run: the member's refusal came from the check, not the options.
        accepted = {}
        for command in commands:
            inter = await world.admin.slash(
                world.channel, command.qualified_name, **options_for(command, art, world.member, patrons)
            )
            await inter.wait_response()
            accepted[command.qualified_name] = status_line(inter)

    # The walk reached into the sub-groups.
    assert {"limits blocklist add", "limits blocklist list", "limits channels everywhere", "limits set"} <= set(refused)
    for name, inter in refused.items():
        assert status_line(inter) == REFUSED, f"/{name} ran for a member without Manage Server"
        assert inter.ephemeral, f"/{name}: the refusal was visible to others"
        assert accepted[name] != REFUSED, f"/{name} refused an admin"
    assert after == before  # nothing changed
    warnings = [r.getMessage() for r in records if r.name == "cogs.limits" and r.levelno == logging.WARNING]
    for name in refused:
        assert any(f"tried /{name} without Manage Server" in message for message in warnings), name
    assert not [r for r in records if r.levelno >= logging.ERROR]


def test_a_command_nested_later_at_any_depth_gets_the_check() -> None:
    group = LimitsGroup(cog=None)  # type: ignore[arg-type]
    inner = app_commands.Group(name="inner", description="d", parent=group)

    @inner.command(name="leaf", description="d")
    async def leaf(interaction: discord.Interaction[Any]) -> None: ...

    @group.command(name="top", description="d")
    async def top(interaction: discord.Interaction[Any]) -> None: ...

    guard_every_command(group)
    guard_every_command(group)  # twice: still one check

    assert leaf.checks == [require_manage_guild]
    assert top.checks == [require_manage_guild]
