"""Members' own defaults in the store, specified on a real SQLite file and a real PostgreSQL database: what is
kept, how changes merge, what is refused before anything is written, and that racing changes lose nothing.
Then how a request uses them: which default a server's rules and the model catalog leave out, and the note
that tells the member."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from bot.db import (
    MemberSettings,
    Store,
    get_member_settings,
    reset_member_settings,
    update_member_settings,
)
from bot.flux import catalog_for
from bot.limits import Limits
from bot.settings import Provider
from cogs.imagine import edit_options, generate_options
from tests.conftest import FakeClock

MEMBER = 333
OTHER_MEMBER = 334
NOON = datetime(2025, 3, 14, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOON)


async def stored_rows(store: Store) -> list[tuple[int, str | None, str | None, int | None]]:
    rows = await store.fetch_all("SELECT user_id, model, size, count FROM member_settings ORDER BY user_id")
    return [(row["user_id"], row["model"], row["size"], row["count"]) for row in rows]


async def test_a_member_without_defaults_has_none(store: Store) -> None:
    settings = await get_member_settings(store, MEMBER)

    assert settings == MemberSettings(MEMBER)
    assert settings.is_empty and settings.updated_at is None


async def test_each_change_sets_only_what_it_names_and_keeps_the_rest(store: Store, clock: FakeClock) -> None:
    await update_member_settings(store, MEMBER, model="flux-pro")
    clock.advance(60)
    await update_member_settings(store, MEMBER, size="16:9")
    clock.advance(60)
    returned = await update_member_settings(store, MEMBER, count=3, size="4:3")
    read = await get_member_settings(store, MEMBER)

    assert returned == read == MemberSettings(MEMBER, "flux-pro", "4:3", 3, updated_at=NOON + 120)
    assert not read.is_empty
    assert await get_member_settings(store, OTHER_MEMBER) == MemberSettings(OTHER_MEMBER)


async def test_a_change_to_what_is_already_set_writes_nothing(store: Store, clock: FakeClock) -> None:
    await update_member_settings(store, MEMBER, model="flux-pro", count=2)
    clock.advance(60)
    again = await update_member_settings(store, MEMBER, model="flux-pro")

    assert again.updated_at == NOON
    assert (await get_member_settings(store, MEMBER)).updated_at == NOON


async def test_none_drops_one_default_and_dropping_the_last_removes_the_member(store: Store) -> None:
    await update_member_settings(store, MEMBER, model="flux-pro", count=2)
    one_left = await update_member_settings(store, MEMBER, model=None)
    rows_with_one = await stored_rows(store)
    none_left = await update_member_settings(store, MEMBER, count=None)

    assert (one_left.model, one_left.count) == (None, 2)
    assert rows_with_one == [(MEMBER, None, None, 2)]
    assert none_left == MemberSettings(MEMBER)
    assert await stored_rows(store) == []


async def test_reset_drops_every_default_of_that_member_only(store: Store) -> None:
    await update_member_settings(store, MEMBER, model="flux-pro", size="16:9", count=4)
    await update_member_settings(store, OTHER_MEMBER, size="1:1")

    assert await reset_member_settings(store, MEMBER) is True
    assert await reset_member_settings(store, MEMBER) is False
    assert await get_member_settings(store, MEMBER) == MemberSettings(MEMBER)
    assert await stored_rows(store) == [(OTHER_MEMBER, None, "1:1", None)]


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"count": 0}, "count must be a whole number"),
        ({"count": True}, "count must be a whole number"),
        ({"count": "2"}, "count must be a whole number"),
        ({"model": ""}, "model must be a non-empty name"),
        ({"model": " flux-pro"}, "model must be a non-empty name"),
        ({"size": 169}, "size must be a non-empty name"),
        ({"seed": 7}, "unknown member setting 'seed'"),
    ],
)
async def test_values_of_the_wrong_shape_are_refused_before_anything_is_written(
    store: Store, changes: dict[str, object], complaint: str
) -> None:
    await update_member_settings(store, MEMBER, model="flux-dev")
    with pytest.raises(ValueError, match=complaint):
        # A good change given with the bad one is not written either.
        await update_member_settings(store, MEMBER, **{"size": "16:9", **changes})  # type: ignore[arg-type]

    assert await stored_rows(store) == [(MEMBER, "flux-dev", None, None)]


async def test_the_callers_check_sees_the_merged_defaults_and_can_refuse_them(store: Store) -> None:
    await update_member_settings(store, MEMBER, model="flux-kontext-pro")
    seen: list[MemberSettings] = []

    def no_pixel_sizes_for_kontext(merged: MemberSettings) -> None:
        seen.append(merged)
        if merged.model == "flux-kontext-pro" and merged.size is not None and "x" in merged.size:
            raise LookupError("kontext takes ratios only")

    with pytest.raises(LookupError, match="ratios only"):
        await update_member_settings(store, MEMBER, check=no_pixel_sizes_for_kontext, size="1024x1024")
    accepted = await update_member_settings(store, MEMBER, check=no_pixel_sizes_for_kontext, size="16:9")

    assert [(s.model, s.size) for s in seen] == [("flux-kontext-pro", "1024x1024"), ("flux-kontext-pro", "16:9")]
    assert (accepted.model, accepted.size) == ("flux-kontext-pro", "16:9")
    assert await stored_rows(store) == [(MEMBER, "flux-kontext-pro", "16:9", None)]


async def test_changes_of_one_member_racing_from_two_processes_both_stay(store: Store, other_store: Store) -> None:
    members = range(1000, 1020)
    await asyncio.gather(
        *(update_member_settings(store, member, model="flux-pro") for member in members),
        *(update_member_settings(other_store, member, size="9:16") for member in members),
        *(update_member_settings(store, member, count=2) for member in members),
    )

    assert await stored_rows(store) == [(member, "flux-pro", "9:16", 2) for member in members]


# -- how a request uses them ------------------------------------------------------------------------------


def server_rules(*, allowed_models: tuple[str, ...] | None = None, max_count: int = 4) -> Limits:
    """A member's rules in a server that only (maybe) restricts models and images per request."""
    return Limits(
        guild_id=111,
        user_daily=None,
        guild_daily=None,
        max_count=max_count,
        max_concurrent=None,
        cooldown=0.0,
        user_monthly=None,
        guild_monthly=None,
        allowed_models=allowed_models,
        allowed_channels=None,
        blocked_terms=(),
        overridden=frozenset(),
    )


