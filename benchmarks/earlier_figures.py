"""The figures of the first benchmark, kept so they stay comparable: the bot coming online, one /imagine, a
burst of members, one status poll of many pending jobs, and fitting a large result under the upload limit.

The bot runs in this process here (built by ``open_bot``, as ``fluxbot`` builds it, with discord.py's wait for
the servers after READY shortened to 0.1 s), as the first benchmark ran it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
from PIL import Image
from pydantic import SecretStr

from benchmarks.framework import Benchmark, Figure, progress
from bot.app import open_bot
from bot.flux import AceDataClient, GenerateRequest, RetryPolicy
from bot.images import DownloadedImage, fit_images
from bot.settings import load_settings
from tests.conftest import KEY
from tests.fakediscord import DiscordEmulator, run_bot
from tests.fluxbot_harness import TEST_GUILD_READY_TIMEOUT, fluxbot_environment, is_result
from tests.fluxemu import FluxEmulator

__all__ = ["BENCHMARKS"]

BURST = 30
BURST_CONCURRENCY = 8
BURST_TASK_DELAY = 0.5
PENDING = 120


async def in_process_bot(quick: bool) -> dict[str, float]:
    """Online time, one /imagine, then a burst of members each asking once (0.5 s per job at the provider)."""
    with quiet_logs():
        return await _in_process_bot()


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """The bot in this process logs nothing below ERROR (e.g. notes on its 0.05 s poll ticks) over the table."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


async def _in_process_bot() -> dict[str, float]:
    async with DiscordEmulator() as discord, FluxEmulator(KEY) as flux:
        guild = discord.add_guild("bench")
        channel = guild.add_text_channel("general")
        crowd = [guild.add_member(f"member-{n}") for n in range(BURST)]
        with tempfile.TemporaryDirectory(prefix="fluxbench-") as folder:
            env = fluxbot_environment(
                discord, flux, Path(folder) / "bench.db", FLUX_MAX_CONCURRENCY=str(BURST_CONCURRENCY)
            )
            settings = load_settings(**env)

            def make() -> AbstractAsyncContextManager[object]:
                return open_bot(settings, guild_ready_timeout=TEST_GUILD_READY_TIMEOUT)

            def results() -> int:
                return sum(1 for m in channel.messages.values() if is_result(m))

            async with run_bot(discord, make):
                online = discord.online_times[-1]
                started = time.perf_counter()
                single = await crowd[0].slash(channel, "imagine", prompt="a single lighthouse")
                await single.wait_acknowledged(timeout=3)
                await discord.wait_until(lambda: results() >= 1, timeout=30, what="the first result")
                served = time.perf_counter() - started
                assert single.ack_delay is not None

                progress(f"earlier: a burst of {BURST} /imagine")
                flux.task_delay = BURST_TASK_DELAY
                before = results()
                started = time.perf_counter()
                burst = await asyncio.gather(*(m.slash(channel, "imagine", prompt=f"burst {m.id}") for m in crowd))
                await discord.wait_until(lambda: results() >= before + BURST, timeout=120, what="the burst")
                elapsed = time.perf_counter() - started
                delays = [i.ack_delay * 1000 for i in burst if i.ack_delay is not None]
    return {
        "online": online * 1000,
        "single_ack": single.ack_delay * 1000,
        "single_result": served * 1000,
        "burst_ack_median": statistics.median(delays),
        "burst_ack_max": max(delays),
        "burst_all_posted": elapsed,
        "burst_in_flight": flux.max_in_flight,
    }


async def poll_tick(quick: bool) -> dict[str, float]:
    """One status poll of 120 pending AceData jobs by the bot's own client: requests and time."""
    async with FluxEmulator(KEY) as flux, aiohttp.ClientSession() as session:
        client = AceDataClient(session=session, api_key=SecretStr(KEY), base_url=flux.base_url, retry=RetryPolicy())
        flux.task_delay = 3600
        handles = [
            (await client.generate(GenerateRequest(prompt=f"p{n}", model="flux-dev"))).handle for n in range(PENDING)
        ]
        before = flux.count("POST", "/flux/tasks")
        started = time.perf_counter()
        await client.statuses(handles)
        elapsed = time.perf_counter() - started
        return {"tick_requests": flux.count("POST", "/flux/tasks") - before, "tick_ms": elapsed * 1000}


async def fit(quick: bool) -> dict[str, float]:
    """Fitting a 2048x2048 noisy PNG (about 12 MiB) under an 8 MiB upload limit."""
    rng = random.Random(7)
    noisy = Image.frombytes("RGB", (2048, 2048), rng.randbytes(2048 * 2048 * 3))
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    image = DownloadedImage(data=buffer.getvalue(), format="PNG", width=2048, height=2048, content_type="image/png")
    started = time.perf_counter()
    (fitted,) = await asyncio.to_thread(fit_images, [image], 8 * 1024 * 1024)
    elapsed = time.perf_counter() - started
    return {"fit_ms": elapsed * 1000, "fit_from": len(image.data) / 2**20, "fit_to": len(fitted.data) / 2**20}


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "earlier-bot",
        (
            Figure("online", "bot online in process (login, gateway, ready, commands synced)", "ms"),
            Figure("single_ack", "one /imagine: acknowledged after", "ms", "", "{:.1f}"),
            Figure("single_result", "one /imagine: result posted after", "ms"),
            Figure("burst_ack_median", f"burst of {BURST} /imagine: acknowledgement, median", "ms", "", "{:.1f}"),
            Figure("burst_ack_max", f"burst of {BURST} /imagine: acknowledgement, max", "ms", "", "{:.1f}"),
            Figure(
                "burst_all_posted",
                f"burst of {BURST} (0.5 s per job, {BURST_CONCURRENCY} at once): all posted after",
                "s",
                "",
                "{:.2f}",
            ),
            Figure("burst_in_flight", "burst: most jobs in flight at the provider", "", f"<= {BURST_CONCURRENCY}"),
        ),
        in_process_bot,
    ),
    Benchmark(
        "earlier-poll",
        (
            Figure("tick_requests", f"one status poll of {PENDING} pending AceData jobs: requests", ""),
            Figure("tick_ms", f"one status poll of {PENDING} pending AceData jobs: time", "ms", "", "{:.1f}"),
        ),
        poll_tick,
    ),
    Benchmark(
        "earlier-fit",
        (
            Figure("fit_ms", "fit a 2048x2048 noisy PNG under 8 MiB: time", "ms"),
            Figure("fit_from", "  that PNG before fitting", "MiB", "", "{:.1f}"),
            Figure("fit_to", "  after fitting", "MiB", "<= 8", "{:.1f}"),
        ),
        fit,
    ),
)
