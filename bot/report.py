"""``/limits report`` as a picture and as text: images per day stacked by model, the top members, totals per
model, failures and refusals by cause.

The chart is drawn with matplotlib's Agg renderer straight onto a :class:`~matplotlib.figure.Figure` (never
pyplot, whose global figure registry would keep figures alive), and matplotlib is imported only when the first
report is drawn: a bot nobody asks for a report never pays its import time or memory. Drawing takes a fraction
of a second of CPU, so it runs in a worker thread, and one figure at a time (:data:`_DRAWING`): matplotlib's
global state (rcParams, font caches) is not safe to use from several threads at once.

The summary is written in the language of the admin who asked (``locale``, see :mod:`bot.i18n`), and so is
the chart when its font has every character of that language's labels: matplotlib's own font (DejaVu Sans)
draws Latin and Cyrillic but no Chinese or Japanese, so for those the chart's labels stay in English rather
than come out as empty boxes (the summary is translated all the same).

Member names are chosen by members: they are drawn as plain text (never parsed as mathtext, so "$" cannot
break a render), and written into the summary with mentions and Markdown escaped.
"""

from __future__ import annotations

import asyncio
import functools
import io
import threading
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING

import discord
from discord.utils import escape_markdown, escape_mentions

from bot.db.report import UsageReport
from bot.i18n import N_, tr
from cogs.text import MESSAGE_LIMIT, fit_lines, shorten

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["CAUSES", "HEIGHT", "WIDTH", "member_name", "render_report", "report_summary"]

#: The size of every chart, in pixels: a few hundred kilobytes as PNG, far below Discord's upload limit.
WIDTH, HEIGHT = 1200, 900
_DPI = 100

#: At most this many models get a colour of their own; the rest are drawn together as "other models".
_MAX_MODELS = 8
#: The longest name the chart or the summary shows (Discord display names are at most 32 characters).
_MAX_NAME = 40
#: The longest model name, error code or cause the summary shows (they are short codes; this is a safeguard).
_MAX_CODE = 32
_OTHER_MODELS = "other models"  # a key of the chart's series: never a model's name, which has no spaces

#: The locale a report is written in (the admin's ``interaction.locale``); see :func:`bot.i18n.tr`.
Locale = discord.Locale | str | None

#: What each refusal cause (a :class:`bot.limits.RefusalKind` or :class:`bot.db.LimitKind` value) is called in a
#: report; an unknown cause (from a newer version sharing the database) shows as its code.
#: The names are message ids, translated where they are shown.
CAUSES: Mapping[str, str] = {
    "user_daily": N_("member's daily limit"),
    "guild_daily": N_("server's daily limit"),
    "user_monthly": N_("member's monthly limit"),
    "guild_monthly": N_("server's monthly limit"),
    "max_concurrent": N_("jobs at a time"),
    "cooldown": N_("cooldown"),
    "channel": N_("channel not allowed"),
    "model": N_("model not allowed"),
    "count": N_("too many images at once"),
    "blocked_term": N_("blocked words"),
    "member_blocked": N_("blocked member"),
    "access": N_("no access role"),
    "dms_off": N_("direct messages off"),
}

#: Every text the chart draws besides names and figures: the chart is drawn in a language only when its font
#: has every character of these in that language.
_CHART_TEXTS = (
    N_("{server}: {first} to {last} (UTC)"),
    N_("{server}: {day} (UTC)"),
    N_("This server"),
    N_("Images per day (UTC), {total} in total"),
    N_("images"),
    N_("other models"),
    N_("No images in this period"),
    N_("Top members (images)"),
    N_("nobody yet"),
    N_("Totals"),
    N_("jobs posted"),
    N_("failed jobs: {count}"),
    N_("refused requests: {count}"),
    N_("… and {count} more"),
    *CAUSES.values(),
)

#: One chart at a time: matplotlib's rcParams and font caches are shared by every figure of the process.
_DRAWING = threading.Lock()


def member_name(names: Mapping[int, str], user_id: int, locale: Locale = None) -> str:
    """How a member is called in a report: their display name, on one line, without control or invisible
    characters, at most :data:`_MAX_NAME` characters; ``member <id>`` when the name is unknown (they left)."""
    one_line = " ".join(names.get(user_id, "").split())
    name = "".join(char for char in one_line if unicodedata.category(char) not in {"Cc", "Cf", "Co", "Cs"}).strip()
    return shorten(name, _MAX_NAME) if name else tr(locale, "member {user}", user=user_id)


async def render_report(
    report: UsageReport, *, names: Mapping[int, str], server: str | None, locale: Locale = None
) -> bytes:
    """The report as a PNG of :data:`WIDTH` x :data:`HEIGHT` pixels, drawn in a worker thread, titled with the
    ``server``'s name (None: "This server") and the period, in ``locale``'s language where the font draws it.

    ``names`` maps the top members' ids to display names. A period without images still gets a chart, which
    says so.
    """
    return await asyncio.to_thread(_draw_locked, report, names, server, locale)


