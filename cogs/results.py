"""How jobs look on Discord: the posted result, the member's status line, and the buttons on both.

:class:`DiscordCourier` is the runner's courier: it posts results to the channel as regular messages with
the bot token (never through the 15-minute interaction token), and edits the member's deferred response to
show where the job stands while that token lives. While the job can still be cancelled (queued, or at the
provider), the status line carries a **Cancel** button; the last word removes it.

Languages: the status line speaks the language of the member who asked (kept with the job, since the runner
edits it long after their interaction is gone); a result, and anything else posted in the channel, the
server's (its ``preferred_locale``); a button's answer, the language of whoever clicked. The buttons of a
posted result keep the labels they were posted with.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import discord

from bot import db
from bot.db import INTERACTION_LIFETIME, CancelOutcome, Job, JobKind
from bot.i18n import LANGUAGES, N_, say, tr
from bot.images import DownloadedImage, ImageRejected, fit_images, fits_unchanged
from bot.jobs import DeliveryError, JobCancelled, JobDone, JobFailed, JobQueued, JobStarted, JobUpdate, PostedResult
from bot.tasks import TaskSet
from cogs.feedback import DISCORD_ERRORS, TRANSPORT_ERRORS, reply_with_error

if TYPE_CHECKING:
    from bot.app import FluxBot

__all__ = ["DiscordCourier", "JobButton", "cancel_view", "jump_url", "status_line"]

log = logging.getLogger(__name__)

#: Progress edits stop this long before the interaction token expires.
TOKEN_MARGIN = 30.0
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
#: Seconds the upload limit and language of a server this process does not run (another process's shard) are
#: kept after Discord was asked for them: both change rarely, a result posted under an old limit is only
#: smaller, and one in the server's old language is still read.
UPLOAD_LIMIT_KEPT = 3600.0
#: How many of the bot's recent channel messages are searched for a post made just before a crash.
HISTORY_SEARCH = 100
#: Status edits sent at once. discord.py opens a connection for each request under way and keeps it open for
#: reuse afterwards: unbounded, hundreds of pending jobs would hold hundreds of sockets; bounded, the same few
#: connections carry every edit.
STATUS_EDIT_CONCURRENCY = 8
#: Seconds a progress line (queued, generating) waits before it is shown; one replaced by then is never sent.
#: A job that is done within it shows "thinking…" and then its result, not three edits nobody could read.
PROGRESS_SETTLE = 1.0
#: The message id Discord's webhook routes accept for an interaction's original response.
ORIGINAL_RESPONSE = cast(int, "@original")
EMBED_COLOUR = discord.Colour.from_rgb(88, 101, 242)


def jump_url(guild_id: int, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def status_line(job: Job, update: JobUpdate, locale: discord.Locale | str | None) -> str:
    """The one line the member sees in their deferred response, in ``locale`` (the language of the member who
    asked, kept with the job). It starts with an emoji in every language, saying where the job is."""
    match update:
        case JobQueued(position):
            return "⏳ " + tr(locale, "Queued — #{position} in line.", position=position)
        case JobStarted(started_at):
            # Discord shows the relative time ("2 minutes ago") and keeps it current: no edit needed for that.
            return "🎨 " + tr(locale, "Generating… started <t:{started}:R>", started=int(started_at))
        case JobDone(message_id):
            return "✅ " + tr(locale, "Done: {link}", link=jump_url(job.guild_id, job.channel_id, message_id))
        case JobFailed(message):
            # A message kept in English in the database is looked up: the bot's own sentences are translated.
            return "❌ " + say(locale, message)
        case JobCancelled(billed=True):
            return "🛑 " + tr(
                locale, "Cancelled. The image service had already started, so it still counts toward your limits."
            )
        case JobCancelled():
            return "🛑 " + tr(locale, "Cancelled. Nothing was charged.")


class DiscordCourier:
    """Posts results and progress for the job runner."""

    def __init__(self, bot: FluxBot, *, edit_concurrency: int = STATUS_EDIT_CONCURRENCY) -> None:
        self._bot = bot
        self._edits = asyncio.Semaphore(edit_concurrency)
        # Per job with an edit waiting or under way: its edits go one at a time, and only the newest line
        # asked for is sent (the others it replaced are skipped). Empty when no edit waits.
        self._editing: dict[int, _Editing] = {}
        self._progress = TaskSet("status lines")
        self._servers: dict[int, tuple[_Server, float]] = {}  # guild id -> (what is known, monotonic expiry)

    async def settled(self) -> None:
        """Until every progress line asked for so far is shown, or skipped for a newer one."""
        await self._progress.wait()

    async def close(self) -> None:
        """Drop the progress lines not shown yet (the bot is stopping)."""
        await self._progress.close()

    async def deliver(self, job: Job, images: Sequence[DownloadedImage]) -> int:
        server = await self._server(job)
        limit, locale = server.upload_limit, server.locale
        stem = f"flux-{job.id}"
        try:
            if fits_unchanged(images, limit):  # the usual case: nothing to re-encode, no thread needed
                fitted = fit_images(images, limit, stem=stem)
            else:
                fitted = await asyncio.to_thread(fit_images, images, limit, stem=stem)
        except ImageRejected as exc:
            raise DeliveryError(str(exc), retryable=False) from exc
        files = [discord.File(io.BytesIO(image.data), filename=image.filename) for image in fitted]
        channel = self._channel(job)
        member = f"<@{job.user_id}>"
        if job.kind is JobKind.EDIT:
            content = tr(locale, "{member} edited:", member=member)
        else:
            content = tr(locale, "{member} imagined:", member=member)
        try:
            message = await channel.send(
                content,
                embed=result_embed(job, locale),
                files=files,
                view=result_view(job.id, locale),
                allowed_mentions=_requester_only(job),
                # Discord answers a repeated nonce with the first message: a post that happened just
                # before a crash is not made twice when the job is delivered again after the restart.
                nonce=f"fluxjob-{job.id}",
            )
        except (discord.Forbidden, discord.NotFound) as exc:
            raise DeliveryError(f"cannot post in channel {job.channel_id}: {exc}", retryable=False) from exc
        except discord.HTTPException as exc:
            raise DeliveryError(f"posting failed: {exc}", retryable=exc.status >= 500 or exc.status == 429) from exc
        except TRANSPORT_ERRORS as exc:
            raise DeliveryError(f"posting failed: {type(exc).__name__}: {exc}", retryable=True) from exc
        return message.id

    async def find_posted(self, job: Job) -> PostedResult | None:
        """Look for the job's result among the bot's messages in the channel since the job began."""
        channel = self._channel(job)
        since = discord.Object(discord.utils.time_snowflake(datetime.fromtimestamp(job.created_at, UTC)))
        me = self._bot.user
        footers = job_footers(job.id)  # the server's language may have changed since it was posted
        try:
            async for message in channel.history(limit=HISTORY_SEARCH, after=since):
                if me is not None and message.author.id == me.id and _footer(message) in footers:
                    log.info("job %d: found its earlier post %d; not posting again", job.id, message.id)
                    return PostedResult(message.id, len(message.attachments))
        except DISCORD_ERRORS as exc:
            raise DeliveryError(f"cannot read channel {job.channel_id}: {exc}", retryable=True) from exc
        return None

    def _channel(self, job: Job) -> discord.PartialMessageable:
        """The job's channel, usable with the bot token alone (no cache needed, also after a restart)."""
        return self._bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id or None)

    async def _server(self, job: Job) -> _Server:
        """The largest file the job's channel takes (its server's, by its boosts) and the language of what is
        posted there (the server's; in direct messages, the member's own).

        A server on another process's shard is not in this process's cache (a result may be delivered by any
        process): Discord is asked for it, and the answer kept for :data:`UPLOAD_LIMIT_KEPT` s.
        """
        if not job.guild_id:
            return _Server(DEFAULT_UPLOAD_LIMIT, job.locale)
        if (guild := self._bot.get_guild(job.guild_id)) is not None:
            return _Server(guild.filesize_limit, guild.preferred_locale.value)
        now = time.monotonic()
        kept = self._servers.get(job.guild_id)
        if kept is not None and kept[1] > now:
            return kept[0]
        try:
            guild = await self._bot.fetch_guild(job.guild_id, with_counts=False)
        except DISCORD_ERRORS as exc:
            log.warning("job %d: could not read the upload limit of server %d: %s", job.id, job.guild_id, exc)
            # The smallest limit there is (the result may be shrunk more than needed), and English.
            return _Server(DEFAULT_UPLOAD_LIMIT, None)
        server = _Server(guild.filesize_limit, guild.preferred_locale.value)
        self._servers[job.guild_id] = (server, now + UPLOAD_LIMIT_KEPT)
        return server

    async def notify(self, job: Job, update: JobUpdate) -> None:
        """Show where ``job`` stands in the member's response. A final word (done, failed) is sent before this
        returns; a progress line is sent :data:`PROGRESS_SETTLE` s later, in the background, unless a newer
        line replaced it by then."""
        line = status_line(job, update, job.locale)
        # While it may be cancelled the line offers Cancel; the last word takes the button away.
        view = cancel_view(job.id, job.locale) if isinstance(update, JobQueued | JobStarted) else None
        if job.interaction_token and job.interaction_application_id and token_alive(job):
            asked = self._ask(job.id)
            edit = self._edit_response(
                job, job.interaction_application_id, job.interaction_token, line, asked, view=view
            )
            if isinstance(update, JobQueued | JobStarted):
                self._progress.spawn(self._quietly(job, edit, settle=PROGRESS_SETTLE), name=f"job-{job.id}")
                return
            if await self._quietly(job, edit):
                return
        if isinstance(update, JobFailed):  # no live interaction to tell: say it in the channel, in its language
            await self._tell_in_channel(job, status_line(job, update, (await self._server(job)).locale))

    def _ask(self, job_id: int) -> tuple[_Editing, int]:
        """Number a line asked for: the job's newest from now on."""
        editing = self._editing.setdefault(job_id, _Editing())
        editing.newest += 1
        return editing, editing.newest

    async def _quietly(self, job: Job, edit: Coroutine[Any, Any, None], *, settle: float = 0.0) -> bool:
        """Run an edit (after ``settle`` s); False, logged, if Discord refused it or could not be reached."""
        try:
            if settle:
                await asyncio.sleep(settle)
            await edit
        except DISCORD_ERRORS as exc:
            log.info("job %d: could not update the member's response: %s", job.id, exc)
            return False
        finally:
            edit.close()  # never started if the wait was cancelled
        return True

    async def _edit_response(
        self,
        job: Job,
        application_id: int,
        token: str,
        line: str,
        asked: tuple[_Editing, int],
        *,
        view: discord.ui.View | None,
    ) -> None:
        """Show ``line`` (and ``view``'s buttons, or none) in the member's response, after the edits asked for
        before it; skipped if a newer line for the same job was asked for by its turn (that one is sent instead)."""
        editing, mine = asked
        try:
            async with editing.turn, self._edits:
                if editing.newest != mine:
                    return
                webhook = discord.Webhook.partial(application_id, token, client=self._bot)
                await webhook.edit_message(ORIGINAL_RESPONSE, content=line, view=view)
        finally:
            if editing.newest == mine and self._editing.get(job.id) is editing:  # nothing newer waits
                del self._editing[job.id]

    async def _tell_in_channel(self, job: Job, line: str) -> None:
        channel = self._channel(job)
        try:
            await channel.send(
                f"<@{job.user_id}> {line}",
                allowed_mentions=_requester_only(job),
            )
        except DISCORD_ERRORS as exc:
            log.info("job %d: could not tell the member in the channel: %s", job.id, exc)


