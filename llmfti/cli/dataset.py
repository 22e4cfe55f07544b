"""``llmfti dataset ...``: instruction datasets for fine-tuning (a feature group + a frozen TrainingDataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors

app = typer.Typer(help="Instruction datasets for fine-tuning.", no_args_is_help=True)


@app.command("build")
def build(
    squad: Path = typer.Argument(..., help="SQuAD-format JSON: question + gold paragraph -> answer."),
    group: str = typer.Option("squad_qa", "--group", help="Instruction feature group to upsert into."),
    name: str | None = typer.Option(
        None, "--name", help="Name of the frozen TrainingDataset (default: <group>-d<data version>)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Take only the first N questions."),
    as_json: bool = JsonOption,
) -> None:
    """Upsert QA examples into an instruction feature group and freeze them as a TrainingDataset."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.instruction_dataset import build_instruction_dataset

        summary = build_instruction_dataset(load_settings(), squad, group=group, dataset=name, limit=limit)
        emit(summary, as_json, _print)


def _print(s: dict[str, Any]) -> None:
    console().print(
        f"feature group {s['group']} v{s['group_version']} data version {s['data_version']}: "
        f"{s['rows_written']} rows written, {s['rows_quarantined']} quarantined, "
        f"{s['rejected_unanswerable']} without an answer\n"
        f"training dataset [bold]{s['training_dataset']}[/] ({s['num_rows']} rows, sha256 {s['rows_sha256'][:12]}); "
        f"train with: llmfti train --base MODEL --dataset {s['training_dataset']}"
    )