def report_summary(report: UsageReport, *, names: Mapping[int, str], locale: Locale = None) -> str:
    """The report's figures as the text of the message that carries the chart, in ``locale``'s language: at
    most 2,000 characters, names escaped so that no name can mention anyone or format the message (send it
    with no allowed mentions all the same)."""
    first, last = report.days[0], report.days[-1]
    lines = [
        tr(locale, "**Usage report: {day} (UTC)**", day=first)
        if first == last
        else tr(locale, "**Usage report: {first} to {last} (UTC)**", first=first, last=last),
        tr(locale, "Images posted: {images} (jobs: {jobs})", images=report.total_images, jobs=report.posted_jobs),
    ]
    if report.per_model:
        lines.append(tr(locale, "By model: {counts}", counts=_counts(locale, report.per_model)))
    if report.failures:
        lines.append(tr(locale, "Failed jobs: {counts}", counts=_counts(locale, report.failures)))
    if report.refusals:
        lines.append(
            tr(locale, "Refused requests: {counts}", counts=_counts(locale, _named_causes(locale, report.refusals)))
        )
    if report.top_members:
        lines.append(tr(locale, "Top members:"))
        lines.extend(
            f"{rank}. {_plain(member_name(names, user_id, locale))}: {count}"
            for rank, (user_id, count) in enumerate(report.top_members, start=1)
        )
    return fit_lines(lines, MESSAGE_LIMIT, locale=locale)


def _plain(text: str) -> str:
    """Untrusted text as it may appear in a message: shown as typed, pinging and formatting nothing."""
    return escape_markdown(escape_mentions(text))


def _counts(locale: Locale, counts: Mapping[str, int], shown: int = 10) -> str:
    """The first ``shown`` of ``counts`` as one line (a line too long would push the top members out)."""
    items = [f"{_plain(shorten(name, _MAX_CODE))} {count}" for name, count in list(counts.items())[:shown]]
    if len(counts) > shown:
        items.append(tr(locale, "… and {count} more", count=len(counts) - shown))
    return ", ".join(items)


def _named_causes(locale: Locale, refusals: Mapping[str, int]) -> dict[str, int]:
    """Refusal causes by their names in ``locale``'s language (an unknown cause by its code)."""
    return {tr(locale, CAUSES[cause]) if cause in CAUSES else cause: count for cause, count in refusals.items()}


# --- drawing (in a worker thread) ------------------------------------------------------------------------


def _draw_locked(report: UsageReport, names: Mapping[int, str], server: str | None, locale: Locale) -> bytes:
    with _DRAWING:
        drawable = _drawable_text()
        if not all(drawable.draws(tr(locale, text)) for text in _CHART_TEXTS):
            locale = None  # the font lacks this language's script: English rather than empty boxes
        members = [(member_name(names, user_id, locale), count) for user_id, count in report.top_members]
        first, last = report.days[0], report.days[-1]
        where = server if server is not None else tr(locale, "This server")
        title = (
            tr(locale, "{server}: {day} (UTC)", server=where, day=first)
            if first == last
            else tr(locale, "{server}: {first} to {last} (UTC)", server=where, first=first, last=last)
        )
        return _draw(report, members, title, locale, drawable)


def _draw(
    report: UsageReport, members: list[tuple[str, int]], title: str, locale: Locale, drawable: _Drawable
) -> bytes:
    import matplotlib as mpl  # noqa: PLC0415 - imported on the first report, not when the bot starts
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    # No text of a report is mathtext or TeX: a "$" in a name or title is a dollar sign.
    with mpl.rc_context({"text.parse_math": False, "text.usetex": False}):
        figure = Figure(figsize=(WIDTH / _DPI, HEIGHT / _DPI), dpi=_DPI, layout="constrained")
        FigureCanvasAgg(figure)
        grid = figure.add_gridspec(2, 2, height_ratios=(3, 2))
        figure.suptitle(drawable(" ".join(title.split()), 90), fontsize=15, parse_math=False)
        _draw_days(figure.add_subplot(grid[0, :]), report, locale, drawable)
        _draw_members(figure.add_subplot(grid[1, 0]), members, locale, drawable)
        _draw_totals(figure.add_subplot(grid[1, 1]), report, locale, drawable)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    return buffer.getvalue()


