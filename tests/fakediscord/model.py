"""The emulated Discord's state: users, guilds, channels, messages, files, commands and interactions.

Every object renders itself as the JSON payload Discord would send, with the keys discord.py 2.7 reads.
Tests inspect these objects directly (``message.pinged_ids``, ``interaction.followups``...).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import mimetypes
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .constants import (
    ACK_DEADLINE_S,
    ALL_PERMISSIONS,
    DISCORD_EPOCH_MS,
    TOKEN_LIFETIME_S,
    UPLOAD_LIMIT_BY_TIER,
    CallbackType,
    ChannelType,
    InteractionType,
    MessageFlag,
    Perm,
)

if TYPE_CHECKING:
    from .actors import MemberActions
    from .emulator import DiscordEmulator
else:  # the actor methods live in their own module; Member inherits them
    from .actors import MemberActions

__all__ = [
    "Attachment",
    "CdnFetch",
    "Channel",
    "Clock",
    "Command",
    "Guild",
    "Interaction",
    "Member",
    "Message",
    "RestCall",
    "Role",
    "Snowflakes",
    "StoredFile",
    "User",
    "iso",
]


class Clock:
    """The emulator's time: real time plus an offset that :meth:`advance` moves forward.

    Deadlines (3 s to acknowledge, 15 min token lifetime, rate-limit windows, nonce window, CDN URL
    expiry) are all measured on this clock, so a bot that really sleeps 4 s is late, and a test that
    calls ``advance(16 * 60)`` expires every token without waiting.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat()


class Snowflakes:
    """Real Discord snowflakes: milliseconds since the Discord epoch << 22, worker, process, increment."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0

    def next(self) -> int:
        ms = int(self._clock.time() * 1000) - DISCORD_EPOCH_MS
        candidate = (ms << 22) | (1 << 17) | (1 << 12)
        # keep ids strictly increasing even within one millisecond
        self._last = max(candidate, self._last + 1)
        return self._last

    def next_on_shard(self, shard_id: int, shard_count: int) -> int:
        """The next id whose events go to shard ``shard_id`` of ``shard_count`` (``(id >> 22) % count``):
        its timestamp is moved forward by less than ``shard_count`` milliseconds to land on that shard."""
        candidate = self.next()
        ms = candidate >> 22
        ms += (shard_id - ms) % shard_count
        self._last = max(self._last, (ms << 22) | (1 << 17) | (1 << 12))
        return self._last

    @staticmethod
    def time_of(snowflake: int) -> float:
        return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000


@dataclass(eq=False)
class User:
    id: int
    name: str
    bot: bool = False
    global_name: str | None = None
    dms_closed: bool = False  # "Allow direct messages from server members" switched off -> 50007

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
        }

    def __repr__(self) -> str:
        return f"<User {self.name!r} id={self.id}{' bot' if self.bot else ''}>"


@dataclass(eq=False)
class Role:
    guild: Guild
    id: int
    name: str
    permissions: int
    position: int = 0
    managed: bool = False
    bot_id: int | None = None

    @property
    def mention(self) -> str:
        return f"<@&{self.id}>"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data

    def __repr__(self) -> str:
        return f"<Role {self.name!r} id={self.id}>"


@dataclass
class Overwrite:
    id: int
    type: int  # 0 role, 1 member
    allow: int = 0
    deny: int = 0

    def payload(self) -> dict[str, Any]:
        return {"id": str(self.id), "type": self.type, "allow": str(self.allow), "deny": str(self.deny)}


@dataclass(frozen=True)
class Attachment:
    """A file a test user uploads (a message attachment or an attachment command option)."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None


