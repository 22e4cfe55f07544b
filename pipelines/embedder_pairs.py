"""Training pairs for the embedder: labelled where they exist, made from the corpus itself where not.

Every pair is ``(anchor, positive, source, group)``; ``group`` is the document the pair came from,
so a batch never holds two pairs of one document (MultipleNegativesRankingLoss treats every other
positive in the batch as a negative: two passages of one document would be false negatives).

Self-supervised sources (no labels; they run on whatever text an index holds):

- ``ict``: inverse cloze task (Lee et al., 2019, "Latent Retrieval for Weakly Supervised Open Domain
  Question Answering"): a sentence is the query, the rest of its passage the positive; the sentence is
  left in the passage with probability ``ict_keep`` (the paper keeps it 10% of the time, so the model
  also learns lexical matching; the default here is 50%: questions about a passage paraphrase one of
  its sentences, and on SQuAD dev the adapter trained with 50% did better than with 10% or 0%).
- ``crop``: independent cropping (Izacard et al., 2021, "Unsupervised Dense Information Retrieval with
  Contrastive Learning", Contriever): two random spans of one passage are a positive pair.
- ``title``: a document's title -> its first chunk (where the title is more than the text or the id, and names
  only that document).

Pseudo-queries (the default recipe): the positive is always the whole passage, as the index holds it, and
the query is made from one of its sentences the way a person's question reuses a passage's words (measured
on SQuAD dev, see :mod:`pipelines.embedder_adapter`; every rule is a corpus statistic, no word list):

- ``sentence``: the sentence itself (inverse cloze with the sentence kept, Lee et al.'s 10% case);
- ``span``: a random span of 5-12 words of the sentence (a query is shorter than a sentence; Contriever's
  cropping applied to the query side);
- ``salient``: the sentence without the corpus' common words (in more than 10% of the passages): the
  rare, content-bearing words a question keeps (the lexical pseudo-queries of BM25-style matching);
- ``cloze``: the sentence with a 1-3 word span removed, starting at a name or number (a capitalised or
  digit-bearing word): a question leaves out its answer.

Labelled sources: ``pairs`` (a JSONL file of ``{"query", "positive"[, "negative"]}``), ``qrels`` (BEIR
layout: ``queries.jsonl`` of ``{"_id", "text"}`` and a TSV of ``query-id, corpus-id, score``; a corpus
id is a document id of the index) and ``feedback`` (positively rated answers: the logged question and
the chunks it retrieved and cited).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmfti.errors import InvalidInputError, NotFoundError

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
MIN_WORDS = 4  # a shorter sentence or crop says too little to be a query
ROUNDS = 5  # passes over the passages for the random objectives (ict, crop) of a small corpus


@dataclass(frozen=True)
class Pair:
    anchor: str
    positive: str
    source: str
    group: str  # the document the pair came from: at most one pair per group in a batch
    negative: str | None = None


@dataclass(frozen=True)
class Passage:
    """A chunk of the index, as the pair makers read it."""

    chunk_id: str
    doc_id: str
    title: str
    text: str
    chunk_index: int = 0


@dataclass(frozen=True)
class PairConfig:
    """Which self-supervised objectives to use and how many pairs to make."""

    objectives: tuple[str, ...] = ("sentence", "span", "salient", "cloze", "title")
    max_pairs: int = 4000
    ict_keep: float = 0.5
    crop_min: float = 0.1  # crop length as a share of the passage's words (Contriever: 0.1-0.5)
    crop_max: float = 0.5
    seed: int = 13
    weights: dict[str, float] = field(default_factory=lambda: {"ict": 0.6, "crop": 0.3, "title": 0.1,
                                                               **dict.fromkeys(QUERY_OBJECTIVES, 0.24)})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.objectives) - set(OBJECTIVES))
        if unknown:
            raise InvalidInputError(f"unknown self-supervised objective(s) {unknown}",
                                    expected=f"some of {sorted(OBJECTIVES)}", fix="pick from the expected list")
        if not 0 <= self.ict_keep <= 1 or not 0 < self.crop_min <= self.crop_max <= 1:
            raise InvalidInputError(
                f"ict_keep={self.ict_keep}, crop_min={self.crop_min}, crop_max={self.crop_max} out of range",
                expected="0 <= ict_keep <= 1 and 0 < crop_min <= crop_max <= 1", fix="fix the values")


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (a punctuation rule: generic, no language model)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def ict_pair(p: Passage, rng: random.Random, keep: float) -> Pair | None:
    parts = sentences(p.text)
    if len(parts) < 2:
        return None
    candidates = [i for i, s in enumerate(parts) if len(s.split()) >= MIN_WORDS]
    if not candidates:
        return None
    i = rng.choice(candidates)
    context = parts if rng.random() < keep else parts[:i] + parts[i + 1:]
    return Pair(parts[i], " ".join(context), "ict", p.doc_id)


def crop_pair(p: Passage, rng: random.Random, low: float, high: float) -> Pair | None:
    words = p.text.split()
    if len(words) < 2 * MIN_WORDS:
        return None

    def crop() -> str:
        n = min(len(words), max(MIN_WORDS, int(len(words) * rng.uniform(low, high))))
        start = rng.randrange(0, len(words) - n + 1)
        return " ".join(words[start:start + n])

    return Pair(crop(), crop(), "crop", p.doc_id)


def title_pair(p: Passage, shared: frozenset[str] = frozenset()) -> Pair | None:
    """Title -> first chunk; none for a title in ``shared`` (it names several documents, e.g. every paragraph of
    one article: pairs sending it to each of them contradict each other under corpus negatives)."""
    title = (p.title or "").strip()
    if (p.chunk_index != 0 or len(title) < 3 or title == p.text.strip() or p.doc_id.endswith(title)
            or title in shared):
        return None
    return Pair(title, p.text, "title", p.doc_id)


def shared_titles(passages: Sequence[Passage]) -> frozenset[str]:
    """Titles that more than one document carries."""
    documents: dict[str, set[str]] = {}
    for p in passages:
        documents.setdefault((p.title or "").strip(), set()).add(p.doc_id)
    return frozenset(t for t, docs in documents.items() if len(docs) > 1)


QUERY_OBJECTIVES = ("sentence", "span", "salient", "cloze")
OBJECTIVES = ("ict", "crop", "title", *QUERY_OBJECTIVES)
DEFAULT_OBJECTIVES = (*QUERY_OBJECTIVES, "title")
_WORD = re.compile(r"\w+")
_NAME_OR_NUMBER = re.compile(r"[A-Z0-9]")


def common_words(passages: Sequence[Passage], share: float = 0.1) -> frozenset[str]:
    """Lower-cased words in more than ``share`` of the passages (and in at least 3): the corpus' own stopwords."""
    counts: dict[str, int] = {}
    for p in passages:
        for word in set(_WORD.findall(p.text.lower())):
            counts[word] = counts.get(word, 0) + 1
    floor = max(3, share * len(passages))
    return frozenset(w for w, c in counts.items() if c > floor)


