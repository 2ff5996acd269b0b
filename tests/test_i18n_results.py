"""Jobs in their readers' languages: the status line in the language of the member who asked, the posted result
in the server's, and the reasons a job failed (kept in English) shown translated wherever they are read.

The status line is edited by the runner long after the member's interaction is gone (and after a restart): the
member's language is kept with the job in the database, on both backends. The end-to-end tests run the real bot
on the loopback Discord and Flux emulators, whose servers and members each have a Discord locale.
"""

from __future__ import annotations

import re
from typing import Any

from bot.db import Job, JobKind, JobStatus, NewJob, Provider, QuotaLimits, Store, create_job, get_job, work
from bot.i18n import lazy, tr
from bot.jobs import DELIVERY_FAILED_MESSAGE, kept_message
from tests.fakediscord import Interaction, Message, Perm
from tests.fakediscord.fixtures import World
from tests.fluxbot_harness import FluxbotHarness, is_result, results_in, status_line

#: The provider refused a request's parameters, in its own words (a value, never translated).
REFUSED = "The image service refused the request's parameters. Its reason: `{reason}`"
GUILD = 61
CHANNEL = 62
MEMBER = 63


def new_job(**fields: Any) -> NewJob:
    values: dict[str, Any] = {
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "user_id": MEMBER,
        "kind": JobKind.GENERATE,
        "prompt": "ein Leuchtturm",
        "model": "flux-dev",
        "size": "1:1",
        "count": 1,
        "provider": Provider.ACEDATA,
        **fields,
    }
    return NewJob(**values)


def fields(message: Message) -> list[tuple[str, str]]:
    """The result embed's fields: (label, value)."""
    (embed,) = message.embeds
    return [(field["name"], field["value"]) for field in embed["fields"]]


def labels(message: Message) -> list[str]:
    return [component["label"] for row in message.components for component in row["components"]]


def link(world: World, message: Message) -> str:
    return f"https://discord.com/channels/{world.guild.id}/{world.channel.id}/{message.id}"


def button_id(message: Message, action: str) -> str:
    return next(cid for cid in message.custom_ids if cid.startswith(f"flux:{action}:"))


async def ended(world: World, inter: Interaction) -> str:
    """The status line once the job ended (every line starts with its emoji, whatever the language)."""
    await world.emu.wait_until(lambda: status_line(inter).startswith(("✅", "❌")), 10, "the job's last word")
    return status_line(inter)


# -- the store --------------------------------------------------------------------------------------------


async def test_a_job_keeps_the_language_of_the_member_who_asked(store: Store) -> None:
    asked = await create_job(store, new_job(locale="zh-CN"), QuotaLimits())
    unknown = await create_job(store, new_job(), QuotaLimits())
    assert isinstance(asked, Job) and isinstance(unknown, Job)

    claimed = await work.claim_queued(store, "this-process", concurrency=5)
    kept = await get_job(store, asked.id)

    assert (asked.locale, unknown.locale) == ("zh-CN", None)
    assert kept is not None and kept.locale == "zh-CN"
    assert {job.id: job.locale for job in claimed} == {asked.id: "zh-CN", unknown.id: None}


def test_a_failure_is_kept_as_its_message_id_unless_values_are_formatted_in() -> None:
    fixed = lazy("The finished image could not be posted. You were not charged.")
    with_values = lazy("{subject} is larger than {size}, so the bot cannot use it.", subject="The image", size="25 MB")

    assert kept_message(fixed) == DELIVERY_FAILED_MESSAGE
    assert kept_message(with_values) == "The image is larger than 25 MB, so the bot cannot use it."
    assert kept_message(DELIVERY_FAILED_MESSAGE) == DELIVERY_FAILED_MESSAGE


# -- end to end -------------------------------------------------------------------------------------------


async def test_a_server_in_german_gets_its_result_labelled_in_german(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    world.guild.locale = "de"  # the server's language; the member's own Discord is in English
    async with fluxbot.running():
        inter = await world.member.slash(world.channel, "imagine", prompt="ein Leuchtturm im Sturm")
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=10)
        line = await ended(world, inter)

    (embed,) = result.embeds
    job_id = int(button_id(result, "reroll").rsplit(":", 1)[1])
    assert result.content == f"Für <@{world.member.id}> generiert:"
    assert embed["description"] == "ein Leuchtturm im Sturm"  # the prompt as it was typed
    found = fields(result)
    assert [label for label, _ in found] == ["Modell", "Format", "Seed", "Dauer"]
    assert found[0][1] == "flux-dev" and re.fullmatch(r"\d+ s", found[3][1])  # the model's name as it is
    assert embed["footer"]["text"] == f"Auftrag #{job_id}"
    assert labels(result) == ["Neu würfeln", "Bearbeiten", "Löschen"]
    # The member's own answer is in their client's language.
    assert line == f"✅ Done: {link(world, result)}"


