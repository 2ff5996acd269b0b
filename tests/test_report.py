"""/limits report: a server's images per day and model, top members, failures and refusals over a period, read
from real jobs on both databases, drawn as a PNG off the event loop, and summed up in a message that pings nobody."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image

from bot.db import (
    Job,
    Store,
    mark_failed,
    mark_lost,
    mark_posted,
    mark_submitted,
    mark_submitting,
    mark_succeeded,
)
from bot.db.report import MAX_REPORT_DAYS, UsageReport, count_refusal, usage_report
from bot.report import HEIGHT, WIDTH, render_report, report_summary
from tests.conftest import FakeClock, recorded_job

GUILD = 111
OTHER_GUILD = 999
CHANNEL = 222
ALICE, BOB, CAROL = 301, 302, 303
DAY = 86_400.0
#: Today, for the store: 2025-03-14, noon UTC.
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC).timestamp()
TODAY_START = datetime(2025, 3, 14, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


async def new_job(store: Store, *, user: int, model: str = "flux-dev", count: int = 1, guild: int = GUILD) -> Job:
    return await recorded_job(
        store, guild=guild, channel=CHANNEL, user=user, prompt="a lighthouse at dusk", model=model, count=count
    )


async def posted(
    store: Store,
    *,
    user: int,
    model: str = "flux-dev",
    count: int = 1,
    delivered: int | None = None,
    guild: int = GUILD,
) -> Job:
    """A job that went all the way: its ``delivered`` images (all of them by default) are charged."""
    job = await new_job(store, user=user, model=model, count=count, guild=guild)
    assert await mark_submitting(store, job.id)
    assert await mark_submitted(store, job.id, f"task-{job.id}")
    assert await mark_succeeded(store, job.id, [f"https://img/{job.id}/{n}.png" for n in range(count)], seed=None)
    assert await mark_posted(
        store, job.id, message_id=10_000 + job.id, delivered=count if delivered is None else delivered
    )
    return job


async def failed(store: Store, *, user: int, code: str, model: str = "flux-dev") -> None:
    job = await new_job(store, user=user, model=model)
    assert await mark_failed(store, job.id, code, "the provider said no")


async def lost(store: Store, *, user: int) -> None:
    job = await new_job(store, user=user)
    assert await mark_submitting(store, job.id)
    assert await mark_lost(store, job.id, "the bot stopped while submitting")


def days_ago(days: int, *, hour: float = 12) -> float:
    return TODAY_START - days * DAY + hour * 3600


# --- the figures ------------------------------------------------------------------------------------------


async def test_a_week_stacks_posted_images_per_day_and_model_and_counts_failures_and_refusals(
    store: Store, clock: FakeClock
) -> None:
    clock.now = days_ago(2)
    await posted(store, user=ALICE, model="flux-dev", count=2)
    await posted(store, user=BOB, model="flux-pro")
    await count_refusal(store, GUILD, "model")
    clock.now = days_ago(1)
    await posted(store, user=ALICE, model="flux-dev", count=2)
    await posted(store, user=CAROL, model="flux-dev", count=2, delivered=1)  # one of two images came back
    await failed(store, user=CAROL, code="timeout")
    await failed(store, user=ALICE, code="timeout", model="flux-pro")
    await lost(store, user=BOB)
    clock.now = NOON
    await posted(store, user=BOB, model="flux-pro", count=4)
    await posted(store, user=BOB, model="flux-dev")
    await new_job(store, user=ALICE, count=3)  # still running: neither posted nor failed
    for _ in range(3):
        await count_refusal(store, GUILD, "user_daily")
    await count_refusal(store, GUILD, "model")

    report = await usage_report(store, GUILD, 7)

    assert report.guild_id == GUILD
    assert report.days == (
        "2025-03-08",
        "2025-03-09",
        "2025-03-10",
        "2025-03-11",
        "2025-03-12",
        "2025-03-13",
        "2025-03-14",
    )
    assert report.images == {
        "2025-03-12": {"flux-dev": 2, "flux-pro": 1},
        "2025-03-13": {"flux-dev": 3},
        "2025-03-14": {"flux-pro": 4, "flux-dev": 1},
    }
    assert list(report.images) == ["2025-03-12", "2025-03-13", "2025-03-14"]  # oldest first, like days
    assert report.per_model == {"flux-dev": 6, "flux-pro": 5}
    assert report.total_images == 11
    assert report.posted_jobs == 6
    assert report.failures == {"timeout": 2, "lost": 1}
    assert report.refusals == {"user_daily": 3, "model": 2}
    assert report.top_members == ((BOB, 6), (ALICE, 4), (CAROL, 1))


async def test_other_servers_and_days_outside_the_period_are_left_out(store: Store, clock: FakeClock) -> None:
    # The period of a 7-day report starts at 00:00 UTC six days ago: a second earlier is outside it.
    period_start = TODAY_START - 6 * DAY
    clock.now = period_start - 1
    await posted(store, user=ALICE, count=5)
    await failed(store, user=ALICE, code="content_policy")
    await count_refusal(store, GUILD, "access")
    clock.now = period_start
    await posted(store, user=BOB, count=2)
    clock.now = NOON
    await posted(store, user=CAROL, model="flux-pro", count=9, guild=OTHER_GUILD)
    await failed(store, user=CAROL, code="timeout")
    await count_refusal(store, OTHER_GUILD, "user_daily")

    week = await usage_report(store, GUILD, 7)

    assert week.days[0] == "2025-03-08"
    assert week.images == {"2025-03-08": {"flux-dev": 2}}
    assert week.top_members == ((BOB, 2),)
    assert (week.posted_jobs, week.failures, week.refusals) == (1, {"timeout": 1}, {})

    eight_days = await usage_report(store, GUILD, 8)
    assert eight_days.images == {"2025-03-07": {"flux-dev": 5}, "2025-03-08": {"flux-dev": 2}}
    assert eight_days.top_members == ((ALICE, 5), (BOB, 2))
    assert eight_days.failures == {"content_policy": 1, "timeout": 1}
    assert eight_days.refusals == {"access": 1}

    other = await usage_report(store, OTHER_GUILD, 7)
    assert (other.per_model, other.top_members, other.refusals) == ({"flux-pro": 9}, ((CAROL, 9),), {"user_daily": 1})


async def test_the_top_ten_are_the_members_who_used_most_ties_by_id_and_nobody_without_images(
    store: Store, clock: FakeClock
) -> None:
    used = {400 + index: images for index, images in enumerate([5, 3, 12, 7, 7, 1, 9, 2, 11, 4, 6, 8])}
    for user, images in used.items():
        await posted(store, user=user, count=images)
    await failed(store, user=500, code="timeout")  # asked, but got nothing
    clock.now = days_ago(40)
    await posted(store, user=600, count=50)  # used most, but long ago
    clock.now = NOON

    report = await usage_report(store, GUILD, 30)

    assert report.top_members == (
        (402, 12),
        (408, 11),
        (406, 9),
        (411, 8),
        (403, 7),
        (404, 7),
        (410, 6),
        (400, 5),
        (409, 4),
        (401, 3),
    )
    assert (await usage_report(store, GUILD, 90)).top_members[0] == (600, 50)


async def test_one_day_is_today_and_ninety_days_reach_back_89_days(store: Store, clock: FakeClock) -> None:
    clock.now = days_ago(90)
    await posted(store, user=ALICE, count=3)
    clock.now = days_ago(89, hour=0)
    await posted(store, user=ALICE, count=2)
    clock.now = days_ago(1, hour=23.99)
    await posted(store, user=BOB)
    clock.now = TODAY_START + 5
    await posted(store, user=CAROL, model="flux-pro")

    one = await usage_report(store, GUILD, 1)
    assert one.days == ("2025-03-14",)
    assert one.images == {"2025-03-14": {"flux-pro": 1}}
    assert one.top_members == ((CAROL, 1),)

    ninety = await usage_report(store, GUILD, MAX_REPORT_DAYS)
    assert len(ninety.days) == 90 == len(set(ninety.days))
    assert (ninety.days[0], ninety.days[-1]) == ("2024-12-15", "2025-03-14")
    assert list(ninety.days) == sorted(ninety.days)
    assert ninety.images == {
        "2024-12-15": {"flux-dev": 2},
        "2025-03-13": {"flux-dev": 1},
        "2025-03-14": {"flux-pro": 1},
    }
    assert ninety.total_images == 4


@pytest.mark.parametrize("days", [0, -1, 91, 365, True, 1.5])
async def test_a_period_outside_one_to_ninety_days_is_refused(store: Store, days: object) -> None:
    with pytest.raises(ValueError, match="1 to 90 days"):
        await usage_report(store, GUILD, days)  # type: ignore[arg-type]


async def test_refusals_are_counted_per_day_and_cause_and_need_a_cause(store: Store, clock: FakeClock) -> None:
    for _ in range(5):
        await count_refusal(store, GUILD, "member_blocked")
    clock.now += DAY
    await count_refusal(store, GUILD, "member_blocked")

    rows = await store.fetch_all("SELECT day, cause, count FROM refusals WHERE guild_id = ? ORDER BY day", (GUILD,))
    assert [tuple(row) for row in rows] == [("2025-03-14", "member_blocked", 5), ("2025-03-15", "member_blocked", 1)]
    with pytest.raises(ValueError, match="cause"):
        await count_refusal(store, GUILD, "")


async def test_an_empty_period_has_every_day_and_nothing_else(store: Store) -> None:
    report = await usage_report(store, GUILD, 30)
    assert len(report.days) == 30
    assert (report.images, report.per_model, report.top_members, report.failures, report.refusals) == (
        {},
        {},
        (),
        {},
        {},
    )
    assert (report.total_images, report.posted_jobs) == (0, 0)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
async def test_each_query_reads_one_servers_rows_of_the_period_through_an_index(store: Store, tmp_path: Path) -> None:
    # SQLite's plans: a SEARCH on the server (and the period's days where the index has them), never a SCAN.
    statements: list[str] = []
    conn = store._conn  # type: ignore[attr-defined]  # the aiosqlite connection, to see what really ran
    await conn.set_trace_callback(statements.append)
    try:
        await usage_report(store, GUILD, 30)
    finally:
        await conn.set_trace_callback(None)

    with sqlite3.connect(tmp_path / "fluxbot.db") as plain:
        plans = {sql: [str(row[3]) for row in plain.execute(f"EXPLAIN QUERY PLAN {sql}")] for sql in statements}
    searches = sorted(line for plan in plans.values() for line in plan if not line.startswith("USE TEMP B-TREE"))
    assert searches == [
        "SEARCH jobs USING INDEX jobs_member_created (guild_id=?)",
        "SEARCH refusals USING PRIMARY KEY (guild_id=? AND day>? AND day<?)",
        "SEARCH usage USING COVERING INDEX usage_guild_day (guild_id=? AND day>? AND day<?)",
    ]


# --- the chart --------------------------------------------------------------------------------------------


def busy_report(names: int = 10) -> UsageReport:
    """90 days of four models, with gaps, ten members, failures and refusals."""
    days = tuple(f"2025-{month:02d}-{day:02d}" for month in (1, 2, 3) for day in range(1, 31))
    models = ("flux-dev", "flux-pro", "flux-schnell", "flux-kontext")
    images = {
        day: {model: (index * 7 + rank * 3) % 11 for rank, model in enumerate(models) if (index + rank) % 5}
        for index, day in enumerate(days)
        if index % 9
    }
    per_model: dict[str, int] = {}
    for counts in images.values():
        for model, count in counts.items():
            per_model[model] = per_model.get(model, 0) + count
    return UsageReport(
        guild_id=GUILD,
        days=days,
        images=images,
        per_model=per_model,
        top_members=tuple((1000 + n, 100 - n) for n in range(names)),
        posted_jobs=321,
        failures={"timeout": 4, "lost": 1},
        refusals={"user_daily": 17, "access": 3, "member_blocked": 1, "some_newer_rule": 1},
    )


def decoded(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def colours(image: Image.Image) -> int:
    found = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert found is not None
    return len(found)


async def test_the_chart_is_a_png_of_the_set_size_with_bars_in_several_colours() -> None:
    png = await render_report(busy_report(), names={1000: "Alice", 1001: "Bob"}, server="Images on My Server")

    image = decoded(png)
    assert image.size == (WIDTH, HEIGHT) == (1200, 900)
    assert colours(image) > 4  # four models' colours besides the text on white, at least
    assert len(png) < 2 * 1024 * 1024


async def test_models_beyond_eight_share_one_colour() -> None:
    report = busy_report()
    many = {f"model-{n}": 12 - n for n in range(12)}
    crowded = UsageReport(report.guild_id, report.days, dict.fromkeys(report.days, many), many, (), 90, {}, {})

    image = decoded(await render_report(crowded, names={}, server="Many models"))

    assert image.size == (WIDTH, HEIGHT)
    assert colours(image) > 9


async def test_an_empty_period_still_draws_a_chart() -> None:
    empty = UsageReport(GUILD, ("2025-03-14",), {}, {}, (), 0, {}, {})

    image = decoded(await render_report(empty, names={}, server="Nothing yet"))

    assert image.size == (WIDTH, HEIGHT)
    assert colours(image) > 1


async def test_names_members_chose_are_drawn_as_plain_text() -> None:
    # "$\nocommand$" is mathtext that does not parse: drawn as mathtext it would end the render with an error.
    names = {
        1000: "$\\frac{1}{0}$",
        1001: "$\\nocommand$",
        1002: "@everyone",
        1003: "x" * 500,
        1004: "שלום עולם",
        1005: "مرحبا بالعالم",
        1006: "猫 🐱 \u200b\u202e reversed",
        1007: "two\nlines\x00",
        1008: "",
    }
    report = busy_report()
    hostile = UsageReport(
        report.guild_id,
        report.days,
        {
            day: {"$\\nocommand$" if model == "flux-dev" else model: n for model, n in counts.items()}
            for day, counts in report.images.items()
        },
        {"$\\nocommand$" if model == "flux-dev" else model: n for model, n in report.per_model.items()},
        report.top_members,
        report.posted_jobs,
        {"$\\nocommand$": 2},
        {"$\\nocommand$": 3},
    )

    image = decoded(await render_report(hostile, names=names, server="$\\nocommand$ server " + "z" * 300))

    assert image.size == (WIDTH, HEIGHT)
    assert colours(image) > 4


async def test_the_event_loop_runs_other_work_while_a_chart_is_drawn() -> None:
    ticks = 0
    drawing = True

    async def tick() -> None:
        nonlocal ticks
        while drawing:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)  # the ticker is waiting on its first sleep
    ticks = 0
    try:
        await render_report(busy_report(), names={}, server="Busy")
        during = ticks  # read before anything else can run: a ticker that only ran afterwards would not count
    finally:
        drawing = False
        await ticker
    assert during > 0


def test_the_bot_imports_no_plotting_library_until_a_report_is_drawn() -> None:
    # A fresh interpreter: this one has drawn charts already. The whole bot is imported, as `fluxbot run` does.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, bot.app, bot.report, bot.db.report; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'numpy'}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert loaded.stdout.strip() == "[]"


async def test_two_charts_drawn_at_once_both_come_out_whole() -> None:
    first, second = await asyncio.gather(
        render_report(busy_report(), names={}, server="One"),
        render_report(busy_report(3), names={}, server="Two"),
    )
    assert decoded(first).size == decoded(second).size == (WIDTH, HEIGHT)
    assert first != second


# --- the message ------------------------------------------------------------------------------------------


def test_the_summary_names_members_without_pinging_or_formatting() -> None:
    report = busy_report(4)
    names = {1000: "@everyone", 1001: "**bold** and <@123456789012345678>", 1002: "@here_we_go"}

    text = report_summary(report, names=names)

    assert "@everyone" not in text and "@here" not in text
    assert "@\u200beveryone" in text
    assert "<@123456789012345678>" not in text
    assert "\\*\\*bold\\*\\*" in text
    assert "member 1003" in text  # a member who left is named by id
    # Causes are told in words; one this version does not know stays a code, shown as typed, not in italics.
    assert (
        "Refused requests: member's daily limit 17, no access role 3, blocked member 1, some\\_newer\\_rule 1" in text
    )
    assert f"Images posted: {report.total_images} (jobs: 321)" in text
    assert "2025-01-01 to 2025-03-30" in text
    lines = text.splitlines()
    assert lines.index("Top members:") == len(lines) - 5
    assert lines[-4].startswith("1. ") and lines[-4].endswith(": 100")


def test_the_summary_fits_a_message_however_many_models_and_long_names() -> None:
    report = busy_report()
    crowded = UsageReport(
        report.guild_id,
        report.days,
        report.images,
        {f"model-{n}-" + "m" * 80: 1000 - n for n in range(300)},
        report.top_members,
        report.posted_jobs,
        {f"code-{n}-" + "c" * 80: n + 1 for n in range(300)},
        {f"cause-{n}-" + "r" * 80: n + 1 for n in range(300)},
    )

    text = report_summary(crowded, names={1000 + n: "\U0001f431" * 32 + "@everyone" * 20 for n in range(10)})

    assert len(text) <= 2000
    assert "and 290 more" in text
    assert text.count("\n10. ") == 1  # the top members are all there


def test_the_summary_of_an_empty_day() -> None:
    empty = UsageReport(GUILD, ("2025-03-14",), {}, {}, (), 0, {}, {})
    assert report_summary(empty, names={}) == "**Usage report: 2025-03-14 (UTC)**\nImages posted: 0 (jobs: 0)"
