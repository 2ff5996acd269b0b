"""The rules a request must pass before a job is recorded: who may use the bot, where, which models,
how many images at once, which words, and the quota.

Each server starts with the defaults from the settings (``DEFAULT_*``) and overrides them with
``/limits``. Throughout, ``0`` means "no limit" for daily and monthly quotas and concurrency, and a cooldown
of ``0`` means none. Monthly quotas are per calendar month (UTC) and do not apply in direct messages. The
quota itself (daily and monthly images, concurrency, cooldown) is checked and reserved atomically by
:func:`bot.db.create_job`; this module decides what that quota is and checks everything else first.

A member's own limits (:data:`MEMBER_FIELDS`) are computed here and nowhere else (:func:`member_limits`): a
rule for the member beats their roles' rules, which beat the server's. Among the member's roles that set a
field, the most generous wins: no limit over any number, the larger number, the shorter cooldown. Roles are
the ones Discord sent with the request, so a role taken away or deleted stops counting at once.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from bot import db
from bot.db import GuildSettings, QuotaLimits, Store
from bot.db.guilds import comparable_text
from bot.db.rules import RuleOverrides
from bot.settings import Settings

__all__ = [
    "DM_GUILD_ID",
    "MEMBER_FIELDS",
    "Limits",
    "Member",
    "Origin",
    "Refusal",
    "RefusalKind",
    "admit",
    "apply_rules",
    "contains_blocked_term",
    "limits_for",
    "member_limits",
]

#: The "server" of direct messages in the store.
DM_GUILD_ID = 0


class RefusalKind(StrEnum):
    DMS_OFF = "dms_off"
    CHANNEL = "channel"
    MODEL = "model"
    COUNT = "count"
    BLOCKED_TERM = "blocked_term"
    MEMBER_BLOCKED = "member_blocked"
    ACCESS = "access"


class Refusal(Exception):
    """A request refused by a server's rules, with what is allowed (never the blocked term itself).

    For :attr:`RefusalKind.MEMBER_BLOCKED`, ``allowed`` holds the block's reason, if the admin gave one; for
    :attr:`RefusalKind.ACCESS`, the ids of the roles that would let the member in.
    """

    def __init__(self, kind: RefusalKind, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(kind.value, *allowed)
        self.kind = kind
        self.allowed = allowed


#: The limits a role or member rule may change, as :class:`Limits` names them.
MEMBER_FIELDS: tuple[str, ...] = ("user_daily", "user_monthly", "max_count", "max_concurrent", "cooldown")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where one of a member's limits comes from, when not from the server: a rule for one of their roles
    (``role_id``) or for them."""

    kind: Literal["role", "member"]
    role_id: int | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """Who asks, as Discord described them in this request: their roles (ids) and whether they manage the server."""

    user_id: int
    role_ids: frozenset[int] = frozenset()
    manages_guild: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The rules in force in one server (or in direct messages), defaults and overrides merged; for one
    member, with their role and member rules applied (see :func:`member_limits`)."""

    guild_id: int
    user_daily: int | None
    guild_daily: int | None
    max_count: int
    max_concurrent: int | None
    cooldown: float
    user_monthly: int | None
    guild_monthly: int | None
    allowed_models: tuple[str, ...] | None
    allowed_channels: tuple[int, ...] | None
    blocked_terms: tuple[str, ...]
    overridden: frozenset[str]
    """The settings this server changed from the defaults."""
    access_roles: tuple[int, ...] = ()
    """When not empty, only members with one of these roles (or Manage Server) may use the bot here."""
    origins: Mapping[str, Origin] = field(default_factory=dict)
    """For a member: which of :data:`MEMBER_FIELDS` a role or member rule set (the others are the server's)."""

    @property
    def quota(self) -> QuotaLimits:
        return QuotaLimits(
            user_daily=self.user_daily,
            guild_daily=self.guild_daily,
            max_concurrent=self.max_concurrent,
            cooldown=self.cooldown,
            user_monthly=self.user_monthly,
            guild_monthly=self.guild_monthly,
        )


def _no_limit_if_zero(value: int) -> int | None:
    return None if value == 0 else value


async def limits_for(store: Store, settings: Settings, guild_id: int) -> Limits:
    """The rules in force in ``guild_id`` (:data:`DM_GUILD_ID` for direct messages), for no one member."""
    limits = await _server_limits(store, settings, guild_id)
    if guild_id == DM_GUILD_ID:
        return limits
    return dataclasses.replace(limits, access_roles=await db.access_roles(store, guild_id))


async def member_limits(store: Store, settings: Settings, guild_id: int, member: Member) -> Limits:
    """The rules in force for ``member`` in ``guild_id``: the server's, with their role and member rules."""
    limits = await _server_limits(store, settings, guild_id)
    if guild_id == DM_GUILD_ID:
        return limits
    roles, own, access = await db.request_rules(store, guild_id, member.user_id)
    theirs = {role: rule for role, rule in roles.items() if role in member.role_ids}
    return apply_rules(dataclasses.replace(limits, access_roles=access), theirs, own)


async def _server_limits(store: Store, settings: Settings, guild_id: int) -> Limits:
    if guild_id == DM_GUILD_ID:
        return Limits(
            guild_id=guild_id,
            user_daily=_no_limit_if_zero(settings.dm_user_daily),
            guild_daily=None,
            max_count=settings.default_max_count,
            max_concurrent=_no_limit_if_zero(settings.default_max_concurrent),
            cooldown=settings.default_cooldown,
            user_monthly=None,
            guild_monthly=None,
            allowed_models=None,
            allowed_channels=None,
            blocked_terms=(),
            overridden=frozenset(),
        )
    server = await db.get_guild_settings(store, guild_id)
    return Limits(
        guild_id=guild_id,
        user_daily=_no_limit_if_zero(_pick(server.user_daily, settings.default_user_daily)),
        guild_daily=_no_limit_if_zero(_pick(server.guild_daily, settings.default_guild_daily)),
        max_count=_pick(server.max_count, settings.default_max_count),
        max_concurrent=_no_limit_if_zero(_pick(server.max_concurrent, settings.default_max_concurrent)),
        cooldown=server.cooldown_seconds if server.cooldown_seconds is not None else settings.default_cooldown,
        user_monthly=_no_limit_if_zero(_pick(server.user_monthly, settings.default_user_monthly)),
        guild_monthly=_no_limit_if_zero(_pick(server.guild_monthly, settings.default_guild_monthly)),
        allowed_models=server.allowed_models,
        allowed_channels=server.allowed_channels,
        blocked_terms=tuple(await db.blocked_terms(store, guild_id)),
        overridden=_overridden(server),
    )


def apply_rules(limits: Limits, roles: Mapping[int, RuleOverrides], member: RuleOverrides | None) -> Limits:
    """``limits`` with the rules of the member's roles (``roles``: only roles they have) and their own rule.

    For each field, the member's rule if it sets it; else the most generous value among the roles that set
    it (ties go to the lowest role id, so the answer never depends on order); else the server's.
    """
    values: dict[str, int | float | None] = {}
    origins: dict[str, Origin] = {}
    for name in MEMBER_FIELDS:
        stored = _RULE_FIELD.get(name, name)
        own = None if member is None else getattr(member, stored)
        if own is not None:
            values[name], origins[name] = _limit_value(name, own), Origin("member")
            continue
        offers = [(getattr(rule, stored), role) for role, rule in sorted(roles.items())]
        offers = [(value, role) for value, role in offers if value is not None]
        if offers:
            value, role = max(offers, key=lambda offer: _generosity(name, offer[0]))
            values[name], origins[name] = _limit_value(name, value), Origin("role", role)
    return dataclasses.replace(limits, **values, origins=origins)  # type: ignore[arg-type]


#: A rule's column for a :class:`Limits` field, where the names differ.
_RULE_FIELD = {"cooldown": "cooldown_seconds"}


def _generosity(name: str, value: float) -> float:
    """Larger is more generous: no limit (0) beats every number; for cooldowns, shorter is better."""
    if name == "cooldown":
        return -value
    if name == "max_count":
        return value
    return math.inf if value == 0 else value


def _limit_value(name: str, value: float) -> int | float | None:
    """A rule's stored value as :class:`Limits` holds it (0 = no limit becomes None, except counts and cooldowns)."""
    if name == "cooldown":
        return float(value)
    if name == "max_count":
        return int(value)
    return None if value == 0 else int(value)


def _pick(override: int | None, default: int) -> int:
    return default if override is None else override


def _overridden(server: GuildSettings) -> frozenset[str]:
    return frozenset(name for name in db.SETTING_FIELDS if getattr(server, name) is not None)


async def admit(
    store: Store,
    settings: Settings,
    *,
    guild_id: int,
    channel_id: int,
    member: Member,
    model: str,
    count: int,
    prompt: str,
) -> Limits:
    """Check a request against the rules of its server; return the member's limits (for the quota) or raise
    :class:`Refusal`.

    Nothing here reserves anything: the quota is checked and reserved with the job, in one transaction.
    A member the server blocked is refused first, whatever else they asked for; then one without an access
    role (members with Manage Server always have access).
    """
    if guild_id == DM_GUILD_ID and not settings.allow_dms:
        raise Refusal(RefusalKind.DMS_OFF)
    if guild_id != DM_GUILD_ID and (block := await db.member_block(store, guild_id, member.user_id)) is not None:
        raise Refusal(RefusalKind.MEMBER_BLOCKED, () if block.reason is None else (block.reason,))
    limits = await member_limits(store, settings, guild_id, member)
    if limits.access_roles and not member.manages_guild and member.role_ids.isdisjoint(limits.access_roles):
        raise Refusal(RefusalKind.ACCESS, tuple(str(role) for role in limits.access_roles))
    if limits.allowed_channels is not None and channel_id not in limits.allowed_channels:
        raise Refusal(RefusalKind.CHANNEL, tuple(str(channel) for channel in limits.allowed_channels))
    if limits.allowed_models is not None and model not in limits.allowed_models:
        raise Refusal(RefusalKind.MODEL, limits.allowed_models)
    if count > limits.max_count:
        raise Refusal(RefusalKind.COUNT, (str(limits.max_count),))
    if contains_blocked_term(prompt, limits.blocked_terms):
        raise Refusal(RefusalKind.BLOCKED_TERM)
    return limits


def contains_blocked_term(prompt: str, terms: tuple[str, ...]) -> bool:
    """Whether ``prompt`` contains any term as a whole word or phrase, both compared normalized.

    Whole words only, so that blocking "ass" does not refuse "class". Prompt and terms are compared in
    the form of :func:`bot.db.guilds.comparable_text`, so case, extra spaces, zero-width characters,
    fullwidth letters and Cyrillic or Greek look-alikes do not dodge a term.
    """
    pattern = _blocklist_pattern(terms)
    return pattern is not None and pattern.search(comparable_text(prompt)) is not None


@functools.lru_cache(maxsize=256)
def _blocklist_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex for a whole blocklist, compiled once per distinct list (not once per prompt)."""
    normal = sorted({term for term in map(comparable_text, terms) if term}, key=len, reverse=True)
    if not normal:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, normal)) + r")(?!\w)")
