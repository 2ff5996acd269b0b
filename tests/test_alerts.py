"""Budget and provider alerts: claimed once per event across processes, posted once in the server's alert channel,
never pinging anyone, and never breaking the request or the runner that triggered them."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from bot import db
from bot.alerts import PROVIDER_REPEAT, Alerts
from bot.db import Job, JobKind, LimitKind, NewJob, Provider, QuotaLimits, QuotaRefusal, Store, create_job
from bot.db.alerts import ALERT_CHANNEL_FIELD, alert_channel, claim_alert, set_alert_channel
from bot.flux import AccountError, AceDataClient, BalanceError, CredentialsError
from bot.jobs import JobDone, JobFailed, JobRunner
from tests.conftest import KEY, NO_WAIT, FakeClock, open_backend
from tests.fakediscord import Interaction, Message, Perm
from tests.fluxbot_harness import FluxbotHarness, settled, status_line
from tests.fluxemu import FluxEmulator
from tests.test_jobs import RecordingCourier

GUILD = 111
CHANNEL = 222
USER = 333
ADMIN = 444
ALERTS = 999
NOON = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 12, 4, 0, 0, tzinfo=UTC).timestamp()
NEXT_MONTH = datetime(2027, 1, 1, 0, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0

#: Anything in a message that Discord could turn into a notification.
PINGS = re.compile(r"<@[!&]?\d+>|@everyone|@here")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


class Channel:
    """Stands in for Discord: records what would be posted, or refuses as Discord does for a deleted channel."""

    def __init__(self) -> None:
        self.posts: list[tuple[int, str]] = []
        self.refuse = False

    async def post(self, channel_id: int, text: str) -> None:
        if self.refuse:
            raise LookupError("404 Not Found (error code: 10003): Unknown Channel")
        self.posts.append((channel_id, text))

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.posts]


@pytest.fixture
def channel() -> Channel:
    return Channel()


@pytest.fixture
def alerts(store: Store, channel: Channel, clock: FakeClock) -> Alerts:
    return Alerts(store, channel.post, clock=clock)


async def use(store: Store, images: int, *, guild: int = GUILD) -> None:
    """Record accepted jobs for ``images`` images in the server today (reserved, as after /imagine)."""
    while images:
        count = min(images, 4)
        new = NewJob(
            guild_id=guild,
            channel_id=CHANNEL,
            user_id=USER,
            kind=JobKind.GENERATE,
            prompt="a lighthouse",
            model="flux-dev",
            size="1:1",
            count=count,
            provider=Provider.ACEDATA,
        )
        assert isinstance(await create_job(store, new, QuotaLimits()), Job)
        images -= count


async def claims(store: Store) -> list[str]:
    return [row[0] for row in await store.fetch_all("SELECT key FROM alerts_sent ORDER BY key")]


# -- the store -----------------------------------------------------------------------------------------


async def test_of_twenty_simultaneous_claims_from_two_processes_exactly_one_wins(
    store: Store, other_store: Store
) -> None:
    key = "guild_daily:80:2026-12-03"
    won = await asyncio.gather(*(claim_alert(store if n % 2 else other_store, GUILD, key) for n in range(20)))
    assert won.count(True) == 1
    assert await claim_alert(store, GUILD, key) is False
    assert await claim_alert(other_store, GUILD + 1, key) is True  # each server has its own events
    assert await claim_alert(store, GUILD, "guild_daily:100:2026-12-03") is True


async def test_a_key_claimed_for_good_is_never_claimed_again(store: Store, clock: FakeClock) -> None:
    assert await claim_alert(store, GUILD, "guild_monthly:100:2026-12") is True
    clock.now += 365 * DAY
    assert await claim_alert(store, GUILD, "guild_monthly:100:2026-12") is False


async def test_a_lasting_event_is_claimed_again_once_after_again_after(
    store: Store, other_store: Store, clock: FakeClock
) -> None:
    key = "provider:credentials"
    assert await claim_alert(store, GUILD, key, again_after=3600) is True
    clock.now += 3600
    assert await claim_alert(store, GUILD, key, again_after=3600) is False  # not *more* than an hour yet
    clock.now += 1
    won = await asyncio.gather(
        *(claim_alert(store if n % 2 else other_store, GUILD, key, again_after=3600) for n in range(20))
    )
    assert won.count(True) == 1
    clock.now += 1800
    assert await claim_alert(store, GUILD, key, again_after=3600) is False  # the renewal counts from its own time


async def test_the_alert_channel_is_set_moved_and_removed_each_change_audited(store: Store) -> None:
    assert await alert_channel(store, GUILD) is None
    assert await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN) is True
    assert await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN) is False
    assert await alert_channel(store, GUILD) == ALERTS
    assert await set_alert_channel(store, GUILD, ALERTS + 1, changed_by=ADMIN + 1) is True
    assert await alert_channel(store, GUILD) == ALERTS + 1
    assert await alert_channel(store, GUILD + 1) is None
    assert await set_alert_channel(store, GUILD, None, changed_by=ADMIN) is True
    assert await set_alert_channel(store, GUILD, None, changed_by=ADMIN) is False
    assert await alert_channel(store, GUILD) is None
    changes = await db.recent_limit_changes(store, GUILD)
    assert [(c.field, c.old_value, c.new_value, c.user_id) for c in reversed(changes)] == [
        (ALERT_CHANNEL_FIELD, None, str(ALERTS), ADMIN),
        (ALERT_CHANNEL_FIELD, str(ALERTS), str(ALERTS + 1), ADMIN + 1),
        (ALERT_CHANNEL_FIELD, str(ALERTS + 1), None, ADMIN),
    ]


# -- the service: budgets --------------------------------------------------------------------------------


async def test_80_and_100_percent_of_the_daily_budget_are_each_told_once(
    store: Store, alerts: Alerts, channel: Channel
) -> None:
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    told = []
    for _ in range(12):  # one image per request, past the limit (as if the limit were lowered meanwhile)
        await use(store, 1)
        await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=None)
        told.append(len(channel.posts))

    assert told == [0] * 7 + [1, 1, 2, 2, 2]  # at 8 of 10, then at 10 of 10
    assert channel.posts == [
        (
            ALERTS,
            f"⚠️ This server has used 8 of its 10 images today (80%). The daily count resets <t:{int(MIDNIGHT)}:R>.",
        ),
        (
            ALERTS,
            "🛑 This server has used 10 of its 10 images today (100%): requests that do not fit are refused until "
            f"the daily count resets <t:{int(MIDNIGHT)}:R>. Admins can change the limit with "
            "`/limits set guild_daily`.",
        ),
    ]
    assert not any(PINGS.search(text) for text in channel.texts)


async def test_reaching_80_and_100_percent_at_once_tells_only_100(
    store: Store, alerts: Alerts, channel: Channel
) -> None:
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    await use(store, 7)
    await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=None)
    await use(store, 3)
    await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=None)
    await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=None)

    assert len(channel.texts) == 1
    assert "10 of its 10 images today (100%)" in channel.texts[0]
    assert await claims(store) == ["guild_daily:100:2026-12-03", "guild_daily:80:2026-12-03"]


async def test_two_processes_seeing_the_same_usage_tell_it_once(
    store: Store, other_store: Store, channel: Channel, clock: FakeClock
) -> None:
    processes = [Alerts(store, channel.post, clock=clock), Alerts(other_store, channel.post, clock=clock)]
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    await use(store, 9)
    await asyncio.gather(
        *(processes[n % 2].after_reservation(GUILD, guild_daily=10, guild_monthly=None) for n in range(10))
    )
    await use(other_store, 1)
    await asyncio.gather(
        *(processes[n % 2].after_reservation(GUILD, guild_daily=10, guild_monthly=None) for n in range(10))
    )

    assert [text.split(")")[0] for text in channel.texts] == [
        "⚠️ This server has used 9 of its 10 images today (90%",
        "🛑 This server has used 10 of its 10 images today (100%",
    ]


async def test_each_day_is_told_again(store: Store, alerts: Alerts, channel: Channel, clock: FakeClock) -> None:
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    await use(store, 4)
    await alerts.after_reservation(GUILD, guild_daily=5, guild_monthly=None)
    clock.now += DAY
    await use(store, 3)
    await alerts.after_reservation(GUILD, guild_daily=5, guild_monthly=None)  # 3 of 5 today: nothing
    await use(store, 1)
    await alerts.after_reservation(GUILD, guild_daily=5, guild_monthly=None)

    assert len(channel.texts) == 2
    assert all("4 of its 5 images today (80%)" in text for text in channel.texts)
    assert f"<t:{int(MIDNIGHT + DAY)}:R>" in channel.texts[1]


async def test_the_monthly_budget_is_told_once_a_month(
    store: Store, alerts: Alerts, channel: Channel, clock: FakeClock
) -> None:
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    await use(store, 10)
    await alerts.after_reservation(GUILD, guild_daily=None, guild_monthly=20)
    clock.now += DAY  # another day of the same month: the month's images add up
    await use(store, 6)
    await alerts.after_reservation(GUILD, guild_daily=None, guild_monthly=20)
    clock.now += DAY
    await use(store, 1)
    await alerts.after_reservation(GUILD, guild_daily=None, guild_monthly=20)
    clock.now = NEXT_MONTH + 3600
    await use(store, 16)
    await alerts.after_reservation(GUILD, guild_daily=None, guild_monthly=20)

    assert channel.texts == [
        "⚠️ This server has used 16 of its 20 images this month (80%). "
        f"The monthly count resets <t:{int(NEXT_MONTH)}:R>.",
        "⚠️ This server has used 16 of its 20 images this month (80%). "
        f"The monthly count resets <t:{int(datetime(2027, 2, 1, tzinfo=UTC).timestamp())}:R>.",
    ]
    assert await claims(store) == ["guild_monthly:80:2026-12", "guild_monthly:80:2027-01"]


async def test_daily_and_monthly_budgets_are_told_separately(store: Store, alerts: Alerts, channel: Channel) -> None:
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    await use(store, 8)
    await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=10)

    assert len(channel.texts) == 2
    assert "today (80%)" in channel.texts[0] and "this month (80%)" in channel.texts[1]


async def test_without_an_alert_channel_nothing_is_posted_or_claimed(
    store: Store, alerts: Alerts, channel: Channel
) -> None:
    await use(store, 10)
    await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=10)
    await alerts.quota_refused(GUILD, QuotaRefusal(LimitKind.GUILD_DAILY, 10, 10, 1, MIDNIGHT))
    await alerts.provider_refused(GUILD, CredentialsError("invalid token", status=401))
    await set_alert_channel(store, GUILD + 1, ALERTS, changed_by=ADMIN)  # another server's channel

    await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=10)

    assert channel.posts == []
    assert await claims(store) == []


async def test_direct_messages_are_never_alerted(store: Store, alerts: Alerts, channel: Channel) -> None:
    await set_alert_channel(store, 0, ALERTS, changed_by=ADMIN)  # whatever wrote it, server 0 is the DMs
    await use(store, 10, guild=0)
    await alerts.after_reservation(0, guild_daily=10, guild_monthly=None)
    await alerts.provider_refused(0, BalanceError("used up", status=403))

    assert channel.posts == []
    assert await claims(store) == []


async def test_a_post_discord_refuses_is_logged_with_the_server_and_channel_and_not_raised(
    store: Store, alerts: Alerts, channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    channel.refuse = True
    await use(store, 8)
    await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=None)
    channel.refuse = False
    await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=None)  # the 80% was told (and failed)

    assert channel.posts == []
    failures = [r for r in caplog.records if r.name == "bot.alerts" and r.levelno == logging.WARNING]
    assert [r.getMessage() for r in failures] == [
        f"guild {GUILD}: could not post an alert in channel {ALERTS} (LookupError): "
        "404 Not Found (error code: 10003): Unknown Channel"
    ]


async def test_a_failing_database_is_logged_and_not_raised(
    store: Store, alerts: Alerts, channel: Channel, caplog: pytest.LogCaptureFixture
) -> None:
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    await use(store, 8)
    await store.write_alone("DROP TABLE alerts_sent")

    await alerts.after_reservation(GUILD, guild_daily=10, guild_monthly=None)
    await alerts.quota_refused(GUILD, QuotaRefusal(LimitKind.GUILD_DAILY, 10, 8, 4, MIDNIGHT))
    await alerts.provider_refused(GUILD, CredentialsError("invalid token", status=401))

    assert channel.posts == []
    errors = [r.getMessage() for r in caplog.records if r.name == "bot.alerts" and r.levelno >= logging.WARNING]
    assert errors == [
        f"guild {GUILD}: checking the budget alerts failed",
        f"guild {GUILD}: checking the budget alerts failed",
        f"guild {GUILD}: checking the provider alert failed",
    ]


async def test_a_request_refused_by_the_server_budget_tells_100_percent_once(
    store: Store, alerts: Alerts, channel: Channel
) -> None:
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    await use(store, 98)
    await alerts.quota_refused(GUILD, QuotaRefusal(LimitKind.USER_DAILY, 5, 5, 1, MIDNIGHT))  # a member's own
    await alerts.quota_refused(GUILD, QuotaRefusal(LimitKind.COOLDOWN, 30, 10, 1, NOON + 20))
    await alerts.quota_refused(GUILD, QuotaRefusal(LimitKind.GUILD_DAILY, 100, 98, 4, MIDNIGHT))
    await alerts.quota_refused(GUILD, QuotaRefusal(LimitKind.GUILD_DAILY, 100, 98, 3, MIDNIGHT))
    await alerts.after_reservation(GUILD, guild_daily=100, guild_monthly=None)  # 98%: told already
    await alerts.quota_refused(GUILD, QuotaRefusal(LimitKind.GUILD_MONTHLY, 100, 98, 4, NEXT_MONTH))

    assert channel.texts == [
        "🛑 This server has used 98 of its 100 images today (98%) and refused a request for 4 more: requests that "
        f"do not fit are refused until the daily count resets <t:{int(MIDNIGHT)}:R>. Admins can change the limit "
        "with `/limits set guild_daily`.",
        "🛑 This server has used 98 of its 100 images this month (98%) and refused a request for 4 more: requests "
        f"that do not fit are refused until the monthly count resets <t:{int(NEXT_MONTH)}:R>. Admins can change the "
        "limit with `/limits set guild_monthly`.",
    ]


# -- the service: the provider ---------------------------------------------------------------------------


async def test_a_provider_refusal_of_the_account_is_told_once_per_kind_and_again_after_hours(
    store: Store, alerts: Alerts, channel: Channel, clock: FakeClock
) -> None:
    await set_alert_channel(store, GUILD, ALERTS, changed_by=ADMIN)
    secret = CredentialsError(f"rejected key {KEY}: {{'raw': 'body'}}", status=401, code="invalid_token")
    for _ in range(5):
        await alerts.provider_refused(GUILD, secret)
    await alerts.provider_refused(GUILD, BalanceError("used up", status=403, code="used_up"))
    clock.now += PROVIDER_REPEAT - 60
    await alerts.provider_refused(GUILD, secret)
    clock.now += 120
    await alerts.provider_refused(GUILD, secret)
    await alerts.provider_refused(GUILD, secret)

    def credentials(told_at: float) -> str:
        """The alert, told at ``told_at``: it says when it may be told again, as a Discord timestamp."""
        return (
            "⚠️ The image provider refused the bot's account (HTTP 401: its API key was not accepted): the bot's "
            "operator needs to check the provider API key in the bot's configuration. Requests for images fail "
            f"until then. If this lasts, this alert is repeated <t:{int(told_at + PROVIDER_REPEAT)}:R> at the "
            "earliest."
        )

    assert channel.texts == [
        credentials(NOON),
        "⚠️ The image provider refused the bot's account (HTTP 403: the account has no balance or quota left): the "
        "bot's operator needs to check the provider account's balance or plan. Requests for images fail until "
        f"then. If this lasts, this alert is repeated <t:{int(NOON + PROVIDER_REPEAT)}:R> at the earliest.",
        credentials(NOON + PROVIDER_REPEAT + 60),
    ]
    assert not any(KEY in text or "body" in text for text in channel.texts)


# -- end to end --------------------------------------------------------------------------------------------


async def ask(fluxbot: FluxbotHarness, prompt: str) -> Interaction:
    """The member's /imagine, once it has succeeded, failed or been refused."""
    world = fluxbot.world
    inter = await world.member.slash(world.channel, "imagine", prompt=prompt)
    await world.emu.wait_until(lambda: settled(inter), timeout=10)
    return inter


