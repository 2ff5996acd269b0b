"""Figures for the SQLite store: how fast quota reservations go as a member's history grows, what two
processes on one file do, and how big the file gets after many edits with inline sources.

    python -m benchmarks --only store [--quick]

Uses only the store's long-standing functions (``SqliteStore.open``, called ``Store.open`` before, ``create_job``,
``mark_*``), so the same module measures older revisions of the code too. Nothing is asserted: these are figures.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.framework import ANCHOR, Benchmark, Figure
from bot.db import (
    JobKind,
    NewJob,
    Provider,
    QuotaLimits,
    QuotaRefusal,
    SqliteStore,
    Store,
    create_job,
    mark_posted,
    mark_submitted,
    mark_submitting,
    mark_succeeded,
    open_store,
)

__all__ = ["BENCHMARKS"]

GUILD = 9001
CHANNEL = 9002
MEMBER = 9003
#: Every limit is checked (and passes), so each reservation does all the work a real one does.
LIMITS = QuotaLimits(user_daily=10**9, guild_daily=10**9, max_concurrent=10**9, cooldown=0.0)
TASKS = 16
#: Seconds a process may take to open its store, and all of them to finish: a stuck one fails the run.
READY_DEADLINE = 120.0
RUN_DEADLINE = 600.0
#: Bytes of base64 per inline edit source in the size figure (a real one can reach ~13 MB).
SOURCE_BYTES = 64 * 1024


def _new_job(user_id: int = MEMBER, *, source: str | None = None) -> NewJob:
    return NewJob(
        guild_id=GUILD,
        channel_id=CHANNEL,
        user_id=user_id,
        kind=JobKind.EDIT if source else JobKind.GENERATE,
        prompt="a lighthouse at dusk, oil on canvas",
        model="flux-dev",
        size="1:1",
        count=1,
        provider=Provider.ACEDATA,
        source_image_url=source,
        interaction_application_id=1,
        interaction_token="token-" + "x" * 60,
    )


def _history(path: Path, finished: int) -> None:
    """``finished`` posted jobs of the benchmark's member, written in one go (the schema is already there)."""
    day_seconds = 86_400.0
    start = time.time() - 400 * day_seconds
    rows = [
        (
            GUILD,
            CHANNEL,
            MEMBER,
            f"old prompt number {n}",
            start + n * 60.0,
            start + n * 60.0 + 20.0,
            json.dumps({"images": [f"https://cdn.example/{n}.png"], "seed": 7}),
            start + n * 60.0 + 30.0,
            1_000_000 + n,
            time.strftime("%Y-%m-%d", time.gmtime(start + n * 60.0)),
        )
        for n in range(finished)
    ]
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.executemany(
                """
                INSERT INTO jobs (guild_id, channel_id, user_id, kind, prompt, model, size, count, provider,
                                  status, created_at, finished_at, result, posted_at, posted_message_id,
                                  reserved_images, charged_images, usage_day)
                VALUES (?, ?, ?, 'generate', ?, 'flux-dev', '1:1', 1, 'acedata', 'posted', ?, ?, ?, ?, ?, 1, 1, ?)
                """,
                rows,
            )
    finally:
        conn.close()


async def _prepared(folder: Path, finished: int) -> Path:
    path = folder / "store.db"
    store = await SqliteStore.open(path)
    await store.close()
    _history(path, finished)
    return path


async def _reserve(store: Store, per_task: int, users: Sequence[int]) -> tuple[int, int]:
    """Reservations made and errors met by ``TASKS`` concurrent tasks, ``per_task`` each."""
    made = errors = 0

    async def one_task(user_id: int) -> None:
        nonlocal made, errors
        for _ in range(per_task):
            try:
                outcome = await create_job(store, _new_job(user_id), LIMITS)
            except Exception:
                errors += 1
            else:
                if not isinstance(outcome, QuotaRefusal):
                    made += 1

    await asyncio.gather(*(one_task(users[n % len(users)]) for n in range(TASKS)))
    return made, errors


#: Reservations per task in one round of :func:`reservation_rate`; the round's jobs then end, untimed.
ROUND = 4