ACEDATA = catalog_for(Provider.ACEDATA)


def test_options_given_always_win_and_leave_nothing_to_note() -> None:
    own = MemberSettings(MEMBER, "flux-retired", "1024x1792", 4)
    options = generate_options(ACEDATA, own, server_rules(max_count=1), model="flux-pro", size="16:9", count=1)

    assert (options.model, options.size, options.count, options.defaults) == ("flux-pro", "16:9", 1, ())


def test_a_default_model_the_bot_no_longer_offers_is_left_out() -> None:
    options = generate_options(
        ACEDATA, MemberSettings(MEMBER, model="flux-retired"), server_rules(), model=None, size=None, count=None
    )

    assert (options.model, options.size, options.count) == ("flux-dev", "1:1", 1)
    assert options.notes("en-US") == ["Your default model flux-retired is no longer offered; flux-dev is used instead."]


def test_a_default_model_that_cannot_make_the_size_given_is_left_out() -> None:
    own = MemberSettings(MEMBER, model="flux-kontext-pro", count=2)
    options = generate_options(ACEDATA, own, server_rules(), model=None, size="1024x1792", count=None)

    assert (options.model, options.size, options.count) == ("flux-dev", "1024x1792", 2)
    assert options.notes(None) == [
        "Your default model flux-kontext-pro cannot make the size 1024x1792; flux-dev is used instead."
    ]


def test_each_default_left_out_is_noted_once_in_the_order_of_the_options() -> None:
    own = MemberSettings(MEMBER, model="flux-pro", size="1024x1792", count=3)
    rules = server_rules(allowed_models=("flux-kontext-pro", "flux-dev"), max_count=2)
    options = generate_options(ACEDATA, own, rules, model="flux-kontext-pro", size=None, count=None)
    unnamed = generate_options(ACEDATA, own, rules, model=None, size=None, count=None)

    assert (options.model, options.size, options.count) == ("flux-kontext-pro", "1:1", 1)
    assert [use.option for use in options.defaults] == ["size", "count"]  # the model was given: no default in play
    assert [use.option for use in unnamed.defaults] == ["model", "size", "count"]
    assert unnamed.notes(None) == [
        "Your default model flux-pro is not allowed here; flux-dev is used instead.",
        "Your default number of images (3) is more than you may ask for here (at most 2); 1 is used instead.",
    ]  # flux-dev makes 1024x1792: the size is used


def test_a_default_count_above_what_the_model_makes_at_once_is_left_out() -> None:
    bfl = catalog_for(Provider.BFL)
    options = generate_options(bfl, MemberSettings(MEMBER, count=3), server_rules(), model=None, size=None, count=None)

    assert options.count == 1
    assert options.notes(None) == [
        "Your default number of images (3) is more than flux-2-pro makes at once (at most 1); 1 is used instead."
    ]


def test_an_edit_takes_the_default_model_only_when_it_edits_and_is_allowed() -> None:
    rules = server_rules(allowed_models=("flux-kontext-pro", "flux-kontext-max", "flux-2-klein"))

    def edit_with(model: str | None, default: str) -> tuple[str, list[str]]:
        options = edit_options(ACEDATA, MemberSettings(MEMBER, model=default, size="16:9", count=4), rules, model=model)
        assert (options.size, options.count) == (None, 1)
        return options.model, options.notes(None)

    assert edit_with(None, "flux-kontext-max") == ("flux-kontext-max", [])
    assert edit_with("flux-kontext-pro", "flux-kontext-max") == ("flux-kontext-pro", [])
    assert edit_with(None, "flux-2-klein") == (
        "flux-kontext-pro",
        ["Your default model flux-2-klein cannot edit images; flux-kontext-pro is used instead."],
    )
    assert edit_with(None, "flux-2-pro") == (
        "flux-kontext-pro",
        ["Your default model flux-2-pro is not allowed here; flux-kontext-pro is used instead."],
    )
