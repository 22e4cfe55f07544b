"""The model-free generator: answers with the retrieved sentences most relevant to the question.

Sentences of the retrieved passages are scored with BM25 against the question (IDF over the
candidate sentences) plus a small bonus for the passage's retrieval rank; the best ones are
returned in order of score, each followed by its citation ``[n]``. Deterministic, instant, no
download: the default backend and the fallback when a model backend fails or times out.
Its "tokens" are words and punctuation marks, a word counting one token per 12 characters
(``\\w{1,12}|[^\\w\\s]``): it has no model tokenizer, and a 100,000-character "word" must not pass
the input limit as one token.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from llmfti.llm.backends.base import GenerationRequest, GenerationResult, Passage

if TYPE_CHECKING:
    from llmfti.config import GeneratorSettings

VERSION = "extractive-bm25-v1"
NO_ANSWER = "I could not find an answer to this in the indexed documents."
_TOKEN = re.compile(r"\w{1,12}|[^\w\s]")  # bounded: a long word is many tokens
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[`]?[A-Z0-9`])|\n+")
_SOFT_BREAK = re.compile(r"(?<=\S)[ \t]*\n(?![ \t]*(?:\n|#|[-*+>|]\s|\d+[.)]\s|```))")
_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|[-*+>]\s+|\d+[.)]\s+)+")
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from has have how i if in into is it its of on or that the "
    "their then there these this to was were what when where which who why will with you your".split()
)
_K1, _B = 1.2, 0.75


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1]


def split_sentences(text: str) -> list[str]:
    out = []
    for raw in _SENTENCE_END.split(_SOFT_BREAK.sub(" ", text)):
        sentence = _MARKUP.sub("", raw).strip()
        if len(_WORD.findall(sentence)) >= 3:
            out.append(sentence)
    return out


def select_sentences(question: str, passages: Sequence[Passage], limit: int) -> list[tuple[str, int]]:
    """The ``limit`` best (sentence, passage number) pairs for ``question``."""
    candidates = [(s, p.n, rank) for rank, p in enumerate(passages) for s in split_sentences(p.text)]
    if not candidates:
        return []
    query = set(_terms(question))
    docs = [Counter(_terms(s)) for s, _, _ in candidates]
    avg_len = sum(sum(d.values()) for d in docs) / len(docs) or 1.0
    df = Counter(t for d in docs for t in d if t in query)
    scored = []
    for (sentence, n, rank), terms in zip(candidates, docs, strict=True):
        length = sum(terms.values())
        bm25 = 0.0
        for t in query & terms.keys():
            idf = math.log(1 + (len(docs) - df[t] + 0.5) / (df[t] + 0.5))
            tf = terms[t]
            bm25 += idf * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * length / avg_len))
        if bm25 > 0:
            scored.append((bm25 + 0.1 / (rank + 1), sentence, n))
    if not scored:  # no word in common: trust the retriever's ranking
        return [(candidates[0][0], candidates[0][1])]
    scored.sort(key=lambda x: -x[0])
    chosen, seen = [], set()
    for _, sentence, n in scored:
        key = sentence.lower()
        if key not in seen:
            seen.add(key)
            chosen.append((sentence, n))
        if len(chosen) == limit:
            break
    return chosen


def truncate_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut after ``max_tokens`` tokens, and whether it was cut."""
    matches = list(_TOKEN.finditer(text))
    if len(matches) <= max_tokens:
        return text, False
    return text[: matches[max_tokens - 1].end()] if max_tokens > 0 else "", True


def render_plain(messages: Sequence[Mapping[str, str]]) -> str:
    body = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return body + "<|assistant|>\n"


class ExtractiveGenerator:
    """Selects and cites sentences from the passages; never fails, never blocks."""

    backend = "extractive"

    def __init__(self, *, max_sentences: int = 3, model_id: str = "llmfti-extractive"):
        self.max_sentences = max_sentences
        self.model_id = model_id
        self.model_version = VERSION

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> ExtractiveGenerator:
        return cls(max_sentences=settings.max_sentences, model_id=settings.served_name or "llmfti-extractive")

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        return render_plain(messages)

    def count_tokens(self, text: str) -> int:
        return count_tokens(text)

    def answer(self, request: GenerationRequest) -> GenerationResult:
        chosen = select_sentences(request.question, request.passages, self.max_sentences)
        text = " ".join(f"{s} [{n}]" for s, n in chosen) if chosen else NO_ANSWER
        text, cut = truncate_tokens(text, request.max_tokens)
        prompt = self.render_prompt(request.messages)
        return GenerationResult(
            text=text,
            finish_reason="length" if cut else "stop",
            prompt_tokens=count_tokens(prompt),
            completion_tokens=count_tokens(text),
            prompt=prompt,
            cited=sorted({n for _, n in chosen}),
        )

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return self.answer(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | GenerationResult]:
        result = self.answer(request)
        for piece in re.findall(r"\s*\S+", result.text):
            yield piece
            await asyncio.sleep(0)
        yield result
