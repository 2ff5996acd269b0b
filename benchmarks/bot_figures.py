"""Figures of the running bot: polling latency and tick period, status look-ups per callback, Discord edits
and sockets with many pending jobs, memory per pending job, CPU per delivered job and throughput.

The bot is the ``fluxbot`` console script in its own process (see :mod:`benchmarks.stage`); Discord and the
Flux vendor (AceData) are the loopback emulators in this process. Times on both emulators' clocks are wall
time, so "provider done" (the emulator's ``finished_at``) and "result posted" (the message's ``created_at``)
compare directly.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections.abc import Sequence

import aiohttp

from benchmarks.framework import ANCHOR, Benchmark, Figure, progress
from benchmarks.stage import (
    DISTANT,
    STATUS_PATH,
    Stage,
    cpu_seconds,
    percentile,
    rss_bytes,
    socket_count,
    staged_bot,
)
from tests.conftest import KEY, free_port
from tests.fluxemu import FluxEmulator

__all__ = ["BENCHMARKS"]

POLL_INTERVAL = 1.0
#: The poll interval of the throughput figures: short, so that they measure the bot rather than the tick.
THROUGHPUT_POLL_INTERVAL = 0.05
POLL_JOBS = 100
#: The vendors' own clients: one status request per task, every 3 to 5 s.
VENDOR_POLL = (3.0, 5.0)


def spread_finishes(flux: FluxEmulator, task_ids: Sequence[str], *, start: float, over: float, seed: int) -> None:
    """Make the tasks finish one by one, evenly over ``over`` seconds from ``start`` (emulator clock), in a
    shuffled order, so that their phases against any tick are uniform.
    """
    order = list(task_ids)
    random.Random(seed).shuffle(order)
    tasks = flux.tasks
    for n, task_id in enumerate(order):
        tasks[task_id].due_at = start + over * n / len(order)
    flux.notify()  # the emulator's clock loop re-reads the next due time


def pending_task_ids(flux: FluxEmulator) -> list[str]:
    return [task.id for task in flux.tasks.values() if task.pending]


def added_latencies(stage: Stage) -> list[float]:
    """For each posted result: seconds from the provider finishing its task to the result's post."""
    by_prompt = {task.prompt: task for task in stage.flux.tasks.values()}
    latencies = []
    for message in stage.results():
        prompt = message.embeds[0].get("description") if message.embeds else None
        task = by_prompt.get(prompt or "")
        if task is not None and task.finished_at is not None:
            latencies.append(message.created_at - task.finished_at)
    return latencies


def tick_starts(times: Sequence[float], interval: float) -> list[float]:
    """The first request of each tick: requests closer than a quarter interval to the previous are one tick."""
    starts: list[float] = []
    previous: float | None = None
    for at in times:
        if previous is None or at - previous > interval / 4:
            starts.append(at)
        previous = at
    return starts


# -- polling mode ---------------------------------------------------------------------------------------


async def polling(quick: bool) -> dict[str, float]:
    """100 pending jobs finishing one by one with FLUX_POLL_INTERVAL=1: provider done -> result posted."""
    over = 5.0 if quick else 10.0
    async with staged_bot({"FLUX_POLL_INTERVAL": str(POLL_INTERVAL), "FLUX_MAX_CONCURRENCY": "200"}) as stage:
        stage.flux.task_delay = DISTANT
        await stage.imagine(POLL_JOBS)
        await stage.until_tasks(POLL_JOBS, within=60)
        await asyncio.sleep(2 * POLL_INTERVAL)  # every job recorded as submitted and seen by a tick
        start = stage.flux.now() + POLL_INTERVAL
        spread_finishes(stage.flux, pending_task_ids(stage.flux), start=start, over=over, seed=1)
        progress(f"polling: {POLL_JOBS} jobs finish over {over:.0f} s")
        await stage.until_results(POLL_JOBS, within=over + 60)
        end = stage.flux.now()
        latencies = added_latencies(stage)
        requests = stage.status_requests(since=start)
        requests = [at for at in requests if at <= end]
        ticks = tick_starts(requests, POLL_INTERVAL)
        periods = [b - a for a, b in itertools.pairwise(ticks)]
    anchor = await vendor_client_polling(over, quick)
    return {
        "online": stage.online_after,
        "poll_p50": percentile(latencies, 0.5) * 1000,
        "poll_p99": percentile(latencies, 0.99) * 1000,
        "tick_median": statistics.median(periods) * 1000 if periods else float("nan"),
        "tick_min": min(periods, default=float("nan")) * 1000,
        "tick_max": max(periods, default=float("nan")) * 1000,
        "poll_rate": len(requests) / (end - start),
        "per_tick": len(requests) / len(ticks) if ticks else float("nan"),
        **anchor,
    }


