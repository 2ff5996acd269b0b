"""``fluxbot check`` and ``fluxbot invite``: what can be verified without starting the bot or spending anything.

Each check is one REST call or one local operation that bills nothing and changes nothing a member could
see: the Discord token (``GET /users/@me`` and ``GET /users/@me/guilds``), the database (open, migrate, one
write that is undone in the same transaction) and the Flux key (a lookup of a task id nobody ever had).
The gateway is never opened and nothing is ever submitted. A failure names the variable to fix; no secret
is ever part of a line.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.db import SqliteStore, Store
from bot.db.schema import MigrationError
from bot.db.store import StoreBusyError, StoreConnectError
from bot.flux import (
    AccountError,
    BadRequestError,
    BalanceError,
    CredentialsError,
    FluxAPIError,
    FluxConnectionError,
    FluxTimeoutError,
    RateLimitedError,
    create_flux_client,
)
from bot.flux.http import send_json
from bot.settings import Settings

__all__ = [
    "INVITE_PERMISSIONS",
    "CheckFailed",
    "Outcome",
    "application_id",
    "check_database",
    "check_discord",
    "check_flux",
    "invite_url",
    "package_version",
]

#: View Channel, Send Messages, Embed Links, Attach Files, Read Message History: all the bot needs.
INVITE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16)
INVITE_BASE = "https://discord.com/oauth2/authorize"

#: Discord's REST calls of a check: bounded, and never more than this many bytes read.
DISCORD_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=10)
DISCORD_MAX_BYTES = 1024 * 1024
#: ``GET /users/@me/guilds`` answers at most this many servers per page.
GUILDS_PAGE = 200
MAX_GUILD_PAGES = 100
#: How long the database check waits for a running bot's write transaction before it gives up.
DATABASE_BUSY_WINDOW = 5.0
CHECK_STATE_KEY = "fluxbot_check"


def package_version() -> str:
    """The installed fluxbot's version (``X.Y.Z``)."""
    try:
        return version("fluxbot")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


@dataclass(frozen=True)
class Outcome:
    """One check's line: ``name: ok — detail``, ``name: FAILED — problem`` or, for what cannot be checked
    (not a failure), ``name: not verified — why``."""

    name: str
    ok: bool
    text: str
    verified: bool = True

    def line(self) -> str:
        verdict = "FAILED" if not self.ok else "ok" if self.verified else "not verified"
        return f"{self.name}: {verdict} — {self.text}"


class CheckFailed(Exception):
    """What is wrong, in one line naming the variable to fix."""


# -- Discord -------------------------------------------------------------------------------------------------


def _discord_error(status: int, body: Any, headers: Mapping[str, str]) -> FluxAPIError:
    message = body.get("message") if isinstance(body, dict) else None
    return FluxAPIError(" ".join(str(message).split())[:200] if message else "no message", status=status)


async def discord_get(
    session: aiohttp.ClientSession, settings: Settings, path: str, query: Mapping[str, str] | None = None
) -> Any:
    """The JSON answer of ``GET {DISCORD_API_BASE}{path}`` as the bot; :class:`CheckFailed` otherwise."""
    base = settings.discord_api_base.rstrip("/")
    url = f"{base}{path}" + (f"?{urlencode(query)}" if query else "")
    headers = {
        "Authorization": f"Bot {settings.discord_token.get_secret_value()}",
        "User-Agent": f"DiscordBot (https://github.com/fluxbot, {package_version()})",
    }
    try:
        return await send_json(
            session,
            "GET",
            url,
            headers=headers,
            client_timeout=DISCORD_TIMEOUT,
            parse_error=_discord_error,
            max_bytes=DISCORD_MAX_BYTES,
        )
    except ValueError:  # aiohttp refuses a header value with a line break in it
        raise CheckFailed("DISCORD_TOKEN: not a usable token (it contains a line break or control character)") from None
    except (FluxConnectionError, FluxTimeoutError) as exc:
        raise CheckFailed(f"DISCORD_API_BASE: Discord could not be reached at {base} ({exc.detail})") from None
    except FluxAPIError as exc:
        if exc.status == 401:
            raise CheckFailed(
                "DISCORD_TOKEN: Discord refused this token; copy the bot token again from the developer portal"
            ) from None
        if exc.status == 429:
            raise CheckFailed(
                "DISCORD_TOKEN: not verified, Discord is rate limiting this bot; try again in a minute"
            ) from None
        raise CheckFailed(f"DISCORD_API_BASE: GET {path} at {base} answered HTTP {exc.status}: {exc.detail}") from None