async def test_the_status_line_and_its_cancel_button_follow_the_member_even_after_a_restart(
    fluxbot: FluxbotHarness,
) -> None:
    world, flux = fluxbot.world, fluxbot.flux
    flux.task_delay = 3600
    yuki = world.guild.add_member("yuki", locale="ja")
    async with fluxbot.running():
        inter = await yuki.slash(world.channel, "imagine", prompt="夜の灯台")
        await world.emu.wait_until(lambda: status_line(inter).startswith("🎨"), 10, "the generating line")
        generating = status_line(inter)
        assert inter.original is not None
        buttons = labels(inter.original)

    async with fluxbot.running():  # a new process: the member's language comes from the database
        flux.advance(3600)
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=10)
        line = await ended(world, inter)

    assert re.fullmatch(r"🎨 生成中…（<t:\d+:R>に開始）", generating)
    assert buttons == ["キャンセル"]
    assert line == f"✅ 完了しました：{link(world, result)}"
    # The result is the server's (English here), whoever asked for it.
    assert [label for label, _ in fields(result)] == ["Model", "Size", "Seed", "Time"]
    assert labels(result) == ["Re-roll", "Edit", "Delete"]


async def test_a_failure_is_kept_in_english_and_read_in_each_members_language(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    world.channel.set_permissions(world.emu.bot_user, deny=Perm.SEND_MESSAGES | Perm.ATTACH_FILES)
    li = world.guild.add_member("li", locale="zh-CN")
    async with fluxbot.running() as bot:
        inter = await li.slash(world.channel, "imagine", prompt="雨中的灯塔")
        line = await ended(world, inter)
        page = await (await li.slash(world.channel, "history")).wait_response()
        kept = await bot.store.fetch_one("SELECT status, error_message FROM jobs WHERE user_id = ?", (li.id,))

    assert line == "❌ 生成好的图片无法发布。没有扣除任何额度。"
    assert kept is not None and (kept[0], kept[1]) == (JobStatus.FAILED.value, DELIVERY_FAILED_MESSAGE)
    assert isinstance(page, Message)
    assert "> ↳ 生成好的图片无法发布。没有扣除任何额度。" in page.embeds[0]["description"]
    assert not results_in(world.channel)


async def test_a_result_buttons_refusal_is_in_the_language_of_whoever_clicked(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    greta = world.guild.add_member("greta", locale="de")
    async with fluxbot.running():
        await world.member.slash(world.channel, "imagine", prompt="a lighthouse")
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=10)
        click = await greta.click(result, button_id(result, "delete"))
        answer = await click.wait_response()

    assert isinstance(answer, Message) and answer.ephemeral
    assert answer.content == "Nur das Mitglied, das dieses Bild angefordert hat, oder ein Moderator kann es löschen."
    assert not result.deleted


async def test_a_reason_with_the_providers_words_is_translated_when_told_and_kept_in_english(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    fluxbot.flux.fail_next_task(code="bad_request", message="prompt too long")
    greta = world.guild.add_member("greta", locale="de")
    async with fluxbot.running() as bot:
        inter = await greta.slash(world.channel, "imagine", prompt="ein Leuchtturm")
        line = await ended(world, inter)
        kept = await bot.store.fetch_one("SELECT error_message FROM jobs WHERE user_id = ?", (greta.id,))

    assert line == "❌ " + tr("de", REFUSED, reason="prompt too long")
    assert line != "❌ " + REFUSED.format(reason="prompt too long")  # German, not English
    assert kept is not None and kept[0] == REFUSED.format(reason="prompt too long")


async def test_a_result_posted_in_german_is_found_again_whatever_the_servers_language_is_now(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    world.guild.locale = "de"
    async with fluxbot.running() as bot:
        inter = await world.member.slash(world.channel, "imagine", prompt="ein Leuchtturm")
        result = await world.emu.wait_for_message(world.channel, is_result, author=world.emu.bot_user, timeout=10)
        await ended(world, inter)
    world.guild.locale = "en-US"
    async with fluxbot.running() as bot:  # after a restart, a result may have been posted without being recorded
        job = await get_job(bot.store, int(button_id(result, "reroll").rsplit(":", 1)[1]))
        assert job is not None
        found = await bot.courier.find_posted(job)

    assert result.embeds[0]["footer"]["text"] == f"Auftrag #{job.id}"
    assert found is not None and (found.message_id, found.images) == (result.id, 1)


async def test_a_result_in_direct_messages_is_in_the_members_own_language(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    yuki = world.guild.add_member("yuki", locale="ja")
    dm = world.emu.dm_channel(yuki)
    async with fluxbot.running(ALLOW_DMS="true"):
        await yuki.slash(dm, "imagine", prompt="夜の灯台")
        result = await world.emu.wait_for_message(dm, is_result, author=world.emu.bot_user, timeout=10)

    assert result.content == f"<@{yuki.id}> さんの生成結果："
    assert [label for label, _ in fields(result)] == ["モデル", "サイズ", "シード", "所要時間"]
    assert labels(result) == ["再生成", "編集", "削除"]