async def vendor_client_polling(over: float, quick: bool) -> dict[str, float]:
    """The same 100 tasks the vendors' way: each task polled on its own every 3-5 s until it is done.

    Latency here ends when the poller sees the result (nothing is downloaded or posted), so it is a floor.
    """
    rng = random.Random(2)
    async with FluxEmulator(KEY) as flux, aiohttp.ClientSession() as session:
        flux.task_delay = DISTANT
        headers = {"authorization": f"Bearer {KEY}"}

        async def submit(n: int) -> str:
            body = {"action": "generate", "prompt": f"vendor {n}", "size": "1024x1024", "async": True}
            async with session.post(f"{flux.base_url}/flux/images", json=body, headers=headers) as answer:
                return str((await answer.json())["task_id"])

        ids = [await submit(n) for n in range(POLL_JOBS)]
        start = flux.now() + POLL_INTERVAL
        spread_finishes(flux, ids, start=start, over=over, seed=1)
        seen: dict[str, float] = {}

        async def poll(task_id: str) -> None:
            await asyncio.sleep(rng.uniform(0, VENDOR_POLL[1]))  # clients started at different times
            while True:
                body = {"action": "retrieve", "id": task_id}
                async with session.post(f"{flux.base_url}{STATUS_PATH}", json=body, headers=headers) as answer:
                    record = await answer.json()
                if "response" in record:
                    seen[task_id] = flux.now()
                    return
                await asyncio.sleep(rng.uniform(*VENDOR_POLL))

        progress(f"polling: the vendor clients' way, {POLL_JOBS} tasks over {over:.0f} s")
        await asyncio.gather(*(poll(task_id) for task_id in ids))
        end = max(seen.values())
        latencies = []
        for task_id, at in seen.items():
            finished = flux.tasks[task_id].finished_at
            assert finished is not None
            latencies.append(at - finished)
        requests = [r for r in flux.requests_to("POST", STATUS_PATH) if start <= r.at <= end]
    return {
        "vendor_p50": percentile(latencies, 0.5) * 1000,
        "vendor_p99": percentile(latencies, 0.99) * 1000,
        "vendor_rate": len(requests) / (end - start),
    }


POLLING = Benchmark(
    "polling",
    (
        Figure(
            "poll_p50",
            "added latency, polling 1 s, 100 pending: provider done -> posted, p50",
            "ms",
            "<= 520 (interval/2 + 20)",
        ),
        Figure("poll_p99", "added latency, polling 1 s, 100 pending: p99", "ms"),
        Figure(
            "vendor_p50",
            f"{ANCHOR}vendor clients (1 request/task every 3-5 s), done -> seen, p50",
            "ms",
        ),
        Figure("vendor_p99", f"{ANCHOR}vendor clients, done -> seen, p99", "ms"),
        Figure("tick_median", "poll tick period (status requests), median", "ms", "1000 (= interval)"),
        Figure("tick_min", "poll tick period, min", "ms", "1000"),
        Figure("tick_max", "poll tick period, max", "ms", "1000"),
        Figure("poll_rate", "status requests/s while 100 jobs finish (polling 1 s)", "/s", "", "{:.1f}"),
        Figure("vendor_rate", f"{ANCHOR}vendor clients, same 100 tasks", "/s", "", "{:.1f}"),
        Figure("per_tick", "status requests per poll tick (100 pending, batches of up to 50)", "", "", "{:.1f}"),
        Figure(
            "online",
            "fluxbot process start -> online, commands synced (console script)",
            "s",
            "",
            "{:.2f}",
        ),
    ),
    polling,
)


