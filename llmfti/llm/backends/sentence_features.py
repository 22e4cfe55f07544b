"""What each candidate sentence offers as an answer: the feature vector a learned sentence ranker weighs.

:func:`candidate_features` describes every candidate sentence of the retrieved passages by generic
evidence (nothing here knows a corpus): the hand-weighted terms of :mod:`answer_selection` kept apart
(meaning, BM25, coverage, word pairs, retrieval rank, answer type), and what a reader would look for:

- **answer type per wh-word**: "how many/much" wants a number the question does not hold, "when /
  what year" a date, "who/whom" a capitalised name that is not in the question, "where" a capitalised
  place after in/at/from/near, "what/which <noun>" the noun's head word in the sentence;
- **new information**: a capitalised name or a number that the question does not hold, and whether one
  stands within a few words of a question word (answers sit next to what the question repeats);
- **proximity**: how tightly the question's words cluster in the sentence;
- **place**: the sentence's position in its passage, the passage's retrieval rank and score;
- **context**: the best cosine of the sentence's neighbours in its passage, and of its passage.

Sentences whose cosine was not measured (only the lexically best are embedded) carry the lowest
measured cosine, as in :mod:`answer_selection`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from llmfti.llm.backends.answer_selection import (
    _STOPWORDS,
    Candidate,
    answer_type_match,
    bm25_scores,
    content_words,
    question_words,
    word_pairs,
)
from llmfti.llm.backends.base import Passage

FEATURES = (
    "cosine", "cosine_gap", "bm25", "coverage", "word_pairs", "rank_prior", "passage_score", "answer_type",
    "type_number", "type_date", "type_person", "type_place", "type_noun", "new_name", "new_number",
    "new_near_question", "proximity", "first_in_passage", "position", "log_words", "neighbour_cosine",
    "passage_best_cosine", "cosine_rank", "bm25_rank", "longest_phrase", "window_coverage", "idf_coverage",
    "passage_idf_coverage",
)
_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\w[\w'-]*")
_NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty "
                          "hundred thousand million billion dozen half percent".split())
_MONTHS = frozenset("january february march april may june july august september october november december".split())
_DATE_WORDS = _MONTHS | {"century", "centuries", "decade", "bc", "ad", "bce", "ce"}
_PLACE_PREPOSITIONS = frozenset({"in", "at", "from", "near", "to", "into", "across", "throughout"})
_NUMBER_CUES = ("how many", "how much", "what percentage", "what percent", "how long", "how old", "how far",
                "how large", "how big", "how tall", "how high", "what number", "what amount")
_DATE_CUES = ("what year", "which year", "what century", "which century", "what date", "what month", "what day",
              "what decade", "what time", "what period")
_NEAR = 4  # words: "near a question word"


def question_type(question: str) -> str:
    """number, date, person, place, noun (what/which + noun) or other."""
    q = " " + question.lower().strip() + " "
    if any(c in q for c in _NUMBER_CUES):
        return "number"
    if q.lstrip().startswith("when") or " when " in q or any(c in q for c in _DATE_CUES):
        return "date"
    if any(w in q for w in (" who ", " whom ", " whose ", " who's ")):
        return "person"
    if " where " in q or q.lstrip().startswith("where"):
        return "place"
    if head_noun(question):
        return "noun"
    return "other"


def head_noun(question: str) -> str | None:
    """The word a "what/which <noun>" question asks about ("What museum in Newcastle ..." -> museum)."""
    words = _WORD.findall(question.lower())
    for i, w in enumerate(words[:-1]):
        if w in ("what", "which"):
            for nxt in words[i + 1:i + 3]:
                if nxt in ("is", "was", "are", "were", "did", "does", "do", "has", "had", "can", "will", "would"):
                    return None
                if nxt not in _STOPWORDS and len(nxt) > 2:
                    return nxt
            return None
    return None


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)]
    return word


def _is_number(token: str) -> bool:
    return token[0].isdigit() or token.lower() in _NUMBER_WORDS


def _is_date(token: str) -> bool:
    return (token.isdigit() and len(token) == 4 and token[0] in "12") or token.lower() in _DATE_WORDS


def _sentence_facts(question_tokens: set[str], question_stems: set[str], sentence: str) -> dict[str, Any]:
    """New names, numbers and dates of the sentence (not in the question), and where the question's words are."""
    tokens = _TOKEN.findall(sentence)
    lower = [t.lower() for t in tokens]
    new_name = new_number = new_date = new_place = False
    new_positions, matched = [], []
    for i, (token, low) in enumerate(zip(tokens, lower, strict=True)):
        if low in question_tokens or _stem(low) in question_stems:
            if low not in _STOPWORDS:
                matched.append(i)
            continue
        if _is_number(token):
            new_number = True
            new_positions.append(i)
            if _is_date(token):
                new_date = True
        elif token[0].isupper() and i > 0 and low not in _STOPWORDS:
            new_name = True
            new_positions.append(i)
            if lower[i - 1] in _PLACE_PREPOSITIONS:
                new_place = True
        elif low in _DATE_WORDS:
            new_date = True
    return {"tokens": len(tokens), "lower": lower, "new_name": new_name, "new_number": new_number,
            "new_date": new_date, "new_place": new_place, "new_positions": new_positions, "matched": matched}


