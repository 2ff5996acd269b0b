"""``python -m benchmarks [--quick] [--runs N] [--only NAME]``: every figure of the bot, in one table.

Each benchmark runs 3 times (once with ``--quick``, which also measures smaller loads) and the table shows
min / median / max over the runs. Progress goes to standard error, the table to standard output.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from benchmarks.framework import Benchmark, print_table, progress, run_benchmarks

#: The modules whose ``BENCHMARKS`` make up the table, in table order.
MODULES = (
    "benchmarks.store_figures",
    "benchmarks.pg_figures",
    "benchmarks.ack_figures",
    "benchmarks.bot_figures",
    "benchmarks.multiprocess_figures",
    "benchmarks.report_figures",
    "benchmarks.earlier_figures",
)


def collect(modules: tuple[str, ...] = MODULES) -> list[Benchmark]:
    """Every benchmark of these modules; a module not written yet is skipped with a note on standard error."""
    found: list[Benchmark] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            progress(f"{name} is not there yet: skipped")
            continue
        except Exception:  # one broken module must not take the others' figures with it
            progress(f"{name} cannot be imported; its figures are left out:\n{traceback.format_exc()}")
            continue
        found.extend(module.BENCHMARKS)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each, smaller loads")
    parser.add_argument("--runs", type=int, help="runs of each benchmark (default 3, 1 with --quick)")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    benchmarks = collect()
    if args.list:
        for benchmark in benchmarks:
            print(benchmark.name)
        return 0
    if args.only:
        unknown = set(args.only) - {b.name for b in benchmarks}
        if unknown:
            parser.error(f"no benchmark named {', '.join(sorted(unknown))} (see --list)")
        benchmarks = [b for b in benchmarks if b.name in args.only]
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    results = run_benchmarks(benchmarks, runs=runs, quick=args.quick)
    print_table(results)
    return 1 if any(r.errors and not r.values for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
