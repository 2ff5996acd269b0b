"""Run a real discord.py client against the emulator, and fail tests on errors the bot swallowed.

``run_bot`` takes any factory that returns a ``discord.Client`` (or ``commands.Bot``), logs it in with the
emulator's token, connects it, waits event-driven until ``on_ready`` and until its command tree is synced,
and closes it on exit. ``ErrorGuard`` turns every ERROR log record (discord.py logs exceptions in event
handlers and commands instead of raising them) and every task that died with an unretrieved exception
into a test failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import discord

if TYPE_CHECKING:
    from .emulator import DiscordEmulator

__all__ = ["ErrorGuard", "expected_commands", "run_bot"]

log = logging.getLogger(__name__)
ClientT = TypeVar("ClientT", bound=discord.Client)
BotFactory = Callable[[], "ClientT | Awaitable[ClientT] | AbstractAsyncContextManager[ClientT]"]


class _Capture(logging.Handler):
    def __init__(self, guard: ErrorGuard) -> None:
        super().__init__(logging.ERROR)
        self.guard = guard

    def emit(self, record: logging.LogRecord) -> None:
        self.guard._add(record)


def _describe(record: logging.LogRecord) -> str:
    text = f"{record.levelname} {record.name}: {record.getMessage()}"
    if record.exc_info and record.exc_info[1] is not None:
        text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
    return text


class ErrorGuard:
    """Collects what a test would otherwise never notice.

    - every log record at ERROR or above, from any logger (discord.py's ``Ignoring exception in ...``,
      the bot's own ``log.exception``, aiohttp's ``Error handling request`` in the emulator);
    - every asyncio task created while installed that finished with an exception nobody retrieved;
    - every error reported to the event loop's exception handler.

    A test that provokes an error on purpose claims it with :meth:`wait_for_error` or :meth:`expect`;
    :meth:`check` (run by the fixture at teardown) fails on whatever is left.
    """

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.expected: list[logging.LogRecord] = []
        self.loop_errors: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._handler = _Capture(self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._prev_factory: Any = None
        self._prev_handler: Any = None
        self._changed = asyncio.Event()

    def install(self) -> ErrorGuard:
        loop = self._loop = asyncio.get_running_loop()
        logging.getLogger().addHandler(self._handler)
        self._prev_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_error)
        self._prev_factory = loop.get_task_factory()
        loop.set_task_factory(self._task_factory)
        return self

    def uninstall(self) -> None:
        logging.getLogger().removeHandler(self._handler)
        if self._loop is not None:
            self._loop.set_task_factory(self._prev_factory)
            self._loop.set_exception_handler(self._prev_handler)
            self._loop = None

    def _task_factory(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        if self._prev_factory is not None:
            task = self._prev_factory(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        self._tasks.append(task)
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task._log_traceback:  # an exception nobody has retrieved (yet)
            self._changed.set()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(context)
        self._changed.set()

    def _add(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    # -- claiming expected errors -----------------------------------------------------------------
    @staticmethod
    def _matches(record: logging.LogRecord, match: str | re.Pattern[str] | Callable[[logging.LogRecord], bool]) -> bool:
        if callable(match) and not isinstance(match, re.Pattern):
            return match(record)
        text = _describe(record)
        return bool(re.search(match, text)) if isinstance(match, re.Pattern) else match in text

    def expect(self, match: str | re.Pattern[str] | Callable[[logging.LogRecord], bool]) -> logging.LogRecord | None:
        """Claim (remove) the first captured record matching ``match`` (substring of message + traceback)."""
        for record in self.records:
            if self._matches(record, match):
                self.records.remove(record)
                self.expected.append(record)
                return record
        return None

    async def wait_for_error(
        self, match: str | re.Pattern[str] | Callable[[logging.LogRecord], bool], timeout: float = 5.0
    ) -> logging.LogRecord:
        """Until an ERROR record matching ``match`` is logged; claims it so it does not fail the test."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                record = self.expect(match)
                if record is not None:
                    return record
                await self._changed.wait()

    # -- verdict ----------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        found = [_describe(r) for r in self.records]
        for task in self._tasks:
            if task.done() and not task.cancelled() and task._log_traceback:
                exc = task.exception()  # retrieving it also silences asyncio's "never retrieved" message
                assert exc is not None
                found.append(f"task {task.get_name()!r} died: " + "".join(traceback.format_exception(exc)).rstrip())
        for context in self.loop_errors:
            exc = context.get("exception")
            detail = "".join(traceback.format_exception(exc)).rstrip() if exc else ""
            found.append(f"event loop error: {context.get('message')}\n{detail}".rstrip())
        self._tasks = [t for t in self._tasks if not t.done()]
        return found

    def check(self) -> None:
        """Raise AssertionError listing every unclaimed error."""
        found = self.problems()
        self.records.clear()
        self.loop_errors.clear()
        if found:
            raise AssertionError("errors the bot logged or tasks that died:\n\n" + "\n\n".join(found))


