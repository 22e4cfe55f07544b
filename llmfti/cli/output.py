"""How every command reports: one JSON object on stdout with ``--json``, rich text otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer

from llmfti.errors import LLMFTIError

JsonOption = typer.Option(False, "--json", help="Print exactly one JSON object on stdout.")


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Print ``result`` as one JSON object, or hand it to ``human`` for a readable rendering."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=_default) + "\n")
    elif human is not None:
        human(result)
    else:
        console().print_json(json.dumps(result, default=_default))


def console():  # noqa: ANN201 - rich is imported lazily
    from rich.console import Console

    return Console()


def err_console():  # noqa: ANN201
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def reporting_errors(as_json: bool) -> Iterator[None]:
    """Turn an :class:`LLMFTIError` into a clean message (or JSON error object) and exit code 1."""
    try:
        yield
    except LLMFTIError as exc:
        if as_json:
            sys.stdout.write(json.dumps({"error": exc.to_dict()}) + "\n")
        else:
            err_console().print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


@contextmanager
def stage_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None]]:
    """Rich progress bars on stderr, one per pipeline stage; yields ``update(stage, done, total)``.

    Disabled (e.g. with ``--json``) it yields a no-op, so pipelines report progress unconditionally.
    """
    if not enabled:
        yield lambda stage, done, total: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    tasks: dict[str, Any] = {}
    rate = TextColumn("{task.fields[rate]}")
    with Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), rate, TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=err_console(), transient=True,
                  speed_estimate_period=30) as bars:

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total, rate="")
            bars.update(tasks[stage], completed=done, total=total)
            speed = next(t.speed for t in bars.tasks if t.id == tasks[stage])  # items/s, last 30 s
            bars.update(tasks[stage], rate=f"{speed:,.1f}/s" if speed else "")

        yield update