# -- callback mode --------------------------------------------------------------------------------------

CALLBACK_JOBS = 100


async def callbacks(quick: bool) -> dict[str, float]:
    """100 jobs finished by callback, polling all but off: how many status requests did the provider get?"""
    over = 5.0 if quick else 10.0
    port = free_port()
    env = {
        "FLUX_POLL_INTERVAL": "3600",
        "FLUX_MAX_CONCURRENCY": "200",
        "CALLBACK_PUBLIC_URL": f"http://127.0.0.1:{port}/flux/callback",
        "CALLBACK_LISTEN": f"127.0.0.1:{port}",
    }
    async with staged_bot(env) as stage:
        stage.flux.task_delay = DISTANT
        await stage.imagine(CALLBACK_JOBS)
        await stage.until_tasks(CALLBACK_JOBS, within=60)
        await stage.quiet(for_s=1.0)  # look-ups triggered by submits are over
        before = len(stage.status_requests())
        start = stage.flux.now() + 0.5
        spread_finishes(stage.flux, pending_task_ids(stage.flux), start=start, over=over, seed=3)
        progress(f"callbacks: {CALLBACK_JOBS} jobs finish over {over:.0f} s")
        await stage.until_results(CALLBACK_JOBS, within=over + 60)
        await stage.quiet(for_s=1.0)
        requests = len(stage.status_requests()) - before
        latencies = added_latencies(stage)
        delivered = sum(1 for c in stage.flux.callbacks if c.status is not None and c.status < 300)
    return {
        "callback_requests": requests,
        "callbacks_taken": delivered,
        "callback_p50": percentile(latencies, 0.5) * 1000,
    }


CALLBACKS = Benchmark(
    "callbacks",
    (
        Figure("callback_requests", "status requests for 100 callbacks (callback mode)", "", "100"),
        Figure("callbacks_taken", "callbacks the bot answered 2xx", "", "100"),
        Figure("callback_p50", "added latency in callback mode, provider done -> posted, p50", "ms"),
    ),
    callbacks,
)


# -- Discord edits with many pending jobs ---------------------------------------------------------------

EDIT_JOBS = 500


async def status_edits(quick: bool) -> dict[str, float]:
    """500 jobs pending at the provider: how often does the bot edit members' status lines?"""
    window = 15.0 if quick else 60.0
    async with staged_bot({"FLUX_POLL_INTERVAL": "5", "FLUX_MAX_CONCURRENCY": "1000"}, members=50) as stage:
        stage.flux.task_delay = DISTANT
        progress(f"edits: sending {EDIT_JOBS} /imagine")
        await stage.imagine(EDIT_JOBS)
        await stage.until_tasks(EDIT_JOBS, within=120)
        start = stage.discord.clock.time()
        progress(f"edits: all {EDIT_JOBS} accepted; counting edits for {window:.0f} s")
        await asyncio.sleep(window)
        edits = stage.status_edits(since=start)
        later = stage.status_edits(since=start + window / 2)
        sockets = socket_count(stage.pid)
    return {"edit_rate": edits / window, "edit_rate_later": later / (window / 2), "sockets": sockets}


def _edits_benchmark() -> Benchmark:
    return Benchmark(
        "edits",
        (
            Figure(
                "edit_rate",
                "Discord status edits/s, 500 pending, window after all accepted (60 s; 15 s quick)",
                "/s",
                "< 10",
                "{:.1f}",
            ),
            Figure(
                "edit_rate_later",
                "  the same, second half of the window only (from 30 s; 7.5 s quick)",
                "/s",
                "< 10",
                "{:.1f}",
            ),
            Figure("sockets", "bot's open sockets at the end of that window", ""),
        ),
        status_edits,
    )


# -- memory per pending job -----------------------------------------------------------------------------

MEMORY_STEPS = (1000, 5000)
#: Seconds a step may take to send its commands and have them submitted; a bot that cannot keep up is
#: measured with the pending jobs it reached (a figure of its own).
STEP_BUDGET = 120.0


