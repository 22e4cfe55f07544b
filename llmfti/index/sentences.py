"""Sentence-level evidence for hybrid search: a chunk scored by its best sentence, not only as a whole.

A question usually targets one sentence, and MiniLM was trained on sentence pairs, so a chunk's best
sentence says more about it than the chunk's own vector does. Two features per candidate chunk:

- ``sentence``: the highest cosine of the question with the chunk's sentences. The sentence vectors are
  embedded at build time (:func:`embed_sentences`), stored beside the chunk's own vector in the
  ``sentence_embeddings`` column of the same row (so every index version, tag and rollback carries the
  vectors of its own chunks) and reused by content like chunk vectors.
- ``coverage``: the share of the question's words found in the chunk's best sentence, each word weighted by
  its IDF among the candidates' sentences (a word in every candidate tells nothing). Computed at query
  time from the chunks' text: no corpus statistics to keep in sync.

Hybrid search adds them to its fused score (llmfti/index/fusion.py: ``sentence_weight``,
``coverage_weight``), each as a z-score over the candidate pool. SQuAD dev, all 10,570 questions
(``python -m benchmarks.fusion_tuning``): plain RRF hit@5 0.954 / MRR@10 0.840 -> 0.9699 / 0.900 with both
weights 1 and no tuning; tuned out of fold 0.9699 / 0.905 (chunk-level tuning alone: 0.954 / 0.872); with the
embedder adapted to the paragraphs first (``--adapt-embedder``), tuned out of fold 0.9707 / 0.906. Cost:
sentence embedding took 2.1x the chunk embedding at build (833 vs 397 s for 10,561 sentences / 2,250 chunks on
a loaded 2-core machine); hybrid search p50 14.2 vs 10.8 ms without the evidence (8.8 plain RRF), same run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

MAX_SENTENCES = 32  # per chunk: bounds storage and query cost (a chunk holds ~5-15 sentences)
MIN_WORDS = 3  # a shorter piece is joined to the sentence before it
_BOUNDARY = re.compile(
    r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])"  # sentence end, then a capital or a digit
    r"|\n\s*\n"  # a blank line
    r"|\n(?=\s*(?:[-*+]|\d+[.)]|#+)\s)"  # a list item or a heading on the next line
)
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an the of in on at to for by with from and or is are was were be been being what which who whom whose "
    "when where why how did do does that this these those as it its into than then there their they he she his "
    "her not no".split()
)


def split_sentences(text: str) -> list[str]:
    """The sentences of a chunk (at most :data:`MAX_SENTENCES`; the whole text when it has none)."""
    out: list[str] = []
    for piece in _BOUNDARY.split(text):
        piece = piece.strip()
        if not piece:
            continue
        if out and len(_WORD.findall(piece)) < MIN_WORDS:
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out[:MAX_SENTENCES] or [text]


def embed_sentences(embedder: Any, texts: Sequence[str], batch_size: int = 64) -> list[np.ndarray]:
    """One ``(sentences, dimension)`` float32 matrix per chunk text, encoded in length-sorted batches."""
    import numpy as np

    sentences = [split_sentences(t) for t in texts]
    flat = [s for chunk in sentences for s in chunk]
    order = sorted(range(len(flat)), key=lambda i: len(flat[i]))
    vectors = np.zeros((len(flat), embedder.info.dimension), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        group = order[start:start + batch_size]
        vectors[group] = np.asarray(embedder.encode([flat[i] for i in group], batch_size=batch_size), np.float32)
    out, at = [], 0
    for chunk in sentences:
        out.append(vectors[at:at + len(chunk)])
        at += len(chunk)
    return out


def words(text: str) -> set[str]:
    """Lower-cased words of ``text`` without stop words."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


@lru_cache(maxsize=8192)
def sentence_words(text: str) -> tuple[frozenset[str], ...]:
    """The words of each sentence of a chunk, cached by text (a search meets the same chunks again and again)."""
    return tuple(frozenset(words(s)) for s in split_sentences(text))


def best_sentence_cosines(vector: np.ndarray | None, sentence_vectors: Sequence[Any]) -> list[float]:
    """Per chunk: the highest cosine of ``vector`` with its sentences (NaN where a chunk has none stored)."""
    import numpy as np

    present = [i for i, m in enumerate(sentence_vectors) if m is not None and len(m)]
    out = [math.nan] * len(sentence_vectors)
    if vector is None or not present:
        return out
    stacked = np.concatenate([np.asarray(sentence_vectors[i], dtype=np.float32) for i in present])
    starts = np.cumsum([0] + [len(sentence_vectors[i]) for i in present[:-1]])
    best = np.maximum.reduceat(stacked @ np.asarray(vector, dtype=np.float32), starts)  # one matmul for all
    for i, value in zip(present, best.tolist(), strict=True):
        out[i] = value
    return out


def coverages(question: str, texts: Sequence[str]) -> list[float]:
    """Per chunk: the IDF-weighted share of the question's words in its best sentence, IDF counted over
    all the chunks' sentences (the candidate pool), BM25-style: ``log(1 + (N - n + 0.5) / (n + 0.5))``."""
    asked = words(question)
    per_chunk = [[found & asked for found in sentence_words(t)] for t in texts]
    total = sum(len(chunk) for chunk in per_chunk)
    counts = dict.fromkeys(asked, 0)
    for chunk in per_chunk:
        for found in chunk:
            for w in found:
                counts[w] += 1
    idf = {w: math.log(1 + (total - n + 0.5) / (n + 0.5)) for w, n in counts.items()}
    whole = sum(idf.values())
    if whole <= 0:
        return [0.0] * len(texts)
    return [max((sum(idf[w] for w in found) / whole for found in chunk), default=0.0) for chunk in per_chunk]


def zscores(values: Sequence[float]) -> list[float]:
    """``values`` minus their mean over their standard deviation (NaN -> 0, i.e. the mean; all equal -> 0)."""
    known = [v for v in values if not math.isnan(v)]
    if not known:
        return [0.0] * len(values)
    mean = sum(known) / len(known)
    std = math.sqrt(sum((v - mean) ** 2 for v in known) / len(known))
    return [0.0 if math.isnan(v) or std == 0 else (v - mean) / std for v in values]
