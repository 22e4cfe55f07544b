"""Choose an index's hybrid fusion from its own eval questions: grid search on a tuning split, report
on a held-out split.

Each question is searched once in dense and once in full-text mode at the depth hybrid search fuses
(:data:`DEPTH`); every candidate :class:`~llmfti.index.fusion.Fusion` is then applied to those
rankings offline with the same :func:`~llmfti.index.fusion.fuse` that search runs, so a score here is
exactly what search will return. Questions are split in two halves by their gold document *group*
(the doc id up to a ``#``: SQuAD paragraph ids ``Title#n`` split by article), so no article helps
choose the fusion it is judged on. The objective is hit@5 + MRR@10 (ties: hit@1, then the simpler
fusion). The grid is searched in three stages: chunk-level (method, rrf_k, weights), then document-level
fusion on top of the best chunk-level candidates, then sentence-level evidence (best-sentence cosine and
question-word coverage, llmfti/index/sentences.py) on top of the stage-two winner and of plain RRF; it is
scored in numpy (llmfti/index/fusion_batch.py, and :class:`SentenceBatch` here), and the figures reported
come from :func:`evaluate`, which runs search's own fusion code.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from llmfti.embedders.base import encode_queries
from llmfti.errors import InvalidInputError
from llmfti.index.fusion import Fusion, fused_scores, top

if TYPE_CHECKING:
    import numpy as np

    from llmfti.index.vector_index import SearchHit, VectorIndex

DEPTH = 50  # what hybrid search fuses for k <= 12: max(4k, 50) from each side
K = 10
MIN_QUESTIONS_PER_SPLIT = 20
RRF_KS = (1, 2, 3, 5, 8, 12, 20, 40, 60)
FTS_WEIGHTS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
SCORE_FTS_WEIGHTS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
DOC_WEIGHTS = (0.1, 0.25, 0.5, 1.0, 2.0)
STAGE_TWO_BASES = 3
SENTENCE_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0)
COVERAGE_WEIGHTS = (0.0, 0.5, 0.75, 1.0, 1.5)


@dataclass(frozen=True)
class Question:
    """One eval question: its text and the doc ids that answer it."""

    text: str
    gold: frozenset[str]

    @property
    def group(self) -> str:
        """What the split keeps together: the smallest gold doc id up to a ``#``."""
        return min(self.gold).split("#", 1)[0]


Rankings = tuple["list[SearchHit]", "list[SearchHit]"]  # (dense, fts) of one question


def split(questions: Sequence[Question]) -> tuple[list[int], list[int]]:
    """``(tuning, held_out)`` positions of ``questions``, halved by a stable hash of each question's group."""
    tuning, held_out = [], []
    for i, q in enumerate(questions):
        (tuning if zlib.crc32(q.group.encode("utf-8")) % 2 == 0 else held_out).append(i)
    return tuning, held_out


def collect(index: VectorIndex, questions: Sequence[Question], vectors: np.ndarray | None = None, *,
            tenant: str | None = None, version: int | str | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> list[Rankings]:
    """The dense and full-text rankings (``DEPTH`` deep) of every question, hits with their sentence vectors
    when the index has them; ``vectors`` are the questions' embeddings (default: embedded here, in batches)."""
    if vectors is None:
        vectors = encode_queries(index.embedder(), [q.text for q in questions])
    out = []
    for n, (q, vector) in enumerate(zip(questions, vectors, strict=True), start=1):
        out.append(index.candidates(q.text, vector, DEPTH, tenant=tenant, version=version))
        if on_progress is not None and (n % 100 == 0 or n == len(questions)):
            on_progress(n, len(questions))
    return out


def evaluate(fusion: Fusion, rankings: Sequence[Rankings], questions: Sequence[Question],
             positions: Sequence[int] | None = None, vectors: Any = None) -> dict[str, float]:
    """hit@1, hit@5, hit@10 and MRR@10 of ``fusion`` over the questions at ``positions`` (default: all);
    ``vectors``: the questions' embeddings (needed by a fusion with sentence evidence)."""
    positions = range(len(questions)) if positions is None else positions
    hit1 = hit5 = hit10 = 0
    rr = 0.0
    for i in positions:
        gold = questions[i].gold
        vector = None if vectors is None else vectors[i]
        scores, hits = fused_scores(rankings[i][0], rankings[i][1], fusion, questions[i].text, vector)
        rank = next((r for r, c in enumerate(top(scores, K), start=1) if hits[c].doc_id in gold), None)
        if rank is not None:
            hit1 += rank == 1
            hit5 += rank <= 5
            hit10 += 1
            rr += 1.0 / rank
    n = max(len(positions), 1)
    return {"hit@1": hit1 / n, "hit@5": hit5 / n, "hit@10": hit10 / n, "mrr@10": rr / n, "questions": len(positions)}


def objective(metrics: dict[str, float]) -> tuple[float, float]:
    return (round(metrics["hit@5"] + metrics["mrr@10"], 9), metrics["hit@1"])


def chunk_grid() -> list[Fusion]:
    """Stage one: RRF over k x fts weight, and score fusion (min-max, z-score) over fts weight (dense weight 1)."""
    rrf = [Fusion("rrf", rrf_k=k, fts_weight=w) for k in RRF_KS for w in FTS_WEIGHTS]
    score = [Fusion("score", normalise=n, fts_weight=w) for n in ("minmax", "zscore") for w in SCORE_FTS_WEIGHTS]
    return rrf + score


def document_grid(base: Fusion) -> list[Fusion]:
    """Stage two: ``base`` plus document-level fusion by doc id or title, max or sum of the top 3."""
    return [replace(base, doc_weight=w, doc_key=key, doc_aggregate=agg)
            for key in ("doc_id", "title") for agg in ("max", "sum") for w in DOC_WEIGHTS]


@dataclass
class TuningReport:
    chosen: Fusion
    default: Fusion
    tuning: dict[str, dict[str, float]]  # "chosen" / "default" -> metrics on the tuning split
    held_out: dict[str, dict[str, float]]  # the same on the held-out split
    candidates: int
    stage_one_best: Fusion

    @property
    def improves(self) -> bool:
        """Whether the chosen fusion is at least as good as the default on the held-out split."""
        return objective(self.held_out["chosen"]) >= objective(self.held_out["default"])

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen.to_dict(), "chosen_text": self.chosen.describe(),
                "default": self.default.to_dict(), "default_text": self.default.describe(),
                "stage_one_best": self.stage_one_best.to_dict(), "candidates": self.candidates,
                "tuning": _rounded(self.tuning), "held_out": _rounded(self.held_out),
                "improves_on_held_out": self.improves}


