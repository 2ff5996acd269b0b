"""The Discord client of fluxbot and the one place that builds it: :func:`open_bot`.

``fluxbot`` (``bot.__main__``) and the end-to-end tests both go through :func:`open_bot`, so the tests run
exactly the bot that operators run.

The bot is sharded (discord.py's ``AutoShardedBot``): ``SHARD_COUNT`` shards in all, of which this process runs
``SHARD_IDS``; unset, it asks Discord how many to run and runs all of them. Discord sends each shard the events
of its own servers (``(guild_id >> 22) % SHARD_COUNT``), so a process answers the interactions of its shards'
servers only; everything sent to Discord (REST posts, webhook follow-ups) works from any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands
from discord.gateway import DiscordWebSocket, ReconnectWebSocket
from discord.shard import Shard

from bot import db
from bot.alerts import Alerts
from bot.callbacks import CallbackReceiver
from bot.db import Store, open_store
from bot.endpoints import point_discord_at
from bot.flux import FluxClient, create_flux_client
from bot.health import HealthServer
from bot.i18n import CommandTranslator
from bot.jobs import JobRunner
from bot.metrics import Metrics, stop_using, using
from bot.settings import Settings
from bot.startup import describe_failure, is_transient, retry_backoff
from cogs import EXTENSIONS
from cogs.feedback import reply_with_error
from cogs.results import DiscordCourier, JobButton

__all__ = ["FluxBot", "FluxCommandTree", "IdentifyPacing", "ResumingShard", "open_bot"]

log = logging.getLogger(__name__)

COMMANDS_FINGERPRINT = "commands_fingerprint"
#: Work that follows an acknowledgement waits until no interaction has arrived for this long (seconds)...
ACKNOWLEDGEMENTS_QUIET = 0.005
#: ...but never longer than this, however many keep arriving.
ACKNOWLEDGEMENTS_FIRST_AT_MOST = 0.25
#: Discord lets ``max_concurrency`` shards identify per this many seconds (one per rate-limit bucket).
IDENTIFY_INTERVAL = 5.0


class FluxCommandTree(app_commands.CommandTree["FluxBot"]):
    """Routes every command's error through the one error policy (:func:`cogs.feedback.reply_with_error`)."""

    async def on_error(self, interaction: discord.Interaction[FluxBot], error: app_commands.AppCommandError) -> None:
        await reply_with_error(interaction, error)


class IdentifyPacing:
    """Discord's identify rate limit: ``max_concurrency`` buckets (a shard's is its id modulo that), each
    allowing one identify per :data:`IDENTIFY_INTERVAL` seconds."""

    def __init__(self, max_concurrency: int = 1, interval: float = IDENTIFY_INTERVAL) -> None:
        self.max_concurrency = max(1, max_concurrency)
        self._interval = interval
        self._next: dict[int, float] = {}  # bucket -> the time its next identify may go

    def wait_for(self, shard_id: int, now: float) -> float:
        """Seconds shard ``shard_id`` must wait, from ``now``, before it identifies; its turn is taken."""
        bucket = shard_id % self.max_concurrency
        slot = max(now, self._next.get(bucket, now))
        self._next[bucket] = slot + self._interval
        return slot - now


class ResumingShard(Shard):
    """A shard that RESUMEs after a lost connection, as discord.py's unsharded client does.

    discord.py's ``Shard`` identifies anew after a network failure, which drops the session: the events sent
    while it was away (members' interactions among them) would be lost, and each identify counts against the
    daily session limit. With a session to resume, this one resumes; Discord answers "invalid session" when it
    cannot be resumed, and discord.py then identifies.
    """

    async def reconnect(self) -> None:
        if self.ws.session_id is None:
            await super().reconnect()
            return
        await self.reidentify(ReconnectWebSocket(self.id, resume=True))

    async def reidentify(self, exc: ReconnectWebSocket) -> None:
        # A connection that closed before READY has no session: discord.py would still send RESUME (with none),
        # and Discord would answer "invalid session" before the shard identifies again. Identify at once.
        if exc.resume and self.ws.session_id is None:
            exc = ReconnectWebSocket(self.id, resume=False)
        await super().reidentify(exc)


