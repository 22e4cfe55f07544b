"""Which sentences of the retrieved passages answer the question, and whether any does.

The extractive generator answers with sentences, so choosing them *is* its model. Each candidate
sentence (never a heading, never a fragment under three words) gets one score from evidence that
generalises beyond one corpus:

- **meaning**: cosine between the question and the sentence, from the embedder the agent already
  loaded (the same one that embedded the chunks);
- **words**: BM25 of the question's content words over the candidate sentences (normalised by the
  best), plus the share of the question's words the sentence covers;
- **retrieval**: a small prior for the passage's rank;
- **answer type**: a sentence that holds what the question asks for (a number for "how many", a
  year or month for "when", a name for "who") is preferred.

Weights were chosen on 600 SQuAD dev questions and checked on 600 others
(``python -m benchmarks.extractive_answers``): first-sentence answer presence 0.667 (BM25 alone)
-> 0.758. Without an embedder the meaning term is left out (lexical selection, as before).

**Abstaining.** The *evidence* of an answer is the best question-sentence cosine. Below a
threshold the generator says it does not know and cites the closest passages. The threshold is
calibrated, not guessed: an eval suite with ``calibrate_abstention`` records the evidence above which
95% of its answerable questions fall, and the agent uses the latest calibration recorded for its
embedder (:mod:`llmfti.answer_calibration`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from llmfti.llm.backends.base import Passage

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[`]?[A-Z0-9`])|\n+")
_SOFT_BREAK = re.compile(r"(?<=\S)[ \t]*\n(?![ \t]*(?:\n|#|[-*+>|]\s|\d+[.)]\s|```))")
_LIST_MARK = re.compile(r"^\s*(?:[-*+>]\s+|\d+[.)]\s+)+")
_HEADING = re.compile(r"^\s*#{1,6}\s")
_STOPWORDS = frozenset(
    "a an and are as at be by can did do does for from has have how i if in into is it its of on or that the "
    "their then there these this to was were what when where which who whom whose why will with you your".split()
)
_YEAR = re.compile(r"\b(1\d{3}|20\d{2})\b")
_DATE_WORD = re.compile(r"\b(January|February|March|April|May|June|July|August|September|October|November|"
                        r"December|century|centuries|decade|BC|AD)\b")
_NUMBER = re.compile(r"\b\d[\d,.]*\b|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|hundred|"
                     r"thousand|million|billion|dozen|half|percent)\b", re.IGNORECASE)
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+")
_K1, _B = 1.2, 0.75
MIN_WORDS = 3


@dataclass(frozen=True)
class Weights:
    """How much each kind of evidence counts (see the module docstring for where they come from)."""

    meaning: float = 1.0
    words: float = 0.3
    rank: float = 0.1
    answer_type: float = 0.1
    coverage: float = 0.4


@dataclass(frozen=True)
class Candidate:
    sentence: str
    n: int  # citation number of its passage
    rank: int  # 0-based retrieval rank of its passage


@dataclass(frozen=True)
class Selection:
    chosen: list[Candidate]  # best first
    scores: list[float]  # of ``chosen``
    evidence: float | None  # None: no embedder, so no calibrated evidence


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1]


def question_words(question: str) -> set[str]:
    """Content words of the question, plus each pair of neighbours written as one word ("roll back" also
    matches "rollback", "data base" matches "database")."""
    words = _WORD.findall(question.lower())
    joined = {a + b for a, b in zip(words, words[1:], strict=False) if len(a) > 1 and len(b) > 1}
    return set(content_words(question)) | joined


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` worth quoting: no markdown headings, no fragments under three words."""
    out = []
    for raw in _SENTENCE_END.split(_SOFT_BREAK.sub(" ", text)):
        if _HEADING.match(raw):
            continue
        sentence = _LIST_MARK.sub("", raw).strip()
        if len(_WORD.findall(sentence)) >= MIN_WORDS:
            out.append(sentence)
    return out


def candidates(passages: Sequence[Passage]) -> list[Candidate]:
    seen: set[str] = set()
    out = []
    for rank, passage in enumerate(passages):
        for sentence in split_sentences(passage.text):
            if sentence.lower() not in seen:
                seen.add(sentence.lower())
                out.append(Candidate(sentence, passage.n, rank))
    return out


def answer_type_match(question: str, sentence: str) -> float:
    """1 when the sentence holds the kind of thing the question asks for, 0 when not, 0.5 when unknown."""
    q = question.lower()
    if any(p in q for p in ("how many", "how much", "what percentage", "how long", "how old", "how far")):
        return 1.0 if _NUMBER.search(sentence) else 0.0
    if q.startswith("when") or any(p in q for p in (" when ", "what year", "which year", "what century")):
        return 1.0 if _YEAR.search(sentence) or _DATE_WORD.search(sentence) else 0.0
    if q.startswith("who") or any(p in q for p in (" who ", "whom", "whose")):
        asked = set(_WORD.findall(q))
        return 1.0 if any(w.lower() not in asked for w in _NAME.findall(sentence)) else 0.0
    return 0.5


def _bm25(question_terms: set[str], docs: list[Counter]) -> list[float]:
    avg_len = sum(sum(d.values()) for d in docs) / len(docs) or 1.0
    df = Counter(t for d in docs for t in d if t in question_terms)
    scores = []
    for terms in docs:
        length = sum(terms.values())
        score = 0.0
        for t in question_terms & terms.keys():
            idf = math.log(1 + (len(docs) - df[t] + 0.5) / (df[t] + 0.5))
            tf = terms[t]
            score += idf * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * length / avg_len))
        scores.append(score)
    return scores


def select(question: str, passages: Sequence[Passage], limit: int, *,
           similarities: Sequence[float] | None = None, weights: Weights = Weights()) -> Selection:
    """The ``limit`` best sentences (best first). ``similarities``: question cosine per :func:`candidates` entry."""
    cands = candidates(passages)
    if not cands:
        return Selection([], [], None)
    question_terms = question_words(question)
    docs = [Counter(content_words(c.sentence)) for c in cands]
    bm25 = _bm25(question_terms, docs)
    best_bm25 = max(bm25) or 1.0
    scored = []
    for i, (cand, terms) in enumerate(zip(cands, docs, strict=True)):
        coverage = len(question_terms & terms.keys()) / (len(set(content_words(question))) or 1)
        score = (weights.words * bm25[i] / best_bm25 + weights.rank / (cand.rank + 1)
                 + weights.answer_type * answer_type_match(question, cand.sentence) + weights.coverage * coverage)
        if similarities is not None:
            score += weights.meaning * float(similarities[i])
        elif bm25[i] == 0:
            continue  # lexical only: a sentence sharing no word with the question is no evidence
        scored.append((score, i))
    if not scored:  # lexical only and no word in common: trust the retriever's ranking
        return Selection([cands[0]], [0.0], None)
    scored.sort(key=lambda x: (-x[0], x[1]))
    chosen = [cands[i] for _, i in scored[:limit]]
    scores = [score for score, _ in scored[:limit]]
    evidence = None
    if similarities is not None:
        evidence = max(float(s) for s in similarities)
    return Selection(chosen, scores, evidence)
