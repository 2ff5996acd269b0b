"""What /imagine, /edit, the **Edit image** menu and reply-to-image editing look like on Discord.

Every path ends in :meth:`ImagineCog.start_job`: acknowledge first, check the request, record the job
(the runner reserves its images), and leave the rest to the runner, which reports progress in the
member's deferred response and posts the result in the channel.

An option a member leaves out of /imagine or /edit takes their own default (``/settings``) when the server
allows it there and then (:func:`generate_options`, :func:`edit_options`); a default it does not allow is left
out with a one-line note, never an error. Options given always win.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands
from yarl import URL

from bot.db import Job, JobKind, MemberSettings, NewJob, QuotaRefusal, get_member_settings
from bot.db.report import count_refusal
from bot.flux import MAX_COUNT, MAX_PROMPT_LENGTH, InvalidParameters, ModelCatalog, ModelSpec
from bot.flux.catalog import check_size
from bot.i18n import lazy, localized, tr
from bot.images import DownloadError, HostNotAllowed, SourceImage, fetch_source, size_text
from bot.limits import DM_GUILD_ID, Limits, Member, Refusal, RefusalKind, admit, member_limits
from cogs.feedback import (
    DISCORD_ERRORS,
    UserFacingError,
    describe_quota_refusal,
    describe_refusal,
    explain,
    reply_with_error,
)
from cogs.results import IMAGINE_COG

if TYPE_CHECKING:
    from bot.app import FluxBot

__all__ = [
    "DEFAULT_SIZE",
    "DefaultUse",
    "ImagineCog",
    "Options",
    "Unused",
    "default_note",
    "edit_options",
    "generate_options",
    "model_choices",
    "setup",
    "size_choices",
]

log = logging.getLogger(__name__)

#: Who asks for a job: a member's command, button or modal, or a message (a reply asking for an edit).
Requester = discord.Interaction["FluxBot"] | discord.Message

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_MENTION = re.compile(r"<@!?(\d+)>")

#: The size of an image when neither the member nor their defaults name one: every model makes it.
DEFAULT_SIZE = "1:1"
#: How many images a request makes when neither the member nor their defaults say.
DEFAULT_COUNT = 1


@dataclass(frozen=True, slots=True)
class Source:
    """The image an edit starts from: its checked bytes, and how the provider will get it."""

    image: SourceImage
    ref: str


class Unused(StrEnum):
    """Why one of a member's defaults is left out of a request."""

    GONE = "gone"
    """The bot no longer offers that model (the provider's list changed since it was set)."""
    NOT_ALLOWED = "not_allowed"
    """The server does not allow that model."""
    CANNOT_EDIT = "cannot_edit"
    """The model cannot edit images (an /edit)."""
    SIZE = "size"
    """The default size is not one the model makes; or the default model cannot make the size asked for."""
    OVER_LIMIT = "over_limit"
    """More images than the member may ask for at once here."""
    OVER_MODEL = "over_model"
    """More images than the model makes at once."""


@dataclass(frozen=True, slots=True)
class DefaultUse:
    """One of the member's defaults in one request: used as it is, or left out (``unused``) for ``used``.

    ``model`` is the model a default size or count was checked against; ``size`` the size asked for, which a
    default model could not make; ``limit`` the most images allowed, when a count was too many.
    """

    option: Literal["model", "size", "count"]
    default: str | int
    used: str | int
    unused: Unused | None = None
    model: str = ""
    size: str = ""
    limit: int = 0


@dataclass(frozen=True, slots=True)
class Options:
    """The model, size and count a request uses, and how the member's defaults took part (``defaults``).

    ``size`` is None for an edit: its size comes from the source image.
    """

    model: str
    size: str | None
    count: int
    defaults: tuple[DefaultUse, ...] = ()

    def notes(self, locale: discord.Locale | str | None) -> list[str]:
        """One line per default left out, telling why and what was used instead."""
        return [default_note(locale, use) for use in self.defaults if use.unused is not None]


