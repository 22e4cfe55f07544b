"""The fusion maths of llmfti/index/fusion.py over many questions at once, in numpy: the tuner's grid search.

Each question's candidates (the chunks of its dense and full-text rankings) fill one row of padded matrices,
columns in chunk-id order so a stable sort breaks ties by chunk id as :func:`~llmfti.index.fusion.fuse` does.
Scoring a fusion on 5,000 questions takes milliseconds instead of seconds. Floating-point sums may differ in
the last bits from the per-query code (a near-tie can fall the other way), so this is for *choosing*; the
figures a tuning reports come from :func:`~llmfti.index.fusion_tuning.evaluate`, the code search runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmfti.index.fusion import Fusion, document_key

if TYPE_CHECKING:
    from llmfti.index.fusion_tuning import Question, Rankings

K = 10


class FusionBatch:
    """The rankings of ``questions`` as matrices; :meth:`metrics` scores one fusion on all of them."""

    def __init__(self, rankings: Sequence[Rankings], questions: Sequence[Question]):
        import numpy as np

        rows = []
        for (dense, fts), question in zip(rankings, questions, strict=True):
            hits = {h.chunk_id: h for h in [*dense, *fts]}
            rows.append((sorted(hits), hits, dense, fts, question))
        width = max([len(r[0]) for r in rows] + [1])
        shape = (len(rows), width)
        self.valid = np.zeros(shape, dtype=bool)
        self.gold = np.zeros(shape, dtype=bool)
        self.dense_rank = np.full(shape, np.inf)
        self.fts_rank = np.full(shape, np.inf)
        self.dense_score = np.full(shape, np.nan)
        self.fts_score = np.full(shape, np.nan)
        self.groups = {key: np.zeros(shape, dtype=np.int64) for key in ("doc_id", "title")}
        for i, (ids, hits, dense, fts, question) in enumerate(rows):
            column = {cid: j for j, cid in enumerate(ids)}
            self.valid[i, :len(ids)] = True
            self.gold[i, :len(ids)] = [hits[c].doc_id in question.gold for c in ids]
            for ranking, ranks, scores in ((dense, self.dense_rank, self.dense_score),
                                           (fts, self.fts_rank, self.fts_score)):
                for rank, hit in enumerate(ranking, start=1):
                    j = column[hit.chunk_id]
                    if ranks[i, j] == np.inf:  # a chunk listed twice counts at its first rank
                        ranks[i, j], scores[i, j] = rank, hit.score
            for key, codes in self.groups.items():
                names: dict[str, int] = {}
                codes[i, :len(ids)] = [names.setdefault(document_key(hits[c], key), len(names)) for c in ids]

    def metrics(self, fusion: Fusion, positions: Sequence[int] | None = None) -> dict[str, Any]:
        """hit@1, hit@5, hit@10 and MRR@10 of ``fusion`` over the questions at ``positions`` (default: all)."""
        import numpy as np

        rows = np.arange(self.valid.shape[0]) if positions is None else np.asarray(positions, dtype=np.int64)
        scores = self._chunk_scores(fusion, rows)
        if fusion.doc_weight > 0:
            scores = scores + fusion.doc_weight * self._document_scores(fusion, rows, scores)
        scores = np.where(self.valid[rows], scores, -np.inf)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        gold = np.take_along_axis(self.gold[rows] & self.valid[rows], order, axis=1)
        found = gold.any(axis=1)
        rank = np.where(found, gold.argmax(axis=1) + 1, 0)
        n = max(len(rows), 1)
        return {"hit@1": float((rank == 1).sum() / n), "hit@5": float(((rank >= 1) & (rank <= 5)).sum() / n),
                "hit@10": float(found.sum() / n),
                "mrr@10": float(np.where(found, 1.0 / np.maximum(rank, 1), 0.0).sum() / n),
                "questions": len(rows)}

    def _chunk_scores(self, fusion: Fusion, rows: Any) -> Any:
        import numpy as np

        parts, base = [], 0.0
        for ranks, raw, weight in ((self.dense_rank[rows], self.dense_score[rows], fusion.dense_weight),
                                   (self.fts_rank[rows], self.fts_score[rows], fusion.fts_weight)):
            if fusion.method == "rrf":
                parts.append(np.where(np.isfinite(ranks), weight / (fusion.rrf_k + ranks), 0.0))
                continue
            present = ~np.isnan(raw)
            if fusion.normalise == "minmax":
                low = np.nanmin(np.where(present, raw, np.inf), axis=1, keepdims=True)
                high = np.nanmax(np.where(present, raw, -np.inf), axis=1, keepdims=True)
                span = high - low
                normal = np.where(span > 0, (raw - low) / np.where(span > 0, span, 1.0), 1.0)
            else:
                count = np.maximum(present.sum(axis=1, keepdims=True), 1)
                mean = np.where(present, raw, 0.0).sum(axis=1, keepdims=True) / count
                std = np.sqrt((np.where(present, raw - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count)
                normal = np.where(std > 0, (raw - mean) / np.where(std > 0, std, 1.0), 0.0)
            floor = np.min(np.where(present, normal, np.inf), axis=1, keepdims=True)
            floor = np.where(np.isfinite(floor), floor, 0.0)
            parts.append(np.where(present, weight * (normal - floor), 0.0))
            base = base + weight * floor  # as fuse(): a chunk missing from a ranking gets its floor
        return parts[0] + parts[1] + base

    def _document_scores(self, fusion: Fusion, rows: Any, scores: Any) -> Any:
        """Each chunk's document score: max, or sum of the ``doc_top`` best, of its document's chunk scores."""
        import numpy as np

        codes = self.groups[fusion.doc_key][rows]
        valid = self.valid[rows]
        n, width = scores.shape
        flat = (np.arange(n)[:, None] * width + codes)[valid]
        values = scores[valid]
        if fusion.doc_aggregate == "max":
            total = np.full(n * width, -np.inf)
            np.maximum.at(total, flat, values)
        else:
            order = np.lexsort((-values, flat))  # by document, best chunk first
            sorted_flat = flat[order]
            starts = np.r_[0, np.flatnonzero(np.diff(sorted_flat)) + 1]
            position = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
            keep = order[position < fusion.doc_top]
            total = np.zeros(n * width)
            np.add.at(total, flat[keep], values[keep])
        per_chunk = np.zeros_like(scores)
        per_chunk[valid] = total[flat]
        return per_chunk
