"""Refusals and errors in the reader's language, end to end.

An answer to a member (ephemeral) follows their Discord client's language (``interaction.locale``); what the
bot writes in the channel, where anyone may read it (its reply to a message asking for an edit), follows the
server's (``preferred_locale``). Values — prompts, model names, roles, channels, counts, file names — are put
in as they are. The real bot runs against the loopback Discord and the Flux emulator with a real SQLite file.
(The texts expected are written with each language's own punctuation, which ruff calls ambiguous.)
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot import db
from bot.db import QuotaRefusal, StoreBusyError
from bot.flux import (
    AccountError,
    FluxConnectionError,
    FluxError,
    FluxTimeoutError,
    ModerationError,
    UpstreamError,
)
from bot.flux.errors import error_for
from bot.images import DownloadError
from bot.limits import Refusal, RefusalKind
from cogs.feedback import describe_quota_refusal, describe_refusal, explain
from tests.conftest import png_bytes
from tests.fakediscord import Attachment, Channel, Member, Message
from tests.fluxbot_harness import FluxbotHarness, is_result, settled, status_line


async def imagine(harness: FluxbotHarness, who: Member, channel: Channel, **options: Any) -> str:
    """Run /imagine; return what the member's own response says once it is settled."""
    inter = await who.slash(channel, "imagine", **options)
    await harness.world.emu.wait_until(lambda: settled(inter), 10, "a verdict")
    return status_line(inter)


async def ask(who: Member, channel: Channel, command: str, /, **options: Any) -> None:
    """Run an admin command and wait for its answer."""
    await (await who.slash(channel, command, **options)).wait_response()