def tune(rankings: Sequence[Rankings], questions: Sequence[Question], default: Fusion, *,
         swap: bool = False, vectors: Any = None) -> TuningReport:
    """Grid-search the fusion on the tuning split of ``questions``; report it and ``default`` on both splits.
    ``swap``: tune on the other half (the held-out one) instead, for a second fold. ``vectors``: the questions'
    embeddings; with them, sentence-level evidence is tried too (stage three)."""
    from llmfti.index.fusion_batch import FusionBatch

    if len(rankings) != len(questions):
        raise ValueError(f"{len(rankings)} rankings for {len(questions)} questions")
    tuning, held_out = split(questions)
    if swap:
        tuning, held_out = held_out, tuning
    if min(len(tuning), len(held_out)) < MIN_QUESTIONS_PER_SPLIT:
        raise InvalidInputError(
            f"{len(questions)} questions split into {len(tuning)} for tuning and {len(held_out)} held out "
            f"(by gold document group)",
            expected=f"at least {MIN_QUESTIONS_PER_SPLIT} questions on each side, about many documents",
            fix="pass more eval questions (e.g. --full with a suite, or a longer --questions file)",
        )

    batch = FusionBatch(rankings, questions)  # the grid is scored in numpy; the reported figures by evaluate()

    def score(fusion: Fusion) -> tuple[tuple[float, float], int]:
        return objective(batch.metrics(fusion, tuning)), -_complexity(fusion)

    stage_one = sorted(dict.fromkeys([default, *chunk_grid()]), key=score, reverse=True)  # stable: ties keep order
    bases = stage_one[:STAGE_TWO_BASES]
    stage_two = [f for base in bases for f in document_grid(base)]
    chosen = max([stage_one[0], *stage_two], key=score)
    candidates = len(stage_one) + len(stage_two)
    if vectors is not None:
        sentence_batch = SentenceBatch(rankings, questions, vectors)
        stage_three = [(base, s, c) for base in dict.fromkeys([chosen, default])
                       for s in SENTENCE_WEIGHTS for c in COVERAGE_WEIGHTS if s or c]
        candidates += len(stage_three)

        def sentence_score(item: tuple[Fusion, float, float]) -> tuple[tuple[float, float], int]:
            base, s, c = item
            return objective(sentence_batch.metrics(base, s, c, tuning)), -_complexity(base) - (s > 0) - (c > 0)

        best = max(stage_three, key=sentence_score)
        if sentence_score(best) > score(chosen):
            chosen = replace(best[0], sentence_weight=best[1], coverage_weight=best[2])
    return TuningReport(
        chosen=chosen, default=default, candidates=candidates, stage_one_best=stage_one[0],
        tuning={"chosen": evaluate(chosen, rankings, questions, tuning, vectors),
                "default": evaluate(default, rankings, questions, tuning, vectors)},
        held_out={"chosen": evaluate(chosen, rankings, questions, held_out, vectors),
                  "default": evaluate(default, rankings, questions, held_out, vectors)},
    )