def token_alive(job: Job) -> bool:
    """Whether the job's own interaction token can still edit the member's status line."""
    created = job.interaction_created_at or job.created_at
    return time.time() < created + INTERACTION_LIFETIME - TOKEN_MARGIN


@dataclass(frozen=True, slots=True)
class _Server:
    """What posting in a job's channel depends on: the largest file it takes, and its language (None: English)."""

    upload_limit: int
    locale: str | None


class _Editing:
    """A job's edits in progress: one at a time (``turn``), and the number of the newest one asked for."""

    __slots__ = ("newest", "turn")

    def __init__(self) -> None:
        self.newest = 0
        self.turn = asyncio.Lock()


def _requester_only(job: Job) -> discord.AllowedMentions:
    """Ping the member who asked, and nobody else (prompts are user text)."""
    return discord.AllowedMentions(users=[discord.Object(job.user_id)], roles=False, everyone=False)


def result_embed(job: Job, locale: discord.Locale | str | None = None) -> discord.Embed:
    """A result's details, labelled in ``locale`` (the server's); the prompt, model and size as they are."""
    embed = discord.Embed(description=_clip(job.prompt, 4000), colour=EMBED_COLOUR)
    embed.add_field(name=tr(locale, "Model"), value=job.model)
    embed.add_field(name=tr(locale, "Size"), value=job.size)
    if job.result_seed is not None:
        embed.add_field(name=tr(locale, "Seed"), value=str(job.result_seed))
    seconds = f"{max(0.0, time.time() - job.created_at):.0f}"
    embed.add_field(name=tr(locale, "Time"), value=tr(locale, "{seconds} s", seconds=seconds))
    embed.set_footer(text=job_footer(job.id, locale))
    return embed


