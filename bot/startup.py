"""Starting the bot against a network that may not be there yet.

Logging in (REST) and connecting to the gateway are retried, with capped exponential backoff and jitter,
on every failure that can pass by itself: DNS errors, refused or dropped connections, timeouts, 5xx
answers. A login that hangs is bounded by :data:`LOGIN_TIMEOUT`. Only what waiting cannot fix ends the
process: a refused token (:class:`discord.LoginFailure`) or a missing privileged intent
(:class:`discord.PrivilegedIntentsRequired`), raised to the caller.

discord.py's own ``Client.connect(reconnect=True)`` cannot retry a *first* connection: its retry path reads
``self.ws.sequence``, and ``self.ws`` is still ``None`` until a websocket has once been opened, so an
unreachable gateway ends in ``AttributeError: 'NoneType' object has no attribute 'sequence'``.
:func:`connect_with_retries` recognises exactly that case (no websocket yet) and retries the connection itself;
once a websocket exists discord.py's own reconnection (with RESUME) takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import discord
from discord.utils import MISSING

from bot.flux import RetryPolicy
from bot.instance import InstanceLocked, single_instance
from bot.settings import Settings

__all__ = [
    "LOGIN_TIMEOUT",
    "Backoff",
    "ReconnectLogFilter",
    "connect_with_retries",
    "describe_failure",
    "hold_database",
    "is_transient",
    "log_in_with_retries",
    "quiet_reconnects",
    "retry_backoff",
]

log = logging.getLogger("bot.startup")

#: How long one login (``GET /users/@me``, the application, the command sync) may take before it is retried.
LOGIN_TIMEOUT = 30.0
#: Backoff between attempts: from about this many seconds, doubling, up to the cap.
RETRY_INITIAL_DELAY = 1.0
RETRY_MAX_DELAY = 60.0
#: Exit status when another process holds the database (as for any configuration the bot cannot start with).
EXIT_LOCKED = 2


def _seconds_from_env(name: str, default: float) -> float:
    """A test's shorter timing (``FLUXBOT_LOGIN_TIMEOUT``, ``FLUXBOT_RETRY_MAX_DELAY``); not for operators."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass
class Backoff:
    """Successive waits of the bot's one backoff rule (:class:`bot.flux.RetryPolicy`), counting attempts:
    doubling from ``initial`` up to ``cap``, each between half and all of min(cap, initial·2ⁿ)."""

    initial: float = RETRY_INITIAL_DELAY
    cap: float = RETRY_MAX_DELAY
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next(self) -> float:
        policy = RetryPolicy(initial_delay=self.initial, max_delay=self.cap, jitter=0.5, uniform=self.rng.random)
        delay = policy.delay(self.attempts)
        assert delay is not None  # without a Retry-After there is always a wait
        self.attempts += 1
        return delay


def retry_backoff() -> Backoff:
    """The backoff of the retries of logging in and connecting (capped at ``FLUXBOT_RETRY_MAX_DELAY`` in tests)."""
    return Backoff(cap=_seconds_from_env("FLUXBOT_RETRY_MAX_DELAY", RETRY_MAX_DELAY))


def is_transient(exc: BaseException) -> bool:
    """Whether waiting can fix this failure to log in or connect (network, timeouts, 5xx)."""
    if isinstance(exc, discord.LoginFailure | discord.PrivilegedIntentsRequired):
        return False
    if isinstance(exc, discord.HTTPException):
        return exc.status >= 500 or exc.status in (408, 429)
    return isinstance(exc, OSError | aiohttp.ClientError | TimeoutError | discord.GatewayNotFound)


def describe_failure(exc: BaseException, timeout: float | None = None) -> str:
    """What failed, in a few words for a log line (never a traceback)."""
    if isinstance(exc, TimeoutError) and timeout is not None:
        return f"no answer within {timeout:g} s"
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _has_websocket(bot: discord.Client) -> bool:
    """Whether a gateway connection was ever opened (discord.py's ``ws`` stays None until then)."""
    ws: object = bot.ws
    return ws is not None


