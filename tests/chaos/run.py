"""One chaos run, from the first start of the bot to the verdict.

1. **Storm** (``WINDOW`` seconds and whatever it takes to finish it): members ask for the plan's jobs, the bot
   is SIGKILLed and started again at the plan's moments, another connection holds the write lock; Discord and
   the provider inject their faults.
2. **Aftermath**: no more jobs, kills or locks; the faults go on while jobs are still running, ``AFTERMATH``
   seconds at most.
3. **Calm**: no more faults; every job must end by itself within ``DRAIN_TIMEOUT``.
4. **Final job**: one more job, by the bot that lived through it all; then the bot is stopped with SIGTERM and
   what it left is judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.flux import ChaosFlux
from tests.chaos.life import BotLives, WriteLock
from tests.chaos.plan import CHANNELS, MEMBERS, ChaosPlan, post_fault_chooser
from tests.chaos.verdict import (
    Figures,
    Verdict,
    bot_errors,
    judge,
    read_jobs,
    read_usage,
    result_posts,
    submitting,
    unfinished,
)
from tests.fakediscord import Channel, Interaction, Member
from tests.fakediscord.fixtures import World
from tests.fluxbot_harness import fluxbot_environment

__all__ = ["POLL_INTERVAL", "ChaosRun"]

POLL_INTERVAL = 0.2
JOB_TIMEOUT = 8.0
#: ``DELIVERY_RETRY_WINDOW``: how long the bot keeps trying to post a finished result through Discord's faults.
DELIVERY_RETRY_WINDOW = 10.0
#: After the storm, the faults go on at most this long while jobs are still running.
AFTERMATH = 10.0
#: After the faults stop: long enough for a job's deadline and a delivery's retry window to pass.
DRAIN_TIMEOUT = JOB_TIMEOUT + DELIVERY_RETRY_WINDOW + 5.0
FINAL_TIMEOUT = 10.0


@dataclass
class ChaosRun:
    plan: ChaosPlan
    world: World
    workdir: Path
    figures: Figures = field(init=False)
    interactions: dict[str, Interaction] = field(default_factory=dict)  # prompt -> the member's /imagine
    submitting_at_kills: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.figures = Figures(self.plan.seed)
        self.discord = self.world.emu
        self.database = self.workdir / "data" / "fluxbot.db"
        guild = self.world.guild
        self.channels: list[Channel] = [self.world.channel, *(guild.add_text_channel(name) for name in CHANNELS[1:])]
        self.members: list[Member] = [guild.add_member(f"member-{n:02}") for n in range(MEMBERS)]
        self.lock = WriteLock(self.database)
        self._started = time.perf_counter()

    def _phase(self, name: str) -> None:
        self.figures.phases[name] = time.perf_counter() - self._started

    async def __call__(self) -> Verdict:
        """Run it; the figures are in :attr:`figures`."""
        discord = self.discord
        async with ChaosFlux(self.plan) as flux, contextlib.AsyncExitStack() as stack:
            env = fluxbot_environment(
                discord,
                flux,
                self.database,
                FLUX_POLL_INTERVAL=str(POLL_INTERVAL),
                FLUX_JOB_TIMEOUT=str(JOB_TIMEOUT),
                FLUX_MAX_CONCURRENCY="32",
                DELIVERY_RETRY_WINDOW=str(DELIVERY_RETRY_WINDOW),
            )
            lives = BotLives(discord, env, self.workdir, stack)
            await lives.start()
            self._phase("online")
            discord.rest_faults.add("POST", "/channels/{channel_id}/messages", post_fault_chooser(self.plan.seed))

            calm = asyncio.Event()
            watcher = asyncio.create_task(lives.watch(calm), name="chaos: watch the bot")
            await self._storm(lives)
            self._phase("storm over")
            await self._drain(AFTERMATH)
            self._phase("faults off")
            flux.calm = True
            discord.rest_faults.clear()
            await self._drain(DRAIN_TIMEOUT)
            self._phase("all ended")
            calm.set()
            await watcher
            final_delay = await self._final_job(flux)
            await self._drain(DRAIN_TIMEOUT)  # the final job too is recorded as posted before the bot stops
            self._phase("final job")
            self.figures.stop_status = await lives.stop()
        return self._judge(flux, lives, final_delay)

    async def _storm(self, lives: BotLives) -> None:
        loop = asyncio.get_running_loop()
        begin = loop.time()

        async def at(offset: float) -> None:
            await asyncio.sleep(max(0.0, begin + offset - loop.time()))

        async def ask() -> None:
            for job in self.plan.jobs:
                await at(job.at)
                await lives.online.wait()
                member, channel = self.members[job.member], self.channels[job.channel]
                inter = await member.slash(channel, "imagine", prompt=job.prompt, count=job.count)
                self.interactions[job.prompt] = inter

        async def kill() -> None:
            for planned in self.plan.kills:
                await at(planned.at)
                await lives.online.wait()
                await lives.kill()
                self.submitting_at_kills |= await asyncio.to_thread(submitting, self.database)
                await asyncio.sleep(planned.downtime)
                await lives.start()

        async def hold(offset: float, seconds: float) -> None:
            await at(offset)
            await self.lock.hold(seconds)

        async with asyncio.TaskGroup() as storm:
            storm.create_task(ask())
            storm.create_task(kill())
            for planned in self.plan.locks:
                storm.create_task(hold(planned.at, planned.hold))

    async def _drain(self, timeout: float) -> None:
        """Until every job has ended (seen twice, half a second apart, so late arrivals count), or ``timeout``."""
        deadline = time.perf_counter() + timeout
        quiet = 0
        while time.perf_counter() < deadline and quiet < 2:
            await asyncio.sleep(0.5)
            quiet = quiet + 1 if await asyncio.to_thread(unfinished, self.database) == 0 else 0

    async def _final_job(self, flux: ChaosFlux) -> float | None:
        """Ask for one more job; seconds from its task finishing to its result in the channel (None: never)."""
        prompt, channel, discord = self.plan.final.prompt, self.channels[0], self.discord
        self.interactions[prompt] = await self.members[0].slash(channel, "imagine", prompt=prompt)

        def finished_at() -> float | None:
            return next((t.finished_at for t in flux.tasks.values() if t.prompt == prompt and t.finished_at), None)

        def posted_at() -> float | None:
            mine = (m for m in channel.messages.values() if m.author.id == discord.bot_user.id and m.attachments)
            return next((m.created_at for m in mine if m.embeds and m.embeds[0].get("description") == prompt), None)

        with contextlib.suppress(TimeoutError):
            await flux.wait_until(lambda: finished_at() is not None, FINAL_TIMEOUT)
        done = finished_at()
        if done is None:
            return None
        with contextlib.suppress(AssertionError):
            await discord.wait_until(posted_at, FINAL_TIMEOUT, "the final job's result")
        posted = posted_at()
        return None if posted is None else posted - done

    def _judge(self, flux: ChaosFlux, lives: BotLives, final_delay: float | None) -> Verdict:
        discord, figures = self.discord, self.figures
        jobs = read_jobs(self.database)
        logs = lives.stderr()
        results, _ = result_posts(discord)
        figures.wall = time.perf_counter() - self._started
        figures.sent = len(self.interactions)
        figures.count_jobs(jobs, results)
        figures.count_refused(jobs, self.interactions)
        figures.discord_faults = discord.rest_faults.count()
        figures.post_attempts = len(discord.calls("POST", "/channels/{channel_id}/messages"))
        figures.submit_faults, figures.poll_faults = flux.fault_counts()
        figures.submits, figures.polls = flux.count("POST", "/flux/images"), flux.polls
        figures.locks = self.lock.held
        figures.kills, figures.starts, figures.exits = lives.kills, len(lives.processes), len(lives.exits)
        figures.bot_exceptions, figures.loop_deaths = bot_errors(logs)
        figures.final_delay = final_delay

        verdict = judge(
            jobs=jobs,
            usage=read_usage(self.database),
            discord=discord,
            interactions=self.interactions,
            submits=flux.submits,
            submitting_at_kills=self.submitting_at_kills,
            logs=logs,
        )
        if not any(job.prompt == self.plan.final.prompt for job in jobs):
            verdict.broken("no loop stops", "the final job was not accepted")
        elif final_delay is None:
            verdict.broken(
                "no loop stops", f"the final job was not posted within {FINAL_TIMEOUT} s of its task finishing"
            )
        elif final_delay > 2 * POLL_INTERVAL:
            verdict.broken(
                "no loop stops",
                f"the final job was posted {final_delay:.2f} s after its task finished "
                f"(more than two poll intervals, {2 * POLL_INTERVAL} s)",
            )
        for exit in lives.exits:
            verdict.broken("the bot never exits", f"life {exit.life} ended with status {exit.status}:\n{exit.tail}")
        return verdict
