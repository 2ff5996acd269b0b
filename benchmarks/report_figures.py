"""Figures for ``/limits report``: reading 90 days of a busy server's jobs, and drawing its chart.

    python -m benchmarks --only report [--quick]

The server has 90 days of history on a SQLite file: four models, :data:`JOBS_PER_DAY` posted jobs a day from
:data:`MEMBERS` members, some failures, and another server as busy beside it. The first chart of the process
also imports matplotlib and loads its fonts (a bot pays that once, on its first report); the figure for a chart
is the median of the following ones. Nothing is asserted: these are figures.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.framework import Benchmark, Figure
from bot.db import SqliteStore, Store
from bot.db.report import usage_report
from bot.report import render_report, report_summary

__all__ = ["BENCHMARKS"]

GUILD, OTHER_GUILD = 1, 2
DAYS = 90
MODELS = ("flux-dev", "flux-pro", "flux-schnell", "flux-kontext")
JOBS_PER_DAY = 60
MEMBERS = 40
CHARTS, QUICK_CHARTS = 7, 3
READS = 20
_DAY = 86_400.0
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp()

_FIRST_CHART_DONE = False


async def _history(store: Store) -> None:
    """90 days of jobs in two servers, inserted queued and ended in place, so the triggers keep usage right."""
    first_day = NOW - (DAYS - 1) * _DAY
    async with store.transaction() as tx:
        for guild in (GUILD, OTHER_GUILD):
            for day in range(DAYS):
                for index in range(JOBS_PER_DAY):
                    created = first_day + day * _DAY + index * 60.0
                    await tx.execute(
                        """
                        INSERT INTO jobs (guild_id, channel_id, user_id, kind, prompt, model, size, count, provider,
                                          created_at, reserved_images, usage_day)
                        VALUES (?, 10, ?, 'generate', 'a lighthouse', ?, '1:1', ?, 'acedata', ?, ?,
                                strftime('%Y-%m-%d', ?, 'unixepoch'))
                        """,
                        (
                            guild,
                            100 + (index * 7 + day) % MEMBERS,
                            MODELS[(index + day) % len(MODELS)],
                            1 + index % 4,
                            created,
                            1 + index % 4,
                            created,
                        ),
                    )
        await tx.execute(
            """
            UPDATE jobs SET status = 'failed', error_code = 'timeout', error_message = 'slow', finished_at = created_at
            WHERE id % 25 = 0
            """
        )
        await tx.execute(
            """
            UPDATE jobs SET status = 'posted', result = '{"images": []}', posted_message_id = id,
                            charged_images = reserved_images, finished_at = created_at, posted_at = created_at
            WHERE status = 'queued'
            """
        )


async def report(quick: bool) -> dict[str, float]:
    global _FIRST_CHART_DONE  # noqa: PLW0603 - the import is paid once per process, like the bot's
    with tempfile.TemporaryDirectory() as folder:
        async with await SqliteStore.open(Path(folder) / "fluxbot.db", clock=lambda: NOW) as store:
            await _history(store)
            reads = []
            for _ in range(READS // 4 if quick else READS):
                started = time.perf_counter()
                data = await usage_report(store, GUILD, DAYS)
                reads.append(time.perf_counter() - started)
    names = {user_id: f"member number {user_id}" for user_id, _ in data.top_members}
    figures: dict[str, float] = {"read_ms": statistics.median(reads) * 1000}
    if not _FIRST_CHART_DONE:
        started = time.perf_counter()
        await render_report(data, names=names, server="A busy server")
        figures["first_chart_ms"] = (time.perf_counter() - started) * 1000
        _FIRST_CHART_DONE = True
    charts = []
    for _ in range(QUICK_CHARTS if quick else CHARTS):
        started = time.perf_counter()
        png = await render_report(data, names=names, server="A busy server")
        charts.append(time.perf_counter() - started)
    figures["chart_ms"] = statistics.median(charts) * 1000
    figures["png_kb"] = len(png) / 1024
    figures["summary_chars"] = len(report_summary(data, names=names))
    return figures


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "report",
        (
            Figure(
                "read_ms",
                f"/limits report: read {DAYS} days of {JOBS_PER_DAY} jobs a day, {len(MODELS)} models (SQLite)",
                "ms",
                "",
                "{:.1f}",
            ),
            Figure("first_chart_ms", "  first chart of the process (imports matplotlib)", "ms"),
            Figure("chart_ms", f"  draw the chart, {DAYS} days x {len(MODELS)} models (median)", "ms"),
            Figure("png_kb", "  its PNG (1200x900)", "KB", "< 10240"),
            Figure("summary_chars", "  its summary message", "chars", "<= 2000"),
        ),
        report,
    ),
)
