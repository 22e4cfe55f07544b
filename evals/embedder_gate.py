"""The retrieval eval that gates an embedder version: dense hit@5 and MRR@10 on a suite's questions.

The version is measured on the index version its own vectors fill (``llmfti index build --embedder
registry:NAME:vN``), against the index version of the embedder it replaces (the alias' current
version, else the embedder the index was first built with). It passes when it meets the suite's
thresholds for hit@5 / mrr@10 (if any) and is not worse than that baseline by more than the suite's
tolerance. The run is recorded on the version in the registry, so a gated alias (``production``)
takes it only after a passing run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evals.datasets import EvalRow
from llmfti.config import Settings
from llmfti.errors import InvalidInputError, NotFoundError

METRICS = ("hit@5", "mrr@10")


def rows_from_file(path: Path) -> list[EvalRow]:
    """Eval rows from a JSONL file of ``{"question", "doc_ids"}`` (doc ids of the index)."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append(EvalRow(str(row.get("id", number)), str(row["question"]), [], list(row["doc_ids"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path}:{number}: not an eval row ({exc})",
                                    expected='{"question": "...", "doc_ids": ["..."]}', fix="fix that line") from exc
    return rows


def retrieval_metrics(settings: Settings, index: str, version: int, rows: Sequence[EvalRow],
                      tenant: str | None = None) -> dict[str, float]:
    """Dense-only hit@5 and MRR@10 of ``rows`` on ``index`` at ``version`` (embedded by its own embedder)."""
    from llmfti.embedders.index_pairing import open_as_built
    from llmfti.index import VectorIndex

    if not rows:
        raise InvalidInputError("the eval set is empty", expected="questions with reference doc ids",
                                fix="pass a suite or an eval file with rows")
    if not VectorIndex.exists(settings, index):
        raise NotFoundError(f"index {index!r} does not exist under {settings.data_dir}",
                            fix=f"build it first: llmfti index build PATH --index {index}")
    idx = open_as_built(settings, index, version)  # that version's own embedder
    recorded = idx.info["name"]
    hits5, rr = 0, 0.0
    for row in rows:
        ranked = [h.doc_id for h in idx.search(row.question, k=10, mode="dense", version=version, tenant=tenant).hits]
        gold = set(row.reference_doc_ids)
        hits5 += any(d in gold for d in ranked[:5])
        rr += next((1.0 / r for r, d in enumerate(ranked, start=1) if d in gold), 0.0)
    return {"hit@5": round(hits5 / len(rows), 4), "mrr@10": round(rr / len(rows), 4), "questions": len(rows),
            "index_version": version, "embedder": recorded}


def gate_embedder(settings: Settings, model_name: str, version: int | str, index: str, rows: Sequence[EvalRow], *,
                  suite: str, alias: str = "production", thresholds: dict[str, float] | None = None,
                  tolerance: float = 0.0, baseline_embedder: str | None = None, tenant: str | None = None,
                  ) -> dict[str, Any]:
    """Measure embedder ``version`` against its baseline, decide, and record the run of ``suite`` in the registry
    (promotion to a gated alias needs a passing run of each suite in ``registry.gate_suites``)."""
    from llmfti.embedders.index_pairing import index_versions_of
    from llmfti.registry.model_registry import ModelRegistry

    registry = ModelRegistry(settings, model_name)
    mv = registry.get(version)
    candidate = f"registry:{mv.name}:v{mv.version}"
    own = index_versions_of(settings, index, candidate)
    if not own:
        raise NotFoundError(f"index {index!r} has no version embedded by {candidate}",
                            fix=f"llmfti index build PATH --index {index} --embedder {candidate}")
    if baseline_embedder is None:
        current = registry.aliases().get(alias)
        baseline_embedder = f"registry:{mv.name}:v{current}" if current and current != mv.version else mv.base_model
    base_versions = index_versions_of(settings, index, baseline_embedder)
    measured = retrieval_metrics(settings, index, own[-1], rows, tenant)
    baseline = retrieval_metrics(settings, index, base_versions[-1], rows, tenant) if base_versions else None
    failures = []
    for metric in METRICS:
        floor = (thresholds or {}).get(metric)
        if floor is not None and measured[metric] < floor:
            failures.append(f"{metric} {measured[metric]} < threshold {floor}")
        if baseline is not None and measured[metric] < baseline[metric] - tolerance:
            failures.append(f"{metric} {measured[metric]} < baseline {baseline[metric]} - tolerance {tolerance}")
    passed = not failures
    run_id = f"retrieval-{uuid.uuid4().hex[:12]}"
    metrics = {**{k: measured[k] for k in METRICS}, "questions": measured["questions"],
               "index": index, "index_version": measured["index_version"], "baseline": baseline, "failures": failures}
    registry.record_eval(mv.version, run_id, passed, {"kind": "retrieval", **metrics}, suite=suite)
    return {"model": mv.name, "version": mv.version, "run_id": run_id, "suite": suite, "passed": passed, **metrics}
