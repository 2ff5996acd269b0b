"""Figures for several bot processes on one PostgreSQL: delivered jobs per second with an instant provider, one
process against three (one Discord shard each), and one process on SQLite beside them.

    python -m benchmarks --only multiprocess [--quick]

Every configuration gets the same world and the same burst: Discord with three shards, two servers on each,
ten members in every server, and 300 /imagine (60 with ``--quick``) spread over all 60 members, with no quotas,
the same ``FLUX_MAX_CONCURRENCY`` and the same poll interval. One process runs all three shards
(``SHARD_COUNT=3``); three processes run one shard each (``SHARD_IDS``). Each run starts its own PostgreSQL
server (``tests/pgserver.py``, as the tests do) and gives each configuration a fresh database of its own.

The rate is counted from the first acknowledgement to the last result posted (both on the Discord emulator's
clock), the CPU is the processes' own (user + system from ``/proc``, summed over them) over the same burst.

What bounds the rate, and why three processes need not triple it: ``FLUX_MAX_CONCURRENCY`` is global, so the
whole bot has the same 8 provider slots however many processes share them, and a slot is held from the submit
until a poll tick has seen the task done and its result is recorded. Only one process, the poller, asks the
provider about tasks, once per tick (0.05 s) for the whole bot, and that process records and delivers every
result it sees; the dispatcher that wakes when a slot frees is the one in the process that freed it. So with
three processes, acknowledging the commands is shared, but the cycle that delivers jobs (submit, tick, record,
post) runs through one poller. And the three processes, the PostgreSQL server and the emulators (this process)
share the machine's cores: where the bots' CPU per job, the server's and the emulators' (on standard error)
add up to about the cores' time per job, the machine is the bound, and more slots or processes change little.
The server's own CPU per job is shown because on SQLite that work is done inside the bot.
Nothing is asserted: these are figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.framework import ANCHOR, Benchmark, Figure, progress
from benchmarks.stage import ShardedStage, cpu_seconds, staged_bots
from tests.fakediscord import Interaction
from tests.pgserver import PostgresServer

__all__ = ["BENCHMARKS"]

#: Discord shards, servers on each and members in each server: 60 members over 6 servers on every shard.
SHARDS = 3
SERVERS_PER_SHARD = 2
MEMBERS_PER_SERVER = 10
#: The burst: /imagine commands sent (in waves, each acknowledged before the next) as fast as the bot takes them.
JOBS, QUICK_JOBS = 300, 60
#: The same in every configuration: jobs at the provider at once (for the whole bot) and the poll tick.
CONCURRENCY = 8
POLL_INTERVAL = 0.05
#: Seconds the processes idle once online before the burst: their start-up work is not counted.
SETTLE = 1.0

TICKS = os.sysconf("SC_CLK_TCK")


def environments(database_url: str | None, processes: int) -> list[dict[str, str]]:
    """The environments of ``processes`` processes splitting the :data:`SHARDS` shards (one process: all of
    them); ``database_url`` None: the SQLite file the stage gives them."""
    common = {
        "SHARD_COUNT": str(SHARDS),
        "FLUX_MAX_CONCURRENCY": str(CONCURRENCY),
        "FLUX_POLL_INTERVAL": str(POLL_INTERVAL),
    }
    if database_url is not None:
        common["DATABASE_URL"] = database_url
    if processes == 1:
        return [common]
    if SHARDS % processes:
        raise ValueError(f"{SHARDS} shards do not split evenly over {processes} processes")
    per = SHARDS // processes
    return [{**common, "SHARD_IDS": str(n) if per == 1 else f"{n * per}-{(n + 1) * per - 1}"} for n in range(processes)]


def server_cpu_seconds(server: PostgresServer | None) -> float:
    """User plus system CPU time the PostgreSQL server has used so far: the postmaster, the sessions it has
    ended (counted in its children's time once it reaps them) and the processes running now (the bots'
    sessions, the background writers). 0 without a server."""
    if server is None or server.folder is None:
        return 0.0
    postmaster = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(field) for field in fields[11:15]) / TICKS  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone since it was listed
                child = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(child[1]) == postmaster:  # field 4 of the line: the parent
                    total += (int(child[11]) + int(child[12])) / TICKS
    return total


async def burst(
    envs: Sequence[Mapping[str, str]], jobs: int, what: str, server: PostgresServer | None = None
) -> tuple[float, float, float]:
    """Delivered jobs per second, bot CPU milliseconds per delivered job (all processes together) and the
    PostgreSQL server's CPU milliseconds per delivered job, for one burst of ``jobs`` /imagine against an
    instant provider."""
    async with staged_bots(
        envs, shards=SHARDS, servers_per_shard=SERVERS_PER_SHARD, members_per_server=MEMBERS_PER_SERVER
    ) as stage:
        stage.flux.task_delay = 0.0
        await asyncio.sleep(SETTLE)
        cpu, server_cpu, emulators_cpu = stage.cpu_seconds(), server_cpu_seconds(server), cpu_seconds(os.getpid())
        progress(f"multiprocess: {what}, {jobs} jobs, instant provider")
        sent = await stage.imagine(jobs)
        await stage.until_results(jobs, within=max(60.0, jobs))
        used, server_used = stage.cpu_seconds() - cpu, server_cpu_seconds(server) - server_cpu
        emulators_used = cpu_seconds(os.getpid()) - emulators_cpu
        first_ack, last_ack, last_result = _span(stage, sent)
        elapsed = last_result - first_ack
        progress(
            f"multiprocess: {what}: acknowledged over {last_ack - first_ack:.2f} s, last result "
            f"{last_result - last_ack:.2f} s after the last acknowledgement; emulators' CPU "
            f"{emulators_used / jobs * 1000:.1f} ms per job, {os.cpu_count()} cores"
        )
        if len(stage.results()) != jobs:  # a job posted twice would inflate the rate: not a figure to keep
            raise RuntimeError(f"{what}: {len(stage.results())} results posted for {jobs} jobs")
    return jobs / elapsed, used / jobs * 1000, server_used / jobs * 1000


def _span(stage: ShardedStage, sent: Sequence[Interaction]) -> tuple[float, float, float]:
    """The first and the last acknowledgement of the burst and its last result posted (Discord emulator clock)."""
    acked = [interaction.acked_at for interaction in sent if interaction.acked_at is not None]
    return min(acked), max(acked), max(message.created_at for message in stage.results())


async def run(quick: bool) -> dict[str, float]:
    """One run: SQLite with one process, then PostgreSQL with one process and with three, the same burst each."""
    jobs = QUICK_JOBS if quick else JOBS
    figures: dict[str, float] = {}
    figures["sqlite_one"], figures["sqlite_one_cpu"], _ = await burst(environments(None, 1), jobs, "1 process, SQLite")
    server = PostgresServer()
    await asyncio.to_thread(server.start)
    try:
        progress(f"PostgreSQL on port {server.port}: {await asyncio.to_thread(server.version)}")
        one = await asyncio.to_thread(server.create_database)
        figures["pg_one"], figures["pg_one_cpu"], figures["pg_one_server"] = await burst(
            environments(one, 1), jobs, "1 process, PostgreSQL", server
        )
        three = await asyncio.to_thread(server.create_database)
        figures["pg_three"], figures["pg_three_cpu"], figures["pg_three_server"] = await burst(
            environments(three, SHARDS), jobs, f"{SHARDS} processes, PostgreSQL", server
        )
    finally:
        await asyncio.to_thread(server.stop)
    figures["ratio"] = figures["pg_three"] / figures["pg_one"]
    return figures


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        name="multiprocess",
        figures=(
            Figure(
                "pg_three",
                "delivered jobs/s, instant provider, 300 jobs (60 quick), 3 processes x 1 shard, PostgreSQL",
                "/s",
                "",
                "{:.1f}",
            ),
            Figure("pg_one", f"{ANCHOR}1 process, 3 shards, PostgreSQL", "/s", "", "{:.1f}"),
            Figure("sqlite_one", f"{ANCHOR}1 process, 3 shards, SQLite", "/s", "", "{:.1f}"),
            Figure("ratio", "jobs/s of 3 processes / jobs/s of 1 process (PostgreSQL)", "x", "", "{:.2f}"),
            Figure("pg_three_cpu", "bot CPU per delivered job, 3 processes together, PostgreSQL", "ms", "", "{:.1f}"),
            Figure("pg_one_cpu", f"{ANCHOR}1 process, PostgreSQL", "ms", "", "{:.1f}"),
            Figure("sqlite_one_cpu", f"{ANCHOR}1 process, SQLite", "ms", "", "{:.1f}"),
            Figure("pg_three_server", "PostgreSQL server CPU per delivered job, 3 processes", "ms", "", "{:.1f}"),
            Figure("pg_one_server", f"{ANCHOR}1 process", "ms", "", "{:.1f}"),
        ),
        run=run,
    ),
)
