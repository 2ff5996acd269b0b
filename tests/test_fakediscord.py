"""The Discord emulator itself: startup, gateway, messages, files, mentions, rate limits, the error guard.

Each test drives a real discord.py bot (``ProbeBot``) against the emulator on loopback. Per-interaction
rules (3 s, 40060, 15 min, ephemeral, 413, 50035, sync) are in ``test_fakediscord_interactions.py``.
"""

from __future__ import annotations

import asyncio
import io
import re
import time

import discord
import pytest
from discord import app_commands

from tests.fakediscord import (
    Attachment,
    BotNotConnected,
    Code,
    DiscordEmulator,
    ErrorGuard,
    Intent,
    Perm,
    WaitTimeout,
    run_bot,
)
from tests.fakediscord.fixtures import World
from tests.fakediscord.probe import ProbeBot, probe


def _content_intents() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True
    return intents


# -- coming online --------------------------------------------------------------------------------------------
async def test_the_bot_comes_online_in_well_under_two_seconds(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Ping")
        async def ping(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("pong")

    started = time.perf_counter()
    async with run_bot(w.emu, probe(setup)) as bot:
        online = time.perf_counter() - started
        print(f"\nbot online in {online:.3f} s (login, setup_hook sync, IDENTIFY, READY, GUILD_CREATE, on_ready)")
        assert online < 2.0 and w.emu.online_times == [pytest.approx(online, abs=0.05)]
        assert bot.is_ready() and bot.user is not None and bot.user.id == w.emu.bot_user.id
        guild = bot.get_guild(w.guild.id)
        assert guild is not None and guild.get_channel(w.channel.id) is not None
        assert guild.me.guild_permissions.attach_files and not guild.me.guild_permissions.manage_guild
        assert w.emu.intents == discord.Intents.default().value
        assert not w.emu.intents & Intent.MESSAGE_CONTENT
        assert [c.name for c in w.emu.commands()] == ["ping"]
        assert [c.route for c in w.emu.rest_log] == [
            "/users/@me",
            "/oauth2/applications/@me",
            "/applications/{application_id}/commands",
        ]
        assert all(c.ok for c in w.emu.rest_log)
    assert w.emu.sessions and all(s.conn is None for s in w.emu.sessions.values())


async def test_with_the_members_intent_guilds_arrive_complete_so_no_chunking_delays_ready(
    discord_world: World,
) -> None:
    w = discord_world
    intents = discord.Intents.default()
    intents.members = True
    async with run_bot(w.emu, probe(intents=intents)) as bot:
        guild = bot.get_guild(w.guild.id)
        assert guild is not None and guild.chunked
        assert {m.id for m in guild.members} == set(w.guild.members)
        assert w.emu.online_times[0] < 1.0


async def test_a_wrong_token_fails_login(discord_world: World) -> None:
    with pytest.raises(discord.LoginFailure):
        async with run_bot(discord_world.emu, probe(), token="not-the-token"):
            pass
    assert [(c.route, c.status) for c in discord_world.emu.rest_log] == [("/users/@me", 401)]


async def test_privileged_intents_switched_off_in_the_portal_close_the_gateway_with_4014(
    discord_world: World,
) -> None:
    w = discord_world
    w.emu.reject_privileged_intents = True
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with run_bot(w.emu, probe(intents=_content_intents())):
            pass
    assert w.emu.intents is not None and w.emu.intents & Intent.MESSAGE_CONTENT
    async with run_bot(w.emu, probe()):  # without the intent the same portal settings are fine
        pass


async def test_the_bot_resumes_after_a_reconnect_and_misses_no_event(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe(intents=_content_intents())) as bot:
        w.emu.request_reconnect()
        await w.emu.wait_until(lambda: w.emu.resumes == 1, 5, "a RESUME")
        w.emu.drop_connections(4000)  # a resumable close; events sent meanwhile are replayed
        sent = await w.member.send(w.channel, "while you were away")
        got: discord.Message = await bot.take("message")
        assert got.id == sent.id and got.content == "while you were away"
        await w.emu.wait_until(lambda: w.emu.resumes == 2, 5, "a second RESUME")
        assert len(w.emu.identifies) == 1 and len(w.emu.sessions) == 1


async def test_a_restarted_bot_still_handles_buttons_of_its_previous_life(discord_world: World) -> None:
    w = discord_world

    class Again(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"flux:again:(?P<job>\d+)"):
        def __init__(self, job: int) -> None:
            super().__init__(discord.ui.Button(label="Again", custom_id=f"flux:again:{job}"))
            self.job = job

        @classmethod
        async def from_custom_id(
            cls, interaction: discord.Interaction, item: discord.ui.Button[discord.ui.View], match: re.Match[str]
        ) -> Again:
            return cls(int(match["job"]))

        async def callback(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"again job {self.job}", ephemeral=True)

    def setup(bot: ProbeBot) -> None:
        bot.setup_steps.append(lambda b: b.add_dynamic_items(Again))

    async with run_bot(w.emu, probe(setup)) as bot:
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        view = discord.ui.View(timeout=None).add_item(Again(42))
        sent = await channel.send("your image", view=view)
    async with run_bot(w.emu, probe(setup)):
        msg = w.emu.find_message(sent.id)
        assert msg is not None
        click = await w.member.click(msg, "flux:again:42")
        assert (await click.wait_response()).content == "again job 42"
    assert len(w.emu.identifies) == 2


async def test_guilds_channels_and_members_added_while_online_reach_the_bot(discord_world: World) -> None:
    w = discord_world
    intents = discord.Intents.default()
    intents.members = True
    async with run_bot(w.emu, probe(intents=intents)) as bot:
        channel = w.guild.add_text_channel("renders")
        assert (await bot.take("channel_create")).id == channel.id
        member = w.guild.add_member("latecomer")
        assert (await bot.take("member_join")).id == member.id
        guild = w.emu.add_guild("Invited later")
        joined: discord.Guild = await bot.take("guild_join")
        assert joined.id == guild.id and joined.me is not None


async def test_an_auto_sharded_client_works_too(discord_world: World) -> None:
    """AutoShardedClient asks GET /gateway/bot and needs ``shard`` echoed in READY (see DISCORD.md)."""
    w = discord_world

    def make() -> discord.AutoShardedClient:
        return discord.AutoShardedClient(intents=discord.Intents.default(), guild_ready_timeout=0.1)

    async with run_bot(w.emu, make) as client:
        assert client.get_guild(w.guild.id) is not None and client.shard_count == 1
        assert w.emu.identifies[0]["shard"] == [0, 1]
        assert "/gateway/bot" in [c.route for c in w.emu.rest_log]


# -- messages the bot sees ------------------------------------------------------------------------------------
async def test_member_messages_reach_the_bot_with_reply_mentions_and_files(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe()) as bot:  # default intents: no MESSAGE_CONTENT
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        result = await channel.send("here is your image", file=discord.File(io.BytesIO(b"img"), "out.png"))

        plain = await w.member.send(w.channel, "just chatting")
        got: discord.Message = await bot.take("message")
        assert got.id == plain.id and got.content == ""  # no intent, no mention: Discord blanks it

        asked = await w.member.send(
            w.channel,
            "make it red",
            reply_to=w.emu.find_message(result.id),
            mention_bot=True,
            attachments=[Attachment("mask.png", b"mask")],
        )
        got = await bot.take("message")
        assert got.id == asked.id and got.content == f"<@{w.emu.bot_user.id}> make it red"
        assert bot.user in got.mentions
        assert got.reference is not None and got.reference.message_id == result.id
        assert isinstance(got.reference.resolved, discord.Message)
        assert got.reference.resolved.attachments[0].filename == "out.png"
        assert await got.attachments[0].read() == b"mask"
        assert asked.pinged_ids == {w.emu.bot_user.id}

        # a reply to the bot's regular message is visible without the intent, even without a ping
        quiet = await w.member.send(
            w.channel, "and bigger", reply_to=w.emu.find_message(result.id), mention_author=False
        )
        got = await bot.take("message")
        assert got.id == quiet.id and got.content == "and bigger" and quiet.pinged_ids == set()


async def test_with_the_message_content_intent_everything_is_visible(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe(intents=_content_intents())) as bot:
        await w.member.send(w.channel, "just chatting", attachments=[Attachment("a.txt", b"hello")])
        got: discord.Message = await bot.take("message")
        assert got.content == "just chatting" and await got.attachments[0].read() == b"hello"
        await w.member.send_dm("hi in private")
        dm: discord.Message = await bot.take("message")
        assert dm.guild is None and dm.content == "hi in private"


async def test_messages_the_bot_writes_are_echoed_edited_deleted_and_reacted_to(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe()) as bot:
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("queued", embed=discord.Embed(title="Job 1"))
        stored = w.emu.find_message(sent.id)
        assert stored is not None and stored.author is w.emu.bot_user and stored.embeds[0]["title"] == "Job 1"
        await sent.edit(content="done")
        await sent.add_reaction("✅")
        assert (
            stored.content == "done"
            and stored.history[0][1] == "queued"
            and stored.reactions == {"✅": [w.emu.bot_user.id]}
        )
        await w.member.react(stored, "❤️")
        await sent.delete()
        assert stored.deleted and stored not in w.member.sees(w.channel)
        events = [d.event for d in w.emu.gateway_log if d.data.get("id", d.data.get("message_id")) == str(sent.id)]
        assert events == [
            "MESSAGE_CREATE",
            "MESSAGE_UPDATE",
            "MESSAGE_REACTION_ADD",
            "MESSAGE_REACTION_ADD",
            "MESSAGE_DELETE",
        ]


async def test_allowed_mentions_decide_who_is_pinged(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe(allowed_mentions=discord.AllowedMentions.none())) as bot:
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        text = f"{w.member.mention} your image (prompt by {w.admin.mention} @everyone)"
        sent = await channel.send(text, allowed_mentions=discord.AllowedMentions(users=[discord.Object(w.member.id)]))
        msg = w.emu.find_message(sent.id)
        assert msg is not None
        assert msg.mention_ids == [w.member.id, w.admin.id]
        assert msg.pinged_ids == {w.member.id} and not msg.pinged_everyone
        silent = await channel.send(text)  # the client default: AllowedMentions.none()
        assert w.emu.find_message(silent.id).pinged_ids == set()  # type: ignore[union-attr]

        request = await w.member.send(w.channel, "draw me")
        reply = await channel.get_partial_message(request.id).reply("done", mention_author=True)
        assert w.emu.find_message(reply.id).pinged_ids == {w.member.id}  # type: ignore[union-attr]


async def test_an_enforced_nonce_deduplicates_a_retried_post(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe()) as bot:
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        first = await channel.send("result of job 7", nonce="job-7")
        again = await channel.send("result of job 7", nonce="job-7")
        assert again.id == first.id
        assert [m.content for m in w.member.sees(w.channel)] == ["result of job 7"]
        other = await channel.send("result of job 8", nonce="job-8")
        assert other.id != first.id
        assert [c.status for c in w.emu.calls("POST", "/channels/{channel_id}/messages")] == [200, 200, 200]


async def test_the_bot_can_dm_members_unless_they_closed_their_dms(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe()) as bot:
        user = await bot.fetch_user(w.member.id)
        dm = await user.send("your image is ready")
        channel = w.emu.dm_channel(w.member)
        assert dm.channel.id == channel.id and channel.messages[dm.id].content == "your image is ready"
        w.member.user.dms_closed = True
        with pytest.raises(discord.Forbidden) as exc:
            await user.send("again")
        assert exc.value.code == Code.CANNOT_DM_USER


async def test_channel_permissions_apply_to_the_bot_token_but_not_to_interaction_responses(
    discord_world: World,
) -> None:
    w = discord_world
    w.channel.set_permissions(w.emu.bot_user, deny=Perm.SEND_MESSAGES)

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Reply here")
        async def here(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("via the interaction")
            try:
                assert isinstance(interaction.channel, discord.TextChannel)
                await interaction.channel.send("via the bot token")
            except discord.Forbidden as exc:
                bot.report("forbidden", exc)

    async with run_bot(w.emu, probe(setup)) as bot:
        inter = await w.member.slash(w.channel, "here")
        exc: discord.Forbidden = await bot.take("forbidden")
        assert exc.code == Code.MISSING_PERMISSIONS
        assert [m.content for m in w.member.sees(w.channel)] == ["via the interaction"]
        assert inter.original is not None and inter.original.content == "via the interaction"


async def test_bodies_discord_rejects_are_rejected(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe()) as bot:
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        twins = discord.ui.View()
        twins.add_item(discord.ui.Button(label="A", custom_id="same"))
        twins.add_item(discord.ui.Button(label="B", custom_id="same"))
        with pytest.raises(discord.HTTPException) as exc:
            await channel.send("two buttons", view=twins)
        assert exc.value.code == Code.INVALID_FORM_BODY and "duplicated" in str(exc.value)
        with pytest.raises(discord.HTTPException) as exc:
            await channel.send(embed=discord.Embed(title="t" * 257))
        assert exc.value.code == Code.INVALID_FORM_BODY and "embeds.0.title" in str(exc.value)
        with pytest.raises(discord.HTTPException) as exc:
            await channel.send(
                embed=discord.Embed(description="d" * 4000, title="t" * 200)
                .add_field(name="n", value="v" * 1000)
                .add_field(name="n", value="v" * 1000)
            )
        assert "6000" in str(exc.value)
        with pytest.raises(discord.HTTPException) as exc:
            await bot.http.send_message(w.channel.id, params=discord.http.handle_message_parameters(content=""))
        assert exc.value.code == Code.EMPTY_MESSAGE
        assert w.member.sees(w.channel) == []


# -- rate limits ------------------------------------------------------------------------------------------------
async def test_discord_py_waits_out_a_429_and_then_succeeds(discord_world: World) -> None:
    w = discord_world
    rule = w.emu.rate_limit("POST", "/channels/{channel_id}/messages", limit=1, per_seconds=0.3, remaining=0)
    async with run_bot(w.emu, probe()) as bot:
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await channel.send("first")  # 429 (the bucket was spent), discord.py sleeps retry_after, retries
        await channel.send("second")  # remaining 0 in the headers: discord.py waits before sending
        elapsed = loop.time() - started
        calls = w.emu.calls("POST", "/channels/{channel_id}/messages")
        assert [c.status for c in calls] == [429, 200, 200] and rule.hits == 1
        assert elapsed >= 0.5
        assert calls[2].at - calls[1].at >= 0.25
        assert [m.content for m in w.member.sees(w.channel)] == ["first", "second"]
        assert w.emu.invalid_requests == 1


# -- the harness itself -----------------------------------------------------------------------------------------
async def test_waits_fail_with_a_clear_message_and_actors_need_a_connected_bot(discord_world: World) -> None:
    w = discord_world
    with pytest.raises(WaitTimeout, match="a message in"):
        await w.emu.wait_for_message(w.channel, timeout=0.05)
    w.emu.global_commands[("ping", 1)] = w.emu._make_command({"name": "ping", "description": "p"}, None)
    with pytest.raises(BotNotConnected):
        await w.member.slash(w.channel, "ping")


async def test_the_guard_reports_exceptions_the_bot_only_logged_and_tasks_that_died(
    discord_world: World, error_guard: ErrorGuard
) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        @bot.tree.command(description="Broken")
        async def broken(interaction: discord.Interaction) -> None:
            raise RuntimeError("flux exploded")

    async with run_bot(w.emu, probe(setup)):
        await w.member.slash(w.channel, "broken")
        record = await error_guard.wait_for_error("flux exploded")
        assert record.name == "discord.app_commands.tree"

    async def doomed() -> None:
        raise ValueError("nobody awaits me")

    task = asyncio.get_running_loop().create_task(doomed())
    await asyncio.wait([task])
    [problem] = error_guard.problems()
    assert "nobody awaits me" in problem and "died" in problem


async def test_rest_calls_are_logged_with_bodies_files_and_emulator_time(discord_world: World) -> None:
    w = discord_world
    async with run_bot(w.emu, probe()) as bot:
        channel = bot.get_channel(w.channel.id)
        assert isinstance(channel, discord.TextChannel)
        w.emu.advance(100)
        await channel.send("with file", file=discord.File(io.BytesIO(b"12345"), "five.bin"))
        call = w.emu.calls("POST", "/channels/{channel_id}/messages")[-1]
        assert call.json["content"] == "with file" and call.files == [("five.bin", 5)]
        assert call.at >= time.time() + 99 and call.status == 200


async def test_app_commands_with_subcommands_and_choices(discord_world: World) -> None:
    w = discord_world

    def setup(bot: ProbeBot) -> None:
        group = app_commands.Group(name="flux", description="Flux")

        @group.command(description="Set the model")
        @app_commands.choices(
            model=[app_commands.Choice(name="Dev", value="dev"), app_commands.Choice(name="Pro", value="pro")]
        )
        async def model(interaction: discord.Interaction, model: app_commands.Choice[str]) -> None:
            await interaction.response.send_message(f"model {model.value}")

        bot.tree.add_command(group)

    async with run_bot(w.emu, probe(setup)):
        inter = await w.member.slash(w.channel, "flux model", model="pro")
        assert (await inter.wait_response()).content == "model pro"
        with pytest.raises(ValueError, match="one of"):
            await w.member.slash(w.channel, "flux model", model="schnell")
        with pytest.raises(ValueError, match="requires"):
            await w.member.slash(w.channel, "flux model")


async def test_the_emulator_answers_exact_application_json(discord_emulator: DiscordEmulator) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{discord_emulator.api_base}/users/@me", headers={"Authorization": f"Bot {discord_emulator.token}"}
        ) as resp,
    ):
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["id"] == str(discord_emulator.bot_user.id)


async def test_the_cdn_serves_any_file_name_but_only_at_signed_unexpired_urls(
    discord_emulator: DiscordEmulator,
) -> None:
    import aiohttp

    emu = discord_emulator
    channel = emu.add_guild().add_text_channel("files")
    async with aiohttp.ClientSession() as session:
        for name in ["my cat.png", "ünï code+(1).png", "a%20b.png", "what?#.txt", "a/b.png"]:
            stored = emu.store_attachment(channel, Attachment(name, name.encode()))
            async with session.get(stored.url()) as resp:
                assert resp.status == 200 and await resp.read() == name.encode()
        async with session.get(stored.url().split("?")[0]) as resp:
            assert resp.status == 404
    # every fetch is logged, so a test can tell whether (and how) someone downloaded a file
    assert [fetch.ok for fetch in emu.cdn_log] == [True] * 5 + [False]
    assert emu.cdn_log[-1].file_id == stored.id and emu.cdn_log[0].path.endswith("/my cat.png")
