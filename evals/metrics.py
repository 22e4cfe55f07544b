"""Metrics of a run: retrieval (ours + Ragas ID-based), answers (Ragas, offline), SQuAD EM/F1,
abstention, and LLM-judged Ragas metrics when a judge endpoint is configured.

Row metrics score the answerable rows; an unanswerable row (about an article the index holds out)
is scored only on whether it abstained. The abstention metrics are over the whole run: "I don't
know" is a positive, right when the row is unanswerable (precision: of the abstentions, recall: of
the unanswerable rows).

Every metric scores one row and may return NaN, meaning "unmeasured": it is counted, never
averaged in. Ragas is imported lazily (it is heavy) and telemetry is always off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.datasets import EvalRow

_CITATION = re.compile(r"\s*\[\d{1,3}\]")


@dataclass
class RowResult:
    """What the agent did for one eval row; metrics read this."""

    row: EvalRow
    answer: str
    retrieved_chunk_ids: list[str]
    retrieved_doc_ids: list[str]
    reference_chunk_ids: list[str]
    contexts: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def clean_answer(self) -> str:
        return _CITATION.sub("", self.answer).strip()


# ---------------------------------------------------------------- retrieval (ours)
def _hit_at(k: int) -> Callable[[RowResult], float]:
    def hit(r: RowResult) -> float:
        return float(any(d in r.row.reference_doc_ids for d in r.retrieved_doc_ids[:k]))

    return hit


def mrr_at_10(r: RowResult) -> float:
    for rank, doc_id in enumerate(r.retrieved_doc_ids[:10], start=1):
        if doc_id in r.row.reference_doc_ids:
            return 1.0 / rank
    return 0.0


# ---------------------------------------------------------------- answers: did it answer, and first
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def answered(r: RowResult) -> float:
    """1 unless the agent said it had no answer (abstained or found no passage)."""
    from llmfti.llm.backends.extractive import is_no_answer

    return 0.0 if is_no_answer(r.answer.strip()) else 1.0


def abstained(r: RowResult) -> float:
    """1 when the agent said "I don't know" (abstained; a missing passage does not count)."""
    from llmfti.llm.backends.extractive import ABSTAIN

    return float(r.answer.strip().startswith(ABSTAIN))


def abstention_counts(results: list[RowResult]) -> tuple[int, int, int]:
    """(abstained on unanswerable rows, abstentions, unanswerable rows)."""
    right = sum(1 for r in results if not r.row.answerable and abstained(r))
    return right, sum(1 for r in results if abstained(r)), sum(1 for r in results if not r.row.answerable)


def abstention_precision(results: list[RowResult]) -> float:
    right, said, _ = abstention_counts(results)
    return right / said if said else 0.0


def abstention_recall(results: list[RowResult]) -> float:
    right, _, unanswerable = abstention_counts(results)
    return right / unanswerable if unanswerable else math.nan


def abstention_f1(results: list[RowResult]) -> float:
    precision, recall = abstention_precision(results), abstention_recall(results)
    if math.isnan(recall):
        return math.nan
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def first_sentence(answer: str) -> str:
    """The answer's first sentence: up to its first citation marker, else its first sentence end."""
    head = _CITATION.split(answer, maxsplit=1)[0].strip()
    return _FIRST_SENTENCE.split(head, maxsplit=1)[0]


def first_sentence_presence(r: RowResult) -> float | None:
    """1 when the answer's first sentence contains a gold answer (SQuAD-normalised), else 0; None (not scored)
    when the row was not answered: issue 12 defines it as "the share of *answers* whose first sentence contains
    a gold answer", so its mean runs over the answered answerable rows (NaN when none was answered), and how
    many answerable rows get an answer is ``answered``'s to say. (Until 2026-11-30 an abstention scored 0.)"""
    if not answered(r):
        return None
    sentence = normalize_answer(first_sentence(r.answer))
    return float(any(normalize_answer(a) and normalize_answer(a) in sentence for a in r.row.answers))


