"""Fidelity of the Discord emulator's interactions, each rule driven by a real discord.py bot.

The rules are Discord's: acknowledge within 3 s, acknowledge once, the token lives 15 minutes, the first
followup after a deferral replaces "is thinking...", ephemeral messages are seen by their user only,
uploads over ``attachment_size_limit`` are refused, content is at most 2000 characters, and only synced
commands reach the bot.
"""

from __future__ import annotations

import asyncio
import io

import discord
import pytest
from discord import app_commands

from tests.fakediscord import (
    Attachment,
    Code,
    CommandNotAvailable,
    CommandNotSynced,
    DiscordEmulator,
    ErrorGuard,
    MessageFlag,
    NotAcknowledged,
    run_bot,
)
from tests.fakediscord.fixtures import World
from tests.fakediscord.probe import ProbeBot, probe


def _gateway_ids(emu: DiscordEmulator, event: str) -> list[str]:
    return [d.data["id"] for d in emu.gateway_log if d.event == event]


# -- acknowledging: 3 seconds, exactly once ---------------------------------------------------------------
async def test_defer_then_followups_replace_the_thinking_message(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Generate an image")
        async def imagine(interaction: discord.Interaction, prompt: str) -> None:
            await interaction.response.defer(thinking=True)
            bot.report("deferred", interaction)

    async with run_bot(w.emu, probe(setup)) as bot:
        inter = await w.member.slash(w.channel, "imagine", prompt="a cat")
        await inter.wait_acknowledged(timeout=3)
        d_inter: discord.Interaction = await bot.take("deferred")
        thinking = inter.original
        assert thinking is not None and thinking.loading and thinking.flags == MessageFlag.LOADING
        assert inter.ack_delay is not None and inter.ack_delay < 3
        assert str(thinking.id) in _gateway_ids(w.emu, "MESSAGE_CREATE")

        first = await d_inter.followup.send("here is your cat", wait=True)
        assert first.id == thinking.id  # the thinking message became the answer
        assert inter.followups == [thinking] and not thinking.loading
        assert thinking.content == "here is your cat" and thinking.interaction is inter
        assert (await inter.wait_response()) is thinking
        second = await d_inter.followup.send("and another", wait=True)
        assert second.id != thinking.id and len(inter.followups) == 2
        assert inter.followups[1].payload()["interaction_metadata"]["original_response_message_id"] == str(thinking.id)
        assert [m.id for m in w.member.sees(w.channel)] == [thinking.id, second.id]


async def test_editing_the_original_also_replaces_thinking_and_ephemeral_defer_stays_private(
    discord_world: World,
) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Private status")
        async def status(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.edit_original_response(content="queue position 1")
            await interaction.followup.send("public on purpose?")  # followups after that obey their own flags

    async with run_bot(w.emu, probe(setup)):
        inter = await w.member.slash(w.channel, "status")
        await inter.wait_followup()
        original = inter.original
        assert original is not None and original.content == "queue position 1"
        assert original.flags == MessageFlag.EPHEMERAL and original.visible_to == w.member.id
        assert not inter.followups[0].ephemeral
        assert str(original.id) not in _gateway_ids(w.emu, "MESSAGE_CREATE")


async def test_a_late_first_ack_is_unknown_interaction(discord_world: World, error_guard: ErrorGuard) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Acknowledges when it gets the event")
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer()

    async with run_bot(w.emu, probe(setup)):
        inter = await w.member.slash(w.channel, "slow")
        w.emu.advance(4)  # the bot answers "instantly", but 4 s later on Discord's clock
        call = await inter.wait_error(Code.UNKNOWN_INTERACTION)
        assert call.status == 404 and not inter.acknowledged
        await error_guard.wait_for_error("10062")  # discord.py logged the NotFound from the command


async def test_a_bot_that_really_answers_after_four_seconds_is_caught(
    discord_world: World, error_guard: ErrorGuard
) -> None:
    """The deliberately wrong bot of the acceptance criteria: it sleeps 4 s before answering."""
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Too slow")
        async def sleepy(interaction: discord.Interaction) -> None:
            await asyncio.sleep(4)  # really: the only test that waits in real time
            await interaction.response.send_message("finally")

    async with run_bot(w.emu, probe(setup)):
        inter = await w.member.slash(w.channel, "sleepy")
        with pytest.raises(NotAcknowledged):
            await inter.wait_acknowledged(timeout=3)
        await inter.wait_error(Code.UNKNOWN_INTERACTION, timeout=3)
        await error_guard.wait_for_error("10062")
        assert inter.original is None


async def test_acknowledging_twice_is_rejected(discord_world: World, error_guard: ErrorGuard) -> None:
    """The other wrong bot: a listener and the command both acknowledge the same interaction."""
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Answered twice")
        async def twice(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("from the command")

        @bot.listen("on_interaction")
        async def also_defer(interaction: discord.Interaction) -> None:
            await interaction.response.defer()

    async with run_bot(w.emu, probe(setup)):
        inter = await w.member.slash(w.channel, "twice")
        call = await inter.wait_error(Code.ALREADY_ACKNOWLEDGED)
        assert call.status == 400 and inter.acknowledged
        assert [c.status for c in inter.calls] == [200, 400]
        await error_guard.wait_for_error("40060")


# -- tokens --------------------------------------------------------------------------------------------------
async def test_interaction_token_expires_after_15_minutes(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Long job")
        async def job(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            bot.report("deferred", interaction)

    async with run_bot(w.emu, probe(setup)) as bot:
        inter = await w.member.slash(w.channel, "job")
        d_inter: discord.Interaction = await bot.take("deferred")
        await d_inter.followup.send("progress 50%")  # fine while the token lives
        w.emu.advance(16 * 60)
        assert inter.token_expired
        with pytest.raises(discord.HTTPException) as exc:
            await d_inter.followup.send("done")
        assert (exc.value.status, exc.value.code) == (401, Code.INVALID_WEBHOOK_TOKEN)
        with pytest.raises(discord.HTTPException) as exc:
            await d_inter.edit_original_response(content="done")
        assert exc.value.code == Code.INVALID_WEBHOOK_TOKEN
        # the way that survives: the bot token
        assert isinstance(d_inter.channel, discord.TextChannel)
        sent = await d_inter.channel.send(f"{d_inter.user.mention} done")
        assert w.emu.find_message(sent.id) is not None
        assert inter.error_codes == [Code.INVALID_WEBHOOK_TOKEN, Code.INVALID_WEBHOOK_TOKEN]


async def test_unknown_interaction_token_is_10062(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe()) as bot:
        adapter = discord.webhook.async_.async_context.get()
        with pytest.raises(discord.NotFound) as exc:
            await adapter.create_interaction_response(
                1234,
                "not-a-token",
                session=bot.http._HTTPClient__session,  # type: ignore[attr-defined]
                params=discord.webhook.async_.interaction_response_params(5),
            )
        assert exc.value.code == Code.UNKNOWN_INTERACTION


# -- ephemeral visibility --------------------------------------------------------------------------------------
async def test_ephemeral_messages_are_visible_only_to_their_user(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Your quota")
        async def quota(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("3 images left", ephemeral=True)

    async with run_bot(w.emu, probe(setup)) as bot:
        inter = await w.member.slash(w.channel, "quota")
        msg = await inter.wait_response()
        assert msg.ephemeral and inter.ephemeral and msg.visible_to == w.member.id
        assert msg in w.member.sees(w.channel) and msg not in w.admin.sees(w.channel)
        assert str(msg.id) not in _gateway_ids(w.emu, "MESSAGE_CREATE")
        assert msg.pinged_ids == set()
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.NotFound):
            await channel.fetch_message(msg.id)
        with pytest.raises(ValueError, match="cannot see"):
            await w.admin.context_menu(msg, "anything")


# -- limits ---------------------------------------------------------------------------------------------------
async def test_uploads_over_the_attachment_size_limit_get_413(discord_emulator: DiscordEmulator) -> None:
    emu = discord_emulator
    guild = emu.add_guild("Small uploads", attachment_size_limit=1024)
    channel = guild.add_text_channel("art")
    member = guild.add_member("carol")

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Upload")
        async def upload(interaction: discord.Interaction) -> None:
            bot.report("limit", interaction.filesize_limit)
            await interaction.response.defer()
            try:
                await interaction.followup.send(file=discord.File(io.BytesIO(b"x" * 1025), "big.png"))
            except discord.HTTPException as exc:
                bot.report("error", exc)
            await interaction.followup.send(file=discord.File(io.BytesIO(b"x" * 1024), "fits.png"))

    async with run_bot(emu, probe(setup)) as bot:
        inter = await member.slash(channel, "upload")
        assert await bot.take("limit") == 1024
        error: discord.HTTPException = await bot.take("error")
        assert (error.status, error.code) == (413, Code.REQUEST_TOO_LARGE)
        msg = await inter.wait_followup()
        assert msg is inter.original and [a.filename for a in msg.attachments] == ["fits.png"]
        assert inter.error_codes == [Code.REQUEST_TOO_LARGE]

        text = bot.get_channel(channel.id)
        assert isinstance(text, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as exc:
            await text.send(file=discord.File(io.BytesIO(b"y" * 2000), "huge.png"))
        assert exc.value.status == 413


async def test_content_over_2000_characters_is_invalid_form_body(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Long answer")
        async def long(interaction: discord.Interaction) -> None:
            try:
                await interaction.response.send_message("x" * 2001)
            except discord.HTTPException as exc:
                bot.report("error", exc)
            await interaction.response.send_message("x" * 2000)

    async with run_bot(w.emu, probe(setup)) as bot:
        inter = await w.member.slash(w.channel, "long")
        error: discord.HTTPException = await bot.take("error")
        assert (error.status, error.code) == (400, Code.INVALID_FORM_BODY)
        assert "2000 or fewer" in str(error)
        msg = await inter.wait_response()
        assert len(msg.content) == 2000 and inter.error_codes == [Code.INVALID_FORM_BODY]

        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as exc:
            await channel.send("y" * 2001)
        assert exc.value.code == Code.INVALID_FORM_BODY


# -- which commands reach the bot ----------------------------------------------------------------------------
async def test_commands_that_were_never_synced_are_not_delivered(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Never synced")
        async def ghost(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("boo")

    async with run_bot(w.emu, probe(setup, sync=False), wait_synced=False):
        with pytest.raises(CommandNotSynced, match="ghost"):
            await w.member.slash(w.channel, "ghost")
        assert not w.emu.interactions
        assert "INTERACTION_CREATE" not in {d.event for d in w.emu.gateway_log}


async def test_guild_commands_reach_only_their_guild(discord_emulator: DiscordEmulator) -> None:
    emu = discord_emulator
    home, other = emu.add_guild("Home"), emu.add_guild("Other")
    home_channel, other_channel = home.add_text_channel("general"), other.add_text_channel("general")
    home_member, other_member = home.add_member("dora"), other.add_member("erin")

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Home only", guild=discord.Object(home.id))
        async def local(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("home")

    async with run_bot(emu, probe(setup, sync_guilds=(home.id,))):
        assert [c.name for c in emu.commands(home)] == ["local"] and emu.commands() == []
        inter = await home_member.slash(home_channel, "local")
        assert (await inter.wait_response()).content == "home"
        with pytest.raises(CommandNotSynced):
            await other_member.slash(other_channel, "local")


async def test_admin_commands_are_hidden_from_members_without_manage_server(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Server limits")
        @app_commands.default_permissions(manage_guild=True)
        async def limits(interaction: discord.Interaction) -> None:
            allowed = interaction.permissions.manage_guild
            await interaction.response.send_message("ok" if allowed else "no", ephemeral=True)

    async with run_bot(w.emu, probe(setup)):
        assert w.emu.commands()[0].default_member_permissions == discord.Permissions(manage_guild=True).value
        inter = await w.admin.slash(w.channel, "limits")
        assert (await inter.wait_response()).content == "ok"
        with pytest.raises(CommandNotAvailable):
            await w.member.slash(w.channel, "limits")
        forced = await w.member.slash(w.channel, "limits", force=True)  # a stale client, say
        assert (await forced.wait_response()).content == "no"


# -- the payloads: options, attachments, context menus, modals, components ----------------------------------
async def test_slash_options_and_attachment_bytes_round_trip_through_the_cdn(discord_world: World) -> None:
    w = discord_world
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Edit an image")
        @app_commands.describe(image="The image", strength="How much", who="For whom")
        async def edit(
            interaction: discord.Interaction,
            image: discord.Attachment,
            strength: float,
            who: discord.Member,
            hd: bool = False,
        ) -> None:
            await interaction.response.defer()
            data = await image.read()
            bot.report(
                "options",
                (
                    image.filename,
                    image.size,
                    image.content_type,
                    strength,
                    who.id,
                    hd,
                    who.guild_permissions.manage_guild,
                ),
            )
            await interaction.followup.send(file=discord.File(io.BytesIO(data[::-1]), "result.png"))

    async with run_bot(w.emu, probe(setup)) as bot:
        inter = await w.member.slash(w.channel, "edit", image=Attachment("cat.png", png), strength=0.5, who=w.admin)
        assert await bot.take("options") == ("cat.png", len(png), "image/png", 0.5, w.admin.id, False, True)
        msg = await inter.wait_followup()
        [stored] = msg.attachments
        assert stored.data == png[::-1]

        url = stored.payload()["url"]
        session = bot.http._HTTPClient__session  # type: ignore[attr-defined]
        async with session.get(url) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
            assert await resp.read() == png[::-1]
        w.emu.advance(25 * 3600)  # signed CDN URLs expire: store ids or bytes, not URLs
        async with session.get(url) as resp:
            assert resp.status == 404
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        fresh = await channel.fetch_message(msg.id)
        assert await fresh.attachments[0].read() == png[::-1]


async def test_autocomplete_answers_with_choices(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        async def styles(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=s, value=s) for s in ("photo", "painting") if s.startswith(current)]

        @bot.tree.command(description="Styled")
        @app_commands.autocomplete(style=styles)
        async def styled(interaction: discord.Interaction, style: str) -> None:
            await interaction.response.send_message(style)

    async with run_bot(w.emu, probe(setup)):
        inter = await w.member.autocomplete(w.channel, "styled", focused="style", style="pa")
        assert await inter.wait_response() == [{"name": "painting", "value": "painting"}]


async def test_message_context_menu_opens_a_modal_and_the_submit_reaches_the_bot(discord_world: World) -> None:
    w = discord_world

    class PromptModal(discord.ui.Modal, title="Edit image"):
        prompt: discord.ui.TextInput[PromptModal] = discord.ui.TextInput(label="Prompt", custom_id="prompt")

        def __init__(self, target: discord.Message) -> None:
            super().__init__()
            self.target = target

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"editing {self.target.id}: {self.prompt.value}")

    def setup(bot: ProbeBot) -> None:
        @app_commands.context_menu(name="Edit image")
        async def edit_image(interaction: discord.Interaction, message: discord.Message) -> None:
            bot.report("target", message)
            await interaction.response.send_modal(PromptModal(message))

        bot.tree.add_command(edit_image)

    # no message content intent: the context-menu target still arrives with its content and files
    async with run_bot(w.emu, probe(setup)) as bot:
        source = await w.member.send(w.channel, "my picture", attachments=[Attachment("dog.png", b"png")])
        opened = await w.member.context_menu(source, "Edit image")
        target: discord.Message = await bot.take("target")
        assert target.content == "my picture" and target.attachments[0].filename == "dog.png"
        modal = await opened.wait_response()
        assert modal["title"] == "Edit image" and opened.response_type == 9
        with pytest.raises(ValueError, match="only the member"):
            await w.admin.submit_modal(opened, {"prompt": "x"})
        submitted = await w.member.submit_modal(opened, {"prompt": "make it blue"})
        answer = await submitted.wait_response()
        assert answer.content == f"editing {source.id}: make it blue"
        assert submitted.source is opened and answer.interaction is submitted


async def test_button_click_updates_the_message(discord_world: World) -> None:
    w = discord_world

    class Result(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.button(label="Upscale", custom_id="flux:upscale:7")
        async def upscale(self, interaction: discord.Interaction, button: discord.ui.Button[Result]) -> None:
            await interaction.response.edit_message(content=f"upscaling for {interaction.user.name}", view=None)

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Generate")
        async def gen(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("working", ephemeral=True)
            assert isinstance(interaction.channel, discord.TextChannel)
            await interaction.channel.send("result", view=Result())

    async with run_bot(w.emu, probe(setup)):
        await w.member.slash(w.channel, "gen")
        msg = await w.emu.wait_for_message(w.channel, lambda m: m.content == "result")
        assert msg.custom_ids == ["flux:upscale:7"]
        with pytest.raises(ValueError, match="no component"):
            await w.member.click(msg, "flux:nope")
        click = await w.member.click(msg, "flux:upscale:7")
        updated = await click.wait_response()
        assert updated is msg and msg.content == "upscaling for bob" and msg.components == []
        assert click.response_type == 7 and msg.edited_at is not None
        assert str(msg.id) in _gateway_ids(w.emu, "MESSAGE_UPDATE")


async def test_component_deferral_edits_the_clicked_message_and_followups_are_new(discord_world: World) -> None:
    w = discord_world

    class Job(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.button(label="Vary", custom_id="flux:vary:3")
        async def vary(self, interaction: discord.Interaction, button: discord.ui.Button[Job]) -> None:
            await interaction.response.defer()  # type 6: no "thinking" message
            await interaction.edit_original_response(content="varying...")
            await interaction.followup.send("variation ready", ephemeral=True)

    async with run_bot(w.emu, probe()) as bot:
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("job 3", view=Job())
        msg = w.emu.find_message(sent.id)
        assert msg is not None
        click = await w.member.click(msg, "flux:vary:3")
        followup = await click.wait_followup()
        assert click.response_type == 6 and click.original is msg and msg.content == "varying..."
        assert followup is not msg and followup.ephemeral and followup.visible_to == w.member.id
        assert click.message is msg and msg.edited_at is not None


async def test_a_modal_with_labels_selects_and_an_optional_input(discord_world: World) -> None:
    w = discord_world

    class Settings(discord.ui.Modal, title="Settings"):
        model: discord.ui.Label[Settings] = discord.ui.Label(
            text="Model",
            component=discord.ui.Select(
                custom_id="model",
                options=[
                    discord.SelectOption(label="Dev", value="dev"),
                    discord.SelectOption(label="Pro", value="pro"),
                ],
            ),
        )
        note: discord.ui.Label[Settings] = discord.ui.Label(
            text="Note", component=discord.ui.TextInput(custom_id="note", required=False)
        )

        async def on_submit(self, interaction: discord.Interaction) -> None:
            assert isinstance(self.model.component, discord.ui.Select)
            assert isinstance(self.note.component, discord.ui.TextInput)
            await interaction.response.send_message(f"{self.model.component.values} {self.note.component.value!r}")

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Settings")
        async def settings(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Settings())

    async with run_bot(w.emu, probe(setup)):
        opened = await w.admin.slash(w.channel, "settings")
        modal = await opened.wait_response()
        assert [c["type"] for c in modal["components"]] == [18, 18]
        with pytest.raises(ValueError, match="no inputs"):
            await w.admin.submit_modal(opened, {"seed": "1"})
        submitted = await w.admin.submit_modal(opened, {"model": ["pro"]})
        assert (await submitted.wait_response()).content == "['pro'] ''"
        with pytest.raises(ValueError, match="already submitted"):
            await w.admin.submit_modal(opened, {"model": ["dev"]})


async def test_slash_commands_in_dms_and_dm_only_restrictions(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Anywhere")
        async def help(interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"dm={interaction.guild is None}")

        @bot.tree.command(description="Servers only")
        @app_commands.guild_only()
        async def limits(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("limits")

    async with run_bot(w.emu, probe(setup)):
        dm = w.emu.dm_channel(w.member)
        inter = await w.member.slash(dm, "help")
        reply = await inter.wait_response()
        assert reply.content == "dm=True" and reply.channel is dm
        with pytest.raises(CommandNotAvailable, match="DMs"):
            await w.member.slash(dm, "limits")