def _proximity(matched: list[int]) -> float:
    """Distinct question-word hits over the span they cover (1: adjacent); 0 with fewer than two."""
    if len(matched) < 2:
        return 0.0
    return len(matched) / (max(matched) - min(matched) + 1)


def candidate_features(question: str, passages: Sequence[Passage], cands: Sequence[Candidate],
                       similarities: Sequence[float] | None) -> list[list[float]]:
    """One row of :data:`FEATURES` per candidate (``similarities``: question cosine per candidate, or None)."""
    if not cands:
        return []
    sims = [float(s) for s in similarities] if similarities is not None else [0.0] * len(cands)
    best_sim = max(sims)
    asked = set(content_words(question))
    terms = question_words(question)
    question_tokens = set(_WORD.findall(question.lower()))
    question_stems = {_stem(w) for w in asked}
    pairs = word_pairs(question)
    qtype = question_type(question)
    noun = head_noun(question) if qtype == "noun" else None
    generic = answer_type_match(question, "")  # 0.5: a question whose type the hand rule cannot tell
    docs = [Counter(content_words(c.sentence)) for c in cands]
    bm25 = bm25_scores(terms, docs)
    best_bm25 = max(bm25) or 1.0
    scores = {p.n: p.score for p in passages}
    best_score = max((abs(s) for s in scores.values()), default=1.0) or 1.0
    by_passage: dict[int, list[int]] = {}
    for i, c in enumerate(cands):
        by_passage.setdefault(c.n, []).append(i)
    cosine_rank = _reciprocal_ranks(sims)
    bm25_rank = _reciprocal_ranks(bm25)
    passage_words = {p.n: set(_WORD.findall(p.text.lower())) for p in passages}
    idf = _idf(asked, list(passage_words.values()))
    total_idf = sum(idf.values()) or 1.0
    passage_coverage = {n: sum(idf[w] for w in asked & words) / total_idf for n, words in passage_words.items()}
    question_sequence = _WORD.findall(question.lower())
    rows = []
    for i, (cand, words) in enumerate(zip(cands, docs, strict=True)):
        facts = _sentence_facts(question_tokens, question_stems, cand.sentence)
        siblings = by_passage[cand.n]
        at = siblings.index(i)
        neighbours = [sims[j] for j in siblings[max(0, at - 1):at + 2] if j != i]
        near = any(abs(p - m) <= _NEAR for p in facts["new_positions"] for m in facts["matched"])
        kind = answer_type_match(question, cand.sentence) if generic != 0.5 else 0.5
        rows.append([
            sims[i],
            sims[i] - best_sim,
            bm25[i] / best_bm25,
            len(terms & words.keys()) / (len(asked) or 1),
            len(pairs & word_pairs(cand.sentence)) / (len(pairs) or 1),
            1.0 / (cand.rank + 1),
            scores.get(cand.n, 0.0) / best_score,
            kind,
            float(qtype == "number" and facts["new_number"]),
            float(qtype == "date" and facts["new_date"]),
            float(qtype == "person" and facts["new_name"]),
            float(qtype == "place" and (facts["new_place"] or facts["new_name"])),
            float(noun is not None and any(_stem(t) == _stem(noun) for t in facts["lower"])),
            float(facts["new_name"]),
            float(facts["new_number"]),
            float(near),
            _proximity(sorted(set(facts["matched"]))),
            float(at == 0),
            at / max(1, len(siblings) - 1),
            math.log1p(facts["tokens"]),
            max(neighbours) if neighbours else sims[i],
            max(sims[j] for j in siblings),
            cosine_rank[i],
            bm25_rank[i],
            _longest_phrase(question_sequence, facts["lower"]),
            len(asked & {w for j in siblings[max(0, at - 1):at + 2] for w in docs[j]}) / (len(asked) or 1),
            sum(idf[w] for w in asked & words.keys()) / total_idf,
            passage_coverage.get(cand.n, 0.0),
        ])
    return rows


def _reciprocal_ranks(values: Sequence[float]) -> list[float]:
    """1 / (1 + place) of each value among all, best first (ties share the better place)."""
    ordered = sorted(values, reverse=True)
    first = {}
    for place, v in enumerate(ordered):
        first.setdefault(v, place)
    return [1.0 / (1 + first[v]) for v in values]


def _idf(words: set[str], passages: Sequence[set[str]]) -> dict[str, float]:
    """Inverse document frequency of the question's words over the retrieved passages (rarer: more telling)."""
    n = len(passages) or 1
    return {w: math.log(1 + (n + 1) / (1 + sum(w in p for p in passages))) for w in words}


def _longest_phrase(question: list[str], sentence: list[str]) -> float:
    """Longest run of the question's words (holding a content word) that the sentence repeats, in words, over 4."""
    best = 0
    positions: dict[str, list[int]] = {}
    for j, w in enumerate(sentence):
        positions.setdefault(w, []).append(j)
    for i in range(len(question)):
        for j in positions.get(question[i], ()):
            length = 0
            while (i + length < len(question) and j + length < len(sentence)
                   and question[i + length] == sentence[j + length]):
                length += 1
            if length > best and any(w not in _STOPWORDS for w in question[i:i + length]):
                best = length
    return min(best, 4) / 4