def job_footer(job_id: int, locale: discord.Locale | str | None = None) -> str:
    """The footer of a result's embed; it also identifies the job's post when looking for it later."""
    return tr(locale, "Job #{number}", number=job_id)


def job_footers(job_id: int) -> frozenset[str]:
    """The job's footer in every language a result may have been posted in."""
    return frozenset({job_footer(job_id), *(job_footer(job_id, locale) for locale in LANGUAGES)})


def _footer(message: discord.Message) -> str | None:
    return message.embeds[0].footer.text if message.embeds else None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_view(job_id: int, locale: discord.Locale | str | None = None) -> discord.ui.View:
    """A result's buttons, labelled in ``locale`` (the server's)."""
    view = discord.ui.View(timeout=None)
    for action in ("reroll", "edit", "delete"):
        view.add_item(JobButton(action, job_id, locale=locale))
    return view


def cancel_view(job_id: int, locale: discord.Locale | str | None = None) -> discord.ui.View:
    """The status line's button while the job may be cancelled, labelled in ``locale`` (the member's)."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("cancel", job_id, locale=locale))
    return view


_BUTTONS: dict[str, tuple[str, str, discord.ButtonStyle]] = {
    "reroll": (N_("Re-roll"), "🎲", discord.ButtonStyle.secondary),
    "edit": (N_("Edit"), "✏️", discord.ButtonStyle.secondary),
    "delete": (N_("Delete"), "🗑️", discord.ButtonStyle.danger),
    "cancel": (N_("Cancel"), "✖️", discord.ButtonStyle.secondary),
}


#: The name of the cog (``cogs.imagine``) that re-rolls and edits results.
IMAGINE_COG = "Imagine"


@runtime_checkable
class ResultActions(Protocol):
    """What the buttons ask of the Imagine cog.

    Checked by shape, not by class: extension modules are executed by ``load_extension``, so modules
    that are not extensions (like this one) never import them.
    """

    async def reroll(self, interaction: discord.Interaction[Any], job: Job, /) -> None: ...

    async def ask_edit_prompt(self, interaction: discord.Interaction[Any], job: Job, /) -> None: ...


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"flux:(?P<action>reroll|edit|delete|cancel):(?P<job>\d+)",
):
    """A result's button, or the status line's Cancel. Its custom_id carries the action and the job id, so it
    keeps working after a restart: the job's parameters come from the database. Its label is in ``locale``
    (the one made again from a click's custom id only answers it: its label is never shown)."""

    def __init__(self, action: str, job_id: int, *, locale: discord.Locale | str | None = None) -> None:
        label, emoji, style = _BUTTONS[action]
        super().__init__(
            discord.ui.Button(label=tr(locale, label), emoji=emoji, style=style, custom_id=f"flux:{action}:{job_id}")
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        return cls(match["action"], int(match["job"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        try:
            if self.action == "cancel":
                await cancel_clicked(interaction, self.job_id)
                return
            cog = interaction.client.get_cog(IMAGINE_COG)
            if not isinstance(cog, ResultActions):
                raise RuntimeError(f"the {IMAGINE_COG} cog is not loaded")
            job = await db.get_job(interaction.client.store, self.job_id)
            if job is None:
                await interaction.response.send_message(
                    tr(interaction.locale, "That image is no longer known to the bot."), ephemeral=True
                )
            elif self.action == "reroll":
                await cog.reroll(interaction, job)
            elif self.action == "edit":
                await cog.ask_edit_prompt(interaction, job)
            else:
                await delete_result(interaction, job)
        except Exception as error:
            await reply_with_error(interaction, error)


async def cancel_clicked(interaction: discord.Interaction[Any], job_id: int) -> None:
    """The member clicked Cancel on their status line: the runner ends the job if it still may.

    A job that ends has its last word shown on the status line by the runner, through the job's own
    interaction token; once that token is too old, through the click's instead. Otherwise the member is told
    why not, privately: another member's job (a status line is ephemeral, but custom ids are no secret), a
    job already ended, or one whose result is being posted (then the result is posted all the same).
    """
    await interaction.response.defer()  # the status line stays as it is until the outcome is known
    bot = interaction.client
    outcome = await bot.runner.cancel(job_id, interaction.user.id)
    locale = interaction.locale
    if outcome.cancelled:
        job = await db.get_job(bot.store, job_id)
        if job is not None and not token_alive(job):
            line = status_line(job, JobCancelled(outcome is CancelOutcome.CANCELLED_BILLED), locale)
            await interaction.edit_original_response(content=line, view=None)
        return
    if outcome is CancelOutcome.TOO_LATE:
        text = tr(locale, "Too late to cancel: the result is being posted.")
    elif outcome is CancelOutcome.NOT_YOURS:
        text = tr(locale, "Only the member who asked for this image can cancel it.")
    else:
        text = tr(locale, "This request has already ended.")
    await interaction.followup.send(text, ephemeral=True)


async def delete_result(interaction: discord.Interaction[Any], job: Job) -> None:
    """Delete a posted result: for its requester, or members who may manage messages."""
    member = interaction.user
    allowed = member.id == job.user_id or (
        isinstance(member, discord.Member) and interaction.permissions.manage_messages
    )
    if not allowed:
        await interaction.response.send_message(
            tr(interaction.locale, "Only the member who asked for this image, or a moderator, can delete it."),
            ephemeral=True,
        )
        return
    await interaction.response.defer(ephemeral=True, thinking=False)
    if interaction.message is not None:
        await interaction.message.delete()
    log.info("job %d: result deleted by %d", job.id, member.id)
