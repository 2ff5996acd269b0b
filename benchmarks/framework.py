"""The figures of ``python -m benchmarks``: what a benchmark is, and the runner that prints one table.

A :class:`Benchmark` is one measurement that yields several figures per run (``run(quick)`` returns
``{figure key: value}``); the runner repeats it, keeps every figure's values, and prints one row per figure:
min, median and max over the runs, its unit and the goal it is held to. A figure whose label starts with
:data:`ANCHOR` is a comparison row: the same quantity measured for something else (a vendor client's way of
polling, a bare bot), shown under the figure it anchors. Nothing is asserted: the table is the output.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["ANCHOR", "Benchmark", "Figure", "Result", "format_table", "progress", "run_benchmarks"]

#: The label prefix of a comparison row.
ANCHOR = "  vs "


@dataclass(frozen=True, slots=True)
class Figure:
    key: str
    label: str
    unit: str
    goal: str = ""
    fmt: str = "{:.0f}"


@dataclass(frozen=True, slots=True)
class Benchmark:
    name: str
    figures: tuple[Figure, ...]
    run: Callable[[bool], Awaitable[dict[str, float]]]  # argument: quick; {figure key: value} for one run


@dataclass(slots=True)
class Result:
    """The values one figure took over the runs of its benchmark, and the errors of the runs that failed."""

    figure: Figure
    values: list[float] = field(default_factory=list)
    errors: int = 0


def progress(message: str) -> None:
    """A line on standard error, so a long run is visibly alive; the table goes to standard output."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_benchmarks(benchmarks: Sequence[Benchmark], *, runs: int, quick: bool) -> list[Result]:
    """Run each benchmark ``runs`` times, each run in a fresh event loop; one result per figure, in order.

    A run that raises is reported on standard error and counted as an error for every figure of its benchmark;
    the other runs and benchmarks go on. A figure a run leaves out (or reports as NaN) has no value from that run.
    Ctrl-C ends the whole run early with what was measured until then (the rest has no values).
    """
    results = [Result(figure) for benchmark in benchmarks for figure in benchmark.figures]
    position = 0
    for benchmark in benchmarks:
        mine = results[position : position + len(benchmark.figures)]
        position += len(benchmark.figures)
        for attempt in range(1, runs + 1):
            progress(f"{benchmark.name}: run {attempt}/{runs}")
            started = time.perf_counter()
            try:
                values = asyncio.run(_run_once(benchmark, quick))
            except KeyboardInterrupt:
                progress("interrupted: the table so far")
                return results
            except Exception:  # one failing benchmark must not end the others
                progress(f"{benchmark.name}: run {attempt} failed:\n{traceback.format_exc()}")
                for result in mine:
                    result.errors += 1
                continue
            progress(f"{benchmark.name}: run {attempt} done in {time.perf_counter() - started:.1f} s")
            for result in mine:
                value = values.get(result.figure.key)
                if value is not None and not math.isnan(value):  # a figure a run did not measure: no value
                    result.values.append(value)
    return results


async def _run_once(benchmark: Benchmark, quick: bool) -> dict[str, float]:
    return await benchmark.run(quick)


HEADER = ("figure", "min", "median", "max", "unit", "goal")


def format_table(results: Iterable[Result]) -> str:
    """One Markdown table: figure | min | median | max | unit | goal; ``n/a`` where a figure has no value."""
    rows = [HEADER]
    for result in results:
        figure = result.figure
        if result.values:
            low, middle, high = (
                figure.fmt.format(v) for v in (min(result.values), statistics.median(result.values), max(result.values))
            )
        else:
            low = middle = high = "n/a"
        label = figure.label if not result.errors else f"{figure.label} ({result.errors} failed)"
        rows.append((label, low, middle, high, figure.unit, figure.goal))
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i in (0, 4, 5) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if number == 0:
            lines.append(
                "|"
                + "|".join("-" * (w + 2) if i in (0, 4, 5) else "-" * (w + 1) + ":" for i, w in enumerate(widths))
                + "|"
            )
    return "\n".join(lines)


def print_table(results: Iterable[Result], out: TextIO | None = None) -> None:
    """The table on ``out`` (standard output by default)."""
    print(format_table(results), file=out or sys.stdout, flush=True)