# ---------------------------------------------------------------- SQuAD official EM / F1
def normalize_answer(text: str) -> str:
    """SQuAD v1.1's evaluation normalisation: lower case, no punctuation, articles or extra spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_em(r: RowResult) -> float:
    return max(float(normalize_answer(r.clean_answer) == normalize_answer(a)) for a in r.row.answers)


def squad_f1(r: RowResult) -> float:
    def f1(prediction: str, truth: str) -> float:
        pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
        common = Counter(pred) & Counter(gold)
        same = sum(common.values())
        if same == 0:
            return 0.0
        precision, recall = same / len(pred), same / len(gold)
        return 2 * precision * recall / (precision + recall)

    return max(f1(r.clean_answer, a) for a in r.row.answers)


# ---------------------------------------------------------------- Ragas
class RagasScorers:
    """Ragas metric objects, built once per run (embeddings load once)."""

    def __init__(self, embedder: Any, judge: dict[str, Any] | None = None, judge_cache: Path | None = None):
        os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
        from ragas.metrics._context_precision import IDBasedContextPrecision
        from ragas.metrics._context_recall import IDBasedContextRecall
        from ragas.metrics.collections import (
            ExactMatch,
            NonLLMStringSimilarity,
            RougeScore,
            StringPresence,
        )

        self.id_precision = IDBasedContextPrecision()
        self.id_recall = IDBasedContextRecall()
        self.per_answer = {
            "exact_match": ExactMatch(),
            "string_presence": StringPresence(),
            "string_similarity": NonLLMStringSimilarity(),
            "rouge_l": RougeScore(rouge_type="rougeL", mode="fmeasure"),
        }
        self._embeddings = _embeddings_for_ragas(embedder)
        self._semantic: Any = None
        self._judge_config = judge
        self._judged: dict[str, Any] | None = None
        self._judge_cache = JudgeCache(judge_cache) if judge_cache else None

    def semantic(self) -> Any:
        if self._semantic is None:
            from ragas.metrics.collections import SemanticSimilarity

            self._semantic = SemanticSimilarity(embeddings=self._embeddings)
        return self._semantic

    def prime(self, results: list[RowResult]) -> None:
        """Embed every reference and answer in one batch (Ragas embeds text by text)."""
        self._embeddings.prime([t for r in results for t in (r.row.answers[0], r.clean_answer)])

    def judged(self) -> dict[str, Any]:
        """Faithfulness and AnswerRelevancy through any OpenAI-compatible judge (vLLM, or our server)."""
        if self._judged is None:
            if not self._judge_config:
                raise RuntimeError("no judge configured")
            from openai import AsyncOpenAI
            from ragas.llms import llm_factory
            from ragas.metrics.collections import AnswerRelevancy, Faithfulness

            client = AsyncOpenAI(base_url=self._judge_config["base_url"],
                                 api_key=self._judge_config.get("api_key") or "none")
            llm = llm_factory(self._judge_config["model"], client=client)
            self._judged = {"faithfulness": Faithfulness(llm=llm),
                            "answer_relevancy": AnswerRelevancy(llm=llm, embeddings=self._embeddings)}
        return self._judged

    async def score(self, name: str, r: RowResult) -> float:
        from ragas.dataset_schema import SingleTurnSample

        if name in ("id_context_precision", "id_context_recall"):
            sample = SingleTurnSample(retrieved_context_ids=r.retrieved_chunk_ids,
                                      reference_context_ids=r.reference_chunk_ids)
            metric = self.id_precision if name == "id_context_precision" else self.id_recall
            return float(await metric.single_turn_ascore(sample))
        if name in self.per_answer:
            metric = self.per_answer[name]
            values = [(await metric.ascore(reference=a, response=r.clean_answer)).value for a in r.row.answers]
            return float(max(values))
        if name == "semantic_similarity":
            return float((await self.semantic().ascore(reference=r.row.answers[0], response=r.clean_answer)).value)
        if name in JUDGED:
            return await self._judge(name, r)
        raise KeyError(name)


    async def _judge(self, name: str, r: RowResult) -> float:
        """An LLM-judged score, from the on-disk cache when this exact judgement was made before."""
        judge = self._judge_config or {}
        key = _digest([name, judge.get("base_url"), judge.get("model"), r.row.question, r.clean_answer, r.contexts])
        if self._judge_cache is not None and (cached := self._judge_cache.get(key)) is not None:
            return cached
        metric = self.judged()[name]
        if name == "faithfulness":
            result = await metric.ascore(user_input=r.row.question, response=r.clean_answer,
                                         retrieved_contexts=r.contexts)
        else:
            result = await metric.ascore(user_input=r.row.question, response=r.clean_answer)
        value = _as_float(result.value)
        if self._judge_cache is not None and not math.isnan(value):  # a NaN may be transient: ask again next run
            self._judge_cache.put(key, value)
        return value


class JudgeCache:
    """Append-only JSON-lines file of judged scores, keyed by a digest of everything the judge saw."""

    def __init__(self, path: Path):
        self.path = path
        self._values: dict[str, float] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._values[entry["key"]] = float(entry["value"])

    def get(self, key: str) -> float | None:
        return self._values.get(key)

    def put(self, key: str, value: float) -> None:
        self._values[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"key": key, "value": value}) + "\n")


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, default=str).encode("utf-8")).hexdigest()


def _embeddings_for_ragas(embedder: Any) -> Any:
    """Our already-loaded embedder as a Ragas embedding (no second model load), with a batch cache."""
    from ragas.embeddings.base import BaseRagasEmbedding

    class LlmftiEmbeddings(BaseRagasEmbedding):
        def __init__(self) -> None:
            super().__init__()
            self._cache: dict[str, list[float]] = {}

        def prime(self, texts: list[str]) -> None:
            todo = [t or " " for t in dict.fromkeys(texts) if (t or " ") not in self._cache]
            if todo:
                self._cache.update(zip(todo, embedder.encode(todo).tolist(), strict=True))

        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            if text not in self._cache:
                self.prime([text])
            return self._cache[text]

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embed_text(text)

    return LlmftiEmbeddings()


def _as_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


LOCAL = {
    "hit@1": _hit_at(1),
    "hit@5": _hit_at(5),
    "hit@10": _hit_at(10),
    "mrr@10": mrr_at_10,
    "squad_em": squad_em,
    "squad_f1": squad_f1,
    "answered": answered,
    "first_sentence_presence": first_sentence_presence,
}
RUN_LEVEL: dict[str, Callable[[list[RowResult]], float]] = {
    "abstention_precision": abstention_precision,
    "abstention_recall": abstention_recall,
    "abstention_f1": abstention_f1,
}
RAGAS = {"id_context_precision", "id_context_recall", "exact_match", "string_presence", "string_similarity",
         "rouge_l", "semantic_similarity"}
JUDGED = {"faithfulness", "answer_relevancy"}
METRICS = set(LOCAL) | RAGAS | JUDGED | set(RUN_LEVEL)


def score_rows(results: list[RowResult], names: list[str], scorers: RagasScorers | None) -> None:
    """Fill ``r.scores`` for every row and metric; a metric that fails on a row gives NaN (unmeasured).
    Unanswerable rows get only ``abstained``; run-level metrics are left to :func:`aggregate`."""
    names = [n for n in names if n not in RUN_LEVEL]
    for r in results:
        if not r.row.answerable:
            r.scores["abstained"] = abstained(r)
            continue
        for name in names:
            if name in LOCAL and (value := LOCAL[name](r)) is not None:  # None: the metric does not apply
                r.scores[name] = value

    async def ragas_all() -> None:
        for r in results:
            for name in names:
                if name in LOCAL or not r.row.answerable:
                    continue
                try:
                    r.scores[name] = await scorers.score(name, r)  # type: ignore[union-attr]
                except Exception:  # noqa: BLE001 - a judge or metric failure is "unmeasured", counted
                    r.scores[name] = math.nan

    if "semantic_similarity" in names and scorers is not None:
        scorers.prime([r for r in results if r.row.answerable])
    if any(n not in LOCAL for n in names):
        asyncio.run(ragas_all())


def aggregate(results: list[RowResult], names: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Mean of each row metric over the rows it scored (NaN rows counted as unmeasured), and each run-level
    metric over the whole run."""
    means, unmeasured = {}, {}
    for name in names:
        if name in RUN_LEVEL:
            value = RUN_LEVEL[name](results)
            means[name], unmeasured[name] = round(value, 6), int(math.isnan(value))
            continue
        values = [r.scores[name] for r in results if name in r.scores]
        measured = [v for v in values if not math.isnan(v)]
        unmeasured[name] = len(values) - len(measured)
        means[name] = round(sum(measured) / len(measured), 6) if measured else math.nan
    return means, unmeasured
