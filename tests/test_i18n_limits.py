"""/usage, the /limits answers, the alerts and the report in their reader's language.

A member's /usage and an admin's /limits answers follow the Discord locale of whoever asked; an alert posted in a
server's alert channel follows the server's own locale; the report's summary follows the admin's, and so does
its chart wherever the chart's font can draw that language (Chinese and Japanese fall back to English rather
than to empty boxes). End to end on the loopback Discord with the real bot, and on the report's own functions.
"""

from __future__ import annotations

import asyncio
import re
import warnings

import pytest

from bot.alerts import PROVIDER_REPEAT, Alerts
from bot.db import Store
from bot.db.alerts import set_alert_channel
from bot.flux import CredentialsError
from bot.report import render_report, report_summary
from tests.conftest import FakeClock
from tests.fakediscord import Interaction
from tests.fakediscord.model import Member
from tests.fluxbot_harness import FluxbotHarness, ask, settled, status_line
from tests.test_alerts import ALERTS, GUILD, NOON, Channel
from tests.test_report import busy_report


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


async def usage_of(who: Member, fluxbot: FluxbotHarness) -> str:
    """What /usage answers ``who`` (a followup of the deferred answer)."""
    inter = await who.slash(fluxbot.world.channel, "usage")
    return (await inter.wait_followup()).content


async def imagine(who: Member, fluxbot: FluxbotHarness, prompt: str) -> Interaction:
    inter = await who.slash(fluxbot.world.channel, "imagine", prompt=prompt)
    await fluxbot.world.emu.wait_until(lambda: settled(inter), timeout=10)
    return inter


# -- /usage and /limits: the reader's locale ----------------------------------------------------------------