async def reservation_rate(finished: int, total: int) -> float:
    """Reservations per second through ``create_job`` for a member with ``finished`` jobs behind them.

    The member's jobs are ended between rounds of ``TASKS * ROUND`` reservations (outside the timing), so they
    never have more than one round's jobs live, as a member with a concurrency limit would not.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = await _prepared(Path(folder), finished)
        store = await SqliteStore.open(path)
        try:
            return await rounds_per_second(store, total)
        finally:
            await store.close()


async def rounds_per_second(store: Store, total: int) -> float:
    """Reservations per second of :data:`TASKS` tasks of :data:`MEMBER` until ``total`` are made, after a warm-up
    (the connections, their prepared statements, the page cache); the member's live jobs are ended between rounds,
    outside the timing."""
    await _reserve(store, 2, [MEMBER])
    made, elapsed = 0, 0.0
    while made < total:
        await _end_live_jobs(store)
        started = time.perf_counter()
        made += (await _reserve(store, ROUND, [MEMBER]))[0]
        elapsed += time.perf_counter() - started
    return made / elapsed


async def _end_live_jobs(store: Store) -> None:
    """Fail every live job at once (one statement; the reservations are left as they are: no limit is near)."""
    async with store.transaction() as tx:
        await tx.execute(
            """
            UPDATE jobs SET status = 'failed', error_code = 'benchmark', finished_at = created_at
            WHERE status IN ('queued', 'submitting', 'submitted', 'succeeded')
            """
        )


@dataclass(frozen=True, slots=True)
class _Process:
    """What one of the processes sharing a database is given: where it is, its work, and the start signals."""

    url: str
    per_task: int
    user_base: int
    ready: Any  # multiprocessing Event: this process has opened its store
    go: Any  # multiprocessing Event: every process may start
    out: Any  # multiprocessing Queue: (reservations, errors, started, ended)


def _process_main(work: _Process) -> None:
    """One of the processes: open its own store (as a fluxbot process would), wait for the start, reserve, report.

    Each of its 16 tasks reserves for a member of its own, all in one server, as in ``store_figures``.
    """

    async def main() -> tuple[int, int, float, float]:
        users = [work.user_base + n for n in range(TASKS)]
        try:
            store = await open_store(work.url)
        except Exception:
            work.ready.set()
            raise
        try:
            await _reserve(store, 1, users)  # warm up, as the bot's connections are by the time members arrive
            work.ready.set()
            work.go.wait(READY_DEADLINE)
            started = time.perf_counter()
            made, errors = await _reserve(store, work.per_task, users)
            return made, errors, started, time.perf_counter()
        finally:
            await store.close()

    try:
        work.out.put(asyncio.run(main()))
    except BaseException:
        work.out.put((0, 1, 0.0, 0.0))
        raise


def _wait_ready(worker: Any, ready: Any) -> None:
    """Until ``worker`` has opened its store; a process that died first, or took too long, fails the run at once."""
    deadline = time.monotonic() + READY_DEADLINE
    while not ready.wait(0.5):
        if not worker.is_alive():
            raise RuntimeError(f"a process exited (code {worker.exitcode}) before it had opened its store")
        if time.monotonic() > deadline:
            raise TimeoutError(f"a process did not open its store within {READY_DEADLINE:.0f} s")


async def processes_reserving(url: str, processes: int, total: int) -> tuple[float, float]:
    """Total reservations per second of ``processes`` processes (16 tasks each) sharing ``total`` reservations on
    the database ``url`` names (SQLite or PostgreSQL: the same code measures both), and the errors they met."""
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    out = context.Queue()
    readies = [context.Event() for _ in range(processes)]
    workers = [
        context.Process(
            target=_process_main,
            args=(_Process(url, total // processes // TASKS, 40_000 + 100 * n, readies[n], go, out),),
        )
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker, ready in zip(workers, readies, strict=True):
            await asyncio.to_thread(_wait_ready, worker, ready)
        go.set()
        results = [await asyncio.to_thread(out.get, True, RUN_DEADLINE) for _ in workers]
    finally:
        go.set()
        for worker in workers:
            await asyncio.to_thread(worker.join, 30)
            if worker.is_alive():
                worker.kill()
    made = sum(result[0] for result in results)
    errors = sum(result[1] for result in results)
    spans = [result for result in results if result[3] > 0]
    # perf_counter is system-wide on Linux (CLOCK_MONOTONIC), so the processes' readings compare.
    elapsed = max(r[3] for r in spans) - min(r[2] for r in spans) if spans else 0.0
    return (made / elapsed if elapsed > 0 else 0.0), float(errors)


async def processes_on_one_file(processes: int, total: int) -> tuple[float, float]:
    """Total reservations per second of ``processes`` processes (16 tasks each) sharing ``total`` reservations
    on one SQLite file, and the errors they met."""
    with tempfile.TemporaryDirectory() as folder:
        path = await _prepared(Path(folder), 1_000)
        return await processes_reserving(f"sqlite:///{path}", processes, total)


async def size_after_edits(jobs: int) -> tuple[float, float]:
    """The database (file + WAL, after a checkpoint) and its pages in use, in MB, after ``jobs`` edits with an
    inline source of :data:`SOURCE_BYTES` each, every one run to posted."""
    source = "data:image/png;base64," + "A" * (SOURCE_BYTES - len("data:image/png;base64,"))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "store.db"
        store = await SqliteStore.open(path)
        try:

            async def one_task(task: int) -> None:
                for n in range(task, jobs, TASKS):
                    job = await create_job(store, _new_job(30_000 + task, source=source), LIMITS)
                    assert not isinstance(job, QuotaRefusal)
                    await mark_submitting(store, job.id)
                    await mark_submitted(store, job.id, f"task-{n}")
                    await mark_succeeded(store, job.id, [f"https://cdn.example/{n}.png"], 7)
                    await mark_posted(store, job.id, 2_000_000 + n, 1)

            await asyncio.gather(*(one_task(task) for task in range(TASKS)))
        finally:
            await store.close()
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            page_size, pages, free = (
                conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count", "freelist_count")
            )
        finally:
            conn.close()
        on_disk = sum(file.stat().st_size for file in Path(folder).iterdir())  # noqa: ASYNC240 - after the run
    return on_disk / 1e6, (pages - free) * page_size / 1e6


async def run(quick: bool) -> dict[str, float]:
    """One run of every store figure."""
    total = 1_024 if quick else 2_048
    deep = 10_000 if quick else 100_000
    edits = 1_000 if quick else 10_000
    flat = await reservation_rate(100, total)
    grown = await reservation_rate(deep, total)
    alone, _ = await processes_on_one_file(1, total)
    together, errors = await processes_on_one_file(2, total)
    disk, used = await size_after_edits(edits)
    return {
        "reserve_100": flat,
        "reserve_deep": grown,
        "one_process": alone,
        "two_processes": together,
        "two_processes_errors": errors,
        "edits_file_mb": disk,
        "edits_used_mb": used,
    }


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        name="store",
        figures=(
            Figure(
                "reserve_100",
                "reservations/s via create_job, 16 tasks, 100 finished jobs of the member",
                "/s",
                "> 2,000/s, flat",
            ),
            Figure(
                "reserve_deep",
                "reservations/s via create_job, 16 tasks, 100,000 finished jobs (10,000 quick)",
                "/s",
                "> 2,000/s, flat",
            ),
            Figure(
                "two_processes",
                "reservations/s, two processes x 16 tasks on one file (total)",
                "/s",
                "not below one process",
            ),
            Figure("one_process", f"{ANCHOR}one such process alone", "/s"),
            Figure("two_processes_errors", "errors in those two processes (e.g. database is locked)", "", "0"),
            Figure(
                "edits_file_mb",
                "database file + WAL after 10,000 posted edits (1,000 quick), 64 KiB inline source each",
                "MB",
                "sources dropped when the job ends",
                "{:.1f}",
            ),
            Figure(
                "edits_used_mb",
                "pages in use (page_count - freelist) after those edits",
                "MB",
                "sources dropped when the job ends",
                "{:.1f}",
            ),
        ),
        run=run,
    ),
)