@dataclass(eq=False)
class StoredFile:
    """A file Discord holds, served by the emulator's CDN at a signed, expiring URL."""

    emu: DiscordEmulator
    id: int
    filename: str
    data: bytes
    channel_id: int
    content_type: str | None = None
    description: str | None = None
    ephemeral: bool = False  # an attachment command option, not (yet) part of a message

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def path(self) -> str:
        kind = "ephemeral-attachments" if self.ephemeral else "attachments"
        return f"/{kind}/{self.channel_id}/{self.id}/{quote(self.filename, safe='')}"

    def url(self) -> str:
        """A signed URL like Discord's (``?ex=&is=&hm=``), valid for 24 hours on the emulator clock."""
        issued = int(self.emu.clock.time())
        expires = issued + int(self.emu.cdn_url_lifetime)
        sig = self.emu.sign_cdn(self.path, expires)
        return f"{self.emu.base_url}{self.path}?ex={expires:x}&is={issued:x}&hm={sig}&"

    def image_size(self) -> tuple[int, int] | None:
        if not (self.content_type or "").startswith("image/"):
            return None
        try:
            from PIL import Image

            with Image.open(io.BytesIO(self.data)) as img:
                return img.size
        except Exception:  # not a decodable image: Discord leaves width/height out too
            return None

    def payload(self) -> dict[str, Any]:
        url = self.url()
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": url,
            "proxy_url": url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        size = self.image_size()
        if size is not None:
            data["width"], data["height"] = size
        return data

    @staticmethod
    def guess_type(filename: str) -> str | None:
        return mimetypes.guess_type(filename)[0]

    def __repr__(self) -> str:
        return f"<StoredFile {self.filename!r} {self.size} bytes id={self.id}>"