async def test_a_member_whose_discord_is_in_chinese_gets_usage_in_chinese(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    li = world.guild.add_member("li", locale="zh-CN")
    async with fluxbot.running():
        await ask(world.admin, fluxbot, "limits set", user_daily=5, cooldown=30)
        done = await imagine(li, fluxbot, "灯塔")
        in_chinese = await usage_of(li, fluxbot)
        in_english = await usage_of(world.member, fluxbot)

    assert status_line(done).startswith("✅")
    lines = in_chinese.splitlines()
    assert lines[0] == "**你今天的图片：** 1 / 5（剩余 4）"
    assert lines[1] == "**本月：** 1"
    assert lines[2] == "**本服务器今天：** 1"
    assert lines[3] == "**你在这里的限额：**"
    assert lines[4:9] == [
        "• 每日图片数：5（本服务器的设置）",
        "• 每月图片数（UTC）：不限（默认）",
        "• 每次请求的图片数：4（默认）",
        "• 同时进行的任务数：不限（默认）",
        "• 请求间隔：30 秒（本服务器的设置）",
    ]
    assert re.fullmatch(r"每日计数将于<t:\d+:R>重置。", lines[9])
    assert not re.search(r"[A-Za-z]{3,}", in_chinese.replace("UTC", ""))  # no English word left
    # The same server, the same moment, a member whose Discord is in English.
    assert in_english.splitlines()[0] == "**Your images today:** 0 of 5 (5 left)"
    assert "• Cooldown: 30 s (this server's)" in in_english


async def test_a_job_in_progress_is_told_in_the_member_s_language(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    greta = world.guild.add_member("greta", locale="de")
    fluxbot.flux.task_delay = 30.0  # the job stays at the provider while /usage is asked
    async with fluxbot.running():
        inter = await greta.slash(world.channel, "imagine", prompt="ein Leuchtturm")
        await world.emu.wait_until(lambda: status_line(inter).startswith("🎨"), timeout=10)
        shown = await usage_of(greta, fluxbot)

    assert re.search(r"^• Auftrag #\d+ \(1 x [\w.-]+\): wird erzeugt$", shown, re.MULTILINE), shown
    assert shown.startswith("**Deine Bilder heute:** 1\n")


async def test_an_admin_whose_discord_is_in_german_gets_the_limits_answers_in_german(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    world.admin.locale = "de"
    patrons = world.guild.add_role("Patrons")
    async with fluxbot.running():
        changed = await ask(world.admin, fluxbot, "limits set", user_daily=3)
        role_rule = await ask(world.admin, fluxbot, "limits role set", role=patrons, user_daily=10, cooldown=5)
        access = await ask(world.admin, fluxbot, "limits access add", role=patrons)
        blocked = await ask(world.admin, fluxbot, "limits member block", member=world.member, reason="Spam")
        listed = await ask(world.admin, fluxbot, "limits blocklist list")
        shown = await ask(world.admin, fluxbot, "limits show")
        alerts_off = await ask(world.admin, fluxbot, "limits alerts off")
        refused = await ask(world.admin, fluxbot, "limits models", allowed="no-such-model")

    assert changed.splitlines()[0] == "Aktualisiert."
    assert "**Bilder pro Mitglied pro Tag:** 3 (hier festgelegt)" in changed
    assert "**Bilder für den Server pro Tag:** kein Limit (Standard)" in changed
    assert f"Mitglieder mit <@&{patrons.id}> bekommen jetzt: Bilder pro Tag: 10, Wartezeit: 5 s." == role_rule
    assert access.splitlines() == [
        f"Mitglieder mit <@&{patrons.id}> dürfen den Bot nutzen.",
        f"**Wer den Bot nutzen darf:** <@&{patrons.id}> (und Mitglieder mit „Server verwalten“)",
    ]
    assert blocked == f"{world.member.mention} ist hier gesperrt (Grund: Spam)."
    assert listed == "Keine Wörter oder Wendungen sind gesperrt."
    assert "**Warnungen:** aus" in shown
    assert f"• <@&{patrons.id}>: Bilder pro Tag: 10, Wartezeit: 5 s" in shown
    assert "**Mitgliederregeln:** keine" in shown
    assert f"**Gesperrte Mitglieder (1):** <@{world.member.id}> (Spam)" in shown
    assert "(siehe `/limits sperrliste liste`)" in shown
    assert alerts_off == "Warnungen sind aus."
    assert refused.startswith("Unbekannte Modelle: no-such-model. Verfügbar: ")


# -- alerts: the server's locale ----------------------------------------------------------------------------


async def test_a_server_whose_locale_is_german_gets_its_alerts_in_german(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    world.guild.locale = "de"  # the server's community language; its members' Discord stays in English
    alerts_channel = world.guild.add_text_channel("bot-alerts")
    async with fluxbot.running() as bot:
        await set_alert_channel(bot.store, world.guild.id, alerts_channel.id, changed_by=world.admin.id)
        await ask(world.admin, fluxbot, "limits set", guild_daily=5)
        requests = [await imagine(world.member, fluxbot, f"a lighthouse {n}") for n in range(6)]
        await world.emu.wait_until(lambda: len(alerts_channel.messages) == 2, timeout=10)
        await imagine(world.member, fluxbot, "one more")  # every alert it could cause is posted before it is served
        posted = [message.content for message in alerts_channel.messages.values()]

    assert sum(status_line(inter).startswith("✅") for inter in requests) == 5
    assert "server's daily limit" in status_line(requests[-1])  # the member's own answer follows their locale
    assert len(posted) == 2
    assert re.fullmatch(
        r"⚠️ Bilder dieses Servers heute: 4 von 5 \(80 %\)\. Der Tageszähler wird <t:\d+:R> zurückgesetzt\.",
        posted[0],
    ), posted[0]
    assert re.fullmatch(
        r"🛑 Bilder dieses Servers heute: 5 von 5 \(100 %\)\. Anfragen, die nicht mehr hineinpassen, werden "
        r"abgelehnt, bis der Tageszähler <t:\d+:R> zurückgesetzt wird\. Admins können das Limit mit "
        r"`/limits festlegen server_pro_tag` ändern\.",
        posted[1],
    ), posted[1]


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("ja", "⚠️ 画像サービスがボットのアカウントを拒否しました (HTTP 401: API キーが受け付けられませんでした)。"),
        ("uk", "⚠️ The image provider refused the bot's account (HTTP 401: its API key was not accepted)"),
        (None, "⚠️ The image provider refused the bot's account (HTTP 401: its API key was not accepted)"),
    ],
)
async def test_a_provider_alert_follows_the_server_s_locale_and_falls_back_to_english(
    store: Store, clock: FakeClock, locale: str | None, expected: str
) -> None:
    channel = Channel()
    asked: list[int] = []

    def locale_of(guild_id: int) -> str | None:
        asked.append(guild_id)
        return locale

    alerts = Alerts(store, channel.post, clock=clock, locale_of=locale_of)
    await set_alert_channel(store, GUILD, ALERTS, changed_by=1)

    await alerts.provider_refused(GUILD, CredentialsError("rejected", status=401, code="invalid_token"))

    (text,) = channel.texts
    assert text.startswith(expected), text
    assert f"<t:{int(NOON + PROVIDER_REPEAT)}:R>" in text  # the next alert's earliest time, as Discord shows it
    assert asked == [GUILD]


async def test_an_alert_is_posted_in_english_when_the_server_s_locale_cannot_be_told(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    channel = Channel()

    def broken(guild_id: int) -> str | None:
        raise RuntimeError("no cache")

    alerts = Alerts(store, channel.post, clock=clock, locale_of=broken)
    await set_alert_channel(store, GUILD, ALERTS, changed_by=1)

    await alerts.provider_refused(GUILD, CredentialsError("rejected", status=401, code="invalid_token"))

    (text,) = channel.texts
    assert text.startswith("⚠️ The image provider refused the bot's account")
    assert f"guild {GUILD}: could not tell the server's locale" in caplog.text


# -- the report: the admin's locale, the chart where its font allows ----------------------------------------


def test_the_summary_is_in_the_admin_s_language() -> None:
    report = busy_report(2)

    text = report_summary(report, names={1000: "Alice"}, locale="ja")

    assert text.splitlines() == [
        "**利用レポート: 2025-01-01 から 2025-03-30 (UTC)**",
        f"投稿された画像: {report.total_images} (ジョブ: 321)",
        "モデル別: " + ", ".join(f"{model} {count}" for model, count in report.per_model.items()),
        "失敗したジョブ: timeout 4, lost 1",
        "拒否されたリクエスト: メンバーの日次上限 17, アクセス用ロールなし 3, ブロック中のメンバー 1, "
        "some\\_newer\\_rule 1",
        "よく使うメンバー:",
        "1. Alice: 100",
        "2. メンバー 1001: 99",
    ]


async def test_a_chart_in_russian_is_drawn_in_russian_and_in_chinese_or_japanese_in_english() -> None:
    report = busy_report(3)
    names = {1000: "Alice"}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        english, japanese, chinese, russian = await asyncio.gather(
            render_report(report, names=names, server="Server"),
            render_report(report, names=names, server="Server", locale="ja"),
            render_report(report, names=names, server="Server", locale="zh-CN"),
            render_report(report, names=names, server="Server", locale="ru"),
        )

    # DejaVu Sans, matplotlib's font (and the only one of the bot's image), has Cyrillic but no CJK.
    assert japanese == english and chinese == english
    assert russian != english
    assert not [w for w in caught if "missing from font" in str(w.message)]
