"""Run history: every run in a LanceDB ``eval_runs`` table and as JSON in its own folder."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from evals.runner import EvalRun
from llmfti.config import Settings
from llmfti.errors import NotFoundError
from llmfti.lance import connect, escape_literal, open_or_create_table

TABLE = "eval_runs"


def runs_dir(settings: Settings) -> Path:
    return settings.data_dir / "evals" / "runs"


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("run_id", pa.string()), ("suite", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
                      ("passed", pa.bool_()), ("summary", pa.string())])


def _table(settings: Settings) -> Any:
    return open_or_create_table(connect(settings), TABLE, _schema())


def save_run(settings: Settings, run: EvalRun, passed: bool | None) -> Path:
    """Write ``run.json`` (summary + per-row results) and append the summary to ``eval_runs``."""
    folder = runs_dir(settings) / run.run_id
    folder.mkdir(parents=True, exist_ok=True)
    payload = {**asdict(run), "passed": passed}
    (folder / "run.json").write_text(json.dumps(payload, default=_json_default, indent=1), encoding="utf-8")
    summary = json.dumps({**run.summary(), "passed": passed}, default=_json_default)
    _table(settings).add([{"run_id": run.run_id, "suite": run.suite, "created_at": run.created_at,
                           "passed": passed, "summary": summary}])
    if run.calibration is not None:
        from llmfti.answer_calibration import Calibration, record

        record(settings, Calibration.from_dict(run.calibration))
    if run.sentence_ranker is not None:
        from llmfti.sentence_ranker import RankerRecord
        from llmfti.sentence_ranker import record as record_ranker

        record_ranker(settings, RankerRecord.from_dict(run.sentence_ranker))
    return folder


def load_run(settings: Settings, run_id: str) -> dict[str, Any]:
    path = runs_dir(settings) / run_id / "run.json"
    if not path.is_file():
        raise NotFoundError(f"no eval run {run_id!r} under {runs_dir(settings)}",
                            fix="list runs with: llmfti eval history")
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda c: math.nan)


def history(settings: Settings, suite: str | None = None) -> list[dict[str, Any]]:
    """Summaries of past runs (oldest first), optionally of one suite."""
    query = _table(settings).search()
    if suite:
        query = query.where(f"suite = {escape_literal(suite)}")
    rows = query.limit(None).to_list()
    return sorted((json.loads(r["summary"]) for r in rows), key=lambda s: s["created_at"])


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Per-metric deltas (b - a) and the rows whose scores changed."""
    deltas = {}
    for name in sorted(set(a["metrics"]) | set(b["metrics"])):
        before, after = a["metrics"].get(name), b["metrics"].get(name)
        delta = None if before is None or after is None else round(after - before, 6)
        deltas[name] = {"a": before, "b": after, "delta": delta}
    rows_a = {r["id"]: r for r in a["per_row"]}
    changed = []
    for row in b["per_row"]:
        old = rows_a.get(row["id"])
        if old is None:
            continue
        diff = {m: {"a": old["scores"].get(m), "b": v} for m, v in row["scores"].items()
                if not _same(old["scores"].get(m), v)}
        if diff:
            changed.append({"id": row["id"], "question": row["question"], "scores": diff,
                            "answer_a": old["answer"], "answer_b": row["answer"]})
    return {"run_a": a["run_id"], "run_b": b["run_id"], "same_dataset": a["dataset_hash"] == b["dataset_hash"],
            "metrics": deltas, "changed_rows": changed}


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)