async def application_id(session: aiohttp.ClientSession, settings: Settings) -> str:
    """The bot's application id, from ``GET /applications/@me`` (the id OAuth2 invites use)."""
    app = await discord_get(session, settings, "/applications/@me")
    app_id = app.get("id") if isinstance(app, dict) else None
    if not isinstance(app_id, str) or not app_id.isdigit():
        raise CheckFailed("DISCORD_API_BASE: GET /applications/@me answered without an application id")
    return app_id


def invite_url(app_id: str) -> str:
    """The OAuth2 link that adds the bot, with its slash commands and exactly the permissions it needs."""
    return f"{INVITE_BASE}?client_id={app_id}&scope=bot+applications.commands&permissions={INVITE_PERMISSIONS}"


async def _count_guilds(session: aiohttp.ClientSession, settings: Settings) -> int:
    count, after = 0, None
    for _ in range(MAX_GUILD_PAGES):
        query = {"limit": str(GUILDS_PAGE)} | ({"after": after} if after else {})
        page = await discord_get(session, settings, "/users/@me/guilds", query)
        if not isinstance(page, list) or not all(isinstance(g, dict) for g in page):
            raise CheckFailed("DISCORD_API_BASE: GET /users/@me/guilds did not answer a list of servers")
        count += len(page)
        if len(page) < GUILDS_PAGE:
            break
        after = str(page[-1].get("id", ""))
    return count


async def check_discord(session: aiohttp.ClientSession, settings: Settings) -> Outcome:
    """The token works: who the bot is, and how many servers it is in."""
    try:
        me = await discord_get(session, settings, "/users/@me")
        if not isinstance(me, dict) or not isinstance(me.get("id"), str):
            raise CheckFailed("DISCORD_API_BASE: GET /users/@me did not answer a user")
        servers = await _count_guilds(session, settings)
    except CheckFailed as exc:
        return Outcome("discord", False, str(exc))
    name = str(me.get("username", "?"))
    if me.get("discriminator") not in (None, "0", "0000"):
        name = f"{name}#{me['discriminator']}"
    plural = "server" if servers == 1 else "servers"
    return Outcome("discord", True, f"logged in as {name} (id {me['id']}), in {servers} {plural}")


# -- the database --------------------------------------------------------------------------------------------


async def check_database(settings: Settings) -> Outcome:
    """The database opens, is migrated, and takes a write (undone in the same transaction).

    A SQLite file or a PostgreSQL database, whichever ``DATABASE_URL`` names; a PostgreSQL URL is shown with
    its password hidden.
    """
    if settings.uses_postgresql:
        return await _check_postgresql(settings)
    try:
        path = settings.database_path
    except ValueError as exc:
        return Outcome("database", False, f"DATABASE_URL: {exc}")
    existed = path.exists()
    try:
        store = await SqliteStore.open(path, busy_window=DATABASE_BUSY_WINDOW)
    except (MigrationError, sqlite3.Error, OSError, ValueError) as exc:
        return Outcome("database", False, f"DATABASE_URL: cannot open {path}: {exc}")
    try:
        await _write_and_undo(store)
    except (StoreBusyError, sqlite3.Error) as exc:
        return Outcome("database", False, f"DATABASE_URL: {path} is not writable: {exc}")
    finally:
        await store.close()
    created = "created, " if not existed else ""
    return Outcome("database", True, f"{path} ({created}schema version {store.schema_version}, writable)")


