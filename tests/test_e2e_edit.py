"""Editing images end to end: /edit, the **Edit image** menu and replies that mention the bot.

The real bot runs against the loopback Discord and the Flux emulator with a real SQLite file. The Flux
emulator fetches an edit's source image like the vendor does, from the fake Discord's CDN (or any URL).
Member images come only from Discord's hosts: the last section points messages at a recording server that
stands for the bot's own network (``127.0.0.1``, ``169.254.169.254``) and checks that nothing reaches it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import yarl
from PIL import Image

from tests.conftest import png_bytes
from tests.fakediscord import Attachment, Message, MessageFlag
from tests.fluxbot_harness import FluxbotHarness, is_result
from tests.fluxemu.records import EmuTask, RecordedRequest
from tests.test_media_hosts import LoopbackSite

#: The model /edit and the other edit paths use unless the member picks one (AceData's catalog).
DEFAULT_EDIT_MODEL = "flux-kontext-pro"


def noise_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: its size in bytes is about 3 * width * height."""
    pixels = random.Random(width * height).randbytes(width * height * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 72), (30, 120, 60)).save(buffer, format="JPEG")
    return buffer.getvalue()


def two_frame_gif(first: tuple[int, int, int], second: tuple[int, int, int]) -> bytes:
    frames = [Image.new("RGB", (80, 80), colour) for colour in (first, second)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def provider_requests(harness: FluxbotHarness) -> list[RecordedRequest]:
    return harness.flux.requests_to("POST", "/flux/images")


def only_task(harness: FluxbotHarness) -> EmuTask:
    (task,) = harness.flux.tasks.values()
    return task


def sent_body(request: RecordedRequest) -> dict[str, Any]:
    assert isinstance(request.json, dict)
    return request.json


def cdn_path(url: str) -> str:
    """The path of a signed CDN URL (two renderings of one attachment differ only in the signature)."""
    return yarl.URL(url).path


# -- /edit ----------------------------------------------------------------------------------------------


async def test_edit_sends_the_provider_a_url_it_can_fetch_and_posts_the_edited_image(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    source = Attachment("cat.png", png_bytes(96, 64))
    async with fluxbot.running():
        inter = await world.member.slash(world.channel, "edit", image=source, prompt="make the cat blue")
        await inter.wait_acknowledged()
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)
        await world.emu.wait_until(lambda: str(result.id) in (inter.original.content if inter.original else ""), 5)

    (request,) = provider_requests(fluxbot)
    body = sent_body(request)
    assert (body["action"], body["prompt"], body["model"]) == ("edit", "make the cat blue", DEFAULT_EDIT_MODEL)
    assert body["size"] == "3:2"  # the ratio nearest to the 96x64 source
    task = only_task(fluxbot)
    assert task.source_url == body["image_url"] and task.source_ok
    assert body["image_url"].startswith(f"{world.emu.base_url}/")  # the attachment's own (signed) CDN URL
    fetches = [fetch for fetch in world.emu.cdn_log if fetch.path == cdn_path(body["image_url"])]
    assert [fetch.ok for fetch in fetches] == [True, True]  # the bot checked the image, the provider fetched it
    assert [file.data for file in result.attachments] == [fluxbot.flux.image_bytes(task.images[0])]
    assert result.pinged_ids == {world.member.id}
    assert result.content.startswith(f"<@{world.member.id}> edited")
    assert inter.ephemeral  # the member's own status line links to the result


async def _refused_edit(harness: FluxbotHarness, image: Attachment, **env: str) -> str:
    """Run /edit with ``image``; return the ephemeral answer after checking nothing reached the provider."""
    world = harness.world
    async with harness.running(**env):
        inter = await world.member.slash(world.channel, "edit", image=image, prompt="make it blue")
        answer = await inter.wait_response()
    assert isinstance(answer, Message)
    assert answer.flags & MessageFlag.EPHEMERAL and answer.visible_to == world.member.id
    assert provider_requests(harness) == []
    assert not any(is_result(message) for message in world.channel.messages.values())
    return answer.content


async def test_edit_refuses_a_file_that_is_not_an_image(fluxbot: FluxbotHarness) -> None:
    answer = await _refused_edit(fluxbot, Attachment("notes.txt", b"just some words\n", content_type="text/plain"))

    assert "notes.txt is not an image" in answer


async def test_edit_refuses_an_image_over_the_configured_size_limit_without_downloading_it(
    fluxbot: FluxbotHarness,
) -> None:
    big = noise_png(64, 64)
    assert len(big) > 8192

    answer = await _refused_edit(fluxbot, Attachment("big.png", big), EDIT_MAX_BYTES="4096")

    assert "big.png" in answer and "the limit is 4 KiB" in answer
    assert fluxbot.discord.cdn_log == []


async def test_edit_refuses_an_upload_over_ten_mib_by_default(fluxbot: FluxbotHarness) -> None:
    huge = png_bytes() + bytes(10 * 2**20)  # the size is refused before a byte is read

    answer = await _refused_edit(fluxbot, Attachment("huge.png", huge))

    assert "huge.png is 10.1 MiB; the limit is 10 MiB" in answer
    assert fluxbot.discord.cdn_log == []


async def test_edit_refuses_a_file_that_only_claims_to_be_an_image(fluxbot: FluxbotHarness) -> None:
    answer = await _refused_edit(fluxbot, Attachment("fake.png", b"not really a png" * 10, content_type="image/png"))

    assert "not an image" in answer


async def test_edit_accepts_a_gif(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await world.member.slash(
            world.channel, "edit", image=Attachment("wave.gif", two_frame_gif((255, 0, 0), (0, 0, 255))), prompt="x"
        )
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)

    assert only_task(fluxbot).source_ok


async def test_edit_sends_the_first_frame_of_a_gif_to_providers_that_take_images_inline(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    gif = two_frame_gif((255, 0, 0), (0, 0, 255))
    async with fluxbot.running(FLUX_PROVIDER="openai"):
        await world.member.slash(world.channel, "edit", image=Attachment("wave.gif", gif), prompt="make it calm")
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)

    (request,) = fluxbot.flux.requests_to("POST", "/v1/images/generations")
    header, _, data = sent_body(request)["input_image"].partition(",")
    assert header == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as frame:
        assert frame.format == "PNG" and frame.convert("RGB").getpixel((40, 40)) == (255, 0, 0)


async def test_edit_offers_only_models_that_can_edit(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        (edit,) = [c for c in world.emu.commands(None) if c.name == "edit"]
        (model,) = [o for o in edit.options if o["name"] == "model"]
        offered = {choice["value"] for choice in model["choices"]}
        assert DEFAULT_EDIT_MODEL in offered and "flux-2-klein" not in offered
        with pytest.raises(ValueError, match="must be one of"):  # the client does not let it through
            await world.member.slash(
                world.channel, "edit", image=Attachment("a.png", png_bytes()), prompt="x", model="flux-2-klein"
            )

    assert provider_requests(fluxbot) == []


# -- the Edit image menu ----------------------------------------------------------------------------------


async def _edit_with_menu(harness: FluxbotHarness, target: Message, prompt: str) -> Message:
    """Edit image on ``target``, answer the modal with ``prompt``; return the posted result."""
    world = harness.world
    menu = await world.member.context_menu(target, "Edit image")
    modal = await menu.wait_response()
    assert isinstance(modal, dict) and modal["title"] == "Edit image"
    submitted = await world.member.submit_modal(menu, {"prompt": prompt})
    await submitted.wait_acknowledged()
    return await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, after=target)


async def test_edit_image_menu_asks_for_a_prompt_and_edits_the_messages_first_image(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        posted = await world.admin.send(
            world.channel,
            "two photos",
            attachments=[Attachment("first.png", png_bytes(64, 64)), Attachment("second.png", png_bytes(128, 64))],
        )
        result = await _edit_with_menu(fluxbot, posted, "add a rainbow")

    body = sent_body(provider_requests(fluxbot)[0])
    assert (body["action"], body["prompt"], body["size"]) == ("edit", "add a rainbow", "1:1")
    assert cdn_path(body["image_url"]) == posted.attachments[0].path
    task = only_task(fluxbot)
    assert task.source_ok
    assert [file.data for file in result.attachments] == [fluxbot.flux.image_bytes(task.images[0])]
    assert result.pinged_ids == {world.member.id}  # whoever used the menu, not the author of the photos


async def test_edit_image_menu_edits_an_image_shown_in_an_embed_through_discords_media_proxy(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    url = fluxbot.flux.add_file("sunset.png", png_bytes(64, 112), "image/png")
    world.emu.media_proxy.publish(url)  # a site on the public web, which Discord's proxy can reach
    async with fluxbot.running():
        posted = await world.admin.send(world.channel, embeds=[{"title": "A sunset", "image": {"url": url}}])
        await _edit_with_menu(fluxbot, posted, "make it a sunrise")

    body = sent_body(provider_requests(fluxbot)[0])
    proxied = posted.embeds[0]["image"]["proxy_url"]
    assert body["image_url"] == proxied and body["size"] == "9:16"  # Discord's copy, never the original link
    assert proxied.startswith(f"{world.emu.base_url}/external/")
    assert only_task(fluxbot).source_ok
    # The bot checked the image and the provider fetched it, both through Discord's proxy.
    assert [fetch.status for fetch in world.emu.media_proxy.log] == [200, 200]


async def test_edit_image_menu_edits_the_bots_own_result(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await world.member.slash(world.channel, "imagine", prompt="a lighthouse")
        first = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)
        await _edit_with_menu(fluxbot, first, "add a storm")

    generate, edit = provider_requests(fluxbot)
    assert sent_body(generate)["action"] == "generate"
    assert cdn_path(sent_body(edit)["image_url"]) == first.attachments[0].path
    assert all(task.outcome is not None and task.outcome.ok for task in fluxbot.flux.tasks.values())


async def test_edit_image_menu_on_a_message_without_an_image_says_so_instead_of_opening_a_modal(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        posted = await world.admin.send(world.channel, "no pictures here")
        menu = await world.member.context_menu(posted, "Edit image")
        answer = await menu.wait_response()

    assert menu.modal is None
    assert isinstance(answer, Message) and answer.ephemeral
    assert "no image" in answer.content
    assert provider_requests(fluxbot) == []


# -- replying to an image and mentioning the bot ----------------------------------------------------------


async def _reply_with_mention(harness: FluxbotHarness, target: Message, text: str) -> Message:
    """The member replies to ``target`` mentioning the bot; return the bot's reply to that."""
    world = harness.world
    reply = await world.member.send(world.channel, text, reply_to=target, mention_bot=True)
    return await world.emu.wait_for_message(
        world.channel, lambda m: m.reference_id == reply.id, author=world.emu.bot_user
    )


async def test_a_reply_mentioning_the_bot_edits_the_bots_result_with_the_reply_as_prompt(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await world.member.slash(world.channel, "imagine", prompt="a castle")
        first = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)
        answer = await _reply_with_mention(fluxbot, first, "  put it on a hill  ")
        edited = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, after=first)

    assert "On it" in answer.content and not answer.pinged_ids
    _, edit = provider_requests(fluxbot)
    body = sent_body(edit)
    assert (body["action"], body["prompt"]) == ("edit", "put it on a hill")
    assert cdn_path(body["image_url"]) == first.attachments[0].path
    assert edited.pinged_ids == {world.member.id}


async def test_a_reply_mentioning_the_bot_edits_another_members_upload(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        photo = await world.admin.send(world.channel, "my dog", attachments=[Attachment("dog.jpg", jpeg_bytes())])
        await _reply_with_mention(fluxbot, photo, "give the dog a hat")
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)

    body = sent_body(provider_requests(fluxbot)[0])
    assert body["prompt"] == "give the dog a hat"
    assert cdn_path(body["image_url"]) == photo.attachments[0].path
    assert only_task(fluxbot).source_ok
    assert result.pinged_ids == {world.member.id}


async def test_a_reply_that_only_mentions_the_bot_explains_what_to_write(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        photo = await world.admin.send(world.channel, attachments=[Attachment("dog.png", png_bytes())])
        answer = await _reply_with_mention(fluxbot, photo, "")

    assert "describe the change" in answer.content
    assert provider_requests(fluxbot) == []


async def test_a_reply_to_a_message_without_an_image_says_there_is_none(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        words = await world.admin.send(world.channel, "just words")
        answer = await _reply_with_mention(fluxbot, words, "make it blue")

    assert "no image" in answer.content
    assert provider_requests(fluxbot) == []


async def test_without_the_message_content_intent_a_reply_still_edits_the_bots_own_result(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    async with fluxbot.running(MESSAGE_CONTENT_INTENT="false"):
        await world.member.slash(world.channel, "imagine", prompt="a castle")
        first = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)
        await _reply_with_mention(fluxbot, first, "put it on a hill")
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, after=first)

    assert sent_body(provider_requests(fluxbot)[1])["prompt"] == "put it on a hill"


async def test_without_the_message_content_intent_a_reply_to_a_members_image_points_to_the_menu(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    async with fluxbot.running(MESSAGE_CONTENT_INTENT="false"):
        photo = await world.admin.send(world.channel, "my dog", attachments=[Attachment("dog.jpg", jpeg_bytes())])
        answer = await _reply_with_mention(fluxbot, photo, "give the dog a hat")

    assert "Message Content intent" in answer.content and "Edit image" in answer.content
    assert provider_requests(fluxbot) == []


# -- images from anywhere but Discord ----------------------------------------------------------------------

NOT_ON_DISCORD = "only uses images stored on Discord"
NOT_DOWNLOADED = "could not download that image"


@pytest.fixture
async def sites() -> AsyncIterator[Callable[[], Awaitable[LoopbackSite]]]:
    """``await sites()`` starts a recording HTTP server on loopback; all are closed after the test."""
    started: list[LoopbackSite] = []

    async def start() -> LoopbackSite:
        started.append(await LoopbackSite().start())
        return started[-1]

    yield start
    for site in started:
        await site.close()


def jobs_recorded(harness: FluxbotHarness) -> int:
    """Jobs in the bot's SQLite file: a refused request records none, so reserves and charges nothing."""
    with contextlib.closing(sqlite3.connect(harness.database, timeout=5)) as conn:
        (count,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
    return int(count)


async def _refused_menu_edit(harness: FluxbotHarness, target: Message) -> str:
    """Edit image on ``target`` and a prompt; return the ephemeral refusal the member gets."""
    world = harness.world
    menu = await world.member.context_menu(target, "Edit image")
    await menu.wait_response()
    submitted = await world.member.submit_modal(menu, {"prompt": "make it blue"})
    answer = await submitted.wait_response()
    assert isinstance(answer, Message)
    assert answer.ephemeral and answer.visible_to == world.member.id
    return answer.content


async def test_edit_image_menu_on_an_embed_pointing_into_the_bots_network_fetches_nothing(
    fluxbot: FluxbotHarness, sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    world = fluxbot.world
    inner = await sites()
    url = inner.serve("/latest/meta-data/image.png", png_bytes(64, 64))
    async with fluxbot.running():
        posted = await world.admin.send(world.channel, embeds=[{"title": "look", "image": {"url": url}}])
        answer = await _refused_menu_edit(fluxbot, posted)

    assert inner.requests == []  # neither the bot nor the provider reached it
    assert NOT_DOWNLOADED in answer
    # The bot asked Discord's media proxy, which cannot reach the bot's network either.
    assert [(fetch.original, fetch.status) for fetch in world.emu.media_proxy.log] == [(url, 404)]
    assert provider_requests(fluxbot) == [] and jobs_recorded(fluxbot) == 0


async def test_a_link_preview_whose_image_redirects_only_the_bot_fetches_nothing_inside(
    fluxbot: FluxbotHarness, sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    world = fluxbot.world
    inner, page = await sites(), await sites()
    inner.serve("/admin/snapshot.png", png_bytes(64, 64))
    preview = page.redirect("/og-image.png", inner.url("/admin/snapshot.png"))
    world.emu.media_proxy.publish(preview)  # an ordinary public web page
    embed = {"type": "article", "url": page.url("/article"), "thumbnail": {"url": preview}}
    async with fluxbot.running():
        posted = await world.member.send(world.channel, page.url("/article"), embeds=[embed])
        answer = await _refused_menu_edit(fluxbot, posted)

    assert inner.requests == []
    assert NOT_DOWNLOADED in answer
    assert page.requests == ["/og-image.png"]  # once, by Discord's proxy, never by the bot
    assert provider_requests(fluxbot) == [] and jobs_recorded(fluxbot) == 0


async def test_a_reply_asking_to_edit_an_embed_pointing_into_the_bots_network_is_refused_in_a_reply(
    fluxbot: FluxbotHarness, sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    world = fluxbot.world
    inner = await sites()
    url = inner.serve("/image.png", png_bytes(64, 64))
    async with fluxbot.running():
        posted = await world.admin.send(world.channel, embeds=[{"image": {"url": url}, "thumbnail": {"url": url}}])
        answer = await _reply_with_mention(fluxbot, posted, "make it blue")

    assert inner.requests == []
    assert NOT_DOWNLOADED in answer.content and not answer.ephemeral
    assert provider_requests(fluxbot) == [] and jobs_recorded(fluxbot) == 0


async def test_an_attachment_on_a_host_off_the_list_is_refused_before_it_is_fetched(fluxbot: FluxbotHarness) -> None:
    cat = Attachment("cat.png", png_bytes(64, 64))

    answer = await _refused_edit(fluxbot, cat, DISCORD_MEDIA_HOSTS="cdn.discordapp.com")

    assert fluxbot.discord.cdn_log == []
    assert NOT_ON_DISCORD in answer
    assert jobs_recorded(fluxbot) == 0


async def _reroll_with_source(harness: FluxbotHarness, source: str, **env: str) -> str:
    """An edit posted, then its recorded source replaced by ``source`` (as an older version may have
    stored it), then Re-roll clicked after a restart; returns the member's ephemeral answer."""
    world = harness.world
    async with harness.running(**env):
        slash = await world.member.slash(
            world.channel, "edit", image=Attachment("boat.png", png_bytes(64, 64)), prompt="x"
        )
        await slash.wait_acknowledged()
        edited = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user)
    with contextlib.closing(sqlite3.connect(harness.database, timeout=5)) as conn, conn:
        conn.execute("UPDATE jobs SET source_image_url = ?", (source,))
    async with harness.running(**env):
        click = await world.member.click(edited, edited.custom_ids[0].replace(":edit:", ":reroll:"))
        answer = await click.wait_response()
    assert isinstance(answer, Message) and answer.ephemeral
    assert len(provider_requests(harness)) == 1  # only the first edit
    assert jobs_recorded(harness) == 1
    return answer.content


async def test_reroll_of_an_edit_whose_recorded_source_is_not_on_discord_fetches_nothing(
    fluxbot: FluxbotHarness, sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    inner = await sites()

    answer = await _reroll_with_source(fluxbot, inner.serve("/image.png", png_bytes()))

    assert NOT_ON_DISCORD in answer
    assert inner.requests == []


async def test_reroll_never_follows_a_redirect_from_a_listed_host_to_another(
    fluxbot: FluxbotHarness, sites: Callable[[], Awaitable[LoopbackSite]]
) -> None:
    inner, listed = await sites(), await sites()
    inner.serve("/image.png", png_bytes())
    source = listed.redirect("/attachments/1/2/boat.png", inner.url("/image.png"))
    hosts = f"{fluxbot.discord.host}:{fluxbot.discord.port} {listed.host_port}"

    answer = await _reroll_with_source(fluxbot, source, DISCORD_MEDIA_HOSTS=hosts)

    assert NOT_ON_DISCORD in answer
    assert listed.requests == ["/attachments/1/2/boat.png"]
    assert inner.requests == []
