"""``python -m benchmarks``: the runner repeats each benchmark, keeps going past a failing one, and prints one
table with min / median / max and the goal of every figure. What is checked is the table, never a speed."""

from __future__ import annotations

import pytest

import benchmarks.__main__ as command
from benchmarks.framework import ANCHOR, Benchmark, Figure, format_table, run_benchmarks


def counting_benchmark(name: str = "tiny") -> tuple[Benchmark, list[bool]]:
    """Each run reports its run number (1, 2, 3 ...) as "runs" and ten times it as "tens"; it records ``quick``."""
    calls: list[bool] = []

    async def run(quick: bool) -> dict[str, float]:
        calls.append(quick)
        return {"runs": float(len(calls)), "tens": 10.0 * len(calls)}

    figures = (
        Figure("runs", "run number", "", "<= 3"),
        Figure("tens", f"{ANCHOR}ten times that", "ms", "", "{:.1f}"),
    )
    return Benchmark(name, figures, run), calls


def rows(table: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]


def test_each_benchmark_runs_as_often_as_asked_and_the_table_shows_min_median_max_unit_and_goal() -> None:
    benchmark, calls = counting_benchmark()

    table = format_table(run_benchmarks([benchmark], runs=3, quick=False))

    assert calls == [False, False, False]
    header, rule, first, second = rows(table)
    assert header == ["figure", "min", "median", "max", "unit", "goal"]
    assert set("".join(rule)) <= {"-", ":"}
    assert first == ["run number", "1", "2", "3", "", "<= 3"]
    assert second == ["vs ten times that", "10.0", "20.0", "30.0", "ms", ""]
    assert len({len(line) for line in table.splitlines()}) == 1  # the columns line up


def test_a_failing_run_is_counted_and_the_other_runs_and_benchmarks_go_on(capsys: pytest.CaptureFixture[str]) -> None:
    attempts: list[int] = []

    async def flaky(quick: bool) -> dict[str, float]:
        attempts.append(1)
        if len(attempts) == 2:
            raise RuntimeError("the emulator fell over")
        return {"value": 5.0}

    broken = Benchmark("flaky", (Figure("value", "a value", "s"),), flaky)
    healthy, calls = counting_benchmark("healthy")

    results = run_benchmarks([broken, healthy], runs=3, quick=True)

    assert [r.values for r in results] == [[5.0, 5.0], [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]
    assert calls == [True, True, True]
    table = rows(format_table(results))
    assert table[2][:4] == ["a value (1 failed)", "5", "5", "5"]
    assert "the emulator fell over" in capsys.readouterr().err


def test_a_figure_a_run_leaves_out_shows_n_a_without_counting_as_a_failure() -> None:
    async def partial(quick: bool) -> dict[str, float]:
        return {"measured": 1.0} if quick else {"measured": 1.0, "large": float("nan")}

    figures = (Figure("measured", "measured", ""), Figure("large", "only in a full run", ""))
    results = run_benchmarks([Benchmark("partial", figures, partial)], runs=1, quick=True)

    assert rows(format_table(results))[3] == ["only in a full run", "n/a", "n/a", "n/a", "", ""]


def test_the_command_runs_only_the_named_benchmark_once_with_quick_and_prints_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    chosen, chosen_calls = counting_benchmark("chosen")
    other, other_calls = counting_benchmark("other")
    monkeypatch.setattr(command, "collect", lambda: [chosen, other])

    status = command.main(["--quick", "--only", "chosen"])

    assert status == 0
    assert chosen_calls == [True]
    assert other_calls == []
    out = capsys.readouterr().out
    assert rows(out.strip())[2] == ["run number", "1", "1", "1", "", "<= 3"]


def test_the_command_refuses_an_unknown_benchmark_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    benchmark, calls = counting_benchmark("known")
    monkeypatch.setattr(command, "collect", lambda: [benchmark])

    with pytest.raises(SystemExit) as exit_info:
        command.main(["--only", "unknown"])

    assert exit_info.value.code == 2
    assert "no benchmark named unknown" in capsys.readouterr().err
    assert calls == []


def test_every_module_of_the_command_imports_and_names_its_figures_once() -> None:
    found = command.collect()

    names = [b.name for b in found]
    assert len(names) == len(set(names))
    assert {
        "store",
        "postgresql",
        "polling",
        "callbacks",
        "edits",
        "memory",
        "throughput",
        "multiprocess",
        "earlier-bot",
    } <= set(names)
    for benchmark in found:
        keys = [f.key for f in benchmark.figures]
        assert keys and len(keys) == len(set(keys)), benchmark.name


def test_ctrl_c_ends_the_run_early_with_the_figures_measured_so_far() -> None:
    async def interrupted(quick: bool) -> dict[str, float]:
        raise KeyboardInterrupt

    first, first_calls = counting_benchmark("first")
    last, last_calls = counting_benchmark("last")
    stopped = Benchmark("stopped", (Figure("value", "never measured", ""),), interrupted)

    results = run_benchmarks([first, stopped, last], runs=2, quick=False)

    assert [r.values for r in results] == [[1.0, 2.0], [10.0, 20.0], [], [], []]
    assert first_calls == [False, False]
    assert last_calls == []
    assert [row[1] for row in rows(format_table(results))[2:]] == ["1", "10.0", "n/a", "n/a", "n/a"]
