"""/imagine end to end: the real bot, the loopback Discord, the Flux emulator and a real SQLite file."""

from __future__ import annotations

import io

from PIL import Image

from bot.db import JobStatus, jobs_in
from tests.fluxbot_harness import FluxbotHarness, is_result


async def test_the_real_bot_comes_online_with_its_commands_synced(fluxbot: FluxbotHarness) -> None:
    async with fluxbot.running():
        commands = {(c.name, c.type) for c in fluxbot.discord.commands(None)}

    assert {("imagine", 1), ("edit", 1), ("Edit image", 3)} <= commands
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
