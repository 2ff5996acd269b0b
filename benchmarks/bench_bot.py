"""Figures for the real bot on this machine, against the two loopback emulators.

    python -m benchmarks.bench_bot [--members 30] [--concurrency 8]

Prints: how fast the bot comes online, how fast a member is acknowledged and served, what a burst of
members costs (acknowledgement delays, time until every result is posted, jobs in flight at the
provider), what one status poll of many pending jobs costs, how long fitting a large result under the
upload limit takes, and the process's peak memory. Nothing is asserted: the tests do that.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from PIL import Image
from pydantic import SecretStr

from bot.app import open_bot
from bot.flux import AceDataClient, GenerateRequest, RetryPolicy
from bot.images import DownloadedImage, fit_images
from bot.settings import load_settings
from tests.fakediscord import DiscordEmulator, run_bot
from tests.fluxbot_harness import TEST_GUILD_READY_TIMEOUT, fluxbot_environment, is_result
from tests.fluxemu import FluxEmulator


def line(label: str, value: str) -> None:
    print(f"{label:<52} {value}")


async def bench_bot(members: int, concurrency: int, starts: int) -> None:
    async with DiscordEmulator() as discord_emu, FluxEmulator() as flux:
        guild = discord_emu.add_guild("bench")
        channel = guild.add_text_channel("general")
        crowd = [guild.add_member(f"member-{n}") for n in range(members)]
        with tempfile.TemporaryDirectory() as folder:
            env = fluxbot_environment(
                discord_emu, flux, Path(folder) / "bench.db", FLUX_MAX_CONCURRENCY=str(concurrency)
            )
            settings = load_settings(**env)

            def make() -> object:
                return open_bot(settings, guild_ready_timeout=TEST_GUILD_READY_TIMEOUT)

            for _ in range(starts):
                async with run_bot(discord_emu, make):
                    pass
            online = discord_emu.online_times
            line("bot online (login, gateway, ready, commands synced)", _spread(online))

            async with run_bot(discord_emu, make):
                started = time.perf_counter()
                single = await crowd[0].slash(channel, "imagine", prompt="a single lighthouse")
                await single.wait_acknowledged(timeout=3)
                await discord_emu.wait_for_message(channel, is_result, author=discord_emu.bot_user, timeout=30)
                line("one /imagine: acknowledged after", f"{single.ack_delay * 1000:.1f} ms")
                line("one /imagine: result posted after", f"{(time.perf_counter() - started) * 1000:.1f} ms")

                flux.task_delay = 0.5
                before = len([m for m in channel.messages.values() if is_result(m)])
                started = time.perf_counter()
                burst = await asyncio.gather(*(m.slash(channel, "imagine", prompt=f"burst {m.id}") for m in crowd))
                await discord_emu.wait_until(
                    lambda: len([m for m in channel.messages.values() if is_result(m)]) >= before + members,
                    timeout=120,
                )
                elapsed = time.perf_counter() - started
                delays = [i.ack_delay * 1000 for i in burst if i.ack_delay is not None]
                line(f"burst of {members} /imagine: acknowledgement (ms)", _spread(delays, "{:.1f}"))
                line(f"burst of {members} (0.5 s per job, {concurrency} at once): all posted", f"{elapsed:.2f} s")
                line("burst: most jobs in flight at the provider", f"{flux.max_in_flight} (limit {concurrency})")


async def bench_poll(pending: int) -> None:
    async with FluxEmulator() as flux, aiohttp.ClientSession() as session:
        client = AceDataClient(
            session=session, api_key=SecretStr("test-key"), base_url=flux.base_url, retry=RetryPolicy()
        )
        flux.task_delay = 3600
        handles = [
            (await client.generate(GenerateRequest(prompt=f"p{n}", model="flux-dev"))).handle for n in range(pending)
        ]
        before = flux.count("POST", "/flux/tasks")
        started = time.perf_counter()
        await client.statuses(handles)
        elapsed = time.perf_counter() - started
        line(
            f"one poll tick of {pending} pending AceData jobs",
            f"{flux.count('POST', '/flux/tasks') - before} requests, {elapsed * 1000:.1f} ms",
        )


def bench_fit() -> None:
    rng = random.Random(7)
    noisy = Image.frombytes("RGB", (2048, 2048), rng.randbytes(2048 * 2048 * 3))
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    image = DownloadedImage(data=buffer.getvalue(), format="PNG", width=2048, height=2048, content_type="image/png")
    started = time.perf_counter()
    (fitted,) = fit_images([image], 8 * 1024 * 1024)
    elapsed = time.perf_counter() - started
    line(
        "fit a 2048x2048 noisy PNG under 8 MiB",
        f"{len(image.data) / 2**20:.1f} MiB -> {len(fitted.data) / 2**20:.1f} MiB in {elapsed * 1000:.0f} ms",
    )


def _spread(values: list[float], fmt: str = "{:.3f}") -> str:
    if not values:
        return "n/a"
    return f"median {fmt.format(statistics.median(values))}, max {fmt.format(max(values))} (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--pending", type=int, default=120)
    args = parser.parse_args()
    asyncio.run(bench_bot(args.members, args.concurrency, args.starts))
    asyncio.run(bench_poll(args.pending))
    bench_fit()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line("peak memory of this process (bot, emulators, benchmark)", f"{peak:.0f} MiB")


if __name__ == "__main__":
    main()