def _draw_days(axes: Axes, report: UsageReport, locale: Locale, drawable: _Drawable) -> None:
    """Images per day as bars, one colour per model, stacked."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    shown = list(report.per_model)[:_MAX_MODELS]
    series: dict[str, list[int]] = {model: [] for model in shown}
    if len(report.per_model) > _MAX_MODELS:
        series[_OTHER_MODELS] = []
    for day in report.days:
        day_images = report.images.get(day, {})
        for model in shown:
            series[model].append(day_images.get(model, 0))
        if _OTHER_MODELS in series:
            series[_OTHER_MODELS].append(sum(n for model, n in day_images.items() if model not in series))
    positions = range(len(report.days))
    bottoms = [0] * len(report.days)
    for index, (model, counts) in enumerate(series.items()):
        label = tr(locale, "other models") if model == _OTHER_MODELS else drawable(model)
        axes.bar(positions, counts, bottom=bottoms, width=0.8, color=f"C{index % 10}", label=label)
        bottoms = [below + count for below, count in zip(bottoms, counts, strict=True)]
    axes.set_title(
        tr(locale, "Images per day (UTC), {total} in total", total=report.total_images), loc="left", parse_math=False
    )
    step = max(1, len(report.days) // 15)
    ticks = list(positions)[::-1][::step][::-1]  # today always labelled, then every step-th day before it
    axes.set_xticks(ticks, [report.days[tick][5:] for tick in ticks], rotation=45, ha="right")
    axes.set_xlim(-0.6, len(report.days) - 0.4)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(tr(locale, "images"))
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    if series:
        axes.legend(loc="upper left", fontsize=9, ncols=min(len(series), 3))
    else:
        axes.set_ylim(0, 1)
        axes.text(
            0.5,
            0.5,
            tr(locale, "No images in this period"),
            transform=axes.transAxes,
            ha="center",
            va="center",
            fontsize=16,
            color="0.4",
            parse_math=False,
        )


def _draw_members(axes: Axes, members: list[tuple[str, int]], locale: Locale, drawable: _Drawable) -> None:
    """The members who used most, as a ranked list."""
    rows = [(drawable(name), str(count)) for name, count in members]
    _table(
        axes, locale, tr(locale, "Top members (images)"), rows or [(tr(locale, "nobody yet"), "")], ranked=bool(rows)
    )


def _draw_totals(axes: Axes, report: UsageReport, locale: Locale, drawable: _Drawable) -> None:
    """Images per model, then failed jobs and refused requests by cause."""
    rows: list[tuple[str, str]] = [(drawable(model), str(count)) for model, count in report.per_model.items()]
    rows.append((tr(locale, "jobs posted"), str(report.posted_jobs)))
    rows.append((tr(locale, "failed jobs: {count}", count=sum(report.failures.values())), ""))
    rows.extend((f"    {drawable(code)}", str(count)) for code, count in report.failures.items())
    refusals = _named_causes(locale, report.refusals)
    rows.append((tr(locale, "refused requests: {count}", count=sum(refusals.values())), ""))
    rows.extend((f"    {drawable(cause)}", str(count)) for cause, count in refusals.items())
    _table(axes, locale, tr(locale, "Totals"), rows)


def _table(axes: Axes, locale: Locale, heading: str, rows: list[tuple[str, str]], *, ranked: bool = False) -> None:
    """Rows of a label and a right-aligned figure in an axes without frame; rows beyond what fits are left
    out with a note. A rank is a text of its own, so that a right-to-left name cannot carry it to its end."""
    axes.set_axis_off()
    axes.set_title(heading, loc="left", parse_math=False)
    room = 13
    if len(rows) > room:
        rows = [*rows[: room - 1], (tr(locale, "… and {count} more", count=len(rows) - room + 1), "")]
    indent = 0.06 if ranked else 0.0
    for index, (label, figure) in enumerate(rows):
        y = 1 - (index + 0.5) / room
        if ranked:
            axes.text(0.0, y, f"{index + 1}.", transform=axes.transAxes, va="center", fontsize=11, parse_math=False)
        axes.text(indent, y, label, transform=axes.transAxes, va="center", fontsize=11, parse_math=False)
        axes.text(1.0, y, figure, transform=axes.transAxes, va="center", ha="right", fontsize=11, parse_math=False)


class _Drawable:
    """Text as the chart's font can draw it: characters the font lacks (emoji, most CJK) become "?" instead
    of empty boxes and a warning per character, and long labels are cut."""

    def __init__(self, charmap: frozenset[int]) -> None:
        self._charmap = charmap

    def __call__(self, text: str, limit: int = _MAX_NAME) -> str:
        return shorten("".join(char if ord(char) in self._charmap else "?" for char in text), limit)

    def draws(self, text: str) -> bool:
        """Whether the font has every character of ``text``."""
        return all(ord(char) in self._charmap for char in text)


@functools.cache
def _drawable_text() -> _Drawable:
    from matplotlib import font_manager  # noqa: PLC0415

    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties()))
    return _Drawable(frozenset(font.get_charmap()) | {ord(" ")})
