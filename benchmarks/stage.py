"""The stage of the process benchmarks: both emulators here, the real ``fluxbot`` console script as a child.

The bot runs as its own process (configured only by environment variables, as operators run it), so its CPU
time and memory read from ``/proc/<pid>`` are its own and not the emulators'. Only the environment, the
console script and the emulators are used, so the same benchmarks also measure an older revision of the bot.
:func:`staged_bots` stages several such processes, each running some of Discord's shards, on one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.fakediscord import Channel, DiscordEmulator, Interaction, Member, Message
from tests.fluxbot_harness import fluxbot_environment, is_result
from tests.fluxbot_process import FluxbotProcess, fluxbot_process, fluxbot_processes, wait_all_online
from tests.fluxemu import FluxEmulator

__all__ = [
    "DISTANT",
    "ShardedStage",
    "Stage",
    "cpu_seconds",
    "percentile",
    "rss_bytes",
    "socket_count",
    "staged_bot",
    "staged_bots",
]

#: Seconds the bot has to come online.
ONLINE_WITHIN = 60.0
#: A provider delay no benchmark waits for: the task stays pending until the benchmark says otherwise.
DISTANT = 24 * 3600.0
#: Slash commands sent before waiting for their acknowledgements (Discord allows 3 s to acknowledge).
WAVE = 25
#: The route of the edits of a deferred response (the member's status line).
STATUS_EDIT_ROUTE = "/webhooks/{webhook_id}/{token}/messages/{message_id}"
#: The provider's status look-up (AceData: ``retrieve`` and ``retrieve_batch``).
STATUS_PATH = "/flux/tasks"
SUBMIT_PATH = "/flux/images"

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of the line)


def rss_bytes(pid: int) -> int:
    """The process's resident set size now (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for process {pid}")


