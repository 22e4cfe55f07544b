"""Run a suite: the agent's own pipeline object, in process, over the suite's rows; then score.

A suite with unanswerable rows measures abstention without fitting and judging on the same
questions: the rows are split into two folds by article, every row is answered once with abstention
off (to measure its evidence features), an abstention model is fit on each fold
(:mod:`llmfti.answer_calibration`), and each fold is answered again with the model fit on the
*other* fold (the sentence and query vectors are cached by then, so the second pass is retrieval and
selection only). With ``calibrate_abstention`` the model fit on all rows is recorded for the index.

With ``fit_sentence_ranker`` the sentences are picked the same way out of fold: the first pass also
reports every candidate sentence's features (:data:`llmfti.sentence_ranker.HAND_RANKING`), a sentence
ranker is fit on each fold's answerable rows (label: the sentence holds a gold answer), each fold is
answered by the ranker fit on the other, and the abstention models are then fit on the evidence of
those answers. The ranker fit on all rows is recorded for the index.
"""

from __future__ import annotations

import asyncio
import hashlib
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
    calibration: dict[str, Any] | None = None  # the abstention model fit on every row (calibrate_abstention)
    sentence_ranker: dict[str, Any] | None = None  # the sentence ranker fit on every row (fit_sentence_ranker)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "per_row"}


def suite_settings(settings: Settings, suite: Suite, mode: str | None = None) -> Settings:
    """The settings the suite runs with: its index, retrieval depth and mode, prompt and token matching."""
    generator = settings.agent.generator
    if suite.token_match_candidates is not None:
        generator = generator.model_copy(update={"token_match_candidates": suite.token_match_candidates})
    agent = settings.agent.model_copy(update={"retrieval_k": suite.retrieval_k,
                                              "retrieval_mode": mode or suite.retrieval_mode,
                                              "prompt": suite.prompt, "generator": generator})
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
    answers, timings, calibration, ranker = asyncio.run(_answer_all(run_settings, rows, report,
                                                                    fit_ranker=suite.fit_sentence_ranker))
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
                  "retrieved_chunk_ids": r.retrieved_chunk_ids, "scores": r.scores, "evidence": a.evidence,
                  "evidence_features": a.evidence_features, "answerable": r.row.answerable, "group": r.row.group}
                 for r, a in zip(results, answers, strict=True)],
        calibration=_calibration(suite, index, calibration, run_id) if suite.calibrate_abstention else None,
        sentence_ranker=_ranker_record(suite, index, ranker, run_id) if suite.fit_sentence_ranker else None,
    )


def _calibration(suite: Suite, index: Any, model: Any, run_id: str) -> dict[str, Any]:
    """The abstention model fit on every row of the run, as the calibration of the suite's index."""
    from llmfti.answer_calibration import DEFAULT_ANSWER_RATE, Calibration
    from llmfti.embedders.base import embedder_fingerprint

    if model is None:
        raise ConfigError(f"suite {suite.name!r} has no unanswerable rows to calibrate abstention on",
                          fix="set index.hold_out_articles and dataset.unanswerable, or drop calibrate_abstention")
    fitted, answerable, unanswerable = model
    return Calibration(suite.index.name, embedder_fingerprint(index.info), fitted, DEFAULT_ANSWER_RATE, answerable,
                       unanswerable, run_id, datetime.now(UTC)).as_dict()


def _ranker_record(suite: Suite, index: Any, ranker: Any, run_id: str) -> dict[str, Any]:
    """The sentence ranker fit on every row of the run, as the ranker of the suite's index."""
    from llmfti.embedders.base import embedder_fingerprint
    from llmfti.sentence_ranker import RankerRecord

    if ranker is None:
        raise ConfigError(f"suite {suite.name!r} measured no candidate sentences to fit a sentence ranker on",
                          fix="use the extractive generator with an embedder, or drop fit_sentence_ranker")
    return RankerRecord(suite.index.name, embedder_fingerprint(index.info), ranker, run_id, datetime.now(UTC)).as_dict()