class FluxBot(commands.AutoShardedBot):
    """The bot: holds the engine's shared parts so cogs use them instead of opening their own."""

    def __init__(
        self,
        *,
        settings: Settings,
        session: aiohttp.ClientSession,
        store: Store,
        flux: FluxClient,
        guild_ready_timeout: float = 2.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics(settings.flux_provider.value)
        intents = discord.Intents.default()
        intents.message_content = settings.message_content_intent
        # The bot has no voice features: discord.py's start-up warnings about missing voice libraries
        # (PyNaCl, davey) would only look like errors to the operator.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            tree_cls=FluxCommandTree,
            # The bot needs no member list; skipping the chunking makes start-up fast and cheap.
            chunk_guilds_at_startup=False,
            guild_ready_timeout=guild_ready_timeout,
            help_command=None,
            http_trace=self.metrics.discord_trace(),  # counts discord.py's requests by status
            shard_count=settings.shard_count,
        )
        if settings.shard_ids is not None:  # the settings checked that SHARD_COUNT is set with it
            self.shard_ids = list(settings.shard_ids)
        self.settings = settings
        self.session = session
        self.store = store
        self.flux = flux
        self.courier = DiscordCourier(self)
        #: Tells a server's admins, in its alert channel, that its budget runs out or the provider refuses the bot.
        self.alerts = Alerts(store, self.post_alert, locale_of=self.guild_locale)
        self.runner = JobRunner(
            store=store,
            flux=flux,
            courier=self.courier,
            session=session,
            concurrency=settings.flux_max_concurrency,
            poll_interval=settings.flux_poll_interval,
            job_timeout=settings.flux_job_timeout,
            delivery_window=settings.delivery_retry_window,
            media_hosts=settings.discord_media_hosts,
            retention=settings.job_retention,
            lease=settings.work_lease,
            # A SQLite file has one process (its file lock keeps others out); PostgreSQL may have several.
            sole=not settings.uses_postgresql,
            on_account_error=lambda job, error: self.alerts.provider_refused(job.guild_id, error),
        )
        self._last_interaction = 0.0  # event loop time when the last interaction arrived
        self._after_acknowledgements: asyncio.Event | None = None  # set when a burst of interactions is over
        self._buttons_added = False
        self._runner_started = False
        self._announced = False
        #: Serves /healthz and /metrics when METRICS_LISTEN is set (its ``port`` is the bound one).
        self.health_server: HealthServer | None = None
        self._identify_pacing = IdentifyPacing()  # its max_concurrency is read from Discord before connecting
        self._stopping = asyncio.Event()  # set when close() begins: ends the waits between connection attempts

    async def setup_hook(self) -> None:
        """Runs at the end of each login; a login retried after a network failure runs it again, so each
        step is done once: the extensions, the buttons, the runner (the command sync is cheap to repeat)."""
        for extension in EXTENSIONS:
            if extension not in self.extensions:
                await self.load_extension(extension)
        if not self._buttons_added:
            self.add_dynamic_items(JobButton)
            self._buttons_added = True
        if self.tree.translator is None:  # before the sync: it sends each command's translations with it
            await self.tree.set_translator(CommandTranslator())
        await self.sync_commands_if_changed()
        if not self._runner_started:
            self._runner_started = True
            await self.runner.start()

    @property
    def running_shards(self) -> list[int]:
        """The shards this process runs (empty until the shard count is known, at connection)."""
        if self.shard_ids is not None:
            return sorted(self.shard_ids)
        return list(range(self.shard_count)) if self.shard_count is not None else []

    async def connect(self, *, reconnect: bool = True) -> None:
        """Learn the shard count (when not set) and Discord's identify concurrency, then run the shards.

        discord.py's own way (``launch_shards``) would take the gateway address from ``GET /gateway/bot`` and
        ignore ``DISCORD_GATEWAY_URL``; asking here first keeps the configured gateway. A failure to ask
        raises (transient ones are retried by :func:`bot.startup.connect_with_retries`).
        """
        known: int | None = self.shard_count  # discord.py annotates it as int, but it is None until known
        if known is None or len(self.running_shards) > 1:
            count, _, limits = await self.http.get_bot_gateway()
            if known is None:
                self.shard_count = count
            self._identify_pacing.max_concurrency = max(1, int(limits["max_concurrency"]))
        log.info(
            "running shard%s %s of %d",
            "s" if len(self.running_shards) > 1 else "",
            ", ".join(map(str, self.running_shards)),
            self.shard_count,
        )
        await super().connect(reconnect=reconnect)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Keep to Discord's identify rate limit: one identify per :data:`IDENTIFY_INTERVAL` seconds in each of
        ``max_concurrency`` buckets (bucket = shard id modulo it), instead of discord.py's fixed 5 s pause
        before every identify but the first. Processes do not coordinate: each keeps the limit for its shards.
        """
        wait = self._identify_pacing.wait_for(shard_id or 0, asyncio.get_running_loop().time())
        if wait > 0:
            await asyncio.sleep(wait)

    async def launch_shard(self, gateway: yarl.URL, shard_id: int, *, initial: bool = False) -> None:
        """Open one shard's first connection, retrying transient failures with the bot's backoff and one
        warning line each (discord.py retries every 5 s with a traceback at ERROR, and never stops even when
        the bot is closed meanwhile); the shard then RESUMEs after later failures (:class:`ResumingShard`)."""
        backoff = retry_backoff()
        while not self.is_closed() and not self._stopping.is_set():
            try:
                connecting = DiscordWebSocket.from_client(self, initial=initial, gateway=gateway, shard_id=shard_id)
                ws = await asyncio.wait_for(connecting, timeout=self.shard_connect_timeout)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = backoff.next()
                log.warning(
                    "connecting to the Discord gateway failed (shard %d, attempt %d: %s); retrying in %.1f s",
                    shard_id,
                    backoff.attempts,
                    describe_failure(exc),
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            # discord.py keeps its shards and their event queue in private attributes; launch_shard is the
            # documented place that fills them, so this override does what discord.py's own does.
            shards: dict[int, Shard] = vars(self)["_AutoShardedClient__shards"]
            queue: asyncio.PriorityQueue[Any] = vars(self)["_AutoShardedClient__queue"]
            shards[shard_id] = shard = ResumingShard(ws, self, queue.put_nowait)
            shard.launch()
            return

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info(
            "shard %d of %s ready; in %d servers",
            shard_id,
            self.shard_count,
            sum(1 for guild in self.guilds if guild.shard_id == shard_id),
        )

    async def on_ready(self) -> None:
        """Once, when every shard of this process is first ready: who the bot is, where, with what shards and
        what (never a secret)."""
        if self._announced or self.user is None:
            return
        self._announced = True
        freeze_startup_objects()
        log.info(
            "logged in as %s (id %s); shards %s of %s; in %d servers; provider %s; database %s",
            self.user,
            self.user.id,
            ", ".join(map(str, self.running_shards)),
            self.shard_count,
            len(self.guilds),
            self.settings.flux_provider.value,
            self.settings.database_shown,
        )

    def dispatch(self, event_name: str, /, *args: Any, **kwargs: Any) -> None:
        if event_name == "interaction":  # an interaction arrived: its command task is created already
            self._last_interaction = asyncio.get_running_loop().time()
        super().dispatch(event_name, *args, **kwargs)

    async def acknowledgements_first(self) -> None:
        """Wait while members' interactions keep arriving (a burst), so that their acknowledgements, due within
        3 s, are not queued behind the work that follows earlier ones (recording jobs, reporting progress).

        Returns once no interaction arrived for :data:`ACKNOWLEDGEMENTS_QUIET` s, or after
        :data:`ACKNOWLEDGEMENTS_FIRST_AT_MOST` s at most; callers that waited go on in the order they came.
        """
        if (gate := self._after_acknowledgements) is not None:  # others wait already: go on after them
            await gate.wait()
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + ACKNOWLEDGEMENTS_FIRST_AT_MOST
        gate = None
        try:
            while True:  # a quiet moment is measured, not signalled: there is no event to wait for
                now = loop.time()
                quiet = now - self._last_interaction
                if quiet >= ACKNOWLEDGEMENTS_QUIET or now >= give_up:
                    return
                if gate is None:
                    gate = self._after_acknowledgements = asyncio.Event()
                await asyncio.sleep(min(ACKNOWLEDGEMENTS_QUIET - quiet, give_up - now))
        finally:
            if gate is not None:
                self._after_acknowledgements = None
                gate.set()

    def guild_locale(self, guild_id: int) -> str | None:
        """A server's community locale (what is posted in its channels follows it), if this process has it."""
        guild = self.get_guild(guild_id)
        return guild.preferred_locale.value if guild is not None else None

    async def post_alert(self, channel_id: int, text: str) -> None:
        """Post an alert in a server's alert channel, pinging nobody; raises when Discord refuses (the channel
        is gone, the bot may not post there). Works from any process, whichever shard has the server."""
        await self.get_partial_messageable(channel_id).send(text, allowed_mentions=discord.AllowedMentions.none())

    async def on_message(self, message: discord.Message, /) -> None:
        """The bot has no text commands ("@bot make it blue" is an edit request, handled by the imagine cog),
        so messages are not parsed as commands."""

    async def close(self) -> None:
        self._stopping.set()
        await self.runner.stop()
        await self.courier.close()
        # discord.py's AutoShardedClient.close() posts to an event queue that only login creates: a bot closed
        # before it logged in (a start-up that failed) would raise AttributeError instead of closing.
        vars(self).setdefault("_AutoShardedClient__queue", asyncio.PriorityQueue())
        await super().close()

    async def sync_commands_if_changed(self) -> None:
        """Sync the application commands only when they differ from the last sync (it is rate limited).

        The commands are compared with their translations, as ``tree.sync()`` sends them: a catalog changed
        since the last sync syncs again."""
        translator = self.tree.translator
        if translator is None:
            payload = [command.to_dict(self.tree) for command in self.tree.get_commands()]
        else:
            payload = [
                await command.get_translated_payload(self.tree, translator) for command in self.tree.get_commands()
            ]
        # The application is part of it: the same database used with another bot token must sync again.
        signed = {"application_id": self.application_id, "commands": payload}
        fingerprint = hashlib.sha256(json.dumps(signed, sort_keys=True).encode()).hexdigest()
        if await db.get_state(self.store, COMMANDS_FINGERPRINT) == fingerprint:
            log.info("application commands unchanged; not syncing")
            return
        synced = await self.tree.sync()
        await db.set_state(self.store, COMMANDS_FINGERPRINT, fingerprint)
        log.info("synced %d application commands", len(synced))


