"""Which sentences of the retrieved passages answer the question, and whether any does.

The extractive generator answers with sentences, so choosing them *is* its model. Each candidate
sentence (never a heading, never a fragment under three words) gets one score from evidence that
generalises beyond one corpus:

- **meaning**: cosine between the question and the sentence, from the embedder the agent already
  loaded (the same one that embedded the chunks);
- **words**: BM25 of the question's content words over the candidate sentences (normalised by the
  best), plus the share of the question's words the sentence covers;
- **phrasing**: the share of the question's neighbouring word pairs the sentence repeats;
- **retrieval**: a small prior for the passage's rank;
- **answer type**: a sentence that holds what the question asks for (a number for "how many", a
  year or month for "when", a name for "who") is preferred.

Weights were chosen by a grid search on the questions of half of SQuAD dev's articles and checked on
the other half (1,200 questions, hybrid top 10, folds by article as in ``evals/runner.py``):
first-sentence answer presence on the report half 0.750 (the earlier weights, without phrasing) ->
0.759. Without an embedder the meaning term is left out (lexical selection).

**Token max-sim.** With ``token_match`` (the extractive generator measures it for its
``token_match_candidates`` best candidates by the score above: :mod:`llmfti.llm.backends.token_match`), the
meaning term becomes ``token_match`` x max-sim + ``meaning_beside_tokens`` x cosine. On 1,200 SQuAD dev
questions (hybrid top 10, ``python -m benchmarks.sentence_ranker``) first-sentence presence went 0.753 -> 0.767
out of fold by article (M=3; flat from M=2 to 12); the weights 4.0/1.0 sit in the plateau both folds chose.
Abstention's evidence (:func:`evidence_features`) keeps the score without max-sim, so abstention models fit
before it stay in their units.

**Learned ranking.** With a :class:`llmfti.sentence_ranker.SentenceRanker` (fit per index and embedder by an
eval suite with ``fit_sentence_ranker``), the candidates are scored by it over the richer features of
:mod:`llmfti.llm.backends.sentence_features` instead. On 2,000 SQuAD dev questions, out of fold by article
(``python -m benchmarks.sentence_ranker``): 0.757 (these weights) -> 0.770 when fit on ~1,000 questions a
fold, but no better (0.751) when fit on 125, the squad suite's size. The ceiling is far higher: 0.974 of
the questions have a gold-answer sentence among the candidates (0.944 among the embedded ones).

**Abstaining.** With an embedder, every selection also measures its *evidence features*
(:data:`EVIDENCE_FEATURES`): how close the best sentence is in meaning, how many of the question's
content words and names the chosen sentence and the top passages hold, how many of its word pairs
the chosen sentence repeats, and how clearly the chosen sentence beats the next. A small logistic
model over them, fit per index and embedder on that index's own eval questions (answerable ones and
ones about articles left out of the index), decides whether the passages answer the question
(:mod:`llmfti.answer_calibration`); without one, the best cosine (:attr:`Selection.evidence`) is
compared with the ``agent.generator.abstain_below`` setting.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
_NAME_OR_NUMBER = re.compile(r"\b[A-Z][\w'-]*|\b\d[\d,.]*\b")
_K1, _B = 1.2, 0.75
MIN_WORDS = 3
EVIDENCE_FEATURES = ("best_cosine", "chosen_coverage", "top3_coverage", "top3_names", "chosen_score",
                     "chosen_margin", "chosen_word_pairs")


@dataclass(frozen=True)
class Weights:
    """How much each kind of evidence counts (see the module docstring for where they come from)."""

    meaning: float = 1.0
    words: float = 0.3
    rank: float = 0.3
    answer_type: float = 0.3
    coverage: float = 0.6
    word_pairs: float = 0.4
    token_match: float = 4.0
    """Token max-sim (:mod:`llmfti.llm.backends.token_match`), for the candidates that have it."""
    meaning_beside_tokens: float = 1.0
    """The sentence cosine's weight when token max-sim is measured (``meaning`` otherwise)."""


@dataclass(frozen=True)
class Candidate:
    sentence: str
    n: int  # citation number of its passage
    rank: int  # 0-based retrieval rank of its passage


@dataclass(frozen=True)
class Selection:
    chosen: list[Candidate]  # best first
    scores: list[float]  # of ``chosen``
    evidence: float | None  # the best question-sentence cosine; None: no embedder, so no calibrated evidence
    features: dict[str, float] | None = None  # EVIDENCE_FEATURES (with an embedder)
    candidate_rows: list[tuple[str, list[float]]] | None = None  # (sentence, ranker features) when a ranker is set


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