def socket_count(pid: int) -> int:
    """Open sockets of the process (any kind: TCP, Unix, ...)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since it was listed
            count += os.readlink(fd).startswith("socket:")
    return count


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0.5: the median, 0.99: p99) by linear interpolation between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Stage:
    """A running bot with its world: one server, one channel, a crowd of members, the Flux vendor."""

    discord: DiscordEmulator
    flux: FluxEmulator
    channel: Channel
    members: list[Member]
    bot: FluxbotProcess
    online_after: float  # seconds from process start until it was online with its commands synced

    @property
    def pid(self) -> int:
        return self.bot.pid

    def results(self) -> list[Message]:
        return [m for m in self.channel.messages.values() if is_result(m)]

    def status_requests(self, since: float = 0.0) -> list[float]:
        """When the bot asked the provider for task statuses (emulator clock), oldest first."""
        return [r.at for r in self.flux.requests_to("POST", STATUS_PATH) if r.at >= since]

    def status_edits(self, since: float = 0.0, until: float = float("inf")) -> int:
        """Edits of members' status lines from ``since`` until ``until`` (Discord emulator clock)."""
        return sum(1 for c in self.discord.calls("PATCH", STATUS_EDIT_ROUTE) if since <= c.at < until)

    async def imagine(self, count: int, *, first: int = 0, budget: float | None = None) -> list[Interaction]:
        """``count`` /imagine commands (prompts "bench job {n}" from ``n = first``) spread over the members,
        sent in waves of :data:`WAVE`, each wave acknowledged before the next, so none waits past Discord's 3 s.

        With a ``budget`` (seconds), no wave starts after it is spent, and a wave's acknowledgements are awaited
        only while it lasts: a bot that cannot keep up gets fewer commands instead of failing the benchmark.
        """
        deadline = None if budget is None else time.monotonic() + budget
        sent: list[Interaction] = []
        for start in range(first, first + count, WAVE):
            if deadline is not None and time.monotonic() > deadline:
                break
            wave = await asyncio.gather(
                *(
                    self.members[n % len(self.members)].slash(self.channel, "imagine", prompt=f"bench job {n}")
                    for n in range(start, min(start + WAVE, first + count))
                )
            )
            sent.extend(wave)
            if deadline is None:
                await asyncio.gather(*(i.wait_acknowledged(timeout=30) for i in wave))
            else:
                await self.until(
                    _all_acknowledged(wave),
                    max(deadline - time.monotonic(), 0.0),
                    "acknowledgements",
                    raises=False,
                )
        return sent

    async def until(
        self, condition: Callable[[], bool], within: float, what: str, step: float = 0.05, *, raises: bool = True
    ) -> bool:
        """Check ``condition`` every ``step`` s, for at most ``within`` s; whether it held.

        Fails with the bot's last words if the bot exits, and (unless ``raises`` is false) if time runs out.
        """
        deadline = time.monotonic() + within
        while not condition():
            if self.bot.returncode is not None:
                raise RuntimeError(f"fluxbot exited ({self.bot.returncode}) waiting for {what}:\n{self._tail()}")
            if time.monotonic() > deadline:
                if raises:
                    raise TimeoutError(f"no {what} within {within} s:\n{self._tail()}")
                return False
            await asyncio.sleep(step)
        return True

    def submits(self) -> int:
        """Submits the provider received (each creates a task as it arrives)."""
        return self.flux.count("POST", SUBMIT_PATH)

    async def until_tasks(self, count: int, within: float, *, raises: bool = True) -> bool:
        """Until the provider has received ``count`` submits; whether it did (see :meth:`until`)."""
        return await self.until(lambda: self.submits() >= count, within, f"{count} tasks", 0.1, raises=raises)

    async def until_results(self, count: int, within: float) -> None:
        await self.until(lambda: len(self.results()) >= count, within, f"{count} results posted", 0.05)

    async def quiet(self, path: str = STATUS_PATH, *, for_s: float = 0.5, at_most: float = 30.0) -> None:
        """Until the provider got no request on ``path`` for ``for_s`` seconds (after a burst of them)."""
        deadline = time.monotonic() + at_most
        while time.monotonic() < deadline:
            seen = self.flux.requests_to("POST", path)
            if not seen or self.flux.now() - seen[-1].at >= for_s:
                return
            await asyncio.sleep(for_s / 5)

    def _tail(self) -> str:
        return "\n".join(self.bot.stderr().splitlines()[-15:])


def _all_acknowledged(wave: Sequence[Interaction]) -> Callable[[], bool]:
    return lambda: all(i.acknowledged for i in wave)


@contextlib.asynccontextmanager
async def staged_bot(env: Mapping[str, str], *, members: int = 20) -> AsyncIterator[Stage]:
    """Both emulators and ``fluxbot`` started against them, online; ``env`` adds to (or overrides) the
    environment the tests use (no quotas, results from the emulators). Everything stops on exit.
    """
    async with DiscordEmulator() as discord, FluxEmulator() as flux:
        guild = discord.add_guild("bench")
        channel = guild.add_text_channel("general")
        crowd = [guild.add_member(f"member-{n}") for n in range(members)]
        with tempfile.TemporaryDirectory(prefix="fluxbench-") as folder:
            settings = fluxbot_environment(
                discord, flux, Path(folder) / "data" / "fluxbot.db", **{"LOG_LEVEL": "WARNING", **env}
            )
            async with fluxbot_process(settings, Path(folder)) as bot:
                online = await bot.wait_online(discord, timeout=ONLINE_WITHIN)
                yield Stage(discord, flux, channel, crowd, bot, online)