def generate_options(
    catalog: ModelCatalog,
    own: MemberSettings,
    limits: Limits,
    *,
    model: str | None,
    size: str | None,
    count: int | None,
) -> Options:
    """The options of an /imagine: those given, else the member's defaults (``own``) that ``limits`` (the
    member's rules where they ask) and the catalog let them use, else the bot's.

    A default model is left out when the bot no longer offers it, the server does not allow it, or it cannot
    make the size given; a default size when the model used cannot make it; a default count when it is more
    than the member may ask for here, or than the model makes at once. An option given is never checked here:
    the catalog and the server's rules check the request as a whole afterwards, as without defaults.
    """
    uses: list[DefaultUse] = []
    chosen = model
    if chosen is None and own.model is not None:
        unused = _model_unused(catalog, limits, own.model, edit=False, size=size)
        chosen = own.model if unused is None else catalog.default_model
        uses.append(DefaultUse("model", own.model, chosen, unused, size=size or ""))
    chosen = chosen or catalog.default_model
    spec = _spec(catalog, chosen)
    picked_size = size
    if picked_size is None and own.size is not None:
        fits = spec is None or _makes(spec, own.size)
        picked_size = own.size if fits else DEFAULT_SIZE
        uses.append(DefaultUse("size", own.size, picked_size, None if fits else Unused.SIZE, model=chosen))
    picked_count = count
    if picked_count is None and own.count is not None:
        unused, limit = None, 0
        if own.count > limits.max_count:
            unused, limit = Unused.OVER_LIMIT, limits.max_count
        elif spec is not None and own.count > spec.max_count:
            unused, limit = Unused.OVER_MODEL, spec.max_count
        picked_count = own.count if unused is None else DEFAULT_COUNT
        uses.append(DefaultUse("count", own.count, picked_count, unused, model=chosen, limit=limit))
    return Options(chosen, picked_size or DEFAULT_SIZE, picked_count or DEFAULT_COUNT, tuple(uses))


def edit_options(catalog: ModelCatalog, own: MemberSettings, limits: Limits, *, model: str | None) -> Options:
    """The model of an /edit: the one given, else the member's default model if it can edit and the server
    allows it, else the bot's edit model. Sizes come from the source image and an edit makes one image, so a
    default size or count plays no part."""
    if model is not None or own.model is None:
        return Options(model or catalog.default_edit_model, None, 1)
    unused = _model_unused(catalog, limits, own.model, edit=True, size=None)
    chosen = own.model if unused is None else catalog.default_edit_model
    return Options(chosen, None, 1, (DefaultUse("model", own.model, chosen, unused),))


def _model_unused(catalog: ModelCatalog, limits: Limits, model: str, *, edit: bool, size: str | None) -> Unused | None:
    spec = _spec(catalog, model)
    if spec is None:
        return Unused.GONE
    if limits.allowed_models is not None and model not in limits.allowed_models:
        return Unused.NOT_ALLOWED
    if edit and not spec.can_edit:
        return Unused.CANNOT_EDIT
    if size is not None and not _makes(spec, size):
        return Unused.SIZE
    return None


def _spec(catalog: ModelCatalog, model: str) -> ModelSpec | None:
    return catalog.get(model) if model in catalog.names else None


def _makes(spec: ModelSpec, size: str) -> bool:
    try:
        check_size(spec, size)
    except InvalidParameters:
        return False
    return True


def default_note(locale: discord.Locale | str | None, use: DefaultUse) -> str:
    """Why a default was left out, and what was used instead, in one line for the member."""
    values = {"default": use.default, "used": use.used, "model": use.model, "size": use.size, "limit": use.limit}
    match use.option, use.unused:
        case "model", Unused.GONE:
            text = tr(locale, "Your default model {default} is no longer offered; {used} is used instead.", **values)
        case "model", Unused.NOT_ALLOWED:
            text = tr(locale, "Your default model {default} is not allowed here; {used} is used instead.", **values)
        case "model", Unused.CANNOT_EDIT:
            text = tr(locale, "Your default model {default} cannot edit images; {used} is used instead.", **values)
        case "model", _:
            text = tr(
                locale, "Your default model {default} cannot make the size {size}; {used} is used instead.", **values
            )
        case "size", _:
            text = tr(
                locale, "Your default size {default} is not available for {model}; {used} is used instead.", **values
            )
        case "count", Unused.OVER_LIMIT:
            text = tr(
                locale,
                "Your default number of images ({default}) is more than you may ask for here (at most {limit}); "
                "{used} is used instead.",
                **values,
            )
        case "count", _:
            text = tr(
                locale,
                "Your default number of images ({default}) is more than {model} makes at once (at most {limit}); "
                "{used} is used instead.",
                **values,
            )
    return text


