"""``llmfti dataset ...``: instruction datasets for fine-tuning (a feature group + a frozen TrainingDataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors

app = typer.Typer(help="Instruction datasets for fine-tuning.", no_args_is_help=True)


@app.command("build")
def build(
    squad: Path | None = typer.Argument(None, help="SQuAD-format JSON: question + gold paragraph -> answer."),
    feedback: bool = typer.Option(
        False, "--feedback", help="Add served requests whose latest feedback is rating 1 (answer: the correction "
        "if given, else the logged answer). Run `llmfti logs drain` first."
    ),
    template: list[str] = typer.Option(
        [], "--template", help="Add indexed chunks through a template: 'about' (what does the documentation say "
        "about <title>? -> first sentences [1]) or 'continue' (first half -> second half). Repeatable."
    ),
    index: str | None = typer.Option(None, "--index", help="Index for --template (default: index.name)."),
    index_version: int | None = typer.Option(None, "--index-version", min=1, help="Index version for --template."),
    tenant: str | None = typer.Option(
        None, "--tenant", help="Whose feedback and chunks to use (default: keys without a tenant and the "
        "default tenant's documents; '*': every tenant's, for a model that only they will be served)."
    ),
    group: str | None = typer.Option(
        None, "--group", help="Instruction feature group to upsert into (default: squad_qa for SQuAD only, "
        "else instructions)."
    ),
    name: str | None = typer.Option(
        None, "--name", help="Name of the frozen TrainingDataset (default: <group>-d<data version>)."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Take only the first N questions / chunks."),
    as_json: bool = JsonOption,
) -> None:
    """Upsert instruction examples into a feature group and freeze them as a TrainingDataset."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.instruction_dataset import build_instruction_dataset

        summary = build_instruction_dataset(
            load_settings(), squad, feedback=feedback, templates=template, index=index, index_version=index_version,
            tenant=tenant, group=group, dataset=name, limit=limit,
        )
        emit(summary, as_json, _print)


def _print(s: dict[str, Any]) -> None:
    sources = ", ".join(f"{k}: {v['rows']} rows, {v['rejected']} skipped" for k, v in s["sources"].items())
    console().print(
        f"feature group {s['group']} v{s['group_version']} data version {s['data_version']}: "
        f"{s['rows_written']} rows written, {s['rows_quarantined']} quarantined ({sources})\n"
        f"training dataset [bold]{s['training_dataset']}[/] ({s['num_rows']} rows, sha256 {s['rows_sha256'][:12]}); "
        f"train with: llmfti train --base MODEL --dataset {s['training_dataset']}"
    )
