"""Figures for PostgreSQL as the shared store: quota reservations per second under contention, side by side with
SQLite, with one and with three processes on one database, and with 1,000 and 50,000 jobs in the table.

    python -m benchmarks --only postgresql [--quick]

SQLite is one writer on one machine by design (two processes on one file met ``database is locked``); the
reason to run PostgreSQL is several processes sharing the work, so the question is whether they reserve at
least as fast together as one does alone, and whether the rate stays flat as the jobs table grows. Each run
starts its own server (``tests/pgserver.py``, as the tests do) and gives every figure a database of its own.
The reservations are the ones ``benchmarks.store_figures`` makes: 16 tasks calling ``bot.db.create_job`` with
every limit checked. Nothing is asserted: these are figures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.framework import ANCHOR, Benchmark, Figure, progress
from benchmarks.store_figures import MEMBER, ROUND, TASKS, _end_live_jobs, _prepared, _reserve
from bot.db import open_store
from tests.pgserver import PostgresServer

__all__ = ["BENCHMARKS"]

#: Jobs in the table for the process figures, and the two sizes of the growth figure.
HISTORY = 1_000
SMALL, LARGE = 1_000, 50_000
#: Seconds a process may take to open its store, and all of them to finish: a stuck one fails the run.
READY_DEADLINE = 120.0
RUN_DEADLINE = 600.0


async def _with_history(server: PostgresServer, finished: int) -> str:
    """A fresh, migrated database holding the ``finished`` posted jobs that the SQLite figures start from.

    They are the very rows ``store_figures`` writes into a SQLite file (its ``_prepared``), copied over with
    COPY, so both backends measure the same history. ``id`` is left to PostgreSQL's identity column so that the
    jobs created afterwards do not collide with them. VACUUM ANALYZE leaves the table as a running database's
    would be (statistics for the planner, the visibility map set) and keeps autovacuum from starting on the
    freshly copied rows in the middle of the measurement.
    """
    url = await asyncio.to_thread(server.create_database)
    store = await open_store(url)  # creates the schema
    await store.close()
    with tempfile.TemporaryDirectory() as folder:
        path = await _prepared(Path(folder), finished)
        source = sqlite3.connect(path)
        try:
            cursor = source.execute("SELECT * FROM jobs")
            columns = [column[0] for column in cursor.description]
            rows = cursor.fetchall()
        finally:
            source.close()
    import asyncpg  # noqa: PLC0415 - the postgres extra: without it the module loads and only its runs fail

    connection = await asyncpg.connect(url)
    try:
        present = {
            row["column_name"]
            for row in await connection.fetch(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'"
            )
        }
        copied = [index for index, name in enumerate(columns) if name != "id" and name in present]
        await connection.copy_records_to_table(
            "jobs",
            records=[tuple(row[index] for index in copied) for row in rows],
            columns=[columns[index] for index in copied],
        )
        await connection.execute("VACUUM ANALYZE jobs")
    finally:
        await connection.close()
    return url


async def rate_with_history(url: str, total: int) -> float:
    """Reservations per second through ``create_job``: 16 tasks, all for the member whose history is in the table.

    As in ``store_figures.reservation_rate``, the member's live jobs are ended between rounds (outside the timing)
    so that they never have more than one round's jobs live, as a member with a concurrency limit would not.
    """
    store = await open_store(url)
    try:
        await _reserve(store, 2, [MEMBER])  # warm up the pool's connections and their prepared statements
        made, elapsed = 0, 0.0
        while made < total:
            await _end_live_jobs(store)
            started = time.perf_counter()
            made += (await _reserve(store, ROUND, [MEMBER]))[0]
            elapsed += time.perf_counter() - started
        return made / elapsed
    finally:
        await store.close()


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


async def run(quick: bool) -> dict[str, float]:
    """One run of every PostgreSQL figure, SQLite's beside them."""
    total = 3 * TASKS * (16 if quick else 64)  # whole rounds for 1 and 3 processes of 16 tasks
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = await _prepared(Path(folder), HISTORY)
        figures["sqlite_one"], _ = await processes_reserving(f"sqlite:///{path}", 1, total)
    server = PostgresServer()
    await asyncio.to_thread(server.start)
    try:
        progress(f"PostgreSQL on port {server.port}: {await asyncio.to_thread(server.version)}")
        one = await _with_history(server, HISTORY)
        figures["pg_one"], figures["pg_one_errors"] = await processes_reserving(one, 1, total)
        three = await _with_history(server, HISTORY)
        figures["pg_three"], figures["pg_three_errors"] = await processes_reserving(three, 3, total)
        small = await rate_with_history(await _with_history(server, SMALL), total)
        large = await rate_with_history(await _with_history(server, LARGE), total)
    finally:
        await asyncio.to_thread(server.stop)
    figures["pg_small"], figures["pg_large"], figures["pg_growth"] = small, large, large / small
    return figures


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        name="postgresql",
        figures=(
            Figure(
                "pg_three",
                "reservations/s via create_job, PostgreSQL, 3 processes x 16 tasks on one database (total)",
                "/s",
                "> 2,000/s, not below one process",
            ),
            Figure("pg_one", f"{ANCHOR}one such process alone on PostgreSQL", "/s"),
            Figure("sqlite_one", f"{ANCHOR}one such process alone on SQLite", "/s"),
            Figure("pg_three_errors", "errors in the 3 PostgreSQL processes", "", "0"),
            Figure("pg_one_errors", f"{ANCHOR}errors in the one process", ""),
            Figure(
                "pg_small",
                "reservations/s via create_job, PostgreSQL, 16 tasks of one member, 1,000 jobs in the table",
                "/s",
                "> 2,000/s, flat",
            ),
            Figure("pg_large", "the same with 50,000 jobs in the table", "/s", "> 2,000/s, flat"),
            Figure("pg_growth", "rate at 50,000 jobs / rate at 1,000", "x", "about 1", "{:.2f}"),
        ),
        run=run,
    ),
)
