"""Fuzzing the blocklist with hostile prompts and terms: normalizing never fails and is stable, a term cannot be
dodged with invisible characters, fullwidth forms, case, spacing or look-alike letters, and a check ends in
nothing but the typed :class:`~bot.limits.Refusal`."""

from __future__ import annotations

import itertools
import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot import db
from bot.db import Store
from bot.db.guilds import comparable_text
from bot.limits import Member, Refusal, RefusalKind, admit, contains_blocked_term
from bot.settings import Settings
from cogs.feedback import describe_refusal

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

#: Characters nobody sees: zero-width space, non-joiner, joiner, word joiner, BOM, soft hyphen.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
#: Spaces that are not the ASCII one.
SPACES = " \t\n\u00a0\u2003\u3000"
#: Cyrillic and Greek letters, both cases, that look like Latin letters.
LOOKALIKES = {
    "a": "\u0430\u0410\u03b1\u0391",
    "c": "\u0441\u0421",
    "e": "\u0435\u0415\u03b5\u0395",
    "i": "\u0456\u0406\u03b9\u0399",
    "j": "\u0458\u0408",
    "k": "\u043a\u041a\u03ba\u039a",
    "o": "\u043e\u041e\u03bf\u039f",
    "p": "\u0440\u0420\u03c1\u03a1",
    "s": "\u0455\u0405",
    "x": "\u0445\u0425\u03c7\u03a7",
    "y": "\u0443\u0423",
}
GUILDS = itertools.count(1)

words = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
terms = st.lists(words, min_size=1, max_size=3).map(" ".join)


@st.composite
def disguised(draw: st.DrawFn, term: str) -> str:
    """``term`` as a member might type it to slip past the blocklist."""
    out = []
    for char in term:
        if char == " ":
            out.append(draw(st.text(SPACES + INVISIBLE, min_size=1, max_size=3).filter(lambda s: s.strip(INVISIBLE))))
            continue
        forms = [char, char.upper(), chr(ord(char.upper()) + 0xFEE0), chr(ord(char) + 0xFEE0)]
        forms += list(LOOKALIKES.get(char, ""))
        out.append(draw(st.sampled_from(forms)))
        out.append(draw(st.text(INVISIBLE, max_size=2)))
    return "".join(out)


@st.composite
def prompts_containing(draw: st.DrawFn) -> tuple[str, str]:
    """A term, and a prompt with the term disguised somewhere in it (as a whole word or phrase)."""
    term = draw(terms)
    before = draw(st.text(max_size=80))
    after = draw(st.text(max_size=80))
    return term, f"{before} {draw(disguised(term))} {after}"


@FUZZ
@given(text=st.text(max_size=300))
def test_normalizing_never_fails_and_is_stable(text: str) -> None:
    for normalize in (db.normalize_term, comparable_text):
        normal = normalize(text)

        assert normalize(normal) == normal
        assert normal == normal.strip() and "  " not in normal
        assert not any(unicodedata.category(char) == "Cf" for char in normal)
    assert comparable_text(db.normalize_term(text)) == comparable_text(text)


@FUZZ
@given(case=prompts_containing(), others=st.lists(st.text(max_size=20), max_size=5))
def test_a_disguised_term_is_always_found(case: tuple[str, str], others: list[str]) -> None:
    term, prompt = case
    assert contains_blocked_term(prompt, (term, *others)), (term, prompt)


async def check(store: Store, settings: Settings, guild_id: int, prompt: str) -> Refusal | None:
    try:
        await admit(
            store, settings, guild_id=guild_id, channel_id=1, member=Member(1), model="flux-dev", count=1, prompt=prompt
        )
    except Refusal as refusal:
        return refusal
    return None


async def block(store: Store, guild_id: int, blocked: list[str]) -> None:
    for term in blocked:
        if db.normalize_term(term):  # /limits refuses an empty term before it reaches the store
            await db.add_blocked_term(store, guild_id, term, changed_by=1)


@FUZZ
@given(case=prompts_containing(), others=st.lists(st.text(max_size=20), max_size=5))
async def test_a_server_refuses_a_disguised_term_without_naming_it(
    store: Store, settings: Settings, case: tuple[str, str], others: list[str]
) -> None:
    term, prompt = case
    guild_id = next(GUILDS)
    await block(store, guild_id, [*others, term])

    refusal = await check(store, settings, guild_id, prompt)

    assert refusal is not None and refusal.kind is RefusalKind.BLOCKED_TERM
    # Nothing of the term travels with the refusal, so the member's message cannot name it.
    assert refusal.args == (RefusalKind.BLOCKED_TERM.value,) and refusal.allowed == ()
    assert describe_refusal(refusal, None) == describe_refusal(Refusal(RefusalKind.BLOCKED_TERM), None)


@FUZZ
@given(prompt=st.text(max_size=300), blocked=st.lists(st.text(max_size=30), max_size=6))
async def test_any_prompt_and_terms_end_in_an_answer_or_the_typed_refusal(
    store: Store, settings: Settings, prompt: str, blocked: list[str]
) -> None:
    guild_id = next(GUILDS)
    await block(store, guild_id, blocked)

    refusal = await check(store, settings, guild_id, prompt)  # anything but a Refusal fails the test

    assert (refusal is not None) == contains_blocked_term(prompt, tuple(blocked))