async def _pause(delay: float, stopping: asyncio.Event) -> bool:
    """Wait ``delay`` seconds, or less if asked to stop; True when asked to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay)
    return stopping.is_set()


async def _forget_http_session(bot: discord.Client) -> None:
    """Each login opens a new HTTP session on discord.py's connector; close the failed one (and its connector)
    so that nothing is left unclosed, and let the next login make a fresh connector."""
    await bot.http.close()
    bot.http.connector = MISSING


async def log_in_with_retries(
    bot: discord.Client,
    token: str,
    stopping: asyncio.Event,
    *,
    login_timeout: float | None = None,
    backoff: Backoff | None = None,
) -> bool:
    """Log in (which runs ``setup_hook``), retrying transient failures; False when asked to stop meanwhile."""
    timeout = login_timeout if login_timeout is not None else _seconds_from_env("FLUXBOT_LOGIN_TIMEOUT", LOGIN_TIMEOUT)
    backoff = backoff or retry_backoff()
    while not stopping.is_set():
        try:
            await asyncio.wait_for(bot.login(token), timeout)
            return True
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff.next()
            log.warning(
                "logging in to Discord failed (attempt %d: %s); retrying in %.1f s",
                backoff.attempts,
                describe_failure(exc, timeout),
                delay,
            )
        await _forget_http_session(bot)
        if await _pause(delay, stopping):
            break
    return False


async def connect_with_retries(bot: discord.Client, stopping: asyncio.Event, *, backoff: Backoff | None = None) -> None:
    """Run the gateway connection until the bot is closed, retrying a first connection that fails."""
    backoff = backoff or retry_backoff()
    while not bot.is_closed() and not stopping.is_set():
        try:
            await bot.connect(reconnect=True)
            return
        except AttributeError as exc:
            # discord.py's retry of a connection that never opened (see the module's docstring)
            cause = exc.__context__
            if _has_websocket(bot) or cause is None or not is_transient(cause):
                raise
            failure = cause
        except Exception as exc:
            if _has_websocket(bot) or not is_transient(exc):
                raise
            failure = exc
        if bot.is_closed() or stopping.is_set():
            return
        delay = backoff.next()
        log.warning(
            "connecting to the Discord gateway failed (attempt %d: %s); retrying in %.1f s",
            backoff.attempts,
            describe_failure(failure),
            delay,
        )
        if await _pause(delay, stopping):
            return


class ReconnectLogFilter(logging.Filter):
    """discord.py logs each gateway reconnection with ``log.exception`` (a whole traceback, at ERROR).

    Once the bot has had a websocket, such a record becomes one WARNING line naming what failed. Before that
    (the first connection), :func:`connect_with_retries` logs the attempt itself, so the record is dropped.
    A sharded client's shards (logger ``discord.shard``) reconnect only after a first connection (the bot's
    ``launch_shard`` retries that one itself): their records always become a WARNING naming the shard.
    """

    def __init__(self, bot: discord.Client) -> None:
        super().__init__()
        self.bot = bot

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        args = record.args if isinstance(record.args, tuple) else ()
        of_shard = message.startswith("Attempting a reconnect for shard ID") and len(args) == 2
        if not (of_shard or message.startswith("Attempting a reconnect in")):
            return True
        if not of_shard and not _has_websocket(self.bot):
            return False
        failure = record.exc_info[1] if record.exc_info else None
        what = describe_failure(failure) if failure is not None else "connection lost"
        if of_shard:
            record.msg = "the Discord gateway connection failed (shard %s, %s); reconnecting in %.1f s"
            record.args = (args[0], what, args[1])
        else:
            record.msg = "the Discord gateway connection failed (%s); reconnecting in %.1f s"
            record.args = (what, *args)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def quiet_reconnects(bot: discord.Client) -> Iterator[None]:
    """Install :class:`ReconnectLogFilter` on discord.py's client and shard loggers for the block."""
    loggers = [logging.getLogger("discord.client"), logging.getLogger("discord.shard")]
    log_filter = ReconnectLogFilter(bot)
    for logger in loggers:
        logger.addFilter(log_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(log_filter)


@contextlib.contextmanager
def hold_database(settings: Settings) -> Iterator[None]:
    """Hold the database's single-instance lock for the block; if another process holds it, say so in one line
    on standard error and exit 2, before the database is opened.

    Only a SQLite file has one: it serves one process. Several processes sharing one PostgreSQL database is what
    that backend is for, so on PostgreSQL the block runs without any lock.
    """
    if settings.uses_postgresql:
        yield
        return
    try:
        with single_instance(settings.database_path):
            yield
    except InstanceLocked as exc:
        print(f"fluxbot: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_LOCKED) from None
