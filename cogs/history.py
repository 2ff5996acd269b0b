"""What /history looks like: a member's past jobs here, newest first, ten to a page, with Previous and Next.

The answer is ephemeral, so only the member who asked sees it and its buttons; a click still shows the history
of whoever clicked, read again from the database, never anyone else's. The buttons are DynamicItems whose
custom id holds only the page (``flux:history:<page>``), so they keep working after a restart, and a click
edits the same message to the other page.

Prompts and failure reasons are text members and providers wrote: they are shown with their markdown and
mentions escaped, on one line, and the answer pings nobody.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.db import JobKind, JobStatus, work
from bot.db.history import MAX_PAGE, HistoryEntry, HistoryPage, member_history
from bot.i18n import N_, say, tr
from bot.limits import DM_GUILD_ID
from cogs.feedback import reply_with_error
from cogs.results import jump_url
from cogs.text import code, fit_lines, shorten

if TYPE_CHECKING:
    from bot.app import FluxBot

__all__ = ["HISTORY_COG", "HistoryButton", "HistoryCog", "history_embed", "setup"]

log = logging.getLogger(__name__)

#: The name of this cog, which the buttons look up.
HISTORY_COG = "History"
#: Discord's limit on an embed's description.
DESCRIPTION_LIMIT = 4096
#: Characters of a prompt and of a failure's reason shown per job (after escaping): ten jobs with their links
#: always fit in one embed.
PROMPT_SHOWN = 120
REASON_SHOWN = 100
#: Characters of a model's name, a size and a status label: they come from the catalog, the provider and the
#: translations, and are cut only so that one odd value cannot push a page past Discord's limit.
LABEL_SHOWN = 40

#: How each status is called; statuses this version does not know are shown as they are stored.
_STATUS_LABELS: Mapping[str, tuple[str, str]] = {
    JobStatus.QUEUED.value: ("⏳", N_("queued")),
    JobStatus.SUBMITTING.value: ("🎨", N_("starting")),
    JobStatus.SUBMITTED.value: ("🎨", N_("generating")),
    JobStatus.SUCCEEDED.value: ("📤", N_("being posted")),
    JobStatus.POSTED.value: ("✅", N_("posted")),
    JobStatus.FAILED.value: ("❌", N_("failed")),
    JobStatus.LOST.value: ("❔", N_("lost")),
    "cancelled": ("🚫", N_("cancelled")),
}
#: The statuses whose job ended without images: their reason is shown.
_ENDED_WITHOUT_IMAGES = frozenset({JobStatus.FAILED.value, JobStatus.LOST.value})


class HistoryCog(commands.Cog, name=HISTORY_COG):
    """A member's past jobs."""

    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.command = _history_command(self)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.command)
        self.bot.add_dynamic_items(HistoryButton)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.command.name)
        self.bot.remove_dynamic_items(HistoryButton)

    async def show(self, interaction: discord.Interaction[FluxBot], page: int, *, clicked: bool = False) -> None:
        """Page ``page`` of the member's history where they asked (direct messages: their DM jobs): a new
        ephemeral answer to ``/history``, or the clicked message edited to the other page."""
        page = max(1, min(page, MAX_PAGE))  # a custom id is text anyone could craft
        guild_id = interaction.guild_id or DM_GUILD_ID
        history = await member_history(self.bot.store, guild_id, interaction.user.id, page)
        locale = interaction.locale
        quiet = discord.AllowedMentions.none()
        if not history.entries:
            text = _nothing_text(locale, history)
            if clicked:
                await interaction.response.edit_message(content=text, embed=None, view=None, allowed_mentions=quiet)
            else:
                await interaction.response.send_message(text, ephemeral=True, allowed_mentions=quiet)
            return
        embed = history_embed(locale, history, await self._queue_places(history), in_dms=guild_id == DM_GUILD_ID)
        view = history_view(locale, history)
        if clicked:
            await interaction.response.edit_message(content=None, embed=embed, view=view, allowed_mentions=quiet)
        else:
            await interaction.response.send_message(embed=embed, view=view, ephemeral=True, allowed_mentions=quiet)

    async def _queue_places(self, history: HistoryPage) -> dict[int, int]:
        """Each queued job's place in line, read once for the page, and only when it shows a queued job."""
        if not any(entry.status == JobStatus.QUEUED for entry in history.entries):
            return {}
        order = await work.queue_order(self.bot.store)
        return {job_id: place for place, job_id in enumerate(order, start=1)}


def _nothing_text(locale: discord.Locale, history: HistoryPage) -> str:
    if history.pages == 0:
        return tr(locale, "You have no images here yet. Ask for one with /imagine.")
    return tr(
        locale,
        "There is no page {page}: your history here ends at page {pages}.",
        page=history.page,
        pages=history.pages,
    )