def bm25_scores(question_terms: set[str], docs: list[Counter]) -> list[float]:
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
           similarities: Sequence[float] | None = None, weights: Weights = Weights(),
           ranker: Any = None, token_match: Sequence[float | None] | None = None) -> Selection:
    """The ``limit`` best sentences (best first). ``similarities``: question cosine per :func:`candidates` entry.

    ``token_match`` (with ``similarities`` only): token max-sim per candidate, None where it was not measured
    (those get the lowest measured one); the meaning term is then ``weights.token_match`` times it plus
    ``weights.meaning_beside_tokens`` times the cosine. A learned ranker ignores it.

    ``ranker`` (with ``similarities`` only): a :class:`llmfti.sentence_ranker.SentenceRanker` scores the
    candidates instead of ``weights`` (:data:`llmfti.sentence_ranker.HAND_RANKING` keeps the weights), and the
    selection reports every candidate's ranker features (``candidate_rows``, what eval runs fit rankers on)."""
    cands = candidates(passages)
    if not cands:
        return Selection([], [], None)
    question_terms = question_words(question)
    question_pairs = word_pairs(question)
    docs = [Counter(content_words(c.sentence)) for c in cands]
    bm25 = bm25_scores(question_terms, docs)
    best_bm25 = max(bm25) or 1.0
    tokens = _filled(token_match) if similarities is not None and token_match is not None else None
    scored, base = [], {}  # base: the score without token max-sim (what abstention's evidence is measured in)
    for i, (cand, terms) in enumerate(zip(cands, docs, strict=True)):
        coverage = len(question_terms & terms.keys()) / (len(set(content_words(question))) or 1)
        pairs = len(question_pairs & word_pairs(cand.sentence)) / (len(question_pairs) or 1)
        score = (weights.words * bm25[i] / best_bm25 + weights.rank / (cand.rank + 1)
                 + weights.answer_type * answer_type_match(question, cand.sentence) + weights.coverage * coverage
                 + weights.word_pairs * pairs)
        if similarities is not None:
            base[i] = score + weights.meaning * float(similarities[i])
            if tokens is not None:
                score += weights.meaning_beside_tokens * float(similarities[i]) + weights.token_match * tokens[i]
            else:
                score = base[i]
        elif bm25[i] == 0:
            continue  # lexical only: a sentence sharing no word with the question is no evidence
        scored.append((score, i))
    if not scored:  # lexical only and no word in common: trust the retriever's ranking
        return Selection([cands[0]], [0.0], None)
    rows = None
    if ranker is not None and similarities is not None:
        from llmfti.llm.backends.sentence_features import candidate_features

        features_of = candidate_features(question, passages, cands, similarities)
        rows = [(c.sentence, f) for c, f in zip(cands, features_of, strict=True)]
        if ranker.learned:
            learned = ranker.scores(features_of)
            scored = [(learned[i], i) for _, i in scored]
    scored.sort(key=lambda x: (-x[0], x[1]))
    chosen = [cands[i] for _, i in scored[:limit]]
    scores = [score for score, _ in scored[:limit]]
    if similarities is None:
        return Selection(chosen, scores, None)
    evidence = max(float(s) for s in similarities)
    if tokens is not None and not (ranker is not None and ranker.learned):
        # abstention's evidence in the units its models were fit in: the chosen sentence's score without
        # max-sim, and its lead over the best other sentence by that score (negative when max-sim overruled it)
        first = scored[0][1]
        others = [b for j, b in base.items() if j != first]
        chosen_score, margin = base[first], base[first] - max(others) if others else base[first]
    else:
        chosen_score = scores[0]
        margin = scored[0][0] - scored[1][0] if len(scored) > 1 else scored[0][0]
    features = evidence_features(question, passages, chosen[0].sentence, evidence, chosen_score, margin)
    return Selection(chosen, scores, evidence, features, rows)


def _filled(token_match: Sequence[float | None]) -> list[float] | None:
    """Max-sim per candidate with the unmeasured ones at the lowest measured (None: none measured)."""
    measured = [float(t) for t in token_match if t is not None]
    if not measured:
        return None
    lowest = min(measured)
    return [lowest if t is None else float(t) for t in token_match]


def names(text: str) -> set[str]:
    """Capitalised words and numbers of ``text`` (names, years, amounts), lower-cased, minus stopwords."""
    return {w.lower() for w in _NAME_OR_NUMBER.findall(text)} - _STOPWORDS


def word_pairs(text: str) -> set[tuple[str, str]]:
    """Neighbouring word pairs of ``text`` that are not both stopwords."""
    words = _WORD.findall(text.lower())
    return {(a, b) for a, b in zip(words, words[1:], strict=False) if a not in _STOPWORDS or b not in _STOPWORDS}


def evidence_features(question: str, passages: Sequence[Passage], chosen: str, best_cosine: float,
                      chosen_score: float, chosen_margin: float) -> dict[str, float]:
    """How strongly the passages answer the question (:data:`EVIDENCE_FEATURES`), for abstaining."""
    asked = set(content_words(question))
    top = set(_WORD.findall(" ".join(p.text for p in passages[:3]).lower()))
    asked_names = names(question)
    pairs = word_pairs(question)
    return {
        "best_cosine": best_cosine,
        "chosen_coverage": len(question_words(question) & set(content_words(chosen))) / (len(asked) or 1),
        "top3_coverage": len(asked & top) / (len(asked) or 1),
        "top3_names": len(asked_names & top) / len(asked_names) if asked_names else 1.0,
        "chosen_score": chosen_score,
        "chosen_margin": chosen_margin,
        "chosen_word_pairs": len(pairs & word_pairs(chosen)) / (len(pairs) or 1),
    }