def no_pings(message: Message) -> bool:
    return not message.pinged_ids and not message.pinged_role_ids and not message.pinged_everyone


async def test_a_server_reaching_80_and_100_percent_of_its_day_is_told_once_each_without_pings(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    alerts_channel = world.guild.add_text_channel("bot-alerts")
    async with fluxbot.running() as bot:
        await set_alert_channel(bot.store, world.guild.id, alerts_channel.id, changed_by=world.admin.id)
        await (await world.admin.slash(world.channel, "limits set", guild_daily=5)).wait_response()
        # one image each: the 4th request reaches 80% of 5, the 5th 100%, the others are refused
        requests = [await ask(fluxbot, f"a lighthouse {n}") for n in range(7)]
        await world.emu.wait_until(lambda: any("100%" in m.content for m in alerts_channel.messages.values()), 10)
        # every alert a request could cause is posted before the member's next request is served
        await ask(fluxbot, "one more")
        posted = list(alerts_channel.messages.values())

    assert sum(status_line(inter).startswith("✅") for inter in requests) == 5
    assert [m.content.split(")")[0] for m in posted] == [
        "⚠️ This server has used 4 of its 5 images today (80%",
        "🛑 This server has used 5 of its 5 images today (100%",
    ]
    assert all(m.author.id == world.emu.bot_user.id and no_pings(m) and not m.ephemeral for m in posted)
    assert not any(PINGS.search(m.content) for m in posted)


async def test_a_provider_refusing_the_bot_s_key_is_told_once_however_many_requests_fail(
    fluxbot: FluxbotHarness,
) -> None:
    world = fluxbot.world
    alerts_channel = world.guild.add_text_channel("bot-alerts")
    fluxbot.flux.add_fault("POST", "/flux/images", status=401, code="invalid_token", times=4)
    async with fluxbot.running() as bot:
        await set_alert_channel(bot.store, world.guild.id, alerts_channel.id, changed_by=world.admin.id)
        failed = [await ask(fluxbot, f"a lighthouse {n}") for n in range(4)]
        alert = await world.emu.wait_for_message(alerts_channel, timeout=10)
        served = await ask(fluxbot, "once the key is fixed")  # long after the last failure's alert check
        posted = list(alerts_channel.messages.values())

    assert all("account needs attention" in status_line(inter) for inter in failed)
    assert status_line(served).startswith("✅")
    assert posted == [alert]
    assert "(HTTP 401: its API key was not accepted)" in alert.content and KEY not in alert.content
    assert alert.author.id == world.emu.bot_user.id and no_pings(alert)


async def test_an_alert_channel_the_bot_may_not_post_in_is_logged_and_requests_go_on(
    fluxbot: FluxbotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    world = fluxbot.world
    alerts_channel = world.guild.add_text_channel("bot-alerts")
    alerts_channel.set_permissions(world.emu.bot_user, deny=Perm.SEND_MESSAGES)
    async with fluxbot.running() as bot:
        await set_alert_channel(bot.store, world.guild.id, alerts_channel.id, changed_by=world.admin.id)
        await (await world.admin.slash(world.channel, "limits set", guild_daily=1)).wait_response()
        served = await ask(fluxbot, "a lighthouse")
        refused = await ask(fluxbot, "another lighthouse")
        await world.emu.wait_until(lambda: "could not post an alert" in caplog.text, timeout=10)

    assert status_line(served).startswith("✅")
    assert "server's daily limit" in status_line(refused)
    assert alerts_channel.messages == {}
    assert f"guild {world.guild.id}: could not post an alert in channel {alerts_channel.id} (Forbidden)" in caplog.text


# -- the runner's hook -------------------------------------------------------------------------------------


async def test_the_runner_hands_account_refusals_to_its_hook_and_outlives_a_failing_one(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    flux_emulator: FluxEmulator,
    http_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    flux_emulator.add_fault("POST", "/flux/images", status=403, code="used_up", times=2)
    seen: list[tuple[int, type[AccountError]]] = []

    async def broken_alert(job: Job, error: AccountError) -> None:
        seen.append((job.id, type(error)))
        raise RuntimeError("the alert broke")

    courier = RecordingCourier()
    flux = AceDataClient(session=http_session, api_key=SecretStr(KEY), base_url=flux_emulator.base_url, retry=NO_WAIT)
    async with open_backend(request, "sqlite", tmp_path / "fluxbot.db") as store:
        runner = JobRunner(
            store=store,
            flux=flux,
            courier=courier,
            session=http_session,
            concurrency=1,
            poll_interval=0.05,
            job_timeout=60,
            on_account_error=broken_alert,
        )
        await runner.start()
        try:
            jobs = []
            for n in range(3):
                job = await runner.submit(
                    NewJob(
                        guild_id=GUILD,
                        channel_id=CHANNEL,
                        user_id=USER,
                        kind=JobKind.GENERATE,
                        prompt=f"a lighthouse {n}",
                        model="flux-dev",
                        size="1:1",
                        count=1,
                        provider=Provider.ACEDATA,
                    ),
                    QuotaLimits(),
                )
                assert isinstance(job, Job)
                await courier.wait_for(lambda job=job: courier.final(job.id) is not None)
                jobs.append(job)
        finally:
            await runner.stop()

    assert seen == [(jobs[0].id, BalanceError), (jobs[1].id, BalanceError)]
    finals = [courier.final(job.id) for job in jobs]
    assert all(isinstance(final, JobFailed) and "account needs attention" in final.message for final in finals[:2])
    assert isinstance(finals[2], JobDone)
    assert caplog.text.count("handling the provider's refusal of the account failed") == 2
