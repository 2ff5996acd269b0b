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
import sqlite3
import tempfile
from pathlib import Path

from benchmarks.framework import ANCHOR, Benchmark, Figure, progress
from benchmarks.store_figures import TASKS, _prepared, processes_reserving, rounds_per_second
from bot.db import open_store
from tests.pgserver import PostgresServer

__all__ = ["BENCHMARKS"]

#: Jobs in the table for the process figures, and the two sizes of the growth figure.
HISTORY = 1_000
SMALL, LARGE = 1_000, 50_000


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
        return await rounds_per_second(store, total)
    finally:
        await store.close()


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