def query_pair(p: Passage, rng: random.Random, kind: str, common: frozenset[str]) -> Pair | None:
    """A pseudo-query of ``kind`` (see the module doc) made from one sentence of ``p`` -> the whole passage."""
    candidates = [s for s in sentences(p.text) if len(s.split()) >= MIN_WORDS]
    if not candidates:
        return None
    words = rng.choice(candidates).split()
    if kind == "span":
        n = min(len(words), rng.randint(5, 12))
        start = rng.randrange(0, len(words) - n + 1)
        words = words[start:start + n]
    elif kind == "salient":
        words = [w for w in words if "".join(_WORD.findall(w.lower())) not in common] or words
    elif kind == "cloze":
        starts = [i for i, w in enumerate(words) if i > 0 and _NAME_OR_NUMBER.search(w)] or list(range(len(words)))
        i = rng.choice(starts)
        words = words[:i] + words[i + rng.randint(1, 3):] or words
    return Pair(" ".join(words), p.text, kind, p.doc_id)


def corpus_pairs(passages: Sequence[Passage], config: PairConfig) -> list[Pair]:
    """Up to ``config.max_pairs`` self-supervised pairs, split between objectives by ``config.weights``."""
    rng = random.Random(config.seed)
    order = list(passages)
    rng.shuffle(order)
    wanted = {o: config.weights.get(o, 0.0) for o in config.objectives}
    total = sum(wanted.values()) or 1.0
    budget = {o: int(round(config.max_pairs * w / total)) for o, w in wanted.items()}
    common = common_words(passages) if "salient" in wanted else frozenset()
    shared = shared_titles(passages) if "title" in wanted else frozenset()
    out: list[Pair] = []
    for objective, limit in budget.items():
        made: list[Pair] = []
        seen: set[tuple[str, str]] = set()  # one sentence may come back with the other ict positive
        rounds = 1 if objective == "title" else ROUNDS  # random objectives: another pass gives other pairs
        for p in [p for _ in range(rounds) for p in order]:
            if len(made) >= limit:
                break
            if objective == "ict":
                pair = ict_pair(p, rng, config.ict_keep)
            elif objective == "crop":
                pair = crop_pair(p, rng, config.crop_min, config.crop_max)
            elif objective in QUERY_OBJECTIVES:
                pair = query_pair(p, rng, objective, common)
            else:
                pair = title_pair(p, shared)
            if pair is not None and (pair.anchor, pair.positive) not in seen:
                seen.add((pair.anchor, pair.positive))
                made.append(pair)
        out.extend(made)
    rng.shuffle(out)
    return out[:config.max_pairs]