async def memory(quick: bool) -> dict[str, float]:
    """RSS at idle after login, then with 1,000 and 5,000 jobs pending at the provider."""
    steps = MEMORY_STEPS[:1] if quick else MEMORY_STEPS
    figures: dict[str, float] = {}
    async with staged_bot({"FLUX_POLL_INTERVAL": "5", "FLUX_MAX_CONCURRENCY": "10000"}, members=50) as stage:
        stage.flux.task_delay = DISTANT
        await asyncio.sleep(2.0)
        idle = rss_bytes(stage.pid)
        figures["idle_rss"] = idle / 2**20
        sent = 0
        for pending in steps:
            progress(f"memory: {pending} pending jobs")
            started = time.monotonic()
            await stage.imagine(pending - sent, first=sent, budget=STEP_BUDGET)
            sent = pending
            left = STEP_BUDGET - (time.monotonic() - started)
            if not await stage.until_tasks(pending, within=max(left, 1.0), raises=False):
                progress(f"memory: only {stage.submits()} of {pending} jobs pending after {STEP_BUDGET:.0f} s")
            reached = stage.submits()
            # Over more than a tick (5 s), keep the highest RSS: what a tick needs counts too.
            high = 0
            for _ in range(60):
                high = max(high, rss_bytes(stage.pid))
                await asyncio.sleep(0.1)
            figures[f"per_job_{pending}"] = (high - idle) / reached / 1024
            figures[f"rss_{pending}"] = high / 2**20
            figures[f"reached_{pending}"] = reached
    return figures


MEMORY = Benchmark(
    "memory",
    (
        Figure("idle_rss", "idle RSS after login", "MB", "< 80"),
        Figure("per_job_1000", "memory per pending job, 1,000 pending (peak RSS - idle) / n", "KB", "< 8", "{:.1f}"),
        Figure("per_job_5000", "memory per pending job, 5,000 pending (not in --quick)", "KB", "< 8", "{:.1f}"),
        Figure("rss_1000", "RSS with 1,000 pending", "MB"),
        Figure("rss_5000", "RSS with 5,000 pending (not in --quick)", "MB"),
        Figure("reached_1000", "pending jobs reached in the 1,000 step (2 min to get there)", "", "1000"),
        Figure("reached_5000", "pending jobs reached in the 5,000 step (2 min to get there)", "", "5000"),
    ),
    memory,
)


# -- CPU per delivered job ------------------------------------------------------------------------------


async def throughput(quick: bool) -> dict[str, float]:
    """An instant provider: N /imagine from the first command to the last result posted.

    What is measured is the bot's own capacity, so nothing waits for a poll tick: ticks come every
    :data:`THROUGHPUT_POLL_INTERVAL` (as in the earlier benchmark). With ticks a second apart, 8 jobs at the
    provider at once can finish at most 8 a second, however fast the bot is.
    """
    jobs = 100 if quick else 300
    async with staged_bot({"FLUX_POLL_INTERVAL": str(THROUGHPUT_POLL_INTERVAL)}) as stage:
        stage.flux.task_delay = 0.0
        await asyncio.sleep(1.0)
        cpu = cpu_seconds(stage.pid)
        started = stage.flux.now()
        progress(f"throughput: {jobs} jobs, instant provider")
        await stage.imagine(jobs)
        await stage.until_results(jobs, within=jobs)
        elapsed = stage.flux.now() - started
        used = cpu_seconds(stage.pid) - cpu
    return {"cpu_per_job": used / jobs * 1000, "jobs_per_s": jobs / elapsed}


THROUGHPUT = Benchmark(
    "throughput",
    (
        Figure(
            "cpu_per_job",
            "bot CPU per delivered job, instant provider, 300 jobs (100 quick), 0.05 s poll",
            "ms",
            "< 8",
            "{:.1f}",
        ),
        Figure("jobs_per_s", "delivered jobs per second, instant provider, 0.05 s poll", "/s", ">= 50", "{:.1f}"),
    ),
    throughput,
)


BENCHMARKS: tuple[Benchmark, ...] = (POLLING, CALLBACKS, _edits_benchmark(), MEMORY, THROUGHPUT)
