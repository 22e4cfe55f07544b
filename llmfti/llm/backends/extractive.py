"""The model-free generator: answers with the retrieved sentences that answer the question.

Which sentences is decided by :mod:`llmfti.llm.backends.answer_selection`: question-sentence
meaning (from the embedder the agent already loaded, when the request carries ``embed``), words in
common, retrieval rank and answer type, weighed by the request's learned sentence ranker when it
carries one (:mod:`llmfti.sentence_ranker`), else by hand weights. The answer starts with the best
sentence and adds the next ones only while they score nearly as well (as short as the answer allows),
each followed by its citation ``[n]``. When the evidence is too weak (by the request's calibrated abstention model, or,
without one, the best sentence's cosine under its ``abstain_below``), it answers :data:`ABSTAIN` and
cites the closest passages.
Deterministic, no download: the default backend and the fallback when a model backend fails.

Its "tokens" are words and punctuation marks, a word counting one token per 12 characters
(``\\w{1,12}|[^\\w\\s]``): it has no model tokenizer, and a 100,000-character "word" must not pass
the input limit as one token.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from llmfti.llm.backends.answer_selection import Selection, candidates, select
from llmfti.llm.backends.base import GenerationRequest, GenerationResult
from llmfti.llm.backends.token_match import max_sim

if TYPE_CHECKING:
    from llmfti.config import GeneratorSettings

VERSION = "extractive-v2"
NO_ANSWER = "I could not find an answer to this in the indexed documents."
ABSTAIN = "I don't know: the indexed documents do not seem to answer this."
CLOSE_SCORE = 0.1  # a further sentence joins the answer only when it scores within this of the best
EMBED_CANDIDATES = 12
"""Candidate sentences embedded per answer, the lexically best (words, coverage, answer type, rank); the others
score with the lowest similarity of those. On 1,200 SQuAD dev questions (top-5 hybrid passages, ~24 candidates
each) 12 kept first-sentence presence at 0.7592 (10: 0.7583) while embedding half the sentences."""
TOKEN_MATCH_CANDIDATES = 0
"""Candidates reranked by token max-sim (the best by the other evidence); ``agent.generator.token_match_candidates``."""
TOKEN_MATCH_LEAD = 0.2
"""Token matching runs only when the best candidate leads by less than this: ``agent.generator.token_match_lead``."""
_TOKEN = re.compile(r"\w{1,12}|[^\w\s]")  # bounded: a long word is many tokens


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def is_no_answer(text: str) -> bool:
    """Whether an answer of this generator says it has none (no passages, or it abstained)."""
    return not text or text.startswith((NO_ANSWER, ABSTAIN))


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

    def __init__(self, *, max_sentences: int = 3, model_id: str = "llmfti-extractive",
                 embed_candidates: int = EMBED_CANDIDATES, token_match_candidates: int = TOKEN_MATCH_CANDIDATES,
                 token_match_lead: float = TOKEN_MATCH_LEAD):
        self.max_sentences = max_sentences
        self.embed_candidates = embed_candidates
        self.token_match_candidates = token_match_candidates
        self.token_match_lead = token_match_lead
        self.model_id = model_id
        self.model_version = VERSION

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> ExtractiveGenerator:
        return cls(max_sentences=settings.max_sentences, model_id=settings.served_name or "llmfti-extractive",
                   embed_candidates=settings.embed_candidates,
                   token_match_candidates=settings.token_match_candidates,
                   token_match_lead=settings.token_match_lead)

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

    def answer(self, request: GenerationRequest, similarities: Sequence[float] | None = None,
               token_match: Sequence[float | None] | None = None) -> GenerationResult:
        """The answer from ``similarities`` (question cosine per candidate sentence; None: lexical only) and
        ``token_match`` (token max-sim per candidate, None where not measured; see :meth:`token_match`)."""
        selection = select(request.question, request.passages, self.max_sentences, similarities=similarities,
                           ranker=request.ranker, token_match=token_match)
        abstained = abstains(selection, request)
        if abstained:
            closest = [p.n for p in request.passages[:3]]
            text = ABSTAIN + (" The closest passages: " + " ".join(f"[{n}]" for n in closest) if closest else "")
            cited = closest
        elif selection.chosen:
            best = selection.scores[0]
            ranked = request.ranker is not None and request.ranker.learned and similarities is not None
            close = request.ranker.join_within if ranked else CLOSE_SCORE  # in the ranker's units
            chosen = [c for c, score in zip(selection.chosen, selection.scores, strict=True) if score >= best - close]
            text = " ".join(f"{c.sentence} [{c.n}]" for c in chosen)
            cited = sorted({c.n for c in chosen})
        else:
            text, cited = NO_ANSWER, []
        text, cut = truncate_tokens(text, request.max_tokens)
        prompt = self.render_prompt(request.messages)
        return GenerationResult(
            text=text,
            finish_reason="length" if cut else "stop",
            prompt_tokens=count_tokens(prompt),
            completion_tokens=count_tokens(text),
            prompt=prompt,
            cited=cited,
            abstained=abstained,
            evidence=selection.evidence,
            evidence_features=selection.features,
            candidates=selection.candidate_rows,
        )

    async def similarities(self, request: GenerationRequest) -> list[float] | None:
        """Question cosine of every candidate sentence, through the request's embedder (None without one).

        Only the ``embed_candidates`` lexically best sentences are embedded; the rest get the lowest of
        their cosines, so they never outrank a sentence that is both lexically and semantically ahead."""
        if request.embed is None:
            return None
        cands = candidates(request.passages)
        if not cands:
            return None
        keep = list(range(len(cands)))
        if len(cands) > self.embed_candidates:
            by_words = select(request.question, request.passages, len(cands), similarities=[0.0] * len(cands))
            position = {c: i for i, c in enumerate(cands)}
            keep = [position[c] for c in by_words.chosen[:self.embed_candidates]]
        vectors = await request.embed([request.question, *(cands[i].sentence for i in keep)])
        found = cosines(vectors[0], vectors[1:])
        if len(keep) == len(cands):
            return found
        out = [min(found)] * len(cands)
        for i, cosine in zip(keep, found, strict=True):
            out[i] = cosine
        return out

    async def token_match(self, request: GenerationRequest,
                          similarities: Sequence[float] | None) -> list[float | None] | None:
        """Token max-sim of the ``token_match_candidates`` best candidates by the other evidence (None for the
        others; None without ``embed_tokens``, similarities or a use for it, or when the best candidate leads the
        next by ``token_match_lead`` or more). The question's token vectors and
        the candidates' come through ``request.embed_tokens`` (the agent: the question's from its retrieval
        encode, the sentences' from a bounded cache, encoded in the query batcher's batches)."""
        if (request.embed_tokens is None or similarities is None or self.token_match_candidates <= 0
                or (request.ranker is not None and request.ranker.learned)):
            return None
        cands = candidates(request.passages)
        if len(cands) < 2:
            return None
        by_score = select(request.question, request.passages, max(self.token_match_candidates, 2),
                          similarities=similarities)
        if len(by_score.scores) > 1 and by_score.scores[0] - by_score.scores[1] >= self.token_match_lead:
            return None  # a clear winner: no sentence's tokens are worth encoding
        position = {c: i for i, c in enumerate(cands)}
        keep = [position[c] for c in by_score.chosen[:self.token_match_candidates]]
        encoded = await request.embed_tokens([request.question, *(cands[i].sentence for i in keep)])
        out: list[float | None] = [None] * len(cands)
        for i, found in zip(keep, max_sim(encoded[0], encoded[1:]), strict=True):
            out[i] = found
        return out

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        similarities = await self.similarities(request)
        return self.answer(request, similarities, await self.token_match(request, similarities))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | GenerationResult]:
        result = await self.generate(request)
        for piece in re.findall(r"\s*\S+", result.text):
            yield piece
            await asyncio.sleep(0)
        yield result


def abstains(selection: Selection, request: GenerationRequest) -> bool:
    """Whether the evidence is too weak to answer: by the request's calibrated model when it carries one,
    else by its ``abstain_below`` cosine; never without an embedder (no evidence measured)."""
    if selection.features is not None and request.abstention is not None:
        return bool(request.abstention.abstains(selection.features))
    return (selection.evidence is not None and request.abstain_below is not None
            and selection.evidence < request.abstain_below)


def cosines(query: object, vectors: Sequence[object]) -> list[float]:
    import numpy as np

    matrix = np.asarray(vectors, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(q) or 1.0)
    return [float(x) for x in (matrix @ q) / np.where(norms == 0, 1.0, norms)]