def file_pairs(path: Path) -> list[Pair]:
    """Labelled pairs from a JSONL file of ``{"query", "positive"[, "negative"]}``; bad lines are errors."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"pairs file {path} not found", expected='a JSONL file of {"query", "positive"}',
                            fix="check the path")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query, positive = str(row["query"]).strip(), str(row["positive"]).strip()
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path}:{number}: not a pair ({exc})",
                                    expected='{"query": "...", "positive": "..."[, "negative": "..."]}',
                                    fix="fix or remove that line (nothing was trained)") from exc
        if not query or not positive:
            raise InvalidInputError(f"{path}:{number}: empty query or positive", expected="non-empty text",
                                    fix="fix or remove that line (nothing was trained)")
        negative = row.get("negative")
        out.append(Pair(query, positive, "pairs", f"pairs:{number}", str(negative) if negative else None))
    return out


def qrels_pairs(queries_path: Path, qrels_path: Path, passages: Sequence[Passage]) -> list[Pair]:
    """Pairs from BEIR-style qrels: each judged-relevant (score > 0) document's first chunk is a positive."""
    for p in (queries_path, qrels_path):
        if not Path(p).is_file():
            raise NotFoundError(f"{p} not found", expected="queries.jsonl and a qrels .tsv (BEIR layout)",
                                fix="check the paths")
    queries = {}
    for line in Path(queries_path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            queries[str(row["_id"])] = str(row["text"])
    first = {}
    for p in sorted(passages, key=lambda p: p.chunk_index, reverse=True):
        first[p.doc_id] = p.text
    out, missing = [], 0
    for line in Path(qrels_path).read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) < 2 or cols[0] in ("query-id", "qid"):
            continue
        score = float(cols[2]) if len(cols) > 2 and cols[2].strip() else 1.0
        if score <= 0:
            continue
        if cols[0] not in queries or cols[1] not in first:
            missing += 1
            continue
        out.append(Pair(queries[cols[0]], first[cols[1]], "qrels", cols[1]))
    if not out:
        raise InvalidInputError(f"no qrels line of {qrels_path} names a known query and a document of the index "
                                f"({missing} did not)", expected="corpus ids that are doc ids of the index",
                                fix="build the index from the same corpus the qrels judge")
    return out


def feedback_pairs(rows: Iterable[dict[str, Any]], passages: Sequence[Passage]) -> list[Pair]:
    """Positively rated answers: (question, each chunk it cited, else its top retrieved chunk)."""
    by_id = {p.chunk_id: p for p in passages}
    out = []
    for row in rows:
        cited = [c for c in row.get("chunk_ids") or [] if c in by_id]
        for chunk_id in cited[:2]:
            out.append(Pair(row["question"], by_id[chunk_id].text, "feedback", by_id[chunk_id].doc_id))
    return out


class StepBatches:
    """``steps`` training batches: :func:`batches` of the pairs epoch after epoch (seed + epoch), cut at ``steps``;
    ``epochs`` counts the epochs started. Refuses pairs that make no batch of two."""

    def __init__(self, pairs: Sequence[Pair], batch_size: int, seed: int, steps: int):
        self.pairs, self.batch_size, self.seed, self.steps = pairs, batch_size, seed, steps
        self.epochs = 0

    def __iter__(self) -> Iterator[list[Pair]]:
        done = 0
        while done < self.steps:
            plan = batches(self.pairs, self.batch_size, self.seed + self.epochs)
            if not plan:
                raise InvalidInputError("no batch of two pairs from distinct documents could be formed",
                                        expected="pairs from at least 2 documents", fix="index more documents")
            self.epochs += 1
            for batch in plan[:self.steps - done]:
                done += 1
                yield batch


def batches(pairs: Sequence[Pair], batch_size: int, seed: int) -> list[list[Pair]]:
    """Shuffled batches in which no two pairs share a group (a document) or an anchor text."""
    rng = random.Random(seed)
    pending = list(pairs)
    rng.shuffle(pending)
    out: list[list[Pair]] = []
    while pending:
        batch: list[Pair] = []
        groups: set[str] = set()
        anchors: set[str] = set()
        rest = []
        for pair in pending:
            if len(batch) < batch_size and pair.group not in groups and pair.anchor not in anchors:
                batch.append(pair)
                groups.add(pair.group)
                anchors.add(pair.anchor)
            else:
                rest.append(pair)
        if len(batch) < 2:  # one pair has no in-batch negative: nothing to learn
            break
        out.append(batch)
        pending = rest
    return out