class SentenceBatch:
    """Stage three in numpy: per question, the candidates' best-sentence cosines and coverages (z-scores,
    computed once by search's own code), added with any weights to the z-score of a base fusion's scores."""

    def __init__(self, rankings: Sequence[Rankings], questions: Sequence[Question], vectors: Any):
        import numpy as np

        from llmfti.index import sentences

        self.rows = []
        for (dense, fts), question, vector in zip(rankings, questions, vectors, strict=True):
            hits = {h.chunk_id: h for h in [*fts, *dense]}
            ids = sorted(hits)  # chunk-id order: a stable sort breaks ties as fuse() does
            best = sentences.best_sentence_cosines(vector, [hits[c].sentence_vectors for c in ids])
            covered = sentences.coverages(question.text, [hits[c].text for c in ids])
            gold = [hits[c].doc_id in question.gold for c in ids]
            self.rows.append((ids, np.array(sentences.zscores(best)), np.array(sentences.zscores(covered)),
                              np.array(gold, dtype=bool), dense, fts, question))
        self._bases: dict[Fusion, list[Any]] = {}

    def _base(self, fusion: Fusion) -> list[Any]:
        import numpy as np

        from llmfti.index import sentences

        if fusion not in self._bases:
            out = []
            for ids, *_rest, dense, fts, _question in self.rows:
                scores, _ = fused_scores(dense, fts, fusion)
                out.append(np.array(sentences.zscores([scores[c] for c in ids])))
            self._bases[fusion] = out
        return self._bases[fusion]

    def metrics(self, base: Fusion, sentence_weight: float, coverage_weight: float,
                positions: Sequence[int]) -> dict[str, float]:
        import numpy as np

        bases = self._base(base)
        hit1 = hit5 = hit10 = 0
        rr = 0.0
        for i in positions:
            _ids, best, covered, gold, *_ = self.rows[i]
            total = bases[i] + sentence_weight * best + coverage_weight * covered
            order = np.argsort(-total, kind="stable")[:K]
            found = np.flatnonzero(gold[order])
            if found.size:
                rank = int(found[0]) + 1
                hit1 += rank == 1
                hit5 += rank <= 5
                hit10 += 1
                rr += 1.0 / rank
        n = max(len(positions), 1)
        return {"hit@1": hit1 / n, "hit@5": hit5 / n, "hit@10": hit10 / n, "mrr@10": rr / n}


def _complexity(fusion: Fusion) -> int:
    """Prefer the plainer of two equally good fusions."""
    return ((fusion.method != "rrf") + (fusion.normalise != "minmax") + (fusion.fts_weight != 1.0)
            + 2 * (fusion.doc_weight > 0))


def _rounded(metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {name: {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()} for name, m in metrics.items()}


def tune_index(index: VectorIndex, questions: Sequence[Question], *, source: str, tenant: str | None = None,
               store: bool = True, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Tune ``index``'s fusion on ``questions`` (from ``source``, e.g. "suite squad") at its newest published
    version and, when ``store`` and the choice is at least as good as plain RRF on the held-out split, store it
    as a new index version. Returns the report, ``stored_version`` (None when nothing was stored) and why."""
    version = index.version
    known = {doc_id for (t, doc_id) in index.doc_state() if t == (tenant or index.settings.ingest.default_tenant)}
    answerable = [q for q in questions if q.gold & known]
    if len(answerable) < len(questions) / 2:
        raise InvalidInputError(
            f"only {len(answerable)} of {len(questions)} questions from {source} have a gold document in index "
            f"{index.name!r} (version {version}, tenant {tenant or index.settings.ingest.default_tenant!r})",
            expected="eval questions about this index's documents (their doc ids as the index has them)",
            fix="pass the questions of this index's own eval set, or the index the suite was built for",
        )
    vectors = encode_queries(index.embedder(), [q.text for q in answerable])
    rankings = collect(index, answerable, vectors, tenant=tenant, version=version, on_progress=on_progress)
    sentences = index.has_sentence_vectors(version)
    default = Fusion(rrf_k=index.settings.index.rrf_k)
    report = tune(rankings, answerable, default, vectors=vectors if sentences else None)
    result: dict[str, Any] = {"index": index.name, "tuned_on_version": version, "source": source,
                              "questions": len(answerable), "skipped_without_gold_in_index":
                              len(questions) - len(answerable), **report.to_dict(), "stored_version": None,
                              "sentence_evidence": "tried" if sentences else (
                                  f"not tried: index {index.name!r} was built before chunks stored their sentence "
                                  f"vectors; to use it, build the documents into a new index (llmfti index build "
                                  f"PATH --index NEW_NAME) and tune that")}
    if not store:
        result["decision"] = "not stored (--dry-run)"
    elif not report.improves:
        result["decision"] = ("not stored: the tuned fusion is worse than plain RRF on the held-out split; "
                              "search keeps the fusion it has")
    else:
        record = {"source": source, "tuned_on_version": version, "questions": len(answerable),
                  "held_out": result["held_out"], "tuning": result["tuning"], "candidates": report.candidates}
        result["stored_version"] = index.store_fusion(report.chosen, record)
        result["decision"] = f"stored in index version {result['stored_version']}: hybrid search uses it"
    return result
