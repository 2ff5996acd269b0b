"""Fitting text into Discord's limits: long answers are trimmed to whole items and say how many were left out.

Discord refuses a message whose content is over 2,000 characters (400, code 50035); the member would only
see a generic error. Every answer whose length depends on data (a server's blocklist, a member's jobs, a
list of channels) goes through :func:`fit_lines`.
"""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot.i18n import tr

__all__ = ["MESSAGE_LIMIT", "code", "fit_lines", "pages", "shorten"]

#: Characters (code points, as Discord counts them) in a message's content.
MESSAGE_LIMIT = 2000

_ELLIPSIS = "…"
_GRAVE_LOOKALIKE = "\N{MODIFIER LETTER GRAVE ACCENT}"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with "…" when cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(_ELLIPSIS))] + _ELLIPSIS[: max(0, limit)]


def fit_lines(
    items: Sequence[str], limit: int = MESSAGE_LIMIT, *, sep: str = "\n", locale: discord.Locale | str | None = None
) -> str:
    """``items`` joined with ``sep``, keeping as many whole items as fit in ``limit`` characters.

    When some are left out, the text ends with "… and N more", in ``locale``'s language (the reader's: the
    note's length counts too). An item too long to fit even alone is cut (see :func:`shorten`). The result
    is never longer than ``limit``.
    """
    joined = sep.join(items)
    if len(joined) <= limit:
        return joined
    kept: list[str] = []
    used = 0
    for index, item in enumerate(items):
        left = len(items) - index - 1
        # Room for this item, and for the note about the ones after it if any remain.
        note = len(sep) + len(_more(left, locale)) if left else 0
        needed = used + (len(sep) if kept else 0) + len(item)
        if needed + note > limit:
            break
        kept.append(item)
        used = needed
    if not kept:
        # Not even the first item fits whole: show the start of it rather than nothing.
        if len(items) == 1:
            return shorten(items[0], limit)
        kept = [shorten(items[0], limit - len(sep) - len(_more(len(items) - 1, locale)))]
    return shorten(sep.join([*kept, _more(len(items) - len(kept), locale)]), limit)


def pages(
    lines: Sequence[str], limit: int = MESSAGE_LIMIT, *, most: int = 5, locale: discord.Locale | str | None = None
) -> list[str]:
    """``lines`` in messages of at most ``limit`` characters each, never splitting a line (one too long for a
    message alone is cut), at most ``most`` messages; the last one says how many lines were left out (in
    ``locale``'s language)."""
    grouped: list[list[str]] = [[]]
    for index, line in enumerate(shorten(line, limit) for line in lines):
        if grouped[-1] and len("\n".join([*grouped[-1], line])) > limit:
            if len(grouped) == most:
                return [*map("\n".join, grouped[:-1]), fit_lines([*grouped[-1], *lines[index:]], limit, locale=locale)]
            grouped.append([])
        grouped[-1].append(line)
    return ["\n".join(group) for group in grouped if group]


def _more(count: int, locale: discord.Locale | str | None) -> str:
    return tr(locale, "… and {count} more", count=count)


def code(text: str) -> str:
    """``text`` as inline code that no content can break out of: its backticks become a look-alike."""
    return "`" + (text.replace("`", _GRAVE_LOOKALIKE) or " ") + "`"