def sign(secret: bytes, path: str, expires: int) -> str:
    return hmac.new(secret, f"{path}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(eq=False)
class Channel:
    emu: DiscordEmulator
    id: int
    name: str
    type: int = ChannelType.GUILD_TEXT
    guild: Guild | None = None
    position: int = 0
    topic: str | None = None
    nsfw: bool = False
    recipient: User | None = None  # for DMs: the user the bot talks to
    overwrites: list[Overwrite] = field(default_factory=list)
    messages: dict[int, Message] = field(default_factory=dict)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    @property
    def is_dm(self) -> bool:
        return self.type == ChannelType.DM

    def set_permissions(self, target: Role | Member | User, *, allow: int = 0, deny: int = 0) -> None:
        """A permission overwrite on this channel for a role or a member (or the bot: ``emu.bot_user``)."""
        kind = 0 if isinstance(target, Role) else 1
        self.overwrites = [o for o in self.overwrites if o.id != target.id]
        self.overwrites.append(Overwrite(target.id, kind, int(allow), int(deny)))

    def visible_messages(self, user: User | Member) -> list[Message]:
        """What ``user`` sees in this channel, oldest first: ephemeral messages only for their user."""
        uid = user.id
        return [m for m in self.messages.values() if not m.deleted and m.visible_to in (None, uid)]

    def payload(self, *, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "last_message_id": str(max(self.messages)) if self.messages else None,
            "flags": 0,
        }
        if self.guild is not None:
            data.update(
                guild_id=str(self.guild.id),
                name=self.name,
                position=self.position,
                topic=self.topic,
                nsfw=self.nsfw,
                parent_id=None,
                rate_limit_per_user=0,
                permission_overwrites=[o.payload() for o in self.overwrites],
            )
        else:
            data["recipients"] = [self.recipient.payload()] if self.recipient else []
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data

    def __repr__(self) -> str:
        return f"<Channel #{self.name} id={self.id}>"


@dataclass(eq=False)
class Guild:
    emu: DiscordEmulator
    id: int
    name: str
    owner: User
    premium_tier: int = 0
    attachment_size_limit: int | None = None
    locale: str = "en-US"
    joined_at: float = 0.0
    roles: dict[int, Role] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)

    @property
    def everyone(self) -> Role:
        return self.roles[self.id]

    @property
    def upload_limit(self) -> int:
        """Per-file upload limit here: ``attachment_size_limit`` if set, else the boost tier's."""
        if self.attachment_size_limit is not None:
            return self.attachment_size_limit
        return UPLOAD_LIMIT_BY_TIER[self.premium_tier]

    @property
    def bot_member(self) -> Member:
        return self.members[self.emu.bot_user.id]

    def add_role(self, name: str, permissions: int = 0) -> Role:
        """A new role, at the top of the list. A connected bot is told (GUILD_ROLE_CREATE, intent GUILDS):
        discord.py only knows roles from GUILD_CREATE and these events, and drops unknown role ids from
        ``Member.roles``."""
        role = Role(self, self.emu.snowflakes.next(), name, int(permissions), position=len(self.roles))
        self.roles[role.id] = role
        self.emu._guild_changed(self, "GUILD_ROLE_CREATE", {"role": role.payload()})
        self.emu._bump()
        return role

    def update_role(self, role: Role, *, name: str | None = None, permissions: int | None = None) -> Role:
        """Rename a role or change its permissions (GUILD_ROLE_UPDATE); members keep it."""
        self._own_role(role)
        if name is not None:
            role.name = name
        if permissions is not None:
            role.permissions = int(permissions)
        self.emu._guild_changed(self, "GUILD_ROLE_UPDATE", {"role": role.payload()})
        self.emu._bump()
        return role

    def delete_role(self, role: Role) -> None:
        """Delete a role as an admin does in the server settings: every member loses it at once.

        Discord sends only GUILD_ROLE_DELETE ``{guild_id, role_id}`` (no GUILD_MEMBER_UPDATE per member);
        discord.py drops the role from its cache, so ``guild.get_role(id)`` is None and ``Member.roles``
        skips the id. Later interactions and messages carry members without it, with their permissions
        recomputed. Like Discord, @everyone and a bot's managed role cannot be deleted.
        """
        self._own_role(role)
        if role.id == self.id:
            raise ValueError("@everyone cannot be deleted")
        if role.managed:
            raise ValueError(f"{role!r} is managed by an integration and cannot be deleted")
        del self.roles[role.id]
        for member in self.members.values():
            member.roles = [r for r in member.roles if r is not role]
        self.emu._guild_changed(self, "GUILD_ROLE_DELETE", {"role_id": str(role.id)})
        self.emu._bump()

    def _own_role(self, role: Role) -> None:
        if role.guild is not self:
            raise ValueError(f"{role!r} belongs to {role.guild!r}, not to {self!r}")
        if self.roles.get(role.id) is not role:
            raise ValueError(f"{role!r} was deleted")

    def add_text_channel(self, name: str, *, topic: str | None = None, nsfw: bool = False) -> Channel:
        channel = Channel(
            self.emu, self.emu.snowflakes.next(), name, guild=self, position=len(self.channels), topic=topic, nsfw=nsfw
        )
        self.channels[channel.id] = channel
        self.emu.channels[channel.id] = channel
        self.emu._guild_changed(self, "CHANNEL_CREATE", channel.payload())
        return channel

    def add_member(
        self,
        name: str,
        *,
        manage_guild: bool = False,
        administrator: bool = False,
        permissions: int = 0,
        roles: Iterable[Role] = (),
        user: User | None = None,
        locale: str = "en-US",
    ) -> Member:
        """A member; ``manage_guild=True`` gives them a role with Manage Server (admins of this bot)."""
        user = user or self.emu.add_user(name)
        member_roles = list(roles)
        extra = int(permissions)
        if manage_guild:
            extra |= Perm.MANAGE_GUILD
        if administrator:
            extra |= Perm.ADMINISTRATOR
        if extra:
            member_roles.append(self.add_role(f"{name}-role", extra))
        member = Member(self, user, member_roles, joined_at=self.emu.clock.time(), locale=locale)
        self.members[user.id] = member
        if not user.bot:
            self.emu._guild_changed(self, "GUILD_MEMBER_ADD", {**member.payload(), "guild_id": str(self.id)})
        return member

    def base_permissions(self, member: Member) -> int:
        if member.id == self.owner.id:
            return ALL_PERMISSIONS
        perms = self.everyone.permissions
        for role in member.roles:
            perms |= role.permissions
        return ALL_PERMISSIONS if perms & Perm.ADMINISTRATOR else perms

    def permissions_in(self, member: Member, channel: Channel | None) -> int:
        """Discord's algorithm: base permissions, then @everyone, role and member overwrites."""
        perms = self.base_permissions(member)
        if channel is None or perms & Perm.ADMINISTRATOR or perms == ALL_PERMISSIONS:
            return perms
        by_id = {o.id: o for o in channel.overwrites}
        if (ow := by_id.get(self.id)) is not None:
            perms = (perms & ~ow.deny) | ow.allow
        allow = deny = 0
        for role in member.roles:
            if (ow := by_id.get(role.id)) is not None:
                allow |= ow.allow
                deny |= ow.deny
        perms = (perms & ~deny) | allow
        if (ow := by_id.get(member.id)) is not None:
            perms = (perms & ~ow.deny) | ow.allow
        if not perms & Perm.VIEW_CHANNEL:
            return 0
        return perms

    def payload(self, *, members: Iterable[Member]) -> dict[str, Any]:
        """The GUILD_CREATE payload: the guild with its roles, channels and the given members."""
        member_list = list(members)
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner.id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "features": [],
            "roles": [r.payload() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": self.locale,
            "max_members": 500000,
            "joined_at": iso(self.joined_at),
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "members": [m.payload() for m in member_list],
            "channels": [c.payload() for c in self.channels.values()],
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def __repr__(self) -> str:
        return f"<Guild {self.name!r} id={self.id}>"


class Member(MemberActions):
    """A member of a guild, and a test actor: see :class:`~tests.fakediscord.actors.MemberActions`."""

    def __init__(self, guild: Guild, user: User, roles: list[Role], *, joined_at: float, locale: str) -> None:
        self.guild = guild
        self.user = user
        self.roles = roles
        self.joined_at = joined_at
        self.locale = locale
        self.nick: str | None = None

    @property
    def emu(self) -> DiscordEmulator:
        return self.guild.emu

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def mention(self) -> str:
        return self.user.mention

    def permissions_in(self, channel: Channel | None = None) -> int:
        return self.guild.permissions_in(self, channel)

    def add_role(self, role: Role) -> None:
        """Give the member a role (as an admin or another bot does); no event if they already have it."""
        self.guild._own_role(role)
        if role.id == self.guild.id:
            raise ValueError("every member has @everyone; it is not assigned")
        if role not in self.roles:
            self.roles.append(role)
            self.emu._member_updated(self)

    def remove_role(self, role: Role) -> None:
        """Take a role away from the member; no event if they did not have it."""
        self.guild._own_role(role)
        if role in self.roles:
            self.roles.remove(role)
            self.emu._member_updated(self)

    def has_permissions(self, perms: int, channel: Channel | None = None) -> bool:
        return self.permissions_in(channel) & perms == perms

    def payload(self, *, with_user: bool = True, channel: Channel | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "roles": [str(r.id) for r in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": iso(self.joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = self.user.payload()
        if channel is not None:
            data["permissions"] = str(self.permissions_in(channel))
        return data

    def __repr__(self) -> str:
        return f"<Member {self.name!r} id={self.id} guild={self.guild.name!r}>"


@dataclass(eq=False)
class Message:
    channel: Channel
    id: int
    author: User
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[StoredFile] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    tts: bool = False
    nonce: str | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction: Interaction | None = None
    is_followup: bool = False
    reference_id: int | None = None
    mention_ids: list[int] = field(default_factory=list)
    mention_role_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    #: Who gets notified, after ``allowed_mentions`` (users, roles, @everyone/@here).
    pinged_ids: set[int] = field(default_factory=set)
    pinged_role_ids: set[int] = field(default_factory=set)
    pinged_everyone: bool = False
    visible_to: int | None = None  # a user id for ephemeral messages
    created_at: float = 0.0
    edited_at: float | None = None
    deleted: bool = False
    reactions: dict[str, list[int]] = field(default_factory=dict)
    #: One entry per edit: (emulator time, content, flags) before the edit.
    history: list[tuple[float, str, int]] = field(default_factory=list)

    @property
    def guild(self) -> Guild | None:
        return self.channel.guild

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MessageFlag.EPHEMERAL)

    @property
    def loading(self) -> bool:
        """The deferred "is thinking..." state of an interaction's original response."""
        return bool(self.flags & MessageFlag.LOADING)

    @property
    def referenced(self) -> Message | None:
        if self.reference_id is None:
            return None
        return self.channel.emu.find_message(self.reference_id)

    @property
    def custom_ids(self) -> list[str]:
        from .validation import walk_components

        return [c["custom_id"] for c in walk_components(self.components) if c.get("custom_id")]

    def find_component(self, custom_id: str) -> dict[str, Any] | None:
        from .validation import walk_components

        return next((c for c in walk_components(self.components) if c.get("custom_id") == custom_id), None)

    def payload(self, *, redact: Callable[[Message], bool] | None = None, nested: bool = True) -> dict[str, Any]:
        emu = self.channel.emu
        guild = self.guild
        hidden = redact is not None and redact(self)
        data: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel.id),
            "type": self.type,
            "content": "" if hidden else self.content,
            "author": self.author.payload(),
            "timestamp": iso(self.created_at),
            "edited_timestamp": iso(self.edited_at),
            "tts": self.tts,
            "mention_everyone": self.mention_everyone,
            "mentions": [self._mention_payload(uid) for uid in self.mention_ids if emu.users.get(uid)],
            "mention_roles": [str(r) for r in self.mention_role_ids],
            "attachments": [] if hidden else [f.payload() for f in self.attachments],
            "embeds": [] if hidden else self.embeds,
            "components": [] if hidden else self.components,
            "pinned": False,
            "flags": self.flags,
        }
        if guild is not None:
            data["guild_id"] = str(guild.id)
            member = guild.members.get(self.author.id)
            if member is not None and self.webhook_id is None:
                data["member"] = member.payload(with_user=False)
        if self.reactions:
            data["reactions"] = [
                {
                    "emoji": _emoji_payload(key),
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me": emu.bot_user.id in users,
                    "me_burst": False,
                    "burst_colors": [],
                }
                for key, users in self.reactions.items()
                if users
            ]
        if self.nonce is not None:
            data["nonce"] = self.nonce
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            data["application_id"] = str(self.application_id)
        if self.interaction is not None:
            data["interaction_metadata"] = self.interaction.metadata(followup_of=self if self.is_followup else None)
            data["interaction"] = {
                "id": str(self.interaction.id),
                "type": self.interaction.type,
                "name": self.interaction.command_name or "",
                "user": self.interaction.user.payload(),
            }
        if self.reference_id is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.reference_id),
                "channel_id": str(self.channel.id),
                "fail_if_not_exists": False,
            }
            if guild is not None:
                data["message_reference"]["guild_id"] = str(guild.id)
            if nested:
                ref = self.referenced
                data["referenced_message"] = (
                    ref.payload(redact=redact, nested=False) if ref is not None and not ref.deleted else None
                )
        return data

    def _mention_payload(self, user_id: int) -> dict[str, Any]:
        emu = self.channel.emu
        data = emu.users[user_id].payload()
        guild = self.guild
        if guild is not None and (member := guild.members.get(user_id)) is not None:
            data["member"] = member.payload(with_user=False)
        return data

    def __repr__(self) -> str:
        flags = f" flags={self.flags}" if self.flags else ""
        return f"<Message id={self.id} author={self.author.name!r} content={self.content[:40]!r}{flags}>"