async def _check_postgresql(settings: Settings) -> Outcome:
    shown = settings.database_shown
    try:
        from bot.db.postgres import PostgresStore  # noqa: PLC0415 - asyncpg is optional: fluxbot[postgres]
    except ImportError:
        return Outcome(
            "database", False, f"DATABASE_URL: {shown} needs the PostgreSQL driver: pip install 'fluxbot[postgres]'"
        )
    try:
        store = await PostgresStore.open(
            settings.database_url.get_secret_value(), max_size=1, busy_window=DATABASE_BUSY_WINDOW
        )
    except (MigrationError, StoreBusyError, StoreConnectError) as exc:  # their texts never hold the password
        return Outcome("database", False, f"DATABASE_URL: cannot open {shown}: {exc}")
    try:
        await _write_and_undo(store)
    except Exception as exc:  # any refusal (a read-only user, a full disk) is the answer
        return Outcome("database", False, f"DATABASE_URL: {shown} is not writable: {exc}")
    finally:
        await store.close()
    return Outcome("database", True, f"{shown} (PostgreSQL, schema version {store.schema_version}, writable)")


async def _write_and_undo(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO bot_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (CHECK_STATE_KEY, str(time.time())),
        )
        await tx.execute("DELETE FROM bot_state WHERE key = ?", (CHECK_STATE_KEY,))


# -- the Flux provider ---------------------------------------------------------------------------------------


async def check_flux(session: aiohttp.ClientSession, settings: Settings) -> Outcome:
    """The Flux key, with a lookup of a made-up task id: it bills nothing and starts nothing."""
    provider, base = settings.flux_provider, settings.api_base
    where = f"{provider.value} at {base}"
    try:
        if not await create_flux_client(settings, session).probe_key():
            return Outcome(
                "flux",
                True,
                f"an OpenAI-style relay has no request that bills nothing, so FLUX_API_KEY and FLUX_API_BASE "
                f"({base}) are first tried by the first /imagine",
                verified=False,
            )
    except ValueError:  # aiohttp refuses a header value with a line break in it
        return Outcome("flux", False, "FLUX_API_KEY: not a usable key (it contains a line break or control character)")
    except (FluxConnectionError, FluxTimeoutError) as exc:
        return Outcome("flux", False, f"FLUX_API_BASE: {where} could not be reached ({exc.detail})")
    except FluxAPIError as exc:
        problem = _flux_problem(exc, where, base)
        if problem is not None:
            return Outcome("flux", False, problem)
    return Outcome("flux", True, f"{where} accepted FLUX_API_KEY (a lookup of a made-up task; nothing billed)")


def _flux_problem(exc: FluxAPIError, where: str, base: str) -> str | None:  # noqa: PLR0911 - a decision table
    """What the provider's error answer to the lookup says is wrong; None when it says the key is good."""
    said = _said(exc)
    if isinstance(exc, CredentialsError):
        return f"FLUX_API_KEY: {where} refused this key ({said})"
    if isinstance(exc, BalanceError):
        return f"FLUX_API_KEY: {where} accepted the key, but its balance is used up ({said})"
    if isinstance(exc, AccountError):
        if exc.code == "no_api":
            return f"FLUX_API_BASE: {base} has no Flux task API ({said})"
        return f"FLUX_API_KEY: {where} has a problem with this key's account ({said})"
    if isinstance(exc, RateLimitedError):
        return f"FLUX_API_KEY: not verified, {where} is rate limiting ({said}); try again in a minute"
    if isinstance(exc, BadRequestError) and exc.status in (400, 404):
        return None  # the made-up task is unknown: the service took the key, then looked the task up
    return f"FLUX_API_BASE: {where} answered the key check with {said}"


def _said(exc: FluxAPIError) -> str:
    facts = [f"HTTP {exc.status}"] if exc.status is not None else []
    if exc.code:
        facts.append(exc.code)
    return ", ".join(facts) or exc.detail
