"""The lives of the ``fluxbot`` process in a chaos run, and another process's hold on the database.

:class:`BotLives` starts the console script, SIGKILLs it and starts it again on the same database; it notices
a bot that exits by itself (which it must never do) and starts it again, so the run goes on and the report
can say so. :class:`WriteLock` is a second SQLite connection taking the write lock (``BEGIN IMMEDIATE``) and
sitting on it, as an operator's ``sqlite3`` shell or a backup job would.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakediscord import DiscordEmulator
from tests.fluxbot_process import SYNCED_COMMANDS, FluxbotProcess, fluxbot_process

__all__ = ["BotLives", "WriteLock"]

ONLINE_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


@dataclass
class Exit:
    """A bot that ended by itself: its exit status and the end of its log."""

    life: int
    status: int | None
    tail: str


class BotLives:
    def __init__(self, discord: DiscordEmulator, env: Mapping[str, str], cwd: Path, stack: contextlib.AsyncExitStack):
        self.discord = discord
        self.env = dict(env)
        self.cwd = cwd
        self.stack = stack
        self.processes: list[FluxbotProcess] = []
        self.online = asyncio.Event()
        self.kills = 0
        self.exits: list[Exit] = []
        self._ended: set[int] = set()  # pids whose end is accounted for: killed by us, or recorded in exits
        self._turn = asyncio.Lock()  # one start or kill at a time

    @property
    def current(self) -> FluxbotProcess:
        return self.processes[-1]

    def _running(self) -> bool:
        return bool(self.processes) and self.current.returncode is None and self.current.pid not in self._ended

    async def start(self) -> None:
        """Start a new ``fluxbot`` (unless one runs) and wait until it is connected; one that dies starting is
        recorded and started again, up to 3 times."""
        async with self._turn:
            if self._running():
                return
            for _ in range(3):
                if await self._start_once():
                    return
            raise AssertionError("fluxbot could not be started 3 times in a row:\n" + self.exits[-1].tail)

    async def _start_once(self) -> bool:
        before = set(self.discord.sessions)
        process = await self.stack.enter_async_context(fluxbot_process(self.env, self.cwd))
        self.processes.append(process)

        def connected() -> bool:
            return any(s.ready and s.conn is not None for key, s in self.discord.sessions.items() if key not in before)

        online = asyncio.ensure_future(self._online(connected))
        exited = asyncio.ensure_future(process.process.wait())
        try:
            await asyncio.wait({online, exited}, timeout=ONLINE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            online.cancel()
            exited.cancel()
        if process.returncode is None and online.done() and not online.cancelled() and online.exception() is None:
            self.online.set()
            return True
        self._record_exit(process)
        await process.kill()
        return False

    async def _online(self, connected: Callable[[], bool]) -> None:
        await self.discord.wait_until(connected, ONLINE_TIMEOUT, "a new fluxbot to connect")
        await self.discord.wait_commands_synced(SYNCED_COMMANDS, ONLINE_TIMEOUT)

    def _record_exit(self, process: FluxbotProcess) -> None:
        self._ended.add(process.pid)
        life = self.processes.index(process) + 1
        self.exits.append(Exit(life, process.returncode, _tail(process.stderr())))

    async def kill(self) -> None:
        """SIGKILL the running bot: it dies at once, in the middle of whatever it was doing."""
        async with self._turn:
            self.online.clear()
            process = self.current
            self._ended.add(process.pid)
            await process.kill()
            self.kills += 1

    async def watch(self, stop: asyncio.Event) -> None:
        """Until ``stop``: a bot that ended without being killed is recorded, and started again."""
        while not stop.is_set():
            process = self.current
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.process.wait()), 0.2)
            if process.returncode is not None and process.pid not in self._ended:
                self._record_exit(process)
                if process is self.current:
                    self.online.clear()
                    await self.start()

    async def stop(self) -> int | None:
        """SIGTERM, as a service manager stops it; its exit status (None if it had to be killed)."""
        process = self.current
        self.online.clear()
        if process.returncode is not None:
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            await process.kill()
            return None

    def stderr(self) -> list[str]:
        """The log of each life, in order."""
        return [process.stderr() for process in self.processes]


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class WriteLock:
    """Holds SQLite's write lock on ``database`` from another connection, as another process would."""

    database: Path
    held: list[float] = field(default_factory=list)  # seconds each hold lasted
    waited: list[float] = field(default_factory=list)  # seconds each took to get the lock

    async def hold(self, seconds: float) -> None:
        conn = sqlite3.connect(self.database, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            asked = time.perf_counter()
            await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
            got = time.perf_counter()
            self.waited.append(got - asked)
            try:
                await asyncio.sleep(seconds)
            finally:
                await asyncio.to_thread(conn.execute, "ROLLBACK")
                self.held.append(time.perf_counter() - got)
        finally:
            conn.close()