def history_embed(
    locale: discord.Locale | str, history: HistoryPage, queue_places: Mapping[int, int], *, in_dms: bool
) -> discord.Embed:
    """One page of jobs: per job its time, status, model and size, the link to its result, its prompt, and
    for a job that ended without images, why."""
    title = tr(locale, "Your images in direct messages") if in_dms else tr(locale, "Your images in this server")
    entries = [_entry_text(locale, entry, queue_places.get(entry.id)) for entry in history.entries]
    embed = discord.Embed(title=title, description=fit_lines(entries, DESCRIPTION_LIMIT, sep="\n\n", locale=locale))
    embed.set_footer(text=tr(locale, "Page {page} of {pages}", page=history.page, pages=history.pages))
    return embed


def _entry_text(locale: discord.Locale | str, entry: HistoryEntry, queue_place: int | None) -> str:
    parts = [f"<t:{int(entry.created_at)}:R>", _status_text(locale, entry.status, queue_place)]
    kind = "✏️ " if entry.kind is JobKind.EDIT else ""
    count = f"{entry.count} x " if entry.count > 1 else ""
    parts.append(f"{kind}{count}{code(shorten(entry.model, LABEL_SHOWN))}")
    parts.append(shorten(entry.size, LABEL_SHOWN))
    if entry.status == JobStatus.POSTED and entry.posted_message_id is not None:
        label = _plain(tr(locale, "Open"), LABEL_SHOWN)
        parts.append(f"[{label}]({jump_url(entry.guild_id, entry.channel_id, entry.posted_message_id)})")
    lines = [" · ".join(parts), f"> {_plain(entry.prompt, PROMPT_SHOWN)}"]
    if entry.status in _ENDED_WITHOUT_IMAGES:
        # The bot's own reasons are kept in English as message ids, shown in the member's language; a reason
        # with values in it (a provider's words, a size) stays as it was kept.
        reason = say(locale, entry.error_message) if entry.error_message else tr(locale, "No reason was recorded.")
        lines.append(f"> ↳ {_plain(reason, REASON_SHOWN)}")
    return "\n".join(lines)


def _status_text(locale: discord.Locale | str, status: JobStatus | str, queue_place: int | None) -> str:
    value = status.value if isinstance(status, JobStatus) else status
    known = _STATUS_LABELS.get(value)
    if known is None:  # a status a newer version of the bot wrote
        return _plain(value, LABEL_SHOWN)
    emoji, label = known
    if value == JobStatus.QUEUED.value and queue_place is not None:
        return f"{emoji} " + _plain(tr(locale, "queued, #{place} in line", place=queue_place), LABEL_SHOWN)
    return f"{emoji} " + _plain(tr(locale, label), LABEL_SHOWN)


def _plain(text: str, limit: int) -> str:
    """``text`` on one line as it was typed, its markdown and mentions escaped, at most ``limit`` characters.

    The text is cut before it is escaped, so that a cut never splits an escape: as much of it as still fits
    once escaped.
    """
    text = " ".join(text.split())

    def shown(keep: int) -> str:
        return discord.utils.escape_mentions(discord.utils.escape_markdown(shorten(text, keep)))

    fits, too_long = 0, limit + 1
    while too_long - fits > 1:  # escapes only lengthen it: the most that fits is found by halving
        middle = (fits + too_long) // 2
        fits, too_long = (middle, too_long) if len(shown(middle)) <= limit else (fits, middle)
    return shown(fits)


def history_view(locale: discord.Locale | str, history: HistoryPage) -> discord.ui.View:
    """Previous and Next, each disabled where there is no page to go to."""
    view = discord.ui.View(timeout=None)
    previous, following = history.page - 1, history.page + 1
    view.add_item(HistoryButton(previous, label=tr(locale, "Previous"), emoji="◀️", disabled=not history.has_previous))
    view.add_item(HistoryButton(following, label=tr(locale, "Next"), emoji="▶️", disabled=not history.has_next))
    return view


class HistoryButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"flux:history:(?P<page>\d+)"):
    """Previous or Next: the page to show is in the custom id (Previous on page 1 says 0, but is disabled)."""

    def __init__(
        self, page: int, *, label: str | None = None, emoji: str | None = None, disabled: bool = False
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=discord.ButtonStyle.secondary,
                disabled=disabled,
                custom_id=f"flux:history:{page}",
            )
        )
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> HistoryButton:
        return cls(int(match["page"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            cog = interaction.client.get_cog(HISTORY_COG)
            if not isinstance(cog, HistoryCog):
                raise RuntimeError(f"the {HISTORY_COG} cog is not loaded")
            await cog.show(interaction, self.page, clicked=True)
        except Exception as error:
            await reply_with_error(interaction, error)


def _history_command(cog: HistoryCog) -> app_commands.Command[Any, ..., Any]:
    @app_commands.command(name="history", description="Your past images here, newest first")
    @app_commands.describe(page="Which page to show (10 images a page, newest first)")
    async def history(
        interaction: discord.Interaction[FluxBot], page: app_commands.Range[int, 1, MAX_PAGE] = 1
    ) -> None:
        await cog.show(interaction, page)

    return history


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(HistoryCog(bot))
