"""``llmfti eval``: run suites (building their index first), gate, compare runs, update baselines."""

from __future__ import annotations

import math
from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors, stage_progress

app = typer.Typer(help="Run eval suites on the agent's pipeline; gate CI on regressions.",
                  invoke_without_command=True)


@app.callback()
def run(
    ctx: typer.Context,
    suite: list[str] = typer.Option([], "--suite", help="Suite name (repeatable; default: every suite)."),
    full: bool = typer.Option(False, "--full", help="Every question instead of the suite's seeded sample."),
    gate: bool = typer.Option(False, "--gate", help="Exit non-zero when a threshold or baseline is missed."),
    mode: str | None = typer.Option(None, "--mode", help="Override the suite's retrieval mode: dense, fts, hybrid."),
    model_version: str | None = typer.Option(None, "--model-version",
                                             help="Record the result on this registry model version."),
    as_json: bool = JsonOption,
) -> None:
    """Run eval suites (``llmfti eval compare|baseline|history`` for the rest)."""
    if ctx.invoked_subcommand is not None:
        return
    with reporting_errors(as_json):
        from evals.suite import suite_names

        settings = _settings()
        if model_version is not None:
            settings = _evaluating_model(settings, model_version)
        results = [_run_one(settings, name, full, mode, model_version, as_json) for name in suite or suite_names()]
        passed = all(r["passed"] for r in results)
        emit({"passed": passed, "runs": results}, as_json, _print_runs)
        if gate and not passed:
            raise typer.Exit(1)


def _run_one(settings: Any, name: str, full: bool, mode: str | None, model_version: str | None,
             as_json: bool) -> dict[str, Any]:
    from dataclasses import asdict

    from evals import gate as gates
    from evals.datasets import index_sources
    from evals.report import write_report
    from evals.runner import run_suite, suite_settings
    from evals.runs import history, save_run
    from evals.suite import load_suite
    from pipelines.index_build import build_index

    suite = load_suite(name)
    with stage_progress(not as_json) as update:
        build_index(suite_settings(settings, suite), index_sources(suite, settings.data_dir),
                    suite.index.name, on_progress=lambda s, d, t: update(f"{name}:{s}", d, t))
        run = run_suite(settings, suite, full=full, mode=mode, judge=_judge(settings),
                        on_progress=lambda s, d, t: update(f"{name}:{s}", d, t))
    verdict = gates.check(run, suite)
    earlier = history(settings, suite.name)
    folder = save_run(settings, run, verdict.passed)
    report = write_report(folder, asdict(run), earlier, asdict(verdict))
    if model_version is not None:
        from llmfti.registry import ModelRegistry

        ModelRegistry(settings).record_eval(model_version, run.run_id, verdict.passed, run.metrics, suite=name)
    return {**run.summary(), "passed": verdict.passed, "failures": verdict.failures, "notes": verdict.notes,
            "report": str(report)}


def _evaluating_model(settings: Any, model_version: str) -> Any:
    """Settings whose generator is that registry version (no extractive fallback: its answers are judged)."""
    ref = f"v{model_version}" if model_version.isdigit() else model_version
    generator = settings.agent.generator.model_copy(
        update={"backend": "transformers", "model": f"registry:{ref}", "fallback": False})
    return settings.model_copy(update={"agent": settings.agent.model_copy(update={"generator": generator})})


def _judge(settings: Any) -> dict[str, Any] | None:
    judge = settings.evals.judge
    return judge.model_dump() if judge.base_url and judge.model else None


@app.command("compare")
def compare(run_a: str, run_b: str, as_json: bool = JsonOption) -> None:
    """Per-metric deltas between two runs and the rows whose scores changed."""
    with reporting_errors(as_json):
        from evals.runs import compare as diff
        from evals.runs import load_run

        settings = _settings()
        emit(diff(load_run(settings, run_a), load_run(settings, run_b)), as_json, _print_compare)