def expected_commands(client: discord.Client, emu: DiscordEmulator) -> set[tuple[int | None, str, int]]:
    """``(guild id or None, name, type)`` of every command in the client's tree, for the emulator's guilds."""
    tree = getattr(client, "tree", None)
    if not isinstance(tree, discord.app_commands.CommandTree):
        return set()

    def kind(cmd: Any) -> int:  # slash commands and groups have no .type; context menus do
        return int(getattr(cmd, "type", discord.AppCommandType.chat_input).value)

    wanted = {(None, c.name, kind(c)) for c in tree.get_commands()}
    for guild_id in emu.guilds:
        wanted |= {(guild_id, c.name, kind(c)) for c in tree.get_commands(guild=discord.Object(guild_id))}
    return wanted


async def _make(factory: Callable[[], Any], stack: contextlib.AsyncExitStack) -> discord.Client:
    made = factory()
    if inspect.isawaitable(made):
        made = await made
    if not isinstance(made, discord.Client) and hasattr(made, "__aenter__"):
        made = await stack.enter_async_context(made)
    if not isinstance(made, discord.Client):
        raise TypeError(f"the bot factory returned {made!r}, not a discord.Client")
    return made


@asynccontextmanager
async def run_bot(
    emu: DiscordEmulator,
    make_bot: Callable[[], Any],
    *,
    token: str | None = None,
    timeout: float = 5.0,
    wait_synced: bool = True,
) -> AsyncIterator[Any]:
    """Start a discord.py client against ``emu`` and yield it once it is online.

    ``make_bot`` returns a client, an awaitable of one, or an async context manager yielding one (for a
    composition root that also opens sessions and databases). discord.py must already point at the
    emulator (``point_discord_at``, done by the ``discord_emulator`` fixture or the bot's own settings).
    "Online" means ``on_ready`` fired and every command of ``client.tree`` is synced (unless
    ``wait_synced=False``); the time it took is appended to ``emu.online_times``.
    Raises what the bot raised while starting (``LoginFailure``, ``PrivilegedIntentsRequired``...).
    """
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        bot = await _make(make_bot, stack)
        stack.push_async_callback(bot.close)
        await asyncio.wait_for(bot.login(token if token is not None else emu.token), timeout)
        connect = asyncio.create_task(bot.connect(reconnect=True), name="fakediscord: bot.connect()")
        ready = asyncio.create_task(bot.wait_until_ready(), name="fakediscord: wait_until_ready()")
        try:
            done, _ = await asyncio.wait({connect, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if ready not in done:
                if connect in done:
                    connect.result()  # raises why the bot could not connect
                    raise RuntimeError("the bot stopped before it became ready")
                raise TimeoutError(f"the bot was not ready within {timeout} s (identifies: {len(emu.identifies)})")
            if wait_synced:
                await emu.wait_commands_synced(expected_commands(bot, emu), timeout)
            online = time.perf_counter() - started
            emu.online_times.append(online)
            log.info("bot online in %.3f s", online)
            yield bot
        finally:
            ready.cancel()
            await bot.close()
            try:
                await asyncio.wait_for(connect, timeout)
            except (discord.ConnectionClosed, discord.PrivilegedIntentsRequired):
                if not connect.done():
                    raise
            finally:
                if not connect.done():
                    connect.cancel()
