"""Telling a server's admins, in the channel they chose, that its budget runs out or the provider refuses the bot.

Alerts are posted once per event, not per request: the first process to see an event claims its key in the
database (:func:`bot.db.alerts.claim_alert`) and posts; every other caller finds the key taken. Budget keys name
their period ("guild_daily:80:2026-12-03"), so each threshold is told once a day or once a month; a provider
refusal of the operator's account lasts until the operator acts, so its key may be claimed again after
:data:`PROVIDER_REPEAT` seconds: a lasting outage is told again now and then, never per failing request.

Alerts are posted in the server's language (its community locale, ``guild.preferred_locale``, asked of the
``locale_of`` the bot gives; English when it is not known, e.g. a server of another process's shard).

Nothing here may break what called it: a member's request or the job runner. Every method logs what goes wrong
and returns. A post that fails after its key was claimed is not tried again (logged with the server and channel):
the channel was deleted or the bot may not post there, which another attempt would not fix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.db.alerts import alert_channel, claim_alert
from bot.db.days import next_utc_midnight, next_utc_month, utc_day
from bot.db.models import LimitKind, QuotaRefusal
from bot.db.store import Store, StoreBusyError
from bot.db.usage import guild_usage_month, guild_usage_today
from bot.flux import AccountError, BalanceError, CredentialsError
from bot.i18n import N_, tr

__all__ = ["PROVIDER_REPEAT", "THRESHOLDS", "Alerts", "LocaleOf", "Post"]

log = logging.getLogger(__name__)

#: The shares of a server budget (percent) at which its admins are told, lowest first.
THRESHOLDS = (80, 100)

#: While the provider keeps refusing the bot's account, its alert is repeated at most this often (seconds).
PROVIDER_REPEAT = 6 * 3600.0

#: Sends ``text`` to the channel ``channel_id``, pinging nobody; raises when Discord refuses.
Post = Callable[[int, str], Awaitable[None]]

#: A server's locale (``guild.preferred_locale``'s value) by its id, or None when it is not known.
LocaleOf = Callable[[int], str | None]


@dataclass(frozen=True, slots=True)
class _Texts:
    """What a budget's alerts say (message ids, whole sentences): at 80%, at 100%, and at a refusal below 100%."""

    warning: str
    reached: str
    refused: str


@dataclass(frozen=True, slots=True)
class _Period:
    """One of the server budgets alerts watch: how its keys, usage and reset time are found, and its texts."""

    setting: str
    texts: _Texts
    key_part: Callable[[float], str]
    usage: Callable[[Store, int], Awaitable[int]]
    resets_at: Callable[[float], float]

    def key(self, threshold: int, now: float) -> str:
        return f"{self.setting}:{threshold}:{self.key_part(now)}"


_DAILY = _Period(
    "guild_daily",
    _Texts(
        N_("⚠️ This server has used {used} of its {limit} images today ({percent}%). The daily count resets {resets}."),
        N_(
            "🛑 This server has used {used} of its {limit} images today ({percent}%): requests that do not fit "
            "are refused until the daily count resets {resets}. "
            "Admins can change the limit with `/limits set guild_daily`."
        ),
        N_(
            "🛑 This server has used {used} of its {limit} images today ({percent}%) and refused a request for "
            "{refused} more: requests that do not fit are refused until the daily count resets {resets}. "
            "Admins can change the limit with `/limits set guild_daily`."
        ),
    ),
    utc_day,
    guild_usage_today,
    next_utc_midnight,
)
_MONTHLY = _Period(
    "guild_monthly",
    _Texts(
        N_(
            "⚠️ This server has used {used} of its {limit} images this month ({percent}%). "
            "The monthly count resets {resets}."
        ),
        N_(
            "🛑 This server has used {used} of its {limit} images this month ({percent}%): requests that do not "
            "fit are refused until the monthly count resets {resets}. "
            "Admins can change the limit with `/limits set guild_monthly`."
        ),
        N_(
            "🛑 This server has used {used} of its {limit} images this month ({percent}%) and refused a request "
            "for {refused} more: requests that do not fit are refused until the monthly count resets {resets}. "
            "Admins can change the limit with `/limits set guild_monthly`."
        ),
    ),
    lambda now: utc_day(now)[:7],
    guild_usage_month,
    next_utc_month,
)
_PERIOD_OF_REFUSAL = {LimitKind.GUILD_DAILY: _DAILY, LimitKind.GUILD_MONTHLY: _MONTHLY}


