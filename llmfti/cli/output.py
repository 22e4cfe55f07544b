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
def progress(description: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; ``advance(n)`` is a no-op when disabled (e.g. ``--json``)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
