"""How hybrid search fuses its dense and full-text rankings: a choice stored per index version.

Two chunk-level methods:

- ``rrf``: reciprocal-rank fusion, ``dense_weight / (rrf_k + dense rank) + fts_weight / (rrf_k + fts rank)``;
- ``score``: weighted sum of each ranking's scores normalised within that ranking (``normalise``:
  ``minmax`` to [0, 1], or ``zscore``: minus the mean, over the standard deviation); a chunk missing
  from a ranking gets that ranking's lowest normalised score.

Then, optionally, document-level fusion: the chunk scores are aggregated per document (``doc_key``:
``doc_id``, or ``title``, which groups the documents of one article or file), by the best chunk
(``max``) or the sum of the ``doc_top`` best (``sum``), and every chunk gets ``doc_weight`` times its
document's score added, so the chunks of strongly matching documents rise together. ``doc_weight = 0``
is chunk-level fusion only.

Then, optionally, sentence-level evidence (llmfti/index/sentences.py): when ``sentence_weight`` or
``coverage_weight`` is above 0, the score so far is turned into a z-score over the candidates, and each
candidate gets ``sentence_weight`` x the z-score of its best sentence's cosine with the question and
``coverage_weight`` x the z-score of the question words its best sentence covers. Chunks of an index built
without sentence vectors count as average on the first. :data:`Fusion` with its defaults (and ``rrf_k``
from settings) is plain RRF, what search did before a fusion was tuned. ``llmfti index tune-fusion`` picks one per index
(llmfti/index/fusion_tuning.py); the index stores it in its schema metadata, so each version carries
its own and a rollback restores it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

from llmfti.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from llmfti.index.vector_index import SearchHit

METHODS = ("rrf", "score")
NORMALISATIONS = ("minmax", "zscore")
DOC_KEYS = ("doc_id", "title")
DOC_AGGREGATES = ("max", "sum")


@dataclass(frozen=True)
class Fusion:
    """One way to fuse a hybrid search's dense and full-text rankings (see the module docstring)."""

    method: Literal["rrf", "score"] = "rrf"
    rrf_k: int = 5
    normalise: Literal["minmax", "zscore"] = "minmax"
    dense_weight: float = 1.0
    fts_weight: float = 1.0
    doc_weight: float = 0.0
    doc_key: Literal["doc_id", "title"] = "doc_id"
    doc_aggregate: Literal["max", "sum"] = "max"
    doc_top: int = 3
    sentence_weight: float = 0.0
    coverage_weight: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method {self.method!r} (expected one of {', '.join(METHODS)})")
        if not isinstance(self.rrf_k, int) or self.rrf_k < 1:
            problems.append(f"rrf_k {self.rrf_k!r} (expected an integer >= 1)")
        if self.normalise not in NORMALISATIONS:
            problems.append(f"normalise {self.normalise!r} (expected one of {', '.join(NORMALISATIONS)})")
        for name in ("dense_weight", "fts_weight", "doc_weight", "sentence_weight", "coverage_weight"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or value != value:
                problems.append(f"{name} {value!r} (expected a number >= 0)")
        if self.dense_weight == 0 and self.fts_weight == 0:
            problems.append("dense_weight and fts_weight both 0 (expected at least one > 0)")
        if self.doc_key not in DOC_KEYS:
            problems.append(f"doc_key {self.doc_key!r} (expected one of {', '.join(DOC_KEYS)})")
        if self.doc_aggregate not in DOC_AGGREGATES:
            problems.append(f"doc_aggregate {self.doc_aggregate!r} (expected one of {', '.join(DOC_AGGREGATES)})")
        if not isinstance(self.doc_top, int) or self.doc_top < 1:
            problems.append(f"doc_top {self.doc_top!r} (expected an integer >= 1)")
        if problems:
            raise InvalidInputError(f"invalid fusion: {'; '.join(problems)}",
                                    fix="correct those fields, or run llmfti index tune-fusion to choose them")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fusion:
        if not isinstance(data, dict):
            raise InvalidInputError(f"a fusion must be an object, got {type(data).__name__}",
                                    expected=f"fields {[f.name for f in fields(cls)]}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidInputError(f"unknown fusion fields {unknown}", expected=f"{[f.name for f in fields(cls)]}",
                                    fix="remove them (a newer llmfti may have written them: upgrade)")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def uses_sentences(self) -> bool:
        """Whether search must read the candidates' sentence vectors (and pass the question's text and vector)."""
        return self.sentence_weight > 0 or self.coverage_weight > 0

    def describe(self) -> str:
        """A short human-readable form, e.g. ``rrf k=5 fts x1.5 + title max x0.5``."""
        chunk = f"rrf k={self.rrf_k}" if self.method == "rrf" else f"score ({self.normalise})"
        weights = f"dense x{self.dense_weight:g} fts x{self.fts_weight:g}"
        text = f"{chunk}, {weights}"
        if self.doc_weight > 0:
            agg = "max" if self.doc_aggregate == "max" else f"sum of top {self.doc_top}"
            text += f", + {self.doc_key} {agg} x{self.doc_weight:g}"
        if self.uses_sentences:
            text += f"; + best sentence x{self.sentence_weight:g}, coverage x{self.coverage_weight:g}"
        return text


def encode(fusion: Fusion, record: dict[str, Any]) -> str:
    """The JSON stored in an index version's schema metadata: the fusion and how it was chosen."""
    return json.dumps({"fusion": fusion.to_dict(), "chosen": record}, sort_keys=True, default=str)


def decode(raw: bytes | str) -> tuple[Fusion, dict[str, Any]]:
    """The fusion and its record from :func:`encode`'s JSON; ConfigError when it is unreadable."""
    try:
        data = json.loads(raw)
        return Fusion.from_dict(data["fusion"]), data.get("chosen") or {}
    except (ValueError, KeyError, TypeError) as exc:  # InvalidInputError is a ValueError too
        raise ConfigError(f"the stored fusion record is unreadable ({exc}): {str(raw)[:200]}",
                          fix="store a new one with llmfti index tune-fusion NAME, or roll the index back") from exc


def fuse(dense: list[SearchHit], fts: list[SearchHit], fusion: Fusion, k: int, query: str | None = None,
         vector: Any = None) -> list[SearchHit]:
    """The top ``k`` chunks of the two rankings fused by ``fusion`` (ties broken by chunk id); ``query`` and its
    ``vector`` feed the sentence evidence (:attr:`Fusion.uses_sentences`)."""
    scores, hits = fused_scores(dense, fts, fusion, query, vector)
    return [replace(hits[c], score=scores[c]) for c in top(scores, k)]


def top(scores: dict[str, float], k: int) -> list[str]:
    """The ``k`` best chunk ids by score, ties by chunk id."""
    return sorted(scores, key=lambda cid: (-scores[cid], cid))[:k]


def fused_scores(dense: list[SearchHit], fts: list[SearchHit], fusion: Fusion, query: str | None = None,
                 vector: Any = None) -> tuple[dict[str, float], dict[str, SearchHit]]:
    """``(chunk id -> fused score, chunk id -> hit)`` of every chunk in either ranking."""
    scores: dict[str, float] = {}
    hits: dict[str, SearchHit] = {}
    if fusion.method == "rrf":
        for ranking, weight in ((dense, fusion.dense_weight), (fts, fusion.fts_weight)):
            for rank, hit in enumerate(ranking, start=1):
                scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (fusion.rrf_k + rank)
                hits.setdefault(hit.chunk_id, hit)
    else:
        floors = []
        for ranking, weight in ((dense, fusion.dense_weight), (fts, fusion.fts_weight)):
            normalised = _normalised([h.score for h in ranking], fusion.normalise)
            floor = min(normalised, default=0.0)
            floors.append(weight * floor)
            for hit, value in zip(ranking, normalised, strict=True):
                scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight * (value - floor)
                hits.setdefault(hit.chunk_id, hit)
        base = sum(floors)  # every chunk gets each ranking's floor; missing from one: exactly its floor
        scores = {cid: score + base for cid, score in scores.items()}
    if fusion.doc_weight > 0:
        scores = _with_documents(scores, hits, fusion)
    if fusion.uses_sentences and scores:
        scores = with_sentences(scores, hits, fusion, query, vector)
    return scores, hits


def with_sentences(scores: dict[str, float], hits: dict[str, SearchHit], fusion: Fusion, query: str | None,
                   vector: Any) -> dict[str, float]:
    """z(score) + ``sentence_weight`` x z(best sentence cosine) + ``coverage_weight`` x z(coverage)."""
    from llmfti.index import sentences

    if query is None:
        raise ValueError("a fusion with sentence evidence needs the query (and its vector)")
    ids = list(scores)
    total = sentences.zscores([scores[c] for c in ids])
    if fusion.sentence_weight > 0:
        best = sentences.best_sentence_cosines(vector, [hits[c].sentence_vectors for c in ids])
        total = [t + fusion.sentence_weight * z for t, z in zip(total, sentences.zscores(best), strict=True)]
    if fusion.coverage_weight > 0:
        covered = sentences.coverages(query, [hits[c].text for c in ids])
        total = [t + fusion.coverage_weight * z for t, z in zip(total, sentences.zscores(covered), strict=True)]
    return dict(zip(ids, total, strict=True))


def _normalised(values: list[float], how: str) -> list[float]:
    if not values:
        return []
    if how == "minmax":
        low, span = min(values), max(values) - min(values)
        return [(v - low) / span if span > 0 else 1.0 for v in values]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return [(v - mean) / std if std > 0 else 0.0 for v in values]


def document_key(hit: SearchHit, doc_key: str) -> str:
    """The document a chunk counts toward: its doc id, or its title (the ``title`` column's rule:
    the document's metadata title, else its doc id)."""
    if doc_key == "title":
        return str(hit.metadata.get("title") or hit.doc_id)
    return hit.doc_id


def _with_documents(scores: dict[str, float], hits: dict[str, SearchHit], fusion: Fusion) -> dict[str, float]:
    """Chunk score + ``doc_weight`` x its document's aggregated chunk score."""
    per_doc: dict[str, list[float]] = {}
    keys = {}
    for cid, score in scores.items():
        key = keys[cid] = document_key(hits[cid], fusion.doc_key)
        per_doc.setdefault(key, []).append(score)
    if fusion.doc_aggregate == "max":
        doc_scores = {key: max(values) for key, values in per_doc.items()}
    else:
        doc_scores = {key: sum(sorted(values, reverse=True)[:fusion.doc_top]) for key, values in per_doc.items()}
    return {cid: score + fusion.doc_weight * doc_scores[keys[cid]] for cid, score in scores.items()}