class Alerts:
    """Posts a server's budget and provider alerts in its alert channel, once per event."""

    def __init__(
        self,
        store: Store,
        post: Post,
        *,
        locale_of: LocaleOf = lambda guild_id: None,
        clock: Callable[[], float] = time.time,
        provider_repeat: float = PROVIDER_REPEAT,
    ) -> None:
        self._store = store
        self._post = post
        self._locale_of = locale_of
        self._clock = clock
        self._provider_repeat = provider_repeat
        # Budget keys this process knows to be claimed for good (by anyone): a server past 80% would otherwise
        # ask the database again after every request. Keys name their day or month; forgotten each new day.
        self._claimed: set[tuple[int, str]] = set()
        self._claimed_day = ""

    async def after_reservation(self, guild_id: int, *, guild_daily: int | None, guild_monthly: int | None) -> None:
        """After a request of the server was accepted under these limits (``None``: no limit): tell the server
        when it has now reached 80% or 100% of a budget, each once per day (daily) or month (monthly).

        Reaching both at once tells only 100%, and claims 80% too, so it is not told afterwards.
        """
        budgets = [(period, limit) for period, limit in ((_DAILY, guild_daily), (_MONTHLY, guild_monthly)) if limit]
        if not _is_server(guild_id) or not budgets:
            return

        async def tell(channel_id: int) -> None:
            now = self._clock()
            for period, limit in budgets:
                used = await period.usage(self._store, guild_id)
                reached = [threshold for threshold in THRESHOLDS if used * 100 >= limit * threshold]
                if reached and await self._claim_up_to(guild_id, period, reached[-1], now):
                    text = _budget_text(
                        period, reached[-1], used, limit, period.resets_at(now), locale=self._locale(guild_id)
                    )
                    await self._send(guild_id, channel_id, text)

        await self._if_channel(guild_id, "the budget alerts", tell)

    async def quota_refused(self, guild_id: int, refusal: QuotaRefusal) -> None:
        """After the server's daily or monthly budget refused a request: the server is out of images even below
        100% (4 asked at 98 of 100), so tell it as 100% of that period, if not told yet. Other refusals are a
        member's own limits: nothing to tell the admins."""
        period = _PERIOD_OF_REFUSAL.get(refusal.kind)
        if not _is_server(guild_id) or period is None:
            return

        async def tell(channel_id: int) -> None:
            now = self._clock()
            if await self._claim_up_to(guild_id, period, THRESHOLDS[-1], now):
                resets_at = refusal.resets_at if refusal.resets_at is not None else period.resets_at(now)
                text = _budget_text(
                    period,
                    THRESHOLDS[-1],
                    int(refusal.current),
                    int(refusal.limit),
                    resets_at,
                    locale=self._locale(guild_id),
                    refused=refusal.requested,
                )
                await self._send(guild_id, channel_id, text)

        await self._if_channel(guild_id, "the budget alerts", tell)

    async def provider_refused(self, guild_id: int, error: AccountError) -> None:
        """After the provider refused a job of the server for the bot's account (credentials, balance): tell the
        server that its requests fail until the operator acts, at most once per :data:`PROVIDER_REPEAT`.

        The text says which kind of refusal it was and nothing the provider sent: no key, no body.
        """
        if not _is_server(guild_id):
            return
        cause = _account_cause(error)

        async def tell(channel_id: int) -> None:
            if await claim_alert(self._store, guild_id, f"provider:{cause}", again_after=self._provider_repeat):
                again = self._clock() + self._provider_repeat
                text = _provider_text(self._locale(guild_id), cause, error.status, again)
                await self._send(guild_id, channel_id, text)

        await self._if_channel(guild_id, "the provider alert", tell)

    def _locale(self, guild_id: int) -> str | None:
        """The server's locale for its alerts; English when it cannot be told (never breaks an alert)."""
        try:
            return self._locale_of(guild_id)
        except Exception:
            log.exception("guild %d: could not tell the server's locale; the alert is in English", guild_id)
            return None

    async def _if_channel(self, guild_id: int, what: str, tell: Callable[[int], Awaitable[None]]) -> None:
        """``tell(channel_id)`` if the server has an alert channel. Never raises: an alert must not break the
        request or the runner that triggered it (what failed is logged)."""
        try:
            channel_id = await alert_channel(self._store, guild_id)
            if channel_id is not None:
                await tell(channel_id)
        except Exception as error:
            _log_failure(guild_id, what, error)

    async def _claim_up_to(self, guild_id: int, period: _Period, highest: int, now: float) -> bool:
        """Claim every threshold of ``period`` up to ``highest``; whether this call won ``highest``'s key."""
        day = utc_day(now)
        if day != self._claimed_day:
            self._claimed.clear()
            self._claimed_day = day
        won = False
        for threshold in THRESHOLDS:
            if threshold > highest:
                break
            key = period.key(threshold, now)
            if (guild_id, key) in self._claimed:
                won = False
                continue
            won = await claim_alert(self._store, guild_id, key)
            self._claimed.add((guild_id, key))
        return won

    async def _send(self, guild_id: int, channel_id: int, text: str) -> None:
        try:
            await self._post(channel_id, text)
        except Exception as error:
            log.warning(
                "guild %d: could not post an alert in channel %d (%s): %s",
                guild_id,
                channel_id,
                type(error).__name__,
                error,
            )
            return
        log.info("guild %d: alert posted in channel %d: %s", guild_id, channel_id, text)


