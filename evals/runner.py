"""Run a suite: the agent's own pipeline object, in process, over the suite's rows; then score."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.pipeline import AgentPipeline, AgentRequest
from evals.datasets import EvalRow, dataset_hash, load_rows
from evals.metrics import JUDGED, LOCAL, RagasScorers, RowResult, aggregate, score_rows
from evals.suite import REPO_ROOT, Suite
from llmfti.config import Settings
from llmfti.errors import ConfigError


@dataclass
class EvalRun:
    run_id: str
    suite: str
    created_at: datetime
    dataset_hash: str
    rows: int
    full: bool
    prompt_ids: list[str]
    model_version: str
    generator_backend: str
    index_name: str
    index_version: int | None
    retrieval_mode: str
    git_commit: str
    metrics: dict[str, float]
    unmeasured: dict[str, int]
    durations_s: dict[str, float]
    per_row: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] | None = None  # the abstention threshold measured (calibrate_abstention)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "per_row"}


def suite_settings(settings: Settings, suite: Suite, mode: str | None = None) -> Settings:
    """The settings the suite runs with: its index, retrieval depth and mode, and prompt."""
    agent = settings.agent.model_copy(update={"retrieval_k": suite.retrieval_k,
                                              "retrieval_mode": mode or suite.retrieval_mode,
                                              "prompt": suite.prompt})
    return settings.model_copy(update={"index": settings.index.model_copy(update={"name": suite.index.name}),
                                       "agent": agent})


def run_suite(settings: Settings, suite: Suite, *, full: bool = False, mode: str | None = None,
              judge: dict[str, Any] | None = None, on_progress: Callable[[str, int, int], None] | None = None,
              ) -> EvalRun:
    report = on_progress or (lambda stage, done, total: None)
    metrics = [m for m in suite.metrics if m not in JUDGED or judge]
    if judge is None and any(m in JUDGED for m in suite.metrics):
        report("judge-skipped", 0, 0)
    started = time.perf_counter()
    rows = load_rows(suite, full=full)
    run_settings = suite_settings(settings, suite, mode)
    answers, timings = asyncio.run(_answer_all(run_settings, rows, report))
    generated = time.perf_counter()

    from llmfti.index import VectorIndex

    index = VectorIndex.open(run_settings)
    versions = {a.index_version for a in answers}
    version = versions.pop() if len(versions) == 1 else None
    references = index.chunk_ids_of({d for r in rows for d in r.reference_doc_ids}, version)
    results = [
        RowResult(
            row=row,
            answer=answer.text,
            retrieved_chunk_ids=[c["chunk_id"] for c in answer.citations],
            retrieved_doc_ids=[c["doc_id"] for c in answer.citations],
            reference_chunk_ids=[cid for d in row.reference_doc_ids for cid in references.get(d, [])],
            contexts=[c["snippet"] for c in answer.citations],
        )
        for row, answer in zip(rows, answers, strict=True)
    ]
    needs_ragas = any(m not in LOCAL for m in metrics)
    cache = settings.data_dir / "evals" / "judge_cache.jsonl"
    scorers = RagasScorers(index.embedder(), judge, cache) if needs_ragas else None
    report("score", 0, len(results))
    score_rows(results, metrics, scorers)
    report("score", len(results), len(results))
    means, unmeasured = aggregate(results, metrics)
    finished = time.perf_counter()
    created = datetime.now(UTC)
    run_id = f"{suite.name}-{created:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    return EvalRun(
        run_id=run_id,
        suite=suite.name,
        created_at=created,
        dataset_hash=dataset_hash(rows),
        rows=len(rows),
        full=full,
        prompt_ids=sorted({a.prompt_id for a in answers}),
        model_version=answers[0].model_version if answers else "",
        generator_backend=run_settings.agent.generator.backend,
        index_name=suite.index.name,
        index_version=version,
        retrieval_mode=run_settings.agent.retrieval_mode or run_settings.index.default_mode,
        git_commit=git_commit(),
        metrics=means,
        unmeasured=unmeasured,
        durations_s={"generate": round(generated - started, 3), "score": round(finished - generated, 3),
                     "total": round(finished - started, 3), "per_row_ms_p50": _p50(timings)},
        per_row=[{"id": r.row.id, "question": r.row.question, "answers": r.row.answers, "answer": r.answer,
                  "reference_doc_ids": r.row.reference_doc_ids, "retrieved_doc_ids": r.retrieved_doc_ids,
                  "retrieved_chunk_ids": r.retrieved_chunk_ids, "scores": r.scores, "evidence": a.evidence}
                 for r, a in zip(results, answers, strict=True)],
        calibration=_calibration(suite, index, results, answers, run_id) if suite.calibrate_abstention else None,
    )


def _calibration(suite: Suite, index: Any, results: list[RowResult], answers: list[Any],
                 run_id: str) -> dict[str, Any]:
    """The abstention threshold that keeps 95% of the answerable questions (gold passage retrieved) answered."""
    from dataclasses import asdict

    from llmfti.answer_calibration import calibrate
    from llmfti.embedders.base import embedder_fingerprint

    evidence = [a.evidence for r, a in zip(results, answers, strict=True)
                if a.evidence is not None and any(d in r.row.reference_doc_ids for d in r.retrieved_doc_ids)]
    return asdict(calibrate(evidence, index=suite.index.name, embedder=embedder_fingerprint(index.info), source=run_id))


async def _answer_all(settings: Settings, rows: list[EvalRow],
                      report: Callable[[str, int, int], None]) -> tuple[list[Any], list[float]]:
    pipeline = AgentPipeline.from_settings(settings)
    await pipeline.start()
    if pipeline.index is None:
        raise ConfigError(f"the suite's index {settings.index.name!r} is not built",
                          fix="run the suite through `llmfti eval`, which builds it first")
    # Judged with the configured abstention threshold, never one an earlier eval recorded: a run must not
    # depend on which suites ran before it (the squad suite records a calibration of the index it shares).
    generator = settings.agent.generator
    pipeline.abstain_below = generator.abstain_below if generator.abstain else None
    answers, timings = [], []
    try:
        for done, row in enumerate(rows, start=1):
            start = time.perf_counter()
            turns = [{"role": "user", "content": text} for text in (*row.history, row.question)]
            answers.append(await pipeline.answer(AgentRequest(messages=turns, endpoint="eval")))
            timings.append((time.perf_counter() - start) * 1000)
            if done % 10 == 0 or done == len(rows):
                report("answer", done, len(rows))
    finally:
        await pipeline.close()
    return answers, timings


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _p50(values: list[float]) -> float:
    return round(sorted(values)[len(values) // 2], 3) if values else 0.0