async def _answer_all(settings: Settings, rows: list[EvalRow], report: Callable[[str, int, int], None], *,
                      fit_ranker: bool = False) -> tuple[list[Any], list[float], tuple[Any, int, int] | None, Any]:
    """Every row's answer, the per-row times of the first pass, (model fit on all rows, answerable,
    unanswerable) when the rows include unanswerable ones, and the sentence ranker fit on all rows
    (``fit_ranker``)."""
    from llmfti.sentence_ranker import HAND_RANKING

    pipeline = AgentPipeline.from_settings(settings)
    await pipeline.start()
    if pipeline.index is None:
        raise ConfigError(f"the suite's index {settings.index.name!r} is not built",
                          fix="run the suite through `llmfti eval`, which builds it first")
    # Never a model or threshold an earlier eval recorded: a run must not depend on which suites ran before it.
    generator = settings.agent.generator
    pipeline.abstention = None
    cross_fit = any(not r.answerable for r in rows)
    pipeline.abstain_below = generator.abstain_below if generator.abstain and not cross_fit else None
    pipeline.ranker = HAND_RANKING if fit_ranker else None
    try:
        answers, timings = await _answer_rows(pipeline, rows, report, "answer")
        if not cross_fit and not fit_ranker:
            return answers, timings, None, None
        folds = article_folds(rows)
        rankers: list[Any] = [None, None]
        ranker = None
        if fit_ranker:
            rankers = [_fit_ranker(rows, answers, [f != fold for f in folds]) for fold in (0, 1)]
            ranker = _fit_ranker(rows, answers, [True] * len(rows))
            for fold in (0, 1):
                pipeline.ranker = rankers[fold]
                picked = [i for i, f in enumerate(folds) if f == fold]
                again, _ = await _answer_rows(pipeline, [rows[i] for i in picked], report, f"rank fold {fold + 1}")
                for i, answer in zip(picked, again, strict=True):
                    answers[i] = answer
        if not cross_fit:
            return answers, timings, None, ranker
        evidence = list(answers)  # every row's evidence under the sentence choice it is judged with
        for fold in (0, 1):
            pipeline.ranker = rankers[fold]
            pipeline.abstention = _fit(rows, evidence, [f != fold for f in folds])
            picked = [i for i, f in enumerate(folds) if f == fold]
            again, _ = await _answer_rows(pipeline, [rows[i] for i in picked], report, f"abstain fold {fold + 1}")
            for i, answer in zip(picked, again, strict=True):
                answers[i] = answer
        every = [True] * len(rows)
        return answers, timings, (_fit(rows, evidence, every), *_counts(rows, every)), ranker
    finally:
        await pipeline.close()


async def _answer_rows(pipeline: AgentPipeline, rows: list[EvalRow], report: Callable[[str, int, int], None],
                       stage: str) -> tuple[list[Any], list[float]]:
    answers, timings = [], []
    for done, row in enumerate(rows, start=1):
        start = time.perf_counter()
        turns = [{"role": "user", "content": text} for text in (*row.history, row.question)]
        answers.append(await pipeline.answer(AgentRequest(messages=turns, endpoint="eval")))
        timings.append((time.perf_counter() - start) * 1000)
        if done % 10 == 0 or done == len(rows):
            report(stage, done, len(rows))
    return answers, timings


def article_folds(rows: list[EvalRow]) -> list[int]:
    """Fold 0 or 1 per row, by what it is about: answerable and unanswerable articles each alternate between
    the folds in a fixed order, so every fold has both kinds and no article is in both."""
    fold_of: dict[tuple[bool, str], int] = {}
    for answerable in (True, False):
        groups = sorted({r.group or r.id for r in rows if r.answerable == answerable},
                        key=lambda g: hashlib.sha256(g.encode("utf-8")).hexdigest())
        fold_of.update({(answerable, g): i % 2 for i, g in enumerate(groups)})
    return [fold_of[(r.answerable, r.group or r.id)] for r in rows]


def _counts(rows: list[EvalRow], chosen: list[bool]) -> tuple[int, int]:
    return (sum(1 for r, c in zip(rows, chosen, strict=True) if c and r.answerable),
            sum(1 for r, c in zip(rows, chosen, strict=True) if c and not r.answerable))


def _fit(rows: list[EvalRow], answers: list[Any], chosen: list[bool]) -> Any:
    """The abstention model fit on the ``chosen`` rows (their evidence features from the first pass)."""
    from llmfti.answer_calibration import fit
    from llmfti.llm.backends.answer_selection import EVIDENCE_FEATURES

    kinds: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for row, answer, c in zip(rows, answers, chosen, strict=True):
        if c and answer.evidence_features is not None:
            kinds[row.answerable].append(answer.evidence_features)
    return fit(kinds[True], kinds[False], EVIDENCE_FEATURES)


def _fit_ranker(rows: list[EvalRow], answers: list[Any], chosen: list[bool]) -> Any:
    """The sentence ranker fit on the ``chosen`` answerable rows' candidates (first pass), labelled by whether a
    candidate holds a gold answer (SQuAD normalisation)."""
    from evals.metrics import normalize_answer
    from llmfti.llm.backends.extractive import CLOSE_SCORE
    from llmfti.llm.backends.sentence_features import FEATURES
    from llmfti.sentence_ranker import fit, hand_prior

    questions = []
    for row, answer, c in zip(rows, answers, chosen, strict=True):
        gold = [g for g in (normalize_answer(a) for a in row.answers) if g]
        if c and row.answerable and gold and answer.candidates:
            labels = [any(g in normalize_answer(sentence) for g in gold) for sentence, _ in answer.candidates]
            questions.append(([f for _, f in answer.candidates], labels))
    return fit(questions, FEATURES, prior=hand_prior(FEATURES), join_within=CLOSE_SCORE)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _p50(values: list[float]) -> float:
    return round(sorted(values)[len(values) // 2], 3) if values else 0.0
