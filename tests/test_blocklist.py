"""The prompt blocklist cannot be dodged with look-alike text, and checking it costs one compiled regex per list.

Prompts and terms are compared normalized (:func:`bot.db.normalize_term`): NFKC, format characters removed,
case-folded, Cyrillic and Greek look-alikes folded to Latin, whitespace collapsed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from bot import db
from bot.db import Store
from bot.limits import Member, Refusal, RefusalKind, admit, contains_blocked_term
from bot.settings import Settings
from tests.fluxbot_harness import FluxbotHarness, status_line

GUILD, CHANNEL, ADMIN = 10, 20, 30


def fullwidth(text: str) -> str:
    """``text`` in fullwidth forms (U+FF01..U+FF5E), as typed with an East Asian keyboard layout."""
    return "".join(chr(ord(char) + 0xFEE0) if "!" <= char <= "~" else char for char in text)


async def refused(store: Store, settings: Settings, prompt: str) -> bool:
    try:
        await admit(
            store,
            settings,
            guild_id=GUILD,
            channel_id=CHANNEL,
            member=Member(1),
            model="flux-dev",
            count=1,
            prompt=prompt,
        )
    except Refusal as refusal:
        assert refusal.kind is RefusalKind.BLOCKED_TERM
        return True
    return False


@pytest.mark.parametrize(
    "prompt",
    [
        "so much " + fullwidth("GORE"),
        "so much go\u200bre",  # zero-width space
        "so much g\u00adore",  # soft hyphen
        "so much g\u2060o\u200dr\ufeffe",  # word joiner, zero-width joiner, BOM
        "so much g\u043ere",  # Cyrillic o
        "so much G\u039fRE",  # Greek capital omicron
        "a RED\u00a0\u00a0 fox",  # no-break spaces, case
        "a red\u3000fox",  # ideographic space
        "a red \u200b fox",  # a zero-width space among spaces
        "a r\u0435d f\u043ex",  # Cyrillic e and o
    ],
)
async def test_look_alike_spellings_of_a_term_are_refused(store: Store, settings: Settings, prompt: str) -> None:
    await db.add_blocked_term(store, GUILD, "gore", changed_by=ADMIN)
    await db.add_blocked_term(store, GUILD, "red fox", changed_by=ADMIN)
    assert await refused(store, settings, prompt)


async def test_a_term_added_with_extra_spaces_matches_and_is_stored_normalized(
    store: Store, settings: Settings
) -> None:
    assert await db.add_blocked_term(store, GUILD, "  Red   \u200bFox ", changed_by=ADMIN)
    assert not await db.add_blocked_term(store, GUILD, "red fox", changed_by=ADMIN)  # the same term

    assert await db.blocked_terms(store, GUILD) == ["red fox"]
    assert await refused(store, settings, "a red fox")


async def test_terms_stored_by_an_older_version_still_match_show_and_unblock(store: Store, settings: Settings) -> None:
    # Older versions stored terms only trimmed and case-folded: a double space stayed, and never matched.
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO blocklist (guild_id, term, added_by, added_at) VALUES (?, 'red  fox', ?, 0)", (GUILD, ADMIN)
        )

    assert await db.blocked_terms(store, GUILD) == ["red fox"]
    assert await refused(store, settings, "a red fox")
    assert not await db.add_blocked_term(store, GUILD, "Red Fox", changed_by=ADMIN)
    assert await db.remove_blocked_term(store, GUILD, "red fox", changed_by=ADMIN)
    assert await db.blocked_terms(store, GUILD) == []
    assert not await refused(store, settings, "a red fox")


async def test_a_term_in_another_script_lists_as_typed_and_look_alikes_count_as_the_same(
    store: Store, settings: Settings
) -> None:
    assert await db.add_blocked_term(store, GUILD, "\u041a\u041e\u0422", changed_by=ADMIN)  # Russian "cat"
    assert await db.add_blocked_term(store, GUILD, "gore", changed_by=ADMIN)
    assert not await db.add_blocked_term(store, GUILD, "g\u043ere", changed_by=ADMIN)  # "gore", Cyrillic o

    assert await db.blocked_terms(store, GUILD) == ["gore", "\u043a\u043e\u0442"]
    assert await refused(store, settings, "\u0447\u0451\u0440\u043d\u044b\u0439 \u043a\u043e\u0442")
    assert await db.remove_blocked_term(store, GUILD, "g\u043ere", changed_by=ADMIN)
    assert await db.blocked_terms(store, GUILD) == ["\u043a\u043e\u0442"]


@pytest.mark.parametrize(
    ("prompt", "blocked"),
    [
        ("a classic car", False),
        ("brass and glass", False),
        ("a c\u200blass act", False),  # removing the zero-width space makes "class", still not "ass"
        ("an " + fullwidth("ass") + " in a field", True),
        ("ass-shaped cloud", True),
        ("assassin", False),
    ],
)
def test_whole_word_semantics_stay(prompt: str, blocked: bool) -> None:
    assert contains_blocked_term(prompt, ("ass",)) is blocked


def test_terms_with_regex_characters_are_literal() -> None:
    assert contains_blocked_term("cost: $5 (cheap)", ("$5 (cheap)",))
    assert not contains_blocked_term("cost: 55 cheap", ("$5 (cheap)",))
    assert not contains_blocked_term("anything at all", ("a.*",))


def count_compilations(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every regex the ``re`` module really compiles (``re`` only compiles on a miss of its cache)."""
    compiled: list[Any] = []
    real: Callable[..., Any] = re._compiler.compile  # type: ignore[attr-defined]

    def counting(pattern: Any, flags: int = 0) -> Any:
        compiled.append(pattern)
        return real(pattern, flags)

    monkeypatch.setattr(re._compiler, "compile", counting)  # type: ignore[attr-defined]
    return compiled


async def test_a_long_list_is_compiled_once_per_change_not_per_prompt(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(600):  # more than the 512 patterns ``re`` keeps
        await db.add_blocked_term(store, GUILD, f"term{n}", changed_by=ADMIN)
    compiled = count_compilations(monkeypatch)

    for n in range(5):
        assert not await refused(store, settings, f"an innocent prompt {n}")
    assert len(compiled) <= 1  # the first check compiles the list (once)
    assert await refused(store, settings, "this has term599 in it")
    assert len(compiled) <= 1

    await db.add_blocked_term(store, GUILD, "one more", changed_by=ADMIN)
    assert await refused(store, settings, "just one more")
    assert not await refused(store, settings, "innocent")
    assert len(compiled) <= 2  # the changed list is compiled once


async def test_a_member_cannot_dodge_a_term_end_to_end(fluxbot: FluxbotHarness) -> None:
    world = fluxbot.world
    async with fluxbot.running():
        await (await world.admin.slash(world.channel, "limits blocklist add", term="red  fox")).wait_response()
        listed = await world.admin.slash(world.channel, "limits blocklist list")
        await listed.wait_response()
        attempts = [
            await world.member.slash(world.channel, "imagine", prompt=prompt)
            for prompt in ("a " + fullwidth("RED") + " fox", "a re\u200bd f\u043ex", "a red\u3000\u3000FOX")
        ]
        await world.emu.wait_until(lambda: all(status_line(i) for i in attempts), timeout=5)

    assert "`red fox`" in status_line(listed)
    for attempt in attempts:
        assert "rephrase" in status_line(attempt)
        assert "fox" not in status_line(attempt).lower()  # the refusal never names the term
    assert fluxbot.flux.count("POST", "/flux/images") == 0