def _is_server(guild_id: int) -> bool:
    """Direct messages are counted as server 0: nobody administers them, so nobody is alerted."""
    return guild_id != 0


def _log_failure(guild_id: int, what: str, error: Exception) -> None:
    if isinstance(error, StoreBusyError):  # the database is busy or away: the request itself says so
        log.warning("guild %d: could not check %s: %s", guild_id, what, error)
    else:
        log.error("guild %d: checking %s failed", guild_id, what, exc_info=error)


def _budget_text(
    period: _Period,
    threshold: int,
    used: int,
    limit: int,
    resets_at: float,
    *,
    locale: str | None,
    refused: int | None = None,
) -> str:
    if threshold < THRESHOLDS[-1]:
        message = period.texts.warning
    else:
        message = period.texts.reached if refused is None else period.texts.refused
    resets = f"<t:{int(resets_at)}:R>"
    return tr(locale, message, used=used, limit=limit, percent=used * 100 // limit, resets=resets, refused=refused)


def _account_cause(error: AccountError) -> str:
    if isinstance(error, CredentialsError):
        return "credentials"
    if isinstance(error, BalanceError):
        return "balance"
    return "account"


#: What the provider alert says for each kind of refusal; ``{http}`` is "HTTP 401: " or nothing, ``{again}``
#: a Discord timestamp (each reader sees it in their own language and time zone).
_ACCOUNT_TROUBLE = {
    "credentials": N_(
        "⚠️ The image provider refused the bot's account ({http}its API key was not accepted): the bot's operator "
        "needs to check the provider API key in the bot's configuration. Requests for images fail until then. "
        "If this lasts, this alert is repeated {again} at the earliest."
    ),
    "balance": N_(
        "⚠️ The image provider refused the bot's account ({http}the account has no balance or quota left): the "
        "bot's operator needs to check the provider account's balance or plan. Requests for images fail until "
        "then. If this lasts, this alert is repeated {again} at the earliest."
    ),
    "account": N_(
        "⚠️ The image provider refused the bot's account ({http}the account needs attention): the bot's operator "
        "needs to check the provider account; the bot's log says why. Requests for images fail until then. "
        "If this lasts, this alert is repeated {again} at the earliest."
    ),
}


def _provider_text(locale: str | None, cause: str, status: int | None, again: float) -> str:
    http = f"HTTP {status}: " if status is not None else ""
    when = f"<t:{int(again)}:R>"
    return tr(locale, _ACCOUNT_TROUBLE[cause], http=http, again=when)