def _emoji_payload(key: str) -> dict[str, Any]:
    if ":" in key:
        name, _, emoji_id = key.partition(":")
        return {"id": emoji_id, "name": name}
    return {"id": None, "name": key}


@dataclass(eq=False)
class Command:
    """An application command as synced by the bot (global if ``guild_id`` is None)."""

    id: int
    application_id: int
    guild_id: int | None
    name: str
    type: int
    description: str
    options: list[dict[str, Any]]
    default_member_permissions: int | None
    contexts: list[int] | None
    integration_types: list[int] | None
    nsfw: bool
    version: int

    @classmethod
    def from_payload(
        cls, raw: dict[str, Any], *, id: int, application_id: int, guild_id: int | None, version: int
    ) -> Command:
        perms = raw.get("default_member_permissions")
        contexts = raw.get("contexts")
        if contexts is None and raw.get("dm_permission") is False:
            contexts = [0]
        return cls(
            id=id,
            application_id=application_id,
            guild_id=guild_id,
            name=raw["name"],
            type=int(raw.get("type") or 1),
            description=raw.get("description") or "",
            options=list(raw.get("options") or []),
            default_member_permissions=None if perms is None else int(perms),
            contexts=contexts,
            integration_types=raw.get("integration_types"),
            nsfw=bool(raw.get("nsfw")),
            version=version,
        )

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "application_id": str(self.application_id),
            "version": str(self.version),
            "type": self.type,
            "name": self.name,
            "description": self.description,
            "options": self.options,
            "default_member_permissions": (
                None if self.default_member_permissions is None else str(self.default_member_permissions)
            ),
            "dm_permission": self.contexts is None or 1 in self.contexts,
            "contexts": self.contexts,
            "integration_types": self.integration_types,
            "nsfw": self.nsfw,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        return data

    def __repr__(self) -> str:
        scope = "global" if self.guild_id is None else f"guild {self.guild_id}"
        return f"<Command {self.name!r} type={self.type} {scope}>"


