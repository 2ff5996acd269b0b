"""Running the installed ``fluxbot`` console script as child processes, against the emulators of the tests.

One process::

    async with fluxbot_process(env, cwd) as bot:      # env: added to the test's own environment
        await bot.wait_online(discord)                # its shards READY, its commands synced
        bot.send_signal(signal.SIGTERM); await bot.wait_exit(5)

Several, each with its own environment (``SHARD_COUNT``/``SHARD_IDS``/``DATABASE_URL``...)::

    envs = [{**base, "SHARD_COUNT": "3", "SHARD_IDS": str(i)} for i in range(3)]
    async with fluxbot_processes(envs, cwd) as bots:  # list[FluxbotProcess], named "fluxbot-0", "fluxbot-1"...
        await wait_all_online(bots, discord)
        await bots[1].kill()                          # SIGKILL: gone at once, mid-work, never restarted
        print(logs_of(bots))                          # every process's name, pid, status and standard error

Every block ends with its processes gone (SIGKILLed if still running). Output goes to files (a chatty bot
can never block on a full pipe), one directory per process under ``cwd``, read back with
:meth:`FluxbotProcess.stderr` (the log) and :meth:`FluxbotProcess.stdout`; :meth:`FluxbotProcess.log_lines`
filters the log. A process that runs several shards identifies them one per 5 s unless the emulator allows
more at once (``discord.max_concurrency``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.settings import parse_shard_ids
from tests.fakediscord import DiscordEmulator

__all__ = [
    "FLUXBOT",
    "SYNCED_COMMANDS",
    "FluxbotProcess",
    "fluxbot_process",
    "fluxbot_processes",
    "logs_of",
    "wait_all_online",
]

#: The console script installed next to this interpreter (``[project.scripts]`` in pyproject.toml).
FLUXBOT = Path(sys.executable).with_name("fluxbot")
#: ``(guild id or None, name, type)`` of the commands fluxbot syncs: /imagine, /edit and "Edit image".
SYNCED_COMMANDS = {(None, "imagine", 1), (None, "edit", 1), (None, "Edit image", 3)}


def shards_in(env: Mapping[str, str]) -> tuple[int, ...] | None:
    """The shards a process with this environment runs: ``SHARD_IDS``, else all of ``SHARD_COUNT``; None when
    neither is set (it runs what Discord recommends)."""
    if env.get("SHARD_IDS"):
        return parse_shard_ids(env["SHARD_IDS"])
    if env.get("SHARD_COUNT"):
        return tuple(range(int(env["SHARD_COUNT"])))
    return None


@dataclass
class FluxbotProcess:
    process: asyncio.subprocess.Process
    output: Path  # the directory holding its stdout and stderr files
    started_at: float
    name: str = "fluxbot"
    #: The shards it was told to run (None: whatever Discord recommends).
    shards: tuple[int, ...] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait_online(self, discord: DiscordEmulator, timeout: float = 10.0) -> float:
        """Until the bot identified, its shards got READY and their guilds, and its commands are synced;
        seconds since start. (Without ``SHARD_IDS``/``SHARD_COUNT``: until any session is READY.)

        Fails at once, with the bot's standard error, if the process exits first.
        """
        online = asyncio.ensure_future(self._online(discord, timeout))
        exited = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait({online, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not online.done():
                raise AssertionError(
                    f"{self.name} was not online within {timeout} s (exit status {self.returncode}):\n{self.stderr()}"
                )
            return online.result()
        finally:
            online.cancel()
            exited.cancel()

    async def _online(self, discord: DiscordEmulator, timeout: float) -> float:
        if self.shards is not None:
            await discord.wait_shards(self.shards, timeout)
        else:
            await discord.wait_until(
                lambda: discord.identifies and any(s.live for s in discord.sessions.values()),
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
            raise AssertionError(f"{self.name} did not exit within {timeout} s:\n{self.stderr()}") from None

    async def kill(self) -> int:
        """SIGKILL: the process dies at once, in the middle of whatever it was doing; its exit status."""
        if self.process.returncode is None:
            self.process.kill()
        return await asyncio.wait_for(self.process.wait(), 10)

    def stdout(self) -> str:
        return (self.output / "stdout").read_text(errors="replace")

    def stderr(self) -> str:
        """Its log so far (fluxbot logs to standard error)."""
        return (self.output / "stderr").read_text(errors="replace")

    def log_lines(self, containing: str = "", level: str | None = None) -> list[str]:
        """The lines of its log that contain ``containing`` (and, given a level like ``"WARNING"``, at it)."""
        return [
            line
            for line in self.stderr().splitlines()
            if containing in line and (level is None or f" {level} " in line)
        ]


@contextlib.asynccontextmanager
async def fluxbot_process(env: Mapping[str, str], cwd: Path, *, name: str = "fluxbot") -> AsyncIterator[FluxbotProcess]:
    """Start ``fluxbot`` with this environment (added to the test's own) in ``cwd``; kill it on exit.

    ``name`` names it in failure messages and in :func:`logs_of`, and prefixes its output directory.
    """
    output = cwd / f"{name}-{time.monotonic_ns()}"
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
    running = FluxbotProcess(process, output, started_at, name=name, shards=shards_in(env))
    try:
        yield running
    finally:
        await running.kill()


@contextlib.asynccontextmanager
async def fluxbot_processes(
    envs: Sequence[Mapping[str, str]], cwd: Path, *, names: Sequence[str] | None = None
) -> AsyncIterator[list[FluxbotProcess]]:
    """Start one ``fluxbot`` per environment, all at once, named ``names`` (default ``fluxbot-0``,
    ``fluxbot-1``...); every one still running is SIGKILLed when the block ends."""
    names = list(names) if names is not None else [f"fluxbot-{i}" for i in range(len(envs))]
    if len(names) != len(envs):
        raise ValueError(f"{len(envs)} environments but {len(names)} names")
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(fluxbot_process(env, cwd, name=n))
            for env, n in zip(envs, names, strict=True)
        ]


async def wait_all_online(bots: Sequence[FluxbotProcess], discord: DiscordEmulator, timeout: float = 20.0) -> None:
    """Until every process is online (see :meth:`FluxbotProcess.wait_online`); fails naming the first that
    was not, with its log."""
    await asyncio.gather(*(bot.wait_online(discord, timeout) for bot in bots))


def logs_of(bots: Sequence[FluxbotProcess]) -> str:
    """Every process's name, pid, exit status (None: running) and log, one after the other: for a failure
    message, or to look for what one of them said."""
    return "\n\n".join(
        f"=== {bot.name} (pid {bot.pid}, exit status {bot.returncode}) ===\n{bot.stderr()}" for bot in bots
    )
