"""The markdown model card generated for every model version."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmfti.registry.model_version import ModelVersion


def _table(rows: dict[str, Any]) -> list[str]:
    if not rows:
        return ["(none recorded)"]
    lines = ["| key | value |", "| --- | --- |"]
    for key, value in sorted(rows.items()):
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        text = text.replace("|", "\\|")
        lines.append(f"| {key} | {text} |")
    return lines


def render_model_card(mv: ModelVersion) -> str:
    """A self-contained description: what it is, what it was trained on, how it scored, how to serve it."""
    index = f"`{mv.index_name}` version {mv.index_version}" if mv.index_name else "(none recorded)"
    lines = [
        f"# {mv.name} v{mv.version}",
        "",
        f"LoRA adapter on `{mv.base_model}`"
        + (f" (revision `{mv.base_model_revision}`)" if mv.base_model_revision else "")
        + ", fine-tuned on instruction data with the loss on answer tokens only.",
        "",
        "## Lineage",
        "",
        f"- created: {mv.created_at.isoformat()}",
        f"- git commit: `{mv.git_commit or 'unknown'}`",
        f"- training dataset: `{mv.training_dataset_id}`",
        f"- data versions: `{json.dumps(mv.data_versions, sort_keys=True, default=str)}`",
        f"- vector index: {index}",
        f"- embedder: `{mv.embedder or 'unknown'}`",
        f"- tokenizer fingerprint: `{mv.tokenizer_fingerprint}` (pinned copy in `tokenizer/`; loading with "
        "any other tokenizer or chat template is refused)",
        f"- aliases: {', '.join(mv.aliases) if mv.aliases else '(none)'}",
        "",
        "## Hyper-parameters",
        "",
        *_table(mv.hyperparameters),
        "",
        "## Training metrics",
        "",
        *_table({k: v for k, v in mv.metrics.items() if k != "learning_curve"}),
        "",
        "## Evaluations",
        "",
    ]
    if mv.eval_runs:
        lines += ["| run | passed | metrics | recorded |", "| --- | --- | --- | --- |"]
        for run in sorted(mv.eval_runs, key=lambda r: r.recorded_at):
            lines.append(f"| {run.run_id} | {'yes' if run.passed else 'no'} | "
                         f"{json.dumps(run.metrics, default=str)} | {run.recorded_at.isoformat()} |")
    else:
        lines.append("No eval run recorded: this version cannot be promoted to a gated alias yet.")
    lines += [
        "",
        "## Serving",
        "",
        f"- stored at: `{mv.artifact_location}` (adapter/, tokenizer/, this card)",
        f"- transformers backend: base `{mv.base_model}` + adapter `{mv.adapter_dir}`",
        f"- vLLM: `vllm serve {mv.base_model} --enable-lora --lora-modules {mv.name}-v{mv.version}="
        f"{mv.adapter_dir}` (`llmfti registry export {mv.version} --to DIR` writes a folder for it) and the "
        f"`openai` backend with model `{mv.name}-v{mv.version}`",
        "",
    ]
    return "\n".join(lines)