class ImagineCog(commands.Cog, name=IMAGINE_COG):
    """Image generation and editing."""

    def __init__(self, bot: FluxBot) -> None:
        self.bot = bot
        self.catalog: ModelCatalog = bot.flux.catalog
        self._app_commands: list[app_commands.Command[Any, ..., Any] | app_commands.ContextMenu] = [
            _imagine_command(self),
            _edit_command(self),
            app_commands.ContextMenu(name="Edit image", callback=self._edit_image_menu),
        ]

    async def cog_load(self) -> None:
        for command in self._app_commands:
            self.bot.tree.add_command(command)

    async def cog_unload(self) -> None:
        for command in self._app_commands:
            kind = command.type if isinstance(command, app_commands.ContextMenu) else discord.AppCommandType.chat_input
            self.bot.tree.remove_command(command.name, type=kind)

    # -- the entry points ---------------------------------------------------------------------------

    async def imagine(
        self,
        interaction: discord.Interaction[FluxBot],
        *,
        prompt: str,
        model: str | None,
        size: str | None,
        count: int | None,
    ) -> None:
        """/imagine; an option left out (None) takes the member's default where allowed, else the bot's."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        own = await get_member_settings(self.bot.store, interaction.user.id)
        left_out = {"model": model is None, "size": size is None, "count": count is None}
        if any(left_out[name] and getattr(own, name) is not None for name in left_out):
            limits = await self._member_limits(interaction)
            options = generate_options(self.catalog, own, limits, model=model, size=size, count=count)
        else:  # no default of theirs in play: no rules to read for it
            options = Options(model or self.catalog.default_model, size or DEFAULT_SIZE, count or DEFAULT_COUNT)
        assert options.size is not None
        self.catalog.check_generate(prompt=prompt, model=options.model, size=options.size, count=options.count)
        notes = options.notes(interaction.locale)
        await self._show_notes(interaction, notes, first=True)
        await self.start_job(
            interaction,
            kind=JobKind.GENERATE,
            prompt=prompt,
            model=options.model,
            size=options.size,
            count=options.count,
        )
        await self._show_notes(interaction, notes, first=False)

    async def edit(
        self, interaction: discord.Interaction[FluxBot], *, image: discord.Attachment, prompt: str, model: str | None
    ) -> None:
        """/edit; a model left out (None) is the member's default where it can edit and is allowed, else the bot's."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        own = await get_member_settings(self.bot.store, interaction.user.id)
        if model is None and own.model is not None:
            options = edit_options(self.catalog, own, await self._member_limits(interaction), model=None)
        else:
            options = Options(model or self.catalog.default_edit_model, None, 1)
        spec = self.catalog.check_edit(prompt=prompt, model=options.model, size=None)
        source = await self.source_from_attachment(image)
        notes = options.notes(interaction.locale)
        await self._show_notes(interaction, notes, first=True)
        await self._start_edit(interaction, spec, prompt, source)
        await self._show_notes(interaction, notes, first=False)

    async def _member_limits(self, interaction: discord.Interaction[FluxBot]) -> Limits:
        """The rules in force for the member where they ask: which models, how many images at once."""
        guild_id = interaction.guild_id or DM_GUILD_ID
        return await member_limits(self.bot.store, self.bot.settings, guild_id, member_of(interaction))

    async def _show_notes(self, interaction: discord.Interaction[FluxBot], notes: list[str], *, first: bool) -> None:
        """Tell the member which of their defaults were left out, without hiding the job's status line.

        The runner shows the status in the deferred response, and a first follow-up would replace that
        response (Discord's "thinking…") rather than add a message. So the notes are shown in the response
        first (``first``, before the job is recorded: nothing races with it), and once the job is recorded
        they follow in a message of their own, which stays when the status line takes the response over.
        A note that cannot be shown is not worth failing the request.
        """
        if not notes:
            return
        text = "\n".join(f"📝 {note}" for note in notes)
        try:
            if first:
                await interaction.edit_original_response(content=text)
            else:
                await interaction.followup.send(text, ephemeral=True)
        except DISCORD_ERRORS as exc:
            log.info("could not tell the member in interaction %s about their defaults: %s", interaction.id, exc)

    async def _edit_image_menu(self, interaction: discord.Interaction[FluxBot], message: discord.Message) -> None:
        if first_image(message) is None:
            raise UserFacingError(lazy("That message has no image to edit."))
        await interaction.response.send_modal(EditPromptModal(self, target=message, locale=interaction.locale))

    async def ask_edit_prompt(self, interaction: discord.Interaction[FluxBot], job: Job) -> None:
        """The result's Edit button: ask how to change the image, then edit the posted result."""
        if interaction.message is None or first_image(interaction.message) is None:
            raise UserFacingError(lazy("That result has no image left to edit."))
        modal = EditPromptModal(self, target=interaction.message, parent=job, locale=interaction.locale)
        await interaction.response.send_modal(modal)

    async def edit_message_image(
        self, interaction: discord.Interaction[FluxBot], message: discord.Message, prompt: str, parent: Job | None
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        spec = self.catalog.check_edit(prompt=prompt, model=self.catalog.default_edit_model, size=None)
        source = await self.source_from_message(message)
        await self._start_edit(interaction, spec, prompt, source, parent_job_id=parent.id if parent else None)

    async def _start_edit(
        self,
        requester: Requester,
        spec: ModelSpec,
        prompt: str,
        source: Source,
        *,
        parent_job_id: int | None = None,
    ) -> Job:
        """An edit of ``source`` with ``spec``'s model, in the ratio nearest to the source's."""
        return await self.start_job(
            requester,
            kind=JobKind.EDIT,
            prompt=prompt,
            model=spec.name,
            size=source.image.aspect_ratio(spec.ratios),
            count=1,
            source_image_url=source.ref,
            parent_job_id=parent_job_id,
        )

    async def reroll(self, interaction: discord.Interaction[FluxBot], job: Job) -> None:
        """The result's Re-roll button: the same request again, for (and charged to) whoever clicked."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        if job.kind is JobKind.EDIT and job.source_image_url is None:
            # A source given to the provider inline (up to ~13 MB) is not kept once its job has ended.
            raise UserFacingError(
                lazy("The image this edit started from is no longer kept. Use **Edit image** on it again instead.")
            )
        source = await self._fresh_source(job.source_image_url) if job.source_image_url else None
        await self.start_job(
            interaction,
            kind=job.kind,
            prompt=job.prompt,
            model=job.model,
            size=job.size,
            count=job.count,
            source_image_url=source,
            parent_job_id=job.id,
        )

    async def _fresh_source(self, ref: str) -> str:
        """The source of a re-rolled edit, still reachable.

        Discord's links to attachments expire after a day, so a Discord link is refreshed first; a source
        that is gone (its message deleted, say) is refused clearly instead of sent to the provider dead.
        A source that is not on Discord's media hosts (recorded by an older version) is refused before
        anything is fetched; so is a refreshed link that is not.
        """
        if not ref.startswith("data:"):
            self.bot.settings.discord_media_hosts.check(ref)
            if _is_discord_attachment(ref):
                ref = await self._refreshed_attachment_url(ref)
        try:
            await self._fetch_source(ref)
        except HostNotAllowed:
            raise
        except DownloadError as exc:
            log.info("the source of a re-rolled edit is gone: %s", exc)
            raise UserFacingError(
                lazy("The image this edit started from is no longer available. Use Edit on the image again instead.")
            ) from exc
        return ref

    async def _refreshed_attachment_url(self, url: str) -> str:
        """A new signed link for a Discord attachment link (expired or not), or the same link if Discord
        will not refresh it."""
        route = discord.http.Route("POST", "/attachments/refresh-urls")
        try:
            answer = await self.bot.http.request(route, json={"attachment_urls": [url]})
        except discord.HTTPException as exc:
            log.info("could not refresh an attachment link: %s", exc)
            return url
        for item in answer.get("refreshed_urls", []) if isinstance(answer, dict) else []:
            if item.get("original") == url and isinstance(item.get("refreshed"), str):
                return str(item["refreshed"])
        return url

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A reply to an image that mentions the bot edits that image, with the reply's text as the prompt.

        The bot answers in the channel, where anyone may read it: in the server's language, not the member's.
        """
        me = self.bot.user
        if message.author.bot or me is None or message.reference is None or not message.guild:
            return
        if me.id not in {user.id for user in message.mentions}:
            return
        try:
            await self._edit_from_reply(message)
        except Exception as error:
            where = f"an edit request in message {message.id}"
            await message.reply(explain(error, where, message.guild.preferred_locale), mention_author=False)

    async def _edit_from_reply(self, message: discord.Message) -> None:
        assert message.reference is not None and message.reference.message_id is not None
        target = message.reference.resolved
        if not isinstance(target, discord.Message):
            target = await message.channel.fetch_message(message.reference.message_id)
        prompt = _MENTION.sub("", message.content).strip()
        if not prompt:
            raise UserFacingError(
                lazy(
                    "Tell me how to change the image: reply to it, mention me, and describe the change. "
                    "(If you did, the bot may lack the Message Content intent.)"
                )
            )
        mine = self.bot.user is not None and target.author.id == self.bot.user.id
        if first_image(target) is None and not mine and not self.bot.intents.message_content:
            raise UserFacingError(
                lazy(
                    "That message has no image I can see: without the Message Content intent the bot does not see "
                    "other members' images. Use the message's Apps menu > Edit image instead."
                )
            )
        spec = self.catalog.check_edit(prompt=prompt, model=self.catalog.default_edit_model, size=None)
        job = await self._start_edit(message, spec, prompt, await self.source_from_message(target))
        await message.reply(tr(_channel_locale(message), "🎨 On it — job #{job}.", job=job.id), mention_author=False)

    # -- shared steps ---------------------------------------------------------------------------------

    async def start_job(
        self,
        requester: Requester,
        *,
        kind: JobKind,
        prompt: str,
        model: str,
        size: str,
        count: int,
        source_image_url: str | None = None,
        parent_job_id: int | None = None,
    ) -> Job:
        """Record the job for the member behind ``requester`` and queue it.

        An interaction (already deferred) also gives the job its token, to show progress in the member's
        response; a message (a reply asking for an edit) has none. A refusal is in the language of whoever
        reads it: the member's for an interaction (an ephemeral answer), the server's for a message (a reply
        in the channel).
        """
        await self.bot.acknowledgements_first()
        if isinstance(requester, discord.Interaction):
            assert requester.channel_id is not None
            interaction, guild_id = requester, requester.guild_id or 0
            channel_id, user_id = requester.channel_id, requester.user.id
            locale: discord.Locale | None = requester.locale
        else:
            interaction, guild_id = None, requester.guild.id if requester.guild else 0
            channel_id, user_id = requester.channel.id, requester.author.id
            locale = _channel_locale(requester)
        new = NewJob(
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
            kind=kind,
            prompt=prompt,
            model=model,
            size=size,
            count=count,
            provider=self.bot.settings.flux_provider,
            source_image_url=source_image_url,
            parent_job_id=parent_job_id,
            interaction_application_id=interaction.application_id if interaction else None,
            interaction_token=interaction.token if interaction else None,
            interaction_created_at=interaction.created_at.timestamp() if interaction else None,
            locale=interaction.locale.value if interaction else None,
        )
        return await self.submit(new, member_of(requester), locale)

    async def submit(self, new: NewJob, member: Member, locale: discord.Locale | str | None) -> Job:
        """Check ``new`` against the server's rules for ``member``, then record it under their quota and queue it.

        Every rule is checked before any provider call; the quota is checked and reserved with the job.
        Refusals are counted by cause for the server's report, and told in ``locale``'s language.
        """
        try:
            limits = await admit(
                self.bot.store,
                self.bot.settings,
                guild_id=new.guild_id,
                channel_id=new.channel_id,
                member=member,
                model=new.model,
                count=new.count,
                prompt=new.prompt,
            )
        except Refusal as refusal:
            await self._count_refusal(new.guild_id, refusal.kind)
            raise UserFacingError(describe_refusal(self._known_roles_only(new.guild_id, refusal), locale)) from None
        outcome = await self.bot.runner.submit(new, limits.quota)
        if isinstance(outcome, QuotaRefusal):
            self.bot.metrics.quota_refused(outcome.kind)
            log.info("user %d refused by the %s limit in guild %d", new.user_id, outcome.kind, new.guild_id)
            await self._count_refusal(new.guild_id, outcome.kind)
            await self.bot.alerts.quota_refused(new.guild_id, outcome)
            raise UserFacingError(describe_quota_refusal(outcome, locale))
        await self.bot.alerts.after_reservation(
            new.guild_id, guild_daily=limits.guild_daily, guild_monthly=limits.guild_monthly
        )
        return outcome

    async def _count_refusal(self, guild_id: int, cause: str) -> None:
        """Count a refusal for ``/limits report``; a count that cannot be written is not worth failing the answer."""
        try:
            await count_refusal(self.bot.store, guild_id, cause)
        except Exception:
            log.warning("could not count a %s refusal in guild %d", cause, guild_id, exc_info=True)

    def _known_roles_only(self, guild_id: int, refusal: Refusal) -> Refusal:
        """An access refusal naming only roles that still exist: a deleted role lets nobody in."""
        guild = self.bot.get_guild(guild_id)
        if refusal.kind is not RefusalKind.ACCESS or guild is None:
            return refusal
        return Refusal(refusal.kind, tuple(role for role in refusal.allowed if guild.get_role(int(role))))

    async def source_from_attachment(self, attachment: discord.Attachment) -> Source:
        """Check an uploaded image before anything is sent to the provider."""
        limit = self.bot.settings.edit_max_bytes
        if attachment.content_type and not attachment.content_type.startswith("image/"):
            raise UserFacingError(
                lazy("{filename} is not an image (PNG, JPEG, WebP or GIF).", filename=attachment.filename)
            )
        if attachment.size > limit:
            raise UserFacingError(
                lazy(
                    "{filename} is {size}; the limit is {limit}.",
                    filename=attachment.filename,
                    size=size_text(attachment.size, round_up=True),
                    limit=size_text(limit),
                )
            )
        image = await self._fetch_source(attachment.url)
        return Source(image, self._provider_ref(attachment.url, image))

    async def source_from_message(self, message: discord.Message) -> Source:
        """The first image of ``message`` (an attachment, or an embed's image), checked."""
        found = first_image(message)
        if found is None:
            raise UserFacingError(lazy("That message has no image to edit."))
        if isinstance(found, discord.Attachment):
            return await self.source_from_attachment(found)
        image = await self._fetch_source(found)
        return Source(image, self._provider_ref(found, image))

    async def _fetch_source(self, url: str) -> SourceImage:
        """Every member image is fetched here: only from ``DISCORD_MEDIA_HOSTS`` (redirects included), capped
        at ``EDIT_MAX_BYTES``, and checked. Raises HostNotAllowed before any request for any other host."""
        settings = self.bot.settings
        try:
            return await fetch_source(
                self.bot.session, url, allowed_hosts=settings.discord_media_hosts, max_bytes=settings.edit_max_bytes
            )
        except HostNotAllowed as exc:
            log.warning("refused to fetch a member's image: %s", exc)
            raise
        except DownloadError as exc:
            log.info("could not fetch a member's image: %s", exc)
            raise

    def _provider_ref(self, url: str, image: SourceImage) -> str:
        """What the provider gets: the checked bytes inline where it takes them, else the image's URL, which
        must be on one of Discord's media hosts (HostNotAllowed otherwise)."""
        if self.bot.flux.accepts_inline_images:
            return image.data_uri()
        self.bot.settings.discord_media_hosts.check(url)
        return url


def _is_discord_attachment(url: str) -> bool:
    """Whether ``url`` is a signed Discord attachment link (``?ex=…&is=…&hm=…``), which expires."""
    return {"ex", "is", "hm"} <= set(URL(url).query)


def _channel_locale(message: discord.Message) -> discord.Locale | None:
    """The language of what the bot writes in a message's channel, where anyone may read it: the server's."""
    return message.guild.preferred_locale if message.guild else None


def member_of(requester: Requester) -> Member:
    """Who asks, as Discord describes them in this very request: roles are never cached by the bot, so a role
    given, taken or deleted counts from the next request on."""
    if isinstance(requester, discord.Interaction):
        user, manages = requester.user, requester.permissions.manage_guild
    else:
        user = requester.author
        manages = isinstance(user, discord.Member) and user.guild_permissions.manage_guild
    roles = frozenset(role.id for role in user.roles) if isinstance(user, discord.Member) else frozenset[int]()
    return Member(user.id, roles, manages)


def first_image(message: discord.Message) -> discord.Attachment | str | None:
    """The first image of a message: an image attachment, else an embed's image or thumbnail as Discord's
    media proxy serves it (``proxy_url``). The embed's original ``url`` is never used: it points anywhere
    the message's author (or a linked page) chose, and may answer the bot differently than Discord."""
    for attachment in message.attachments:
        content_type = attachment.content_type or ""
        if content_type.startswith("image/") or attachment.filename.lower().endswith(_IMAGE_SUFFIXES):
            return attachment
    for embed in message.embeds:
        for url in (embed.image.proxy_url, embed.thumbnail.proxy_url):
            if url:
                return url
    return None


class EditPromptModal(discord.ui.Modal, title="Edit image"):
    """Asks how to change an image (a modal must be the first answer to an interaction), in the language of
    the member who asked (``locale``): the field is made here, with its label in that language."""

    def __init__(
        self,
        cog: ImagineCog,
        *,
        target: discord.Message,
        parent: Job | None = None,
        locale: discord.Locale | str | None = None,
    ) -> None:
        super().__init__(title=tr(locale, "Edit image"), timeout=15 * 60)
        self.prompt: discord.ui.TextInput[EditPromptModal] = discord.ui.TextInput(
            label=tr(locale, "How should the image change?"),
            style=discord.TextStyle.paragraph,
            max_length=MAX_PROMPT_LENGTH,
            custom_id="prompt",
        )
        self.add_item(self.prompt)
        self.cog = cog
        self.target = target
        self.parent = parent

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await self.cog.edit_message_image(interaction, self.target, self.prompt.value, self.parent)

    async def on_error(self, interaction: discord.Interaction[Any], error: Exception, /) -> None:  # type: ignore[override]
        await reply_with_error(interaction, error)


def model_choices(catalog: ModelCatalog, *, edit: bool = False) -> list[app_commands.Choice[str]]:
    """The models a member picks from (those that can edit, for ``edit``): /imagine's, /edit's and /settings'."""
    return [app_commands.Choice(name=name, value=name) for name in (catalog.edit_names if edit else catalog.names)]


def size_choices(catalog: ModelCatalog) -> list[app_commands.Choice[str]]:
    """The sizes a member picks from: every size some model of the catalog offers, each once."""
    sizes = dict.fromkeys(size for spec in catalog.models for size in spec.sizes)
    return [app_commands.Choice(name=size, value=size) for size in sizes]


def _imagine_command(cog: ImagineCog) -> app_commands.Command[Any, ..., Any]:
    catalog = cog.catalog

    @app_commands.command(name="imagine", description="Generate images from a text prompt")
    @app_commands.describe(
        prompt="What to draw",
        model=localized("Which Flux model (default: yours from /settings, else {model})", model=catalog.default_model),
        size="Aspect ratio (default: yours, else 1:1); pixel sizes only for models that take them",
        count=f"How many images, 1 to {MAX_COUNT} (default: yours, else 1)",
    )
    @app_commands.choices(model=model_choices(catalog), size=size_choices(catalog))
    @app_commands.allowed_contexts(guilds=True, dms=cog.bot.settings.allow_dms, private_channels=False)
    async def imagine(
        interaction: discord.Interaction[FluxBot],
        prompt: app_commands.Range[str, 1, MAX_PROMPT_LENGTH],
        model: str | None = None,
        size: str | None = None,
        count: app_commands.Range[int, 1, MAX_COUNT] | None = None,
    ) -> None:
        await cog.imagine(interaction, prompt=prompt, model=model, size=size, count=count)

    return imagine


def _edit_command(cog: ImagineCog) -> app_commands.Command[Any, ..., Any]:
    catalog = cog.catalog

    @app_commands.command(name="edit", description="Edit an image with a text prompt")
    @app_commands.describe(
        image="The image to edit (PNG, JPEG, WebP or GIF)",
        prompt="How the image should change",
        model=localized(
            "Which Flux model (default: yours from /settings, else {model})", model=catalog.default_edit_model
        ),
    )
    @app_commands.choices(model=model_choices(catalog, edit=True))
    @app_commands.allowed_contexts(guilds=True, dms=cog.bot.settings.allow_dms, private_channels=False)
    async def edit(
        interaction: discord.Interaction[FluxBot],
        image: discord.Attachment,
        prompt: app_commands.Range[str, 1, MAX_PROMPT_LENGTH],
        model: str | None = None,
    ) -> None:
        await cog.edit(interaction, image=image, prompt=prompt, model=model)

    return edit


async def setup(bot: FluxBot) -> None:
    await bot.add_cog(ImagineCog(bot))
