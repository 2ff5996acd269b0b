"""Acknowledgement latency of a burst of ``/imagine``, fluxbot against a bare discord.py bot, side by side.

Both bots run as their own processes against one fake Discord, one after the other and alternating (fluxbot,
bare, bare, fluxbot, ...), so both meet the same machine load. Each round starts a fresh process (fluxbot with
a fresh database), lets it settle, and sends two bursts of :data:`BURST` simultaneous ``/imagine`` from distinct
members, :data:`PAUSE` apart; each acknowledgement's delay is read as the fake Discord measured it (deferral
received minus interaction sent). The provider never finishes, so fluxbot's jobs stay queued and pending, as in
a busy hour: the second burst meets the first one's 200 jobs.

The second burst is the main figure: a bot that has been up a while, with its connections to Discord open. The
first burst, right after start, mostly measures opening a connection per deferral (both bots pay it alike).
Each figure is the median over the rounds of that round's p50 or p99, so that one round hit by something
else on the machine does not make the figure; a ratio compares the two medians of p99.

The bare bot (:mod:`benchmarks.bare_bot`) only defers: its figures are the floor that discord.py's own
parsing and connection set-up put under any bot here; what fluxbot adds above it is fluxbot's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from benchmarks.framework import ANCHOR, Benchmark, Figure, progress
from benchmarks.stage import percentile
from tests.fakediscord import Channel, DiscordEmulator, Member
from tests.fluxbot_harness import fluxbot_environment
from tests.fluxbot_process import fluxbot_process
from tests.fluxemu import FluxEmulator

__all__ = ["BENCHMARKS"]

#: Simultaneous ``/imagine`` per round, each from its own member.
BURST = 200
#: Rounds per bot in one run (each bot starts fresh every round).
ROUNDS = 3
QUICK_ROUNDS = 1
#: Seconds each bot is left alone after coming online, before the bursts: start-up work settles (fluxbot is
#: ready 2 s after the gateway's READY, when discord.py stops waiting for more servers).
SETTLE = 3.5
#: Seconds between the two bursts of a round (the first one's connections stay open: aiohttp keeps them 15 s).
PAUSE = 1.0
#: A provider delay no round waits for.
DISTANT = 24 * 3600.0
ROOT = Path(__file__).resolve().parents[1]


async def burst(discord: DiscordEmulator, channel: Channel, members: list[Member]) -> list[float]:
    """Every member sends ``/imagine`` at once; the acknowledgement delays in milliseconds."""
    sent = await asyncio.gather(*(member.slash(channel, "imagine", prompt=f"burst {member.id}") for member in members))
    await asyncio.gather(*(interaction.wait_acknowledged(timeout=30) for interaction in sent))
    return [interaction.ack_delay * 1000 for interaction in sent if interaction.ack_delay is not None]


def _forget_closed_sessions(discord: DiscordEmulator) -> None:
    """Drop the gateway sessions of bots that are gone, so every burst is dispatched to one session only."""
    for session_id, session in list(discord.sessions.items()):
        if session.conn is None:
            del discord.sessions[session_id]


async def _online(discord: DiscordEmulator) -> None:
    await discord.wait_until(
        lambda: any(s.ready and s.conn is not None for s in discord.sessions.values()), 60, "a bot online"
    )


async def _gone(discord: DiscordEmulator) -> None:
    await discord.wait_until(lambda: all(s.conn is None for s in discord.sessions.values()), 30, "the bot gone")
    _forget_closed_sessions(discord)


@contextlib.asynccontextmanager
async def _fluxbot(discord: DiscordEmulator, flux: FluxEmulator, folder: Path, round_: int) -> AsyncIterator[None]:
    env = fluxbot_environment(discord, flux, folder / f"fluxbot-{round_}.db", LOG_LEVEL="WARNING")
    async with fluxbot_process(env, folder) as bot:
        await bot.wait_online(discord, timeout=60)
        try:
            yield
        finally:
            bot.send_signal(signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                await bot.wait_exit(15)


@contextlib.asynccontextmanager
async def _bare_bot(discord: DiscordEmulator, folder: Path) -> AsyncIterator[None]:
    with (folder / "bare.stderr").open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.bare_bot",
            env={**os.environ, **discord.env()},
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        await _online(discord)
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def run(quick: bool) -> dict[str, float]:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    p50s: dict[str, list[float]] = {"fluxbot": [], "bare": []}
    p99s: dict[str, list[float]] = {"fluxbot": [], "bare": []}
    first_p99s: dict[str, list[float]] = {"fluxbot": [], "bare": []}
    async with DiscordEmulator() as discord, FluxEmulator() as flux:
        flux.task_delay = DISTANT
        guild = discord.add_guild("ack")
        channel = guild.add_text_channel("general")
        members = [guild.add_member(f"member-{n}") for n in range(BURST)]
        with tempfile.TemporaryDirectory(prefix="fluxbench-ack-") as name:
            folder = Path(name)
            for round_ in range(rounds):
                # fluxbot first in the first round: it registers /imagine, which the bare bot does not sync.
                for kind in ("fluxbot", "bare") if round_ % 2 == 0 else ("bare", "fluxbot"):
                    bot = _fluxbot(discord, flux, folder, round_) if kind == "fluxbot" else _bare_bot(discord, folder)
                    async with bot:
                        await asyncio.sleep(SETTLE)
                        first = await burst(discord, channel, members)
                        await asyncio.sleep(PAUSE)
                        second = await burst(discord, channel, members)
                    await _gone(discord)
                    first_p99s[kind].append(percentile(first, 0.99))
                    p50s[kind].append(percentile(second, 0.5))
                    p99s[kind].append(percentile(second, 0.99))
                    progress(
                        f"ack round {round_ + 1}/{rounds} {kind}: first burst p99 {first_p99s[kind][-1]:.0f} ms; "
                        f"second burst p50 {p50s[kind][-1]:.0f} ms, p99 {p99s[kind][-1]:.0f} ms"
                    )
    ours_p99, bare_p99 = statistics.median(p99s["fluxbot"]), statistics.median(p99s["bare"])
    ours_first, bare_first = statistics.median(first_p99s["fluxbot"]), statistics.median(first_p99s["bare"])
    return {
        "ack_p50": statistics.median(p50s["fluxbot"]),
        "ack_p99": ours_p99,
        "bare_ack_p50": statistics.median(p50s["bare"]),
        "bare_ack_p99": bare_p99,
        "ack_p99_ratio": ours_p99 / bare_p99,
        "first_ack_p99": ours_first,
        "first_bare_ack_p99": bare_first,
        "first_ack_p99_ratio": ours_first / bare_first,
    }


BENCHMARKS = (
    Benchmark(
        name="ack",
        figures=(
            Figure("ack_p50", f"acknowledgement p50, {BURST} simultaneous /imagine", "ms"),
            Figure("ack_p99", f"acknowledgement p99, {BURST} simultaneous /imagine", "ms"),
            Figure("bare_ack_p50", f"{ANCHOR}bare discord.py bot that only defers: p50", "ms"),
            Figure("bare_ack_p99", f"{ANCHOR}bare discord.py bot that only defers: p99", "ms"),
            Figure("ack_p99_ratio", "acknowledgement p99, fluxbot / bare bot", "x", "<= 1.2", "{:.2f}"),
            Figure("first_ack_p99", "acknowledgement p99, first burst after start", "ms"),
            Figure("first_bare_ack_p99", f"{ANCHOR}bare bot: p99, first burst after start", "ms"),
            Figure("first_ack_p99_ratio", "acknowledgement p99, first burst, fluxbot / bare bot", "x", "", "{:.2f}"),
        ),
        run=run,
    ),
)
