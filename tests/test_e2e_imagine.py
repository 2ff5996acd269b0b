"""/imagine end to end: the real bot, the loopback Discord, the Flux emulator and a real SQLite file."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from PIL import Image

from bot import db
from bot.db import JobStatus, jobs_in
from bot.logs import RedactingFormatter
from tests.fakediscord import Perm
from tests.fluxbot_harness import FluxbotHarness, is_result, results_in, status_line


async def test_the_real_bot_comes_online_with_its_commands_synced(fluxbot: FluxbotHarness) -> None:
    async with fluxbot.running():
        commands = {(c.name, c.type) for c in fluxbot.discord.commands(None)}

    # every extension loaded, no name twice (discord.py refuses a second command of the same name and type)
    assert commands == {
        ("imagine", 1),
        ("edit", 1),
        ("Edit image", 3),
        ("usage", 1),
        ("limits", 1),
        ("history", 1),
        ("settings", 1),
    }
    assert fluxbot.discord.online_times[-1] < 2.0
    assert fluxbot.discord.intents  # the bot identified


async def test_imagine_posts_the_providers_images_in_the_channel(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a red fox in snow", count=2, size="16:9")
        await inter.wait_acknowledged(timeout=3)
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=10)
        await world.emu.wait_until(lambda: "Done" in (inter.original.content if inter.original else ""), timeout=5)
        jobs = await jobs_in(bot.store, *JobStatus)

    assert inter.ack_delay is not None and inter.ack_delay < 3
    (task,) = fluxbot.flux.tasks.values()
    assert [f.data for f in result.attachments] == [fluxbot.flux.image_bytes(url) for url in task.images]
    assert result.pinged_ids == {world.member.id}
    assert f"<@{world.member.id}>" in result.content
    buttons = [c["custom_id"] for row in result.components for c in row["components"]]
    assert buttons == [f"flux:{action}:{jobs[0].id}" for action in ("reroll", "edit", "delete")]
    (embed,) = result.embeds
    assert embed["description"] == "a red fox in snow"
    assert {f["name"]: f["value"] for f in embed["fields"]}["Size"] == "16:9"
    assert inter.original is not None and inter.original.ephemeral
    assert str(result.id) in inter.original.content
    assert [job.status for job in jobs] == [JobStatus.POSTED]
    (sent,) = fluxbot.flux.requests_to("POST", "/flux/images")
    assert sent.json is not None and (sent.json["count"], sent.json["size"]) == (2, "16:9")


async def test_results_too_large_for_the_upload_limit_are_shrunk_until_they_fit(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    fluxbot.flux.large_results = 2048  # two noisy PNGs of about 12 MB each; the server allows 10 MiB
    async with fluxbot.running():
        await world.member.slash(world.channel, "imagine", prompt="static on a television", count=2)
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=30)

    (task,) = fluxbot.flux.tasks.values()
    originals = [fluxbot.flux.image_bytes(url) for url in task.images]
    assert sum(map(len, originals)) > 20 * 2**20
    assert len(result.attachments) == 2
    assert sum(f.size for f in result.attachments) <= 10 * 2**20
    for posted in result.attachments:
        image = Image.open(io.BytesIO(posted.data))
        image.load()
        assert image.format == "JPEG"
        assert posted.filename.endswith(".jpg")


async def test_a_channel_the_bot_cannot_post_in_fails_the_job_clearly_and_charges_nothing(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    world.channel.set_permissions(world.emu.bot_user, deny=Perm.SEND_MESSAGES | Perm.ATTACH_FILES)
    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a quiet street")
        await world.emu.wait_until(lambda: status_line(inter).startswith("❌"), timeout=10)
        usage = await db.user_usage(bot.store, world.guild.id, world.member.id)

    assert "could not be posted" in status_line(inter)
    assert "not charged" in status_line(inter)
    assert usage.today == 0
    assert not results_in(world.channel)


async def test_secrets_never_reach_the_log(fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture) -> None:
    world = fluxbot.world
    caplog.set_level(logging.DEBUG)
    fluxbot.flux.fail_next_task(code="invalid_token", message="bad key")
    async with fluxbot.running() as bot:
        for prompt in ("a red kite", "a blue kite"):
            inter = await world.member.slash(world.channel, "imagine", prompt=prompt)
            await world.emu.wait_until(lambda i=inter: status_line(i).startswith(("✅", "❌")), timeout=10)
        secrets = [bot.settings.discord_token.get_secret_value(), bot.settings.flux_api_key.get_secret_value()]

    assert "needs attention" in caplog.text or "invalid_token" in caplog.text
    assert all(secret not in caplog.text for secret in secrets)


async def test_interaction_tokens_never_reach_the_log_and_are_not_kept_after_the_job(
    fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    world = fluxbot.world
    caplog.set_level(logging.DEBUG)
    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="a kite over the dunes")
        await world.emu.wait_until(lambda: status_line(inter).startswith("✅"), timeout=10)
        secrets = [bot.settings.discord_token, bot.settings.flux_api_key]
        for _ in range(100):  # the token is forgotten right after the member's last status line
            kept = await bot.store.fetch_all("SELECT id FROM jobs WHERE interaction_token IS NOT NULL")
            if not kept:
                break
            await asyncio.sleep(0.02)

    assert inter.token in caplog.text, "discord.py logs gateway payloads and request URLs at DEBUG"
    formatter = RedactingFormatter("%(message)s", secrets)  # what fluxbot writes to its log
    written = "\n".join(formatter.format(record) for record in caplog.records)
    assert inter.token not in written
    assert "[redacted]" in written
    assert kept == []


async def test_commands_are_synced_only_when_they_changed(fluxbot: FluxbotHarness) -> None:
    async with fluxbot.running():
        pass
    async with fluxbot.running():  # same commands, same database: no sync (Discord rate-limits it)
        pass
    assert len(fluxbot.discord.command_syncs) == 1

    async with fluxbot.running(FLUX_PROVIDER="bfl"):  # another model table: other choices
        pass
    assert len(fluxbot.discord.command_syncs) == 2
    assert {c["value"] for c in _option(fluxbot, "imagine", "model")["choices"]} >= {"flux-2-klein-4b"}


def _option(harness: FluxbotHarness, command: str, option: str) -> dict[str, object]:
    (synced,) = [c for c in harness.discord.commands(None) if c.name == command]
    return next(o for o in synced.options if o["name"] == option)