async def test_a_member_whose_discord_is_in_chinese_gets_the_servers_refusals_in_chinese(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    li = world.guild.add_member("li", locale="zh-CN")
    async with fluxbot.running():
        await ask(world.admin, world.channel, "limits blocklist add", term="Gore")
        await ask(world.admin, world.channel, "limits models", allowed="flux-dev flux-pro")
        await ask(world.admin, world.channel, "limits set", user_daily=1)
        blocked = await imagine(fluxbot, li, world.channel, prompt="so much gore")
        model = await imagine(fluxbot, li, world.channel, prompt="一只猫", model="flux-2-pro")
        first = await imagine(fluxbot, li, world.channel, prompt="一只猫")
        over = await imagine(fluxbot, li, world.channel, prompt="一只狗")
        in_english = await imagine(fluxbot, world.member, world.channel, prompt="so much gore")

    assert blocked == "此服务器不允许该提示词中的某个词语。请换个说法。"
    assert model == "此服务器不允许使用该模型。允许的模型：flux-dev, flux-pro。"
    assert first.startswith("✅")
    assert re.fullmatch(r"已达到每日限额。你今天的图片：1 / 1。<t:\d+:R>重置。", over), over
    # The same refusal, in the same server, for a member whose Discord is in English.
    assert in_english == "This server does not allow a word or phrase in that prompt. Please rephrase it."
    assert fluxbot.flux.count("POST", "/flux/images") == 1


async def test_a_long_list_in_a_refusal_says_how_many_were_left_out_in_the_members_language(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    greta = world.guild.add_member("greta", locale="de")
    elsewhere = world.guild.add_text_channel("elsewhere")
    art = [world.guild.add_text_channel(f"art-{n}").id for n in range(120)]
    async with fluxbot.running() as bot:
        await db.update_guild_settings(bot.store, world.guild.id, world.admin.id, allowed_channels=art)
        refused = await imagine(fluxbot, greta, elsewhere, prompt="ein Leuchtturm")

    assert refused.startswith("Der Bot wird in diesem Kanal nicht genutzt. Versuch es in <#")
    assert re.search(r"<#\d+>, … und \d+ weitere\.$", refused), refused
    assert len(refused) <= 2000


async def test_the_bots_own_checks_of_a_request_answer_in_the_members_language(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    olga = world.guild.add_member("olga", locale="ru")
    joao = world.guild.add_member("joao", locale="pt-BR")
    async with fluxbot.running():
        size = await imagine(fluxbot, olga, world.channel, prompt="маяк", model="flux-kontext-pro", size="1024x1792")
        edit = await joao.slash(
            world.channel,
            "edit",
            image=Attachment("notas.txt", b"so words\n", content_type="text/plain"),
            prompt="deixe azul",
        )
        not_an_image = await edit.wait_response()
        tiny = await olga.slash(world.channel, "edit", image=Attachment("tiny.png", png_bytes(48, 32)), prompt="синий")
        await world.emu.wait_until(lambda: settled(tiny), 10, "a verdict")

    # A model name and a size are values: they are shown as the member gave them.
    assert size.startswith("Размер '1024x1792' недоступен для flux-kontext-pro. Разрешены: ")
    assert isinstance(not_an_image, Message)
    assert not_an_image.content == "notas.txt não é uma imagem (PNG, JPEG, WebP ou GIF)."
    # Found while the image is checked, far from the answer: still in the member's language.
    assert status_line(tiny) == "Размер изображения — 48×32 пикс.; каждая сторона должна быть не меньше 64."
    assert fluxbot.flux.count("POST", "/flux/images") == 0


async def test_the_edit_image_window_is_in_the_language_of_the_member_who_opens_it(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    aiko = world.guild.add_member("aiko", locale="ja")
    async with fluxbot.running():
        photo = await world.admin.send(world.channel, attachments=[Attachment("dog.png", png_bytes(96, 72))])
        menu = await aiko.context_menu(photo, "Edit image")
        modal = await menu.wait_response()
        submitted = await aiko.submit_modal(menu, {"prompt": "帽子をかぶせて"})
        await submitted.wait_acknowledged()
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, after=photo)

    assert isinstance(modal, dict)
    assert modal["title"] == "画像を編集"
    (row,) = modal["components"]
    (field,) = row["components"]
    assert (field["custom_id"], field["label"]) == ("prompt", "画像をどう変えますか？")
    assert fluxbot.flux.requests_to("POST", "/flux/images")[0].json["prompt"] == "帽子をかぶせて"


async def test_a_reply_asking_for_an_edit_is_answered_in_the_servers_language_not_the_members(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    world.guild.locale = "de"
    li = world.guild.add_member("li", locale="zh-CN")
    async with fluxbot.running():
        photo = await world.admin.send(world.channel, attachments=[Attachment("dog.png", png_bytes(96, 72))])
        empty = await li.send(world.channel, "", reply_to=photo, mention_bot=True)
        told = await world.emu.wait_for_message(
            world.channel, lambda m: m.reference_id == empty.id, author=world.emu.bot_user
        )
        asked = await li.send(world.channel, "gib dem Hund einen Hut", reply_to=photo, mention_bot=True)
        taken = await world.emu.wait_for_message(
            world.channel, lambda m: m.reference_id == asked.id, author=world.emu.bot_user
        )
        await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, after=photo)

    assert told.content.startswith("Sag mir, wie sich das Bild ändern soll: Antworte darauf, erwähne mich")
    assert re.fullmatch(r"🎨 Wird gemacht – Auftrag #\d+\.", taken.content), taken.content


# -- every refusal and error, in every language ------------------------------------------------------------

REFUSALS = [
    Refusal(RefusalKind.DMS_OFF),
    Refusal(RefusalKind.CHANNEL, ("111", "222")),
    Refusal(RefusalKind.MODEL, ("flux-dev", "flux-pro")),
    Refusal(RefusalKind.COUNT, ("2",)),
    Refusal(RefusalKind.BLOCKED_TERM),
    Refusal(RefusalKind.MEMBER_BLOCKED, ("spam",)),
    Refusal(RefusalKind.MEMBER_BLOCKED),
    Refusal(RefusalKind.ACCESS, ("333",)),
    Refusal(RefusalKind.ACCESS),
]
QUOTA_REFUSALS = [
    QuotaRefusal(kind, limit=5, current=5, requested=requested, resets_at=resets_at)
    for kind in db.LimitKind
    for requested in (1, 3)
    for resets_at in (None, 1_800_000_000.0)
]
#: A locale of each shipped language (Discord's names).
LOCALES = ["zh-CN", "es-ES", "pt-BR", "ru", "ja", "de"]


@pytest.mark.parametrize("locale", LOCALES)
def test_every_refusal_is_told_in_every_language_with_its_values_as_they_are(locale: str) -> None:
    for refusal in REFUSALS:
        english, translated = describe_refusal(refusal, None), describe_refusal(refusal, locale)
        assert translated != english, refusal.kind
        assert all(value in translated for value in refusal.allowed), (refusal.kind, translated)
    for quota in QUOTA_REFUSALS:
        english, translated = describe_quota_refusal(quota, None), describe_quota_refusal(quota, locale)
        assert translated != english, quota
        assert "5" in translated
        assert ("<t:1800000000:R>" in translated) == (quota.resets_at is not None), translated


@pytest.mark.parametrize("locale", LOCALES)
def test_the_image_services_and_the_bots_own_errors_are_told_in_every_language(locale: str) -> None:
    errors: list[BaseException] = [
        cls("operator detail") for cls in (FluxError, FluxTimeoutError, AccountError, ModerationError, UpstreamError)
    ]
    errors += [
        FluxConnectionError("refused", reached_server=False),
        error_for(status=400, code=None, message="width must be a multiple of 32"),
        DownloadError("GET x answered HTTP 404", retryable=False),
        DownloadError("GET x failed", retryable=True),
        StoreBusyError("locked"),
        KeyError("unexpected"),
    ]
    for error in errors:
        english, translated = explain(error, "a test", None), explain(error, "a test", locale)
        assert translated != english, type(error).__name__
    reason = explain(errors[6], "a test", locale)
    assert reason.endswith("`width must be a multiple of 32`")  # the provider's own words, as it wrote them