def freeze_startup_objects() -> None:
    """Once per process: leave what start-up built out of the garbage collector's work.

    Modules, settings, discord.py's caches and the first servers live as long as the process. Frozen after a
    last collection, they are no longer traversed by each full collection, which would otherwise pause the
    bot for tens of milliseconds every few hundred jobs, in the middle of members' requests.
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


@asynccontextmanager
async def open_bot(settings: Settings, *, guild_ready_timeout: float = 2.0) -> AsyncIterator[FluxBot]:
    """Open the HTTP session, the store and the Flux client, and build the bot with them.

    The bot is not started (no I/O happens in constructors): the caller logs it in and connects it.
    Everything is closed when the block ends.
    """
    point_discord_at(settings.discord_api_base, settings.discord_gateway_url)
    async with aiohttp.ClientSession() as session, await open_store(settings.database_url.get_secret_value()) as store:
        flux = create_flux_client(settings, session)
        metrics = Metrics(settings.flux_provider.value)
        metrics_token = using(metrics)  # the runner and the provider client record into this bot's metrics
        bot = FluxBot(
            settings=settings,
            session=session,
            store=store,
            flux=flux,
            guild_ready_timeout=guild_ready_timeout,
            metrics=metrics,
        )
        receiver = None
        if settings.callback_public_url and flux.supports_callbacks:
            receiver = CallbackReceiver(
                bot.runner, public_url=settings.callback_public_url, listen=settings.callback_listen
            )
            await receiver.start()
        try:
            if settings.metrics_listen:
                health = HealthServer(client=bot, store=store, metrics=metrics, listen=settings.metrics_listen)
                await health.start()
                bot.health_server = health
            yield bot
        finally:
            if receiver is not None:
                await receiver.stop()
            if bot.health_server is not None:
                await bot.health_server.stop()
            with contextlib.suppress(ValueError):  # the block may end in another context than it began
                stop_using(metrics_token)
            # Also when a close is under way (begun by a signal): discord.py's close() then waits for it,
            # so nothing uses the session or the store after they are closed.
            await bot.close()