@app.command("baseline")
def baseline(
    suite: str = typer.Option(..., "--suite", help="Suite whose baseline to write."),
    update: bool = typer.Option(False, "--update", help="Write the baseline (otherwise just show it)."),
    accept: str | None = typer.Option(
        None, "--accept", help="Why a run that meets every threshold but misses the old baseline becomes the new "
        "one (an intended trade-off); recorded in the baseline file."),
    run_id: str | None = typer.Option(None, "--run", help="Run to record (default: the suite's latest run)."),
    as_json: bool = JsonOption,
) -> None:
    """Show, or with --update write, the baseline of a suite for its current prompt id."""
    with reporting_errors(as_json):
        from evals import gate as gates
        from evals.runs import history, load_run
        from llmfti.errors import InvalidInputError, NotFoundError

        settings = _settings()
        if not update:
            emit(gates.load_baselines(suite), as_json)
            return
        runs = history(settings, suite)
        if run_id is None:
            if not runs:
                raise NotFoundError(f"suite {suite!r} has no runs", fix=f"run: llmfti eval --suite {suite}")
            run_id = runs[-1]["run_id"]
        run = load_run(settings, run_id)
        if not run["passed"] and not (accept and _only_baseline_failures(settings, run)):
            raise InvalidInputError(f"run {run_id} did not pass its thresholds; a baseline must come from a passing "
                                    "run", fix="fix the regression, rerun the suite, then update the baseline (a run "
                                    "that misses only the old baseline, by intent, takes --accept REASON)")
        path = gates.update_baseline(run, accepted=accept if not run["passed"] else None)
        emit({"suite": suite, "run_id": run_id, "prompt_ids": run["prompt_ids"], "baseline": str(path)}, as_json)


@app.command("history")
def show_history(suite: str | None = typer.Option(None, "--suite"), as_json: bool = JsonOption) -> None:
    """Past runs with their metrics."""
    with reporting_errors(as_json):
        from evals.runs import history

        emit({"runs": history(_settings(), suite)}, as_json)


def _settings() -> Any:
    from llmfti.config import load_settings

    return load_settings()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _print_runs(payload: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    for run in payload["runs"]:
        table = Table(title=f"{run['suite']} ({run['rows']} rows, {run['retrieval_mode']}, "
                            f"{', '.join(run['prompt_ids'])}) -> {run['run_id']}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("unmeasured", justify="right")
        for name, value in run["metrics"].items():
            table.add_row(name, _fmt(value), str(run["unmeasured"][name]))
        out.print(table)
        for failure in run["failures"]:
            short = "" if failure.get("by") is None else f", short by {failure['by']:.4f}"
            out.print(f"[red]FAIL[/] {failure['metric']}: {_fmt(failure['value'])} < {_fmt(failure['limit'])} "
                      f"({failure['rule']}{short})")
        for note in run["notes"]:
            out.print(f"[yellow]note[/] {note}")
        out.print(f"report: {run['report']}  ({run['durations_s']['total']:.1f}s)")
    out.print("[bold green]PASSED[/]" if payload["passed"] else "[bold red]FAILED[/]")


def _print_compare(payload: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{payload['run_a']} -> {payload['run_b']}")
    for column in ("metric", "a", "b", "delta"):
        table.add_column(column)
    for name, m in payload["metrics"].items():
        table.add_row(name, _fmt(m["a"]), _fmt(m["b"]), _fmt(m["delta"]))
    console().print(table)
    console().print(f"{len(payload['changed_rows'])} rows changed")


def _only_baseline_failures(settings: Any, run: dict[str, Any]) -> bool:
    """Whether a saved run met every absolute threshold of its suite (it missed only the baseline)."""
    from evals.suite import load_suite

    suite = load_suite(run["suite"])
    thresholds_met = all(run["metrics"].get(m, float("nan")) >= limit for m, limit in suite.thresholds.items())
    unmeasured_ok = all(n <= suite.max_unmeasured for n in run["unmeasured"].values())
    return thresholds_met and unmeasured_ok
