"""Running the installed ``fluxbot`` console script as a child process, against the emulators of the tests.

``async with fluxbot_process(env, cwd) as bot:`` starts it; the block always ends with the process gone
(killed if it is still running). Its output goes to files, so a chatty bot can never block on a full pipe,
and is read back with :meth:`FluxbotProcess.stderr` and :meth:`FluxbotProcess.stdout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.fakediscord import DiscordEmulator

__all__ = ["FLUXBOT", "SYNCED_COMMANDS", "FluxbotProcess", "fluxbot_process"]

#: The console script installed next to this interpreter (``[project.scripts]`` in pyproject.toml).
FLUXBOT = Path(sys.executable).with_name("fluxbot")
#: ``(guild id or None, name, type)`` of the commands fluxbot syncs: /imagine, /edit and "Edit image".
SYNCED_COMMANDS = {(None, "imagine", 1), (None, "edit", 1), (None, "Edit image", 3)}


@dataclass
class FluxbotProcess:
    process: asyncio.subprocess.Process
    output: Path  # the directory holding its stdout and stderr files
    started_at: float

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait_online(self, discord: DiscordEmulator, timeout: float = 10.0) -> float:
        """Until the bot identified, got READY and its guilds, and synced its commands; seconds since start.

        Fails at once, with the bot's standard error, if the process exits first.
        """
        online = asyncio.ensure_future(self._online(discord, timeout))
        exited = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait({online, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not online.done():
                raise AssertionError(
                    f"fluxbot was not online within {timeout} s (exit status {self.returncode}):\n{self.stderr()}"
                )
            return online.result()
        finally:
            online.cancel()
            exited.cancel()

    async def _online(self, discord: DiscordEmulator, timeout: float) -> float:
        await discord.wait_until(
            lambda: discord.identifies and any(s.ready and s.conn is not None for s in discord.sessions.values()),
            timeout,
            "fluxbot to identify and get READY",
        )
        await discord.wait_commands_synced(SYNCED_COMMANDS, timeout)
        return time.perf_counter() - self.started_at

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        """The exit status, once the process has ended; fails, with its output, if it has not within ``timeout``."""
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"fluxbot did not exit within {timeout} s:\n{self.stderr()}") from None

    async def kill(self) -> int:
        """SIGKILL: the process dies at once, in the middle of whatever it was doing."""
        if self.process.returncode is None:
            self.process.kill()
        return await asyncio.wait_for(self.process.wait(), 10)

    def stdout(self) -> str:
        return (self.output / "stdout").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.output / "stderr").read_text(errors="replace")


@contextlib.asynccontextmanager
async def fluxbot_process(env: Mapping[str, str], cwd: Path) -> AsyncIterator[FluxbotProcess]:
    """Start ``fluxbot`` with this environment (added to the test's own) in ``cwd``; kill it on exit."""
    output = cwd / f"fluxbot-{time.monotonic_ns()}"
    output.mkdir()
    with (output / "stdout").open("wb") as stdout, (output / "stderr").open("wb") as stderr:
        started_at = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            str(FLUXBOT),
            env={**os.environ, **env},
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    running = FluxbotProcess(process, output, started_at)
    try:
        yield running
    finally:
        await running.kill()
