"""``llmfti registry ...``: list, inspect, promote and roll back model versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors

app = typer.Typer(help="Model versions: lineage, eval gates, aliases (staging/production).", no_args_is_help=True)
ModelOption = typer.Option(None, "--model", help="Model name (default: setting registry.model_name).")


def _registry(model: str | None):  # noqa: ANN202
    from llmfti.config import load_settings
    from llmfti.registry import ModelRegistry

    return ModelRegistry(load_settings(), model)


def _brief(mv: Any) -> dict[str, Any]:
    latest = mv.latest_eval
    return {
        "ref": mv.ref, "version": mv.version, "created_at": mv.created_at, "aliases": list(mv.aliases),
        "base_model": mv.base_model, "training_dataset_id": mv.training_dataset_id,
        "index_name": mv.index_name, "index_version": mv.index_version,
        "tokenizer_fingerprint": mv.tokenizer_fingerprint,
        "final_eval_loss": mv.metrics.get("final_eval_loss"),
        "latest_eval": None if latest is None else {"run_id": latest.run_id, "passed": latest.passed},
    }


@app.command("list")
def list_versions(model: str | None = ModelOption, as_json: bool = JsonOption) -> None:
    """All versions with their aliases, index coupling and latest eval."""
    with reporting_errors(as_json):
        registry = _registry(model)
        emit({"model": registry.model_name, "aliases": registry.aliases(),
              "versions": [_brief(mv) for mv in registry.versions()]}, as_json, _print_list)


@app.command("show")
def show(
    version: str = typer.Argument(..., help="Version number (3 or v3) or alias (production)."),
    model: str | None = ModelOption,
    card: bool = typer.Option(False, "--card", help="Print the markdown model card."),
    as_json: bool = JsonOption,
) -> None:
    """Everything recorded about one version (lineage, hyper-parameters, metrics, evals, model card)."""
    with reporting_errors(as_json):
        mv = _registry(model).get(version)
        result = mv.to_dict()
        result["model_card"] = mv.model_card
        result["metrics"] = {k: v for k, v in mv.metrics.items() if k != "learning_curve"} | {
            "learning_curve": mv.metrics.get("learning_curve", [])}

        def human(_: dict[str, Any]) -> None:
            if card:
                console().print(mv.model_card, markup=False, highlight=False)
            else:
                console().print_json(data={k: v for k, v in _brief(mv).items()}, default=str)

        emit(result, as_json, human)


@app.command("promote")
def promote(
    version: str = typer.Argument(..., help="Version to promote (3 or v3)."),
    alias: str = typer.Option("production", "--alias", help="Alias to move (staging, production...)."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the alias history)."),
    model: str | None = ModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Point an alias at a version; gated aliases (production) need a passing eval run for it."""
    with reporting_errors(as_json):
        registry = _registry(model)
        event = registry.promote(version, alias, reason=reason)
        emit(_moved(registry, event), as_json, _print_move)


@app.command("rollback")
def rollback(
    alias: str = typer.Option("production", "--alias", help="Alias to move back."),
    reason: str | None = typer.Option(None, "--reason", help="Why (kept in the alias history)."),
    model: str | None = ModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Move an alias back to its previous version; the agent then serves that version's index version too."""
    with reporting_errors(as_json):
        registry = _registry(model)
        event = registry.rollback(alias, reason=reason)
        emit(_moved(registry, event), as_json, _print_move)


@app.command("export")
def export(
    version: str = typer.Argument(..., help="Version number (3 or v3) or alias (production)."),
    to: Path = typer.Option(..., "--to", help="Folder to write (new or empty)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the folder if it exists."),
    model: str | None = ModelOption,
    as_json: bool = JsonOption,
) -> None:
    """Write adapter + pinned tokenizer + chat template for vLLM, and print the `vllm serve` command."""
    with reporting_errors(as_json):
        from llmfti.registry.export import export_for_vllm

        registry = _registry(model)
        mv = registry.fetch(registry.get(version))  # local copy of artifacts on object storage
        result = {"ref": mv.ref, **export_for_vllm(mv, to, overwrite=overwrite).to_dict()}
        emit(result, as_json, lambda r: console().print(
            f"exported {r['ref']} to {r['folder']} as LoRA module {r['module']}; serve it with:\n"
            f"{r['command']}", markup=False, highlight=False))


def _moved(registry: Any, event: Any) -> dict[str, Any]:
    mv = registry.resolve(event.alias)
    return {"model": registry.model_name, "alias": event.alias, "action": event.action,
            "version": event.version, "from_version": event.from_version, "ref": mv.ref,
            "index_name": mv.index_name, "index_version": mv.index_version, "at": event.at}


def _print_list(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"model {result['model']}")
    for column in ("version", "aliases", "created", "index", "dataset", "eval loss", "latest eval"):
        table.add_column(column)
    for v in result["versions"]:
        latest = v["latest_eval"]
        table.add_row(
            str(v["version"]), ", ".join(v["aliases"]), v["created_at"].strftime("%Y-%m-%d %H:%M"),
            f"{v['index_name']}@v{v['index_version']}" if v["index_name"] else "-",
            v["training_dataset_id"],
            "-" if v["final_eval_loss"] is None else f"{v['final_eval_loss']:.4f}",
            "-" if latest is None else f"{latest['run_id']} ({'pass' if latest['passed'] else 'FAIL'})",
        )
    console().print(table)


def _print_move(result: dict[str, Any]) -> None:
    index = f"{result['index_name']}@v{result['index_version']}" if result["index_name"] else "no index"
    console().print(f"{result['alias']} -> {result['ref']} ({result['action']} from v{result['from_version']}); "
                    f"serves index {index}")
