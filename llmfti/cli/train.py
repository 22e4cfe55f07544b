"""``llmfti train``: LoRA fine-tuning of a causal LM, registered as a new model version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors


def train(
    base: str = typer.Option(..., "--base", help="Base causal LM: a local folder or a (cached) hub id."),
    dataset: str = typer.Option(
        ..., "--dataset",
        help="A TrainingDataset name (llmfti dataset build), or a .jsonl/.json file of {prompt|messages, answer}.",
    ),
    config: str | None = typer.Option(
        None, "--config", help="Training config: a YAML path or a name in configs/train/ (e.g. cpu-tiny)."
    ),
    tokenizer: str | None = typer.Option(None, "--tokenizer", help="Tokenizer folder/id (default: --base)."),
    eval_dataset: str | None = typer.Option(
        None, "--eval-dataset", help="Held-out rows (default: a content-hashed slice of --dataset)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default: data_dir/train_runs/<model>-<time>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its latest checkpoint."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Override the config's max_steps."),
    seed: int | None = typer.Option(None, "--seed", help="Override the config's seed."),
    model: str | None = typer.Option(None, "--model", help="Registry model name (default: registry.model_name)."),
    index: str | None = typer.Option(None, "--index", help="Index the model is coupled to (default: index.name)."),
    index_version: int | None = typer.Option(
        None, "--index-version", help="Index version to couple to (default: the index's current version)."
    ),
    register: bool = typer.Option(True, "--register/--no-register", help="Record the result in the registry."),
    as_json: bool = JsonOption,
) -> None:
    """Fine-tune --base with LoRA on --dataset (loss on answers only) and register the model version."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.train import load_train_config, train_and_register
        from pipelines.train import train as run_training

        settings = load_settings()
        cfg = load_train_config(config, max_steps=max_steps, seed=seed)
        kwargs: dict[str, Any] = {"tokenizer": tokenizer, "eval_dataset": eval_dataset, "run_dir": out,
                                  "resume": resume, "show_progress": not as_json}
        if register:
            summary = train_and_register(settings, base=base, dataset=dataset, config=cfg, model_name=model,
                                         index_name=index, index_version=index_version, **kwargs)
        else:
            result = run_training(settings, base=base, dataset=dataset, config=cfg, **kwargs)
            summary = {"run_dir": str(result.run_dir), "finished": result.finished,
                       "metrics": {k: v for k, v in result.metrics.items() if k != "learning_curve"},
                       "learning_curve": result.metrics["learning_curve"],
                       "tokenizer_fingerprint": result.tokenizer.fingerprint, "model_version": None}
        emit(summary, as_json, _print_summary)


def _print_summary(summary: dict[str, Any]) -> None:
    out = console()
    m = summary["metrics"]
    out.print(f"run folder: {summary['run_dir']}")
    out.print(f"steps {m['steps']}/{m['total_steps']}, {m['tokens_seen']:,} tokens, {m['tokens_per_s']} tokens/s "
              f"on {m['device']}{' (bf16)' if m['bf16'] else ''}")
    out.print(f"held-out loss: {m['initial_eval_loss']} -> {m['final_eval_loss']}; "
              f"{m['data_quarantined']} rows quarantined")
    mv = summary.get("model_version")
    if mv:
        index = f"{mv['index_name']}@v{mv['index_version']}" if mv["index_name"] else "no index"
        out.print(f"registered [bold]{mv['ref']}[/] (tokenizer {mv['tokenizer_fingerprint'][:19]}..., {index})")
    elif not summary["finished"]:
        out.print("stopped before the last step: resume with --resume --out " + summary["run_dir"])
