"""A Discord of our own on loopback: REST API, gateway and CDN for discord.py, with inspectable state.

Start one with ``async with DiscordEmulator() as emu:`` (or the ``discord_emulator`` fixture), point
discord.py at ``emu.api_base`` and ``emu.gateway_url``, and log in with ``emu.token``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from .constants import (
    API_VERSION,
    CDN_URL_LIFETIME_S,
    DEFAULT_BOT,
    DEFAULT_EVERYONE,
    UPLOAD_LIMIT_BY_TIER,
    ChannelType,
    Intent,
    MessageFlag,
    MessageType,
    Perm,
)
from .faults import RestFaults
from .gateway import GatewayMixin, Session, shard_of
from .mediaproxy import MediaProxy
from .model import (
    Attachment,
    CdnFetch,
    Channel,
    Clock,
    Command,
    Guild,
    Interaction,
    Member,
    Message,
    RestCall,
    Role,
    Snowflakes,
    StoredFile,
    User,
    sign,
)
from .rest import HeldResponses, RateLimitRule, RestMixin

__all__ = [
    "BotNotConnected",
    "CommandNotAvailable",
    "CommandNotSynced",
    "DiscordEmulator",
    "NotAcknowledged",
    "WaitTimeout",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


class WaitTimeout(AssertionError):
    """An event-driven wait ran out of time (an assertion failure, so pytest reports what was awaited)."""


class NotAcknowledged(WaitTimeout):
    """The bot did not acknowledge an interaction in time."""


class CommandNotSynced(LookupError):
    """An actor invoked a command the bot never synced: Discord would not even show it."""


class CommandNotAvailable(PermissionError):
    """The command exists but Discord hides it from this member (default_member_permissions, contexts)."""


class BotNotConnected(RuntimeError):
    """An event needs a gateway session, but no bot has identified."""


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


class DiscordEmulator(GatewayMixin, RestMixin):
    """State, server and the operations actors and REST handlers share."""

    def __init__(self, *, bot_name: str = "fluxbot", token: str | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.clock = Clock()
        self.snowflakes = Snowflakes(self.clock)
        self.application_id = self.snowflakes.next()
        self.bot_user = User(self.application_id, bot_name, bot=True)
        self.owner = User(self.snowflakes.next(), "app-owner")
        encoded_id = base64.b64encode(str(self.application_id).encode()).decode().rstrip("=")
        self.token = token or f"{encoded_id}.fake.{secrets.token_urlsafe(27)}"

        self.users: dict[int, User] = {self.bot_user.id: self.bot_user, self.owner.id: self.owner}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.files: dict[int, StoredFile] = {}
        self.interactions: dict[int, Interaction] = {}
        self._tokens: dict[str, Interaction] = {}
        self.dm_channels: dict[int, Channel] = {}  # by user id
        self.global_commands: dict[tuple[str, int], Command] = {}
        self.guild_commands: dict[int, dict[tuple[str, int], Command]] = {}
        self.command_syncs: list[tuple[int | None, float]] = []  # (guild id or None, emulator time)
        self._command_ids: dict[tuple[int | None, str, int], int] = {}

        #: Every REST call the bot made, in arrival order.
        self.rest_log: list[RestCall] = []
        #: Every GET of an attachment URL (by the bot or anyone else), in arrival order.
        self.cdn_log: list[CdnFetch] = []
        #: Discord's media proxy, which serves embed images at their ``proxy_url``.
        self.media_proxy = MediaProxy(self)
        #: Requests to routes this emulator does not implement ("METHOD /path"): a test should fail on these.
        self.unimplemented: list[str] = []
        self.rate_limits: list[RateLimitRule] = []
        self.held_responses: list[HeldResponses] = []
        #: Failures injected into the bot's requests (5xx, 429, dropped connections): see ``faults``.
        self.rest_faults = RestFaults()
        self._nonces: dict[tuple[int, int, str], tuple[Message, float]] = {}

        #: When True, an IDENTIFY asking for a privileged intent (members, presences, message content) is
        #: closed with 4014, as when the intents are switched off in the developer portal. REST answers
        #: then also blank message content the bot may not see.
        self.reject_privileged_intents = False
        self.cdn_url_lifetime = CDN_URL_LIFETIME_S
        self.dm_attachment_size_limit = UPLOAD_LIMIT_BY_TIER[0]
        self._cdn_secret = secrets.token_bytes(16)
        self._waiters: list[asyncio.Future[None]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        #: Seconds each run_bot() took to bring a bot online (login to on_ready + commands synced).
        self.online_times: list[float] = []
        GatewayMixin.__init__(self)

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> DiscordEmulator:
        app = web.Application(client_max_size=1024 * 1024 * 1024)
        app.router.add_route("*", r"/api/v{version:\d+}/{tail:.*}", self._handle_api)
        app.router.add_get("/gateway", self._handle_gateway)
        app.router.add_get("/attachments/{channel}/{file_id}/{filename}", self._handle_cdn)
        app.router.add_get("/ephemeral-attachments/{channel}/{file_id}/{filename}", self._handle_cdn)
        app.router.add_get("/external/{tail:.*}", self.media_proxy.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.debug("fake Discord listening on %s", self.base_url)
        return self

    async def close(self) -> None:
        for held in self.held_responses:
            held.release()
        await self._close_gateway()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DiscordEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """What ``DISCORD_API_BASE`` / ``discord.http.Route.BASE`` must be."""
        return f"{self.base_url}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        """What ``DISCORD_GATEWAY_URL`` / ``DiscordWebSocket.DEFAULT_GATEWAY`` must be."""
        return f"ws://{self.host}:{self.port}/gateway"

    def env(self) -> dict[str, str]:
        """The environment variables that point fluxbot at this emulator."""
        return {"DISCORD_TOKEN": self.token, "DISCORD_API_BASE": self.api_base, "DISCORD_GATEWAY_URL": self.gateway_url}

    # -- time -------------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move the emulator clock forward: ``advance(4)`` makes a pending first ack late,
        ``advance(16 * 60)`` expires every interaction token."""
        self.clock.advance(seconds)
        self._bump()

    # -- building the world -----------------------------------------------------------------------
    def add_user(self, name: str, *, bot: bool = False) -> User:
        user = User(self.snowflakes.next(), name, bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(
        self,
        name: str = "Test Server",
        *,
        premium_tier: int = 0,
        attachment_size_limit: int | None = None,
        locale: str = "en-US",
        everyone_permissions: int = DEFAULT_EVERYONE,
        bot_permissions: int = DEFAULT_BOT,
        owner: User | None = None,
        shard: int | None = None,
    ) -> Guild:
        """A server with the bot in it (a member with a managed role holding ``bot_permissions``).

        ``shard``: its id is chosen so that its events go to that shard of :attr:`shard_count`
        (``(id >> 22) % shard_count == shard``); by default the next id, whatever shard that is.
        """
        owner = owner or self.owner
        if shard is not None and not 0 <= shard < self.shard_count:
            raise ValueError(f"shard {shard} is not one of the {self.shard_count} shards (emu.shard_count)")
        guild = Guild(
            self,
            self.snowflakes.next() if shard is None else self.snowflakes.next_on_shard(shard, self.shard_count),
            name,
            owner,
            premium_tier=premium_tier,
            attachment_size_limit=attachment_size_limit,
            locale=locale,
            joined_at=self.clock.time(),
        )
        guild.roles[guild.id] = Role(guild, guild.id, "@everyone", int(everyone_permissions))
        bot_role = guild.add_role(self.bot_user.name, int(bot_permissions))
        bot_role.managed, bot_role.bot_id = True, self.bot_user.id
        guild.add_member(self.bot_user.name, user=self.bot_user, roles=[bot_role])
        if owner is not self.bot_user and owner.id not in guild.members:
            guild.add_member(owner.name, user=owner)
        self.guilds[guild.id] = guild
        if self.sessions:
            self._dispatch_guild_create(guild)
        return guild

    def dm_channel(self, user: User | Member) -> Channel:
        """The DM channel between the bot and ``user`` (created on first use)."""
        user = user.user if isinstance(user, Member) else user
        channel = self.dm_channels.get(user.id)
        if channel is None:
            channel = Channel(self, self.snowflakes.next(), "", type=ChannelType.DM, recipient=user)
            self.dm_channels[user.id] = channel
            self.channels[channel.id] = channel
        return channel

    def rate_limit(
        self, method: str, route: str, limit: int, per_seconds: float, *, remaining: int | None = None
    ) -> RateLimitRule:
        """Limit ``method`` on ``route`` (a template like ``/channels/{channel_id}/messages`` or an
        fnmatch pattern of concrete paths) to ``limit`` calls per ``per_seconds``, per major parameter.

        Answers carry X-RateLimit-* headers; over the limit the answer is 429 with ``retry_after``.
        ``remaining`` starts the first window partly used, as after another process spent the bucket.
        """
        rule = RateLimitRule(method.upper(), route, limit, per_seconds, remaining)
        self.rate_limits.append(rule)
        return rule

    def hold_responses(self, method: str, route: str) -> HeldResponses:
        """Let matching requests (``route``: a template or an fnmatch pattern of paths, as for
        :meth:`rate_limit`) take effect but hold their answers until ``release()`` — as when the bot
        dies after Discord stored its message and before the answer arrived."""
        held = HeldResponses(method.upper(), route)
        self.held_responses.append(held)
        return held

    # -- queries ----------------------------------------------------------------------------------
    def shard_of(self, guild: Guild | int) -> int:
        """The shard of :attr:`shard_count` that gets this guild's events."""
        return shard_of(guild.id if isinstance(guild, Guild) else guild, self.shard_count)

    def find_message(self, message_id: int) -> Message | None:
        return self.messages.get(message_id)

    def commands(self, guild: Guild | None = None) -> list[Command]:
        """Synced commands: global ones, or those of ``guild``."""
        if guild is None:
            return list(self.global_commands.values())
        return list(self.guild_commands.get(guild.id, {}).values())

    def find_command(self, name: str, type: int, guild: Guild | None) -> Command | None:
        if guild is not None and (cmd := self.guild_commands.get(guild.id, {}).get((name, type))) is not None:
            return cmd
        return self.global_commands.get((name, type))

    def calls(self, method: str | None = None, route: str | None = None) -> list[RestCall]:
        """REST calls filtered by method and route template (or path prefix)."""
        return [
            c
            for c in self.rest_log
            if (method is None or c.method == method.upper())
            and (route is None or c.route == route or c.path.startswith(route))
        ]

    @property
    def invalid_requests(self) -> int:
        """401, 403 and 429 answers: Discord bans an IP after 10,000 of these in 10 minutes."""
        return sum(1 for c in self.rest_log if c.status in (401, 403, 429))

    def sign_cdn(self, path: str, expires: int) -> str:
        return sign(self._cdn_secret, path, expires)

    def integration_owners(self, inter: Interaction) -> dict[str, str]:
        return {"0": str(inter.guild.id) if inter.guild is not None else "0"}

    def upload_limit_for(self, channel: Channel) -> int:
        return channel.guild.upload_limit if channel.guild is not None else self.dm_attachment_size_limit

    # -- event-driven waits -----------------------------------------------------------------------
    def _bump(self) -> None:
        """Wake every waiter to re-check its condition (called after each state change)."""
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_until(self, predicate: Callable[[], T], timeout: float, what: str = "a condition") -> T:
        """Until ``predicate()`` is truthy (re-checked on every state change); returns its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WaitTimeout(f"timed out after {timeout} s waiting for {what}")
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, remaining)

    async def wait_for_message(
        self,
        channel: Channel,
        predicate: Callable[[Message], bool] | None = None,
        *,
        timeout: float = 5.0,
        author: User | Member | None = None,
        after: Message | int | None = None,
    ) -> Message:
        """The first live message in ``channel`` (newer than ``after``) by ``author`` matching ``predicate``.

        Messages already there count, so there is no race with a bot that answers quickly.
        """
        after_id = after.id if isinstance(after, Message) else (after or 0)

        def find() -> Message | None:
            for msg in channel.messages.values():
                if msg.deleted or msg.id <= after_id or (author is not None and msg.author.id != author.id):
                    continue
                if predicate is None or predicate(msg):
                    return msg
            return None

        return await self.wait_until(find, timeout, f"a message in {channel!r}")

    async def wait_for_call(
        self,
        method: str,
        route: str,
        predicate: Callable[[RestCall], bool] | None = None,
        *,
        timeout: float = 5.0,
    ) -> RestCall:
        """The first logged REST call matching method and route template (or path prefix)."""
        return await self.wait_until(
            lambda: next((c for c in self.calls(method, route) if predicate is None or predicate(c)), None),
            timeout,
            f"{method} {route}",
        )

    async def wait_for_dispatch(
        self, event: str, predicate: Callable[[dict[str, Any]], bool] | None = None, *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first gateway event of this name sent to the bot (data as sent)."""
        return await self.wait_until(
            lambda: next(
                (d.data for d in self.gateway_log if d.event == event and (predicate is None or predicate(d.data))),
                None,
            ),
            timeout,
            f"gateway event {event}",
        )

    async def wait_connected(self, timeout: float = 5.0) -> Session:
        """Until a bot has identified and received READY and its guilds."""
        return await self.wait_until(
            lambda: next((s for s in self.sessions.values() if s.ready and s.conn is not None), None),
            timeout,
            "a bot to connect to the gateway",
        )

    async def wait_shards(self, shard_ids: Iterable[int], timeout: float = 5.0) -> dict[int, Session]:
        """Until every shard in ``shard_ids`` has a live session (READY sent); their sessions by shard id."""
        wanted = set(shard_ids)

        def ready() -> dict[int, Session] | None:
            live = self.live_shards()
            return {i: live[i] for i in wanted} if wanted <= live.keys() else None

        return await self.wait_until(ready, timeout, f"shards {sorted(wanted)} to be READY")

    async def wait_commands_synced(self, expected: Iterable[tuple[int | None, str, int]], timeout: float = 5.0) -> None:
        """Until every ``(guild id or None, name, type)`` in ``expected`` is synced."""
        wanted = set(expected)

        def missing() -> set[tuple[int | None, str, int]]:
            def synced(gid: int | None) -> dict[tuple[str, int], Command]:
                return self.global_commands if gid is None else self.guild_commands.get(gid, {})

            return {(gid, name, ctype) for gid, name, ctype in wanted if (name, ctype) not in synced(gid)}

        await self.wait_until(lambda: not missing(), timeout, f"commands to be synced: {sorted(map(str, wanted))}")

    # -- messages ---------------------------------------------------------------------------------
    def store_file(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        *,
        content_type: str | None = None,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> StoredFile:
        stored = StoredFile(
            self,
            self.snowflakes.next(),
            filename,
            bytes(data),
            channel_id,
            content_type=content_type or StoredFile.guess_type(filename),
            description=description,
            ephemeral=ephemeral,
        )
        self.files[stored.id] = stored
        return stored

    def store_attachment(self, channel: Channel, attachment: Attachment, *, ephemeral: bool = False) -> StoredFile:
        channel_id = self.application_id if ephemeral else channel.id
        return self.store_file(
            channel_id,
            attachment.filename,
            attachment.data,
            content_type=attachment.content_type,
            description=attachment.description,
            ephemeral=ephemeral,
        )

    def create_message(
        self,
        channel: Channel,
        author: User,
        body: dict[str, Any],
        files: Sequence[StoredFile] = (),
        *,
        reference: Message | None = None,
        flags: int = 0,
        type: int = MessageType.DEFAULT,
        interaction: Interaction | None = None,
        is_followup: bool = False,
        reply_ping_default: bool = True,
        dispatch: bool = True,
    ) -> Message:
        """Store a new message, compute mentions and pings, and dispatch MESSAGE_CREATE."""
        msg = Message(
            channel=channel,
            id=self.snowflakes.next(),
            author=author,
            content=body.get("content") or "",
            embeds=self.media_proxy.with_proxy_urls(body.get("embeds")),
            components=list(body.get("components") or []),
            attachments=list(files),
            flags=flags,
            type=MessageType.REPLY if reference is not None and type == MessageType.DEFAULT else type,
            tts=bool(body.get("tts")),
            nonce=None if body.get("nonce") is None else str(body["nonce"]),
            interaction=interaction,
            is_followup=is_followup,
            reference_id=reference.id if reference is not None else None,
            created_at=self.clock.time(),
        )
        if interaction is not None:
            msg.webhook_id = msg.application_id = self.application_id
            if msg.ephemeral:
                msg.visible_to = interaction.user.id
        for f in files:
            if f.ephemeral:  # an uploaded option file becoming part of a message
                f.ephemeral = False
                f.channel_id = channel.id
        self._compute_mentions(msg, body.get("allowed_mentions"), reply_ping_default=reply_ping_default)
        channel.messages[msg.id] = msg
        self.messages[msg.id] = msg
        if dispatch:
            self._dispatch_message("MESSAGE_CREATE", msg)
        self._bump()
        return msg

    def edit_message(
        self,
        msg: Message,
        body: dict[str, Any],
        new_files: Sequence[StoredFile] = (),
        *,
        replaces_loading: bool = False,
    ) -> Message:
        """Apply a PATCH body (or a followup replacing "is thinking...") and dispatch MESSAGE_UPDATE."""
        msg.history.append((self.clock.time(), msg.content, msg.flags))
        if "content" in body:
            msg.content = body["content"] or ""
        if "embeds" in body:
            msg.embeds = self.media_proxy.with_proxy_urls(body["embeds"])
        if "components" in body:
            msg.components = list(body["components"] or [])
        if "flags" in body and body["flags"] is not None:
            changeable = MessageFlag.SUPPRESS_EMBEDS | MessageFlag.IS_COMPONENTS_V2
            msg.flags = (msg.flags & ~changeable) | (int(body["flags"]) & changeable)
        if "attachments" in body and body["attachments"] is not None:
            keep = {str(a.get("id")) for a in body["attachments"]}
            msg.attachments = [a for a in msg.attachments if str(a.id) in keep]
        msg.attachments.extend(new_files)
        if replaces_loading:
            msg.flags &= ~MessageFlag.LOADING
            self._compute_mentions(msg, body.get("allowed_mentions"), reply_ping_default=False)
        else:
            msg.edited_at = self.clock.time()
            pinged = (set(msg.pinged_ids), set(msg.pinged_role_ids), msg.pinged_everyone)
            self._compute_mentions(msg, body.get("allowed_mentions"), reply_ping_default=False)
            # an edit does not notify anyone new
            msg.pinged_ids, msg.pinged_role_ids, msg.pinged_everyone = pinged
        self._dispatch_message("MESSAGE_UPDATE", msg)
        self._bump()
        return msg

    def delete_message(self, msg: Message) -> None:
        msg.deleted = True
        if not msg.ephemeral:
            data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel.id)}
            if msg.guild is not None:
                data["guild_id"] = str(msg.guild.id)
            guild_id = msg.guild.id if msg.guild is not None else None
            self._dispatch("MESSAGE_DELETE", data, guild_id=guild_id, intent=self._message_intent(msg))
        self._bump()

    def add_reaction(self, msg: Message, user: User, emoji: str) -> None:
        users = msg.reactions.setdefault(emoji, [])
        if user.id in users:
            return
        users.append(user.id)
        self._dispatch_reaction("MESSAGE_REACTION_ADD", msg, user, emoji)
        self._bump()

    def remove_reaction(self, msg: Message, user: User, emoji: str) -> None:
        users = msg.reactions.get(emoji, [])
        if user.id in users:
            users.remove(user.id)
            self._dispatch_reaction("MESSAGE_REACTION_REMOVE", msg, user, emoji)
        self._bump()

    def _dispatch_reaction(self, event: str, msg: Message, user: User, emoji: str) -> None:
        name, _, emoji_id = emoji.partition(":")
        data: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": str(msg.channel.id),
            "message_id": str(msg.id),
            "emoji": {"id": emoji_id or None, "name": name},
            "burst": False,
            "type": 0,
        }
        if msg.guild is not None:
            data["guild_id"] = str(msg.guild.id)
            if event == "MESSAGE_REACTION_ADD":
                data["message_author_id"] = str(msg.author.id)
                data["burst_colors"] = []
                if (member := msg.guild.members.get(user.id)) is not None:
                    data["member"] = member.payload()
        intent = Intent.GUILD_MESSAGE_REACTIONS if msg.guild else Intent.DIRECT_MESSAGE_REACTIONS
        self._dispatch(event, data, guild_id=msg.guild.id if msg.guild else None, intent=intent)

    def _compute_mentions(self, msg: Message, allowed: dict[str, Any] | None, *, reply_ping_default: bool) -> None:
        """``mentions`` from the content; ``pinged_*`` after ``allowed_mentions`` — Discord's rules."""
        guild = msg.guild
        user_ids = list(dict.fromkeys(int(x) for x in _USER_MENTION.findall(msg.content)))
        user_ids = [u for u in user_ids if u in self.users]
        role_ids = list(dict.fromkeys(int(x) for x in _ROLE_MENTION.findall(msg.content)))
        role_ids = [r for r in role_ids if guild is not None and r in guild.roles]
        everyone = "@everyone" in msg.content or "@here" in msg.content
        if allowed is None:
            parse = {"users", "roles", "everyone"}
            users_ok: set[int] = set()
            roles_ok: set[int] = set()
            replied = reply_ping_default
        else:
            parse = set(allowed.get("parse") or [])
            users_ok = {int(u) for u in allowed.get("users") or []}
            roles_ok = {int(r) for r in allowed.get("roles") or []}
            replied = bool(allowed.get("replied_user", False))
        ref = msg.referenced
        msg.mention_ids = user_ids
        msg.mention_role_ids = role_ids
        msg.mention_everyone = everyone
        if msg.ephemeral:  # ephemeral messages notify nobody
            msg.pinged_ids, msg.pinged_role_ids, msg.pinged_everyone = set(), set(), False
            return
        msg.pinged_ids = {u for u in user_ids if "users" in parse or u in users_ok}
        msg.pinged_role_ids = {r for r in role_ids if "roles" in parse or r in roles_ok}
        may_everyone = True
        if guild is not None and (member := guild.members.get(msg.author.id)) is not None:
            may_everyone = member.has_permissions(Perm.MENTION_EVERYONE, msg.channel)
        msg.pinged_everyone = everyone and "everyone" in parse and may_everyone
        msg.mention_everyone = msg.pinged_everyone
        if ref is not None and replied and ref.author.id != msg.author.id:
            msg.pinged_ids.add(ref.author.id)
            if ref.author.id not in msg.mention_ids:
                msg.mention_ids.append(ref.author.id)

    # -- what the bot may see ---------------------------------------------------------------------
    def content_hidden(self, intents: int, msg: Message) -> bool:
        """Without MESSAGE_CONTENT the bot gets empty content, embeds, attachments and components,
        except for its own messages, DMs, messages mentioning it and replies to its regular messages."""
        if intents & Intent.MESSAGE_CONTENT:
            return False
        bot_id = self.bot_user.id
        if msg.author.id == bot_id or msg.channel.is_dm or bot_id in msg.mention_ids:
            return False
        ref = msg.referenced
        return not (ref is not None and ref.author.id == bot_id and ref.interaction is None)

    def rest_redact(self, msg: Message) -> bool:
        """REST answers follow the portal switch, modelled by :attr:`reject_privileged_intents`."""
        return self.content_hidden(0 if self.reject_privileged_intents else Intent.MESSAGE_CONTENT, msg)

    def _message_intent(self, msg: Message) -> int:
        return Intent.GUILD_MESSAGES if msg.guild is not None else Intent.DIRECT_MESSAGES

    def _dispatch_message(self, event: str, msg: Message) -> None:
        if msg.ephemeral:  # Discord never sends ephemeral messages over the gateway
            return
        self._dispatch(
            event,
            lambda session: msg.payload(redact=lambda m: self.content_hidden(session.intents, m)),
            guild_id=msg.guild.id if msg.guild is not None else None,
            intent=self._message_intent(msg),
        )

    def _guild_changed(self, guild: Guild, event: str, data: dict[str, Any]) -> None:
        """Tell the bot about a change in a guild it is in (nothing while the guild is being built: the bot
        sees the finished guild in GUILD_CREATE, as a session that identifies later sees the current one)."""
        if guild.id in self.guilds:
            intent = Intent.GUILD_MEMBERS if event.startswith("GUILD_MEMBER") else Intent.GUILDS
            self._dispatch(event, {**data, "guild_id": str(guild.id)}, guild_id=guild.id, intent=intent)

    def _member_updated(self, member: Member) -> None:
        """GUILD_MEMBER_UPDATE needs the privileged GUILD_MEMBERS intent, except for the bot's own member,
        which Discord reports to it whatever its intents. Without the intent the bot learns a member's
        roles only from the next interaction or message that carries the member."""
        guild = member.guild
        if guild.id in self.guilds:
            intent = None if member.id == self.bot_user.id else Intent.GUILD_MEMBERS
            data = {**member.payload(), "guild_id": str(guild.id)}
            self._dispatch("GUILD_MEMBER_UPDATE", data, guild_id=guild.id, intent=intent)
        self._bump()

    # -- interactions -----------------------------------------------------------------------------
    def new_interaction(self, **kwargs: Any) -> Interaction:
        token = f"aW50ZXJhY3Rpb24.{secrets.token_urlsafe(60)}"
        return Interaction(self, id=self.snowflakes.next(), token=token, **kwargs)

    def deliver(self, inter: Interaction) -> Interaction:
        """Send INTERACTION_CREATE to the bot: to the session of the guild's shard (shard 0 in a DM). The
        3-second clock starts now, also when that shard is not connected (nobody will answer then)."""
        if not any(s.ready for s in self.sessions.values()):
            raise BotNotConnected("no bot is connected to the emulator's gateway; start one with run_bot()")
        inter.created_at = self.clock.time()
        self.interactions[inter.id] = inter
        self._tokens[inter.token] = inter
        guild_id = inter.guild.id if inter.guild is not None else None
        self._dispatch("INTERACTION_CREATE", self.interaction_payload(inter), guild_id=guild_id)
        self._bump()
        return inter

    def interaction_payload(self, inter: Interaction) -> dict[str, Any]:
        channel = inter.channel
        guild = channel.guild
        limit = self.upload_limit_for(channel)
        data: dict[str, Any] = {
            "id": str(inter.id),
            "application_id": str(self.application_id),
            "type": inter.type,
            "token": inter.token,
            "version": 1,
            "locale": inter.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": self.integration_owners(inter),
            "attachment_size_limit": limit,
            "channel_id": str(channel.id),
        }
        if inter.data is not None:
            data["data"] = inter.data
        if guild is not None:
            assert inter.member is not None
            bot_perms = guild.permissions_in(guild.bot_member, channel)
            data.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": guild.locale, "features": []},
                guild_locale=guild.locale,
                member=inter.member.payload(channel=channel),
                channel=channel.payload(permissions=inter.member.permissions_in(channel)),
                app_permissions=str(bot_perms),
                context=0,
            )
        else:
            data.update(
                user=inter.user.payload(), channel=channel.payload(), app_permissions=str(DEFAULT_BOT), context=1
            )
        if inter.message is not None:
            data["message"] = inter.message.payload()
        return data
