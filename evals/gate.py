"""The CI gate: absolute thresholds, baselines per prompt id (with a tolerance), unmeasured rows.

Baselines live in the repo, ``evals/baselines/<suite>.json``, keyed by prompt id. A prompt whose
current content has no baseline is judged on the thresholds alone, and the gate says so; after a
passing run ``llmfti eval baseline --update`` records it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.runner import EvalRun
from evals.suite import EVALS_DIR, Suite

BASELINES_DIR = EVALS_DIR / "baselines"


@dataclass
class GateResult:
    passed: bool
    failures: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    baseline_prompt: str | None = None


def baseline_path(suite: str) -> Path:
    return BASELINES_DIR / f"{suite}.json"


def load_baselines(suite: str) -> dict[str, Any]:
    path = baseline_path(suite)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"suite": suite, "prompts": {}}


def check(run: EvalRun, suite: Suite) -> GateResult:
    result = GateResult(passed=True)
    for name, value in run.metrics.items():
        if run.unmeasured.get(name, 0) > suite.max_unmeasured:
            result.failures.append({"metric": name, "rule": "unmeasured rows", "value": run.unmeasured[name],
                                    "limit": suite.max_unmeasured})
        minimum = suite.thresholds.get(name)
        if minimum is not None and (math.isnan(value) or value < minimum):
            result.failures.append({"metric": name, "rule": "threshold", "value": value, "limit": minimum,
                                    "by": None if math.isnan(value) else round(minimum - value, 6)})
    prompt = run.prompt_ids[0] if len(run.prompt_ids) == 1 else None
    baseline = load_baselines(run.suite)["prompts"].get(prompt) if prompt else None
    if baseline is None:
        result.notes.append(f"prompt {prompt} has no baseline for suite {run.suite!r}: judged on thresholds only; "
                            f"record one after a passing run with: llmfti eval baseline --update --suite {run.suite}")
    else:
        result.baseline_prompt = prompt
        if baseline.get("dataset_hash") != run.dataset_hash:
            result.notes.append("the dataset changed since the baseline was recorded; compared anyway")
        for name, base in baseline["metrics"].items():
            value = run.metrics.get(name)
            if value is None or base is None or math.isnan(base):
                continue
            if math.isnan(value) or value < base - suite.tolerance:
                result.failures.append({"metric": name, "rule": f"baseline - {suite.tolerance:g}", "value": value,
                                        "limit": round(base - suite.tolerance, 6),
                                        "by": None if math.isnan(value) else round(base - value, 6)})
    result.passed = not result.failures
    return result


def update_baseline(run_summary: dict[str, Any], *, accepted: str | None = None) -> Path:
    """Record a run's metrics as the baseline of its suite and prompt id (a passing run, or one that missed
    only the old baseline, with the reason it was ``accepted``)."""
    data = load_baselines(run_summary["suite"])
    (prompt,) = run_summary["prompt_ids"]
    data["prompts"][prompt] = {"run_id": run_summary["run_id"], "dataset_hash": run_summary["dataset_hash"],
                               "rows": run_summary["rows"], "metrics": run_summary["metrics"]}
    if accepted:
        data["prompts"][prompt]["accepted"] = accepted
    path = baseline_path(run_summary["suite"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def prompts_without_baseline(prompt_ids: list[str]) -> list[str]:
    """Current prompt ids that no suite has a baseline for."""
    covered = {p for f in BASELINES_DIR.glob("*.json") for p in json.loads(f.read_text())["prompts"]}
    return [p for p in prompt_ids if p not in covered]
