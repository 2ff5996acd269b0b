"""A member's history in the store (both backends), and how one page of it is drawn for Discord.

``/history`` pages a member's jobs in one server, newest first, ten to a page; other members, other servers
and direct messages each keep their own. The drawing must fit Discord's embed limit whatever the prompts hold,
and show members' text as typed without letting it format the answer or mention anyone.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import discord
import pytest

from bot.db import (
    CancelOutcome,
    Job,
    JobKind,
    JobStatus,
    SqliteStore,
    Store,
    cancel_job,
    mark_failed,
    mark_posted,
    mark_submitted,
    mark_submitting,
    mark_succeeded,
)
from bot.db.history import MAX_PAGE, PAGE_SIZE, HistoryEntry, HistoryPage, member_history
from cogs.history import DESCRIPTION_LIMIT, history_embed, history_view
from tests.conftest import FakeClock, recorded_job

GUILD = 41
OTHER_GUILD = 42
CHANNEL = 43
MEMBER = 44
OTHER_MEMBER = 45
START = 1_750_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


async def ask(store: Store, clock: FakeClock, prompt: str, *, guild: int = GUILD, user: int = MEMBER) -> Job:
    """One job recorded a minute after the previous one."""
    clock.advance(60.0)
    return await recorded_job(store, guild=guild, channel=CHANNEL, user=user, prompt=prompt)


async def post(store: Store, job: Job, message_id: int) -> None:
    assert await mark_submitting(store, job.id)
    assert await mark_submitted(store, job.id, f"task-{job.id}")
    assert await mark_succeeded(store, job.id, ["https://cdn.example/1.png"], 7)
    assert await mark_posted(store, job.id, message_id, 1)


def prompts(page: HistoryPage) -> list[str]:
    return [entry.prompt for entry in page.entries]


# -- the store --------------------------------------------------------------------------------------------


async def test_pages_hold_ten_jobs_newest_first_and_count_the_pages(store: Store, clock: FakeClock) -> None:
    for n in range(1, 26):
        await ask(store, clock, f"job {n}")

    first, second, third = [await member_history(store, GUILD, MEMBER, page) for page in (1, 2, 3)]

    assert prompts(first) == [f"job {n}" for n in range(25, 15, -1)]
    assert prompts(second) == [f"job {n}" for n in range(15, 5, -1)]
    assert prompts(third) == [f"job {n}" for n in range(5, 0, -1)]
    assert [(page.page, page.pages, page.total) for page in (first, second, third)] == [
        (1, 3, 25),
        (2, 3, 25),
        (3, 3, 25),
    ]
    assert (first.has_previous, first.has_next) == (False, True)
    assert (second.has_previous, second.has_next) == (True, True)
    assert (third.has_previous, third.has_next) == (True, False)


async def test_a_page_past_the_end_is_empty_and_says_how_many_pages_there_are(store: Store, clock: FakeClock) -> None:
    for n in range(12):
        await ask(store, clock, f"job {n}")

    past = await member_history(store, GUILD, MEMBER, 3)
    nothing = await member_history(store, GUILD, OTHER_MEMBER, 1)

    assert (past.page, past.pages, past.total, past.entries) == (3, 2, 12, ())
    assert (nothing.pages, nothing.total, nothing.entries) == (0, 0, ())


async def test_only_the_members_own_jobs_in_that_server_are_shown(store: Store, clock: FakeClock) -> None:
    await ask(store, clock, "mine here")
    await ask(store, clock, "someone else's here", user=OTHER_MEMBER)
    await ask(store, clock, "mine in another server", guild=OTHER_GUILD)
    await ask(store, clock, "mine in a DM", guild=0)
    await ask(store, clock, "someone else's DM", guild=0, user=OTHER_MEMBER)
    await ask(store, clock, "mine here again")

    assert prompts(await member_history(store, GUILD, MEMBER, 1)) == ["mine here again", "mine here"]
    assert prompts(await member_history(store, OTHER_GUILD, MEMBER, 1)) == ["mine in another server"]
    assert prompts(await member_history(store, 0, MEMBER, 1)) == ["mine in a DM"]
    assert (await member_history(store, GUILD, MEMBER, 1)).total == 2


async def test_jobs_of_the_same_instant_keep_the_order_they_were_recorded_in(store: Store, clock: FakeClock) -> None:
    jobs = []
    for n in range(3):
        jobs.append(await ask(store, clock, f"job {n}"))
        clock.advance(-60.0)  # the next one is recorded at the same time

    page = await member_history(store, GUILD, MEMBER, 1)

    assert [entry.id for entry in page.entries] == [job.id for job in reversed(jobs)]


async def test_an_entry_has_what_the_page_shows_of_its_job(store: Store, clock: FakeClock) -> None:
    posted = await ask(store, clock, "a posted one")
    failed = await ask(store, clock, "a failed one")
    queued = await ask(store, clock, "a queued one")
    cancelled = await ask(store, clock, "a cancelled one")
    await post(store, posted, 9_001)
    assert await mark_failed(store, failed.id, "provider_error", "The provider could not draw this.")
    assert await cancel_job(store, cancelled.id, MEMBER) is CancelOutcome.CANCELLED_QUEUED

    by_id = {entry.id: entry for entry in (await member_history(store, GUILD, MEMBER, 1)).entries}

    assert by_id[posted.id] == HistoryEntry(
        id=posted.id,
        guild_id=GUILD,
        channel_id=CHANNEL,
        kind=JobKind.GENERATE,
        prompt="a posted one",
        model="flux-dev",
        size="1:1",
        count=1,
        status=JobStatus.POSTED,
        error_message=None,
        created_at=posted.created_at,
        posted_message_id=9_001,
    )
    assert (by_id[failed.id].status, by_id[failed.id].error_message) == (
        JobStatus.FAILED,
        "The provider could not draw this.",
    )
    assert (by_id[queued.id].status, by_id[queued.id].posted_message_id) == (JobStatus.QUEUED, None)
    assert by_id[cancelled.id].status is JobStatus.CANCELLED


@pytest.mark.parametrize("page", [0, -1, MAX_PAGE + 1])
async def test_pages_outside_the_bounds_are_refused(store: Store, page: int) -> None:
    with pytest.raises(ValueError, match="between 1 and"):
        await member_history(store, GUILD, MEMBER, page)


async def test_a_history_longer_than_the_pages_reach_stops_at_the_last_page(db_path: Path, clock: FakeClock) -> None:
    async with await SqliteStore.open(db_path, clock=clock):
        pass
    deepest = MAX_PAGE * PAGE_SIZE
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            """
            INSERT INTO jobs (guild_id, channel_id, user_id, kind, prompt, model, size, count, provider, status,
                              reserved_images, usage_day, created_at)
            VALUES (?, ?, ?, 'generate', ?, 'flux-dev', '1:1', 1, 'bfl', 'queued', 1, '2025-06-15', ?)
            """,
            [(GUILD, CHANNEL, MEMBER, f"job {n}", START + n) for n in range(1, deepest + 6)],
        )
    conn.close()
    async with await SqliteStore.open(db_path, clock=clock) as store:
        first = await member_history(store, GUILD, MEMBER, 1)
        last = await member_history(store, GUILD, MEMBER, MAX_PAGE)

    assert (first.pages, first.total) == (MAX_PAGE, deepest + 1)  # counted only as far as the pages reach
    assert prompts(last) == [f"job {n}" for n in range(15, 5, -1)]  # the 9,991st to 10,000th newest
    assert not last.has_next


# -- one page drawn -----------------------------------------------------------------------------------------


def entry(n: int, **fields: object) -> HistoryEntry:
    values: dict[str, object] = {
        "id": n,
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "kind": JobKind.GENERATE,
        "prompt": f"prompt {n}",
        "model": "flux-dev",
        "size": "1:1",
        "count": 1,
        "status": JobStatus.POSTED,
        "error_message": None,
        "created_at": START + n,
        "posted_message_id": 5_000 + n,
    } | fields
    return HistoryEntry(**values)  # type: ignore[arg-type]


def drawn(*entries: HistoryEntry, queue: dict[int, int] | None = None, in_dms: bool = False) -> str:
    embed = history_embed("en-US", HistoryPage(1, 1, len(entries), entries), queue or {}, in_dms=in_dms)
    assert embed.description is not None
    return embed.description


def test_a_posted_job_links_to_its_result_and_a_failed_one_says_why() -> None:
    text = drawn(
        entry(1),
        entry(2, status=JobStatus.FAILED, error_message="The provider refused the prompt.", posted_message_id=None),
        entry(3, guild_id=0, posted_message_id=77),
    )

    assert f"(https://discord.com/channels/{GUILD}/{CHANNEL}/5001)" in text
    assert "The provider refused the prompt." in text
    assert f"(https://discord.com/channels/@me/{CHANNEL}/77)" in text  # a DM's result
    assert f"<t:{int(START + 1)}:R>" in text


def test_a_queued_job_shows_its_place_in_line_and_an_unknown_status_shows_as_stored() -> None:
    text = drawn(
        entry(1, status=JobStatus.QUEUED, posted_message_id=None),
        entry(2, status="archived", posted_message_id=None),
    )

    assert "queued, #3 in line" in drawn(entry(1, status=JobStatus.QUEUED, posted_message_id=None), queue={1: 3})
    assert "⏳ queued" in text
    assert "🚫 cancelled" in drawn(entry(1, status=JobStatus.CANCELLED, posted_message_id=None))
    assert "archived" in text
    assert "https://" not in text  # nothing to link to


def test_a_prompt_cannot_mention_anyone_nor_format_the_page() -> None:
    text = drawn(entry(1, prompt="@everyone look **here** <@123456789012345678>\n# Heading"))

    assert "@everyone" not in text.replace("@\u200beveryone", "")
    assert "<@123456789012345678>" not in text
    assert "\\*\\*here\\*\\*" in text
    assert "\n# Heading" not in text  # kept on the prompt's one line


@pytest.mark.parametrize("status", [JobStatus.POSTED, JobStatus.FAILED])
def test_ten_of_the_longest_jobs_fit_in_one_embed(status: JobStatus) -> None:
    worst = [
        entry(
            n,
            prompt="*_`~|>" * 400,
            model="m" * 200,
            size="s" * 200,
            count=4,
            status=status,
            error_message="@here " * 300,
            guild_id=10**19,
            channel_id=10**19,
            posted_message_id=10**19,
        )
        for n in range(PAGE_SIZE)
    ]

    text = drawn(*worst)

    assert len(text) <= DESCRIPTION_LIMIT
    assert text.count("\n\n") == PAGE_SIZE - 1  # every job is there, none left out
    assert text.count("> \\*\\_") == PAGE_SIZE  # with the start of its prompt, escaped
    links = text.count("https://discord.com/channels/")
    reasons = text.count("> ↳ @\u200bhere")
    assert (links, reasons) == ((PAGE_SIZE, 0) if status is JobStatus.POSTED else (0, PAGE_SIZE))


def test_previous_is_disabled_on_the_first_page_and_next_on_the_last() -> None:
    def buttons(page: int, pages: int) -> list[tuple[str | None, bool]]:
        view = history_view("en-US", HistoryPage(page, pages, pages * PAGE_SIZE, (entry(1),)))
        return [(item.item.custom_id, item.item.disabled) for item in view.children]  # type: ignore[attr-defined]

    assert buttons(1, 3) == [("flux:history:0", True), ("flux:history:2", False)]
    assert buttons(2, 3) == [("flux:history:1", False), ("flux:history:3", False)]
    assert buttons(3, 3) == [("flux:history:2", False), ("flux:history:4", True)]
    assert buttons(1, 1) == [("flux:history:0", True), ("flux:history:2", True)]


def test_the_title_says_where_the_jobs_were_made() -> None:
    page = HistoryPage(2, 5, 45, (entry(1),))
    here = history_embed(discord.Locale.american_english, page, {}, in_dms=False)
    dms = history_embed(discord.Locale.american_english, page, {}, in_dms=True)

    assert (here.title, dms.title) == ("Your images in this server", "Your images in direct messages")
    assert here.footer.text == "Page 2 of 5"