@dataclass
class RestCall:
    """One REST request the bot made, as the emulator answered it."""

    method: str
    path: str  # without the /api/v10 prefix
    route: str  # the route template, e.g. "/channels/{channel_id}/messages"
    at: float  # emulator clock when the request arrived
    query: dict[str, str] = field(default_factory=dict)
    json: Any = None  # the JSON body, or the payload_json of a multipart body
    files: list[tuple[str, int]] = field(default_factory=list)  # (filename, size) of uploaded files
    status: int = 0
    code: int | None = None  # the JSON error code of an error answer
    interaction_id: int | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        code = f" code={self.code}" if self.code is not None else ""
        return f"<RestCall {self.method} {self.path} -> {self.status}{code}>"


@dataclass(frozen=True)
class CdnFetch:
    """One GET of a CDN (attachment) URL, by anyone: the bot, or a Flux service fetching an edit's source."""

    path: str  # without the query
    file_id: int | None  # the stored file it named, if any
    status: int  # 200, or 404 for unknown, unsigned or expired URLs
    at: float  # emulator clock

    @property
    def ok(self) -> bool:
        return self.status == 200


class Interaction:
    """An interaction a test actor started, and everything the bot did with it.

    Attributes to assert on: ``acknowledged``, ``acked_at`` / ``ack_delay`` (emulator seconds after
    creation), ``response_type``, ``original`` (the response message, or the component's message after an
    update), ``followups``, ``modal``, ``choices``, ``errors`` (error answers the bot got for this
    interaction), ``calls`` (every REST call made with its id or token).
    """

    def __init__(
        self,
        emu: DiscordEmulator,
        *,
        id: int,
        type: int,
        token: str,
        user: User,
        member: Member | None,
        channel: Channel,
        data: dict[str, Any] | None,
        command: Command | None = None,
        message: Message | None = None,
        source: Interaction | None = None,
        locale: str = "en-US",
    ) -> None:
        self.emu = emu
        self.id = id
        self.type = type
        self.token = token
        self.user = user
        self.member = member
        self.channel = channel
        self.data = data
        self.command = command
        self.message = message  # the message a component lives on
        self.source = source  # for a modal submit: the interaction that opened the modal
        self.locale = locale
        self.created_at = emu.clock.time()
        self.acked_at: float | None = None
        self.response_type: int | None = None
        self.original: Message | None = None
        self.followups: list[Message] = []
        self.modal: dict[str, Any] | None = None
        self.modal_submitted = False
        self.choices: list[dict[str, Any]] | None = None
        self.responded_at: float | None = None  # when the user first saw a final (non-loading) answer
        self.calls: list[RestCall] = []

    # -- state ------------------------------------------------------------------------------------
    @property
    def guild(self) -> Guild | None:
        return self.channel.guild

    @property
    def acknowledged(self) -> bool:
        return self.acked_at is not None

    @property
    def ack_delay(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.created_at

    @property
    def deferred(self) -> bool:
        return self.response_type in (CallbackType.DEFERRED_CHANNEL_MESSAGE, CallbackType.DEFERRED_UPDATE_MESSAGE)

    @property
    def ephemeral(self) -> bool:
        return self.original is not None and self.original.ephemeral

    @property
    def thinking(self) -> bool:
        return self.original is not None and self.original.loading

    @property
    def errors(self) -> list[RestCall]:
        return [c for c in self.calls if not c.ok]

    @property
    def error_codes(self) -> list[int | None]:
        return [c.code for c in self.errors]

    @property
    def command_name(self) -> str | None:
        return self.command.name if self.command else None

    @property
    def ack_expired(self) -> bool:
        return self.emu.clock.time() - self.created_at > ACK_DEADLINE_S

    @property
    def token_expired(self) -> bool:
        return self.emu.clock.time() - self.created_at > TOKEN_LIFETIME_S

    @property
    def messages(self) -> list[Message]:
        """The original response (if a message) and the followups, oldest first."""
        out = [self.original] if self.original is not None and self.original.interaction is self else []
        return out + [m for m in self.followups if m is not self.original]

    def metadata(self, *, followup_of: Message | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "user": self.user.payload(),
            "authorizing_integration_owners": self.emu.integration_owners(self),
        }
        if self.command is not None:
            data["name"] = self.command.name
            data["command_type"] = self.command.type
        if followup_of is not None and self.original is not None:
            data["original_response_message_id"] = str(self.original.id)
        if self.type == InteractionType.MESSAGE_COMPONENT and self.message is not None:
            data["interacted_message_id"] = str(self.message.id)
        if self.source is not None and self.type == InteractionType.MODAL_SUBMIT:
            data["triggering_interaction_metadata"] = self.source.metadata()
        return data

    # -- event-driven waits -----------------------------------------------------------------------
    async def wait_acknowledged(self, timeout: float = ACK_DEADLINE_S) -> Interaction:
        """Until the bot acknowledged (any callback type) — raises :class:`NotAcknowledged` otherwise."""
        from .emulator import NotAcknowledged, WaitTimeout

        try:
            await self.emu.wait_until(lambda: self.acknowledged, timeout, f"{self!r} acknowledged")
        except WaitTimeout as exc:
            raise NotAcknowledged(
                f"the bot did not acknowledge {self!r} within {timeout} s; its calls: {self.calls}"
            ) from exc
        return self

    async def wait_response(self, timeout: float = 5.0) -> Any:
        """Until the user sees a final answer; returns the message, the modal dict or the choices list.

        For a deferral that is the first followup or the edit that replaces "is thinking...".
        """
        await self.emu.wait_until(lambda: self.responded_at is not None, timeout, f"a response to {self!r}")
        if self.response_type == CallbackType.MODAL:
            return self.modal
        if self.response_type == CallbackType.AUTOCOMPLETE_RESULT:
            return self.choices
        return self.original

    async def wait_followup(self, count: int = 1, timeout: float = 5.0) -> Message:
        """Until the bot sent ``count`` followups; returns the last one."""
        await self.emu.wait_until(lambda: len(self.followups) >= count, timeout, f"{count} followup(s) to {self!r}")
        return self.followups[count - 1]

    async def wait_error(self, code: int, timeout: float = 5.0) -> RestCall:
        """Until the bot received an error answer with this JSON code for this interaction."""
        return await self.emu.wait_until(
            lambda: next((c for c in self.calls if c.code == code), None), timeout, f"error {code} for {self!r}"
        )

    def __repr__(self) -> str:
        name = f" /{self.command.name}" if self.command else ""
        return f"<Interaction id={self.id} type={self.type}{name} user={self.user.name!r}>"