@dataclass
class ShardedStage:
    """Several running bot processes and their world: servers on every Discord shard, a channel and a crowd
    of members in each, the Flux vendor. The processes share one database (the environments say which)."""

    discord: DiscordEmulator
    flux: FluxEmulator
    channels: list[Channel]
    #: Every member with the channel of their server, servers taking turns (member 0 of each server first).
    members: list[tuple[Member, Channel]]
    bots: list[FluxbotProcess]

    @property
    def pids(self) -> list[int]:
        return [bot.pid for bot in self.bots]

    def cpu_seconds(self) -> float:
        """User plus system CPU time all the processes have used so far."""
        return sum(cpu_seconds(pid) for pid in self.pids)

    def results(self) -> list[Message]:
        return [m for channel in self.channels for m in channel.messages.values() if is_result(m)]

    async def imagine(self, count: int) -> list[Interaction]:
        """``count`` /imagine commands (prompts "bench job {n}") spread over the members of every server, in
        waves of :data:`WAVE`, each wave acknowledged before the next (as :meth:`Stage.imagine`)."""
        sent: list[Interaction] = []
        for start in range(0, count, WAVE):
            wave = await asyncio.gather(*(self._ask(n) for n in range(start, min(start + WAVE, count))))
            sent.extend(wave)
            await self.until(_all_acknowledged(wave), 30.0, "acknowledgements")
        return sent

    async def _ask(self, n: int) -> Interaction:
        member, channel = self.members[n % len(self.members)]
        return await member.slash(channel, "imagine", prompt=f"bench job {n}")

    async def until(self, condition: Callable[[], bool], within: float, what: str, step: float = 0.05) -> None:
        """Check ``condition`` every ``step`` s for at most ``within`` s; fails with the last words of every
        process if one of them exits, or if time runs out."""
        deadline = time.monotonic() + within
        while not condition():
            if any(bot.returncode is not None for bot in self.bots):
                raise RuntimeError(f"a fluxbot process exited waiting for {what}:\n{self._tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {within} s:\n{self._tail()}")
            await asyncio.sleep(step)

    async def until_results(self, count: int, within: float) -> None:
        await self.until(lambda: len(self.results()) >= count, within, f"{count} results posted")

    def _tail(self) -> str:
        return "\n".join(
            f"=== {bot.name} (pid {bot.pid}, exit status {bot.returncode}) ===\n"
            + "\n".join(bot.stderr().splitlines()[-15:])
            for bot in self.bots
        )


@contextlib.asynccontextmanager
async def staged_bots(
    envs: Sequence[Mapping[str, str]],
    *,
    shards: int,
    servers_per_shard: int = 2,
    members_per_server: int = 10,
) -> AsyncIterator[ShardedStage]:
    """Both emulators, Discord with ``shards`` shards and ``servers_per_shard`` servers on each, and one
    ``fluxbot`` per environment, all online (every shard READY, commands synced). Each ``env`` adds to the
    environment the tests use (no quotas, results from the emulators) and says which shards the process runs
    (``SHARD_COUNT``/``SHARD_IDS``) and where the database is (``DATABASE_URL``; default: one SQLite file that
    every process shares). Everything stops on exit.
    """
    async with DiscordEmulator() as discord, FluxEmulator() as flux:
        discord.shard_count = shards
        discord.max_concurrency = max(shards, 1)  # every shard identifies at once: no 5 s between them
        channels: list[Channel] = []
        crowds: list[list[Member]] = []
        for shard in range(shards):
            for n in range(servers_per_shard):
                guild = discord.add_guild(f"bench {n} on shard {shard}", shard=shard)
                channels.append(guild.add_text_channel("general"))
                crowds.append([guild.add_member(f"member-{m}") for m in range(members_per_server)])
        members = [
            (crowd[m], channel)
            for m in range(members_per_server)
            for crowd, channel in zip(crowds, channels, strict=True)
        ]
        with tempfile.TemporaryDirectory(prefix="fluxbench-") as folder:
            settings = [
                fluxbot_environment(
                    discord, flux, Path(folder) / "data" / "fluxbot.db", **{"LOG_LEVEL": "WARNING", **env}
                )
                for env in envs
            ]
            async with fluxbot_processes(settings, Path(folder)) as bots:
                await wait_all_online(bots, discord, timeout=ONLINE_WITHIN)
                yield ShardedStage(discord, flux, channels, members, bots)
