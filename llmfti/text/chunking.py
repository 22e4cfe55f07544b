"""Token-aware chunking, measured in the embedding model's own tokenizer.

Chunks never exceed ``max_tokens`` (the embedder's limit without special tokens), prefer
sentence and paragraph boundaries, and overlap by whole trailing sentences up to
``overlap_tokens``. A sentence longer than the limit is split at token boundaries into
parts of equal size (never a one-token tail), and a piece without a word character (e.g. a
lone ".") never becomes a chunk. Chunk ids derive from the document's key (its tenant and id,
see :func:`llmfti.text.document.document_key`) and the chunk's content hash, so they are stable
across builds and never shared by two tenants' documents.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmfti.errors import ConfigError

# Character spans (start, end) of each token of a text, without special tokens.
TokenSpans = Callable[[Sequence[str]], list[list[tuple[int, int]]]]

_WORD = re.compile(r"\w")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|\n\s*\n|\n(?=\s*(?:[#>*\-+|]|\d+[.)]\s))")


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    doc_key: str  # the key the document was chunked under: tenant + doc id
    index: int  # position in the document
    text: str
    start: int  # character offsets into the cleaned document text
    end: int
    n_tokens: int

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def chunk_id(doc_key: str, text: str, occurrence: int = 0) -> str:
    """Stable id: document key + content hash (+ occurrence, only for repeated identical chunks)."""
    key = f"{doc_key}\x00{content_hash(text)}" + (f"\x00{occurrence}" if occurrence else "")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Chunker:
    token_spans: TokenSpans
    max_tokens: int
    overlap_tokens: int = 32

    def __post_init__(self) -> None:
        if self.overlap_tokens >= self.max_tokens // 2:
            raise ConfigError(
                f"chunking.overlap_tokens={self.overlap_tokens} is too large for max_tokens={self.max_tokens}",
                expected=f"overlap_tokens below {self.max_tokens // 2}",
                fix="lower chunking.overlap_tokens",
            )

    def chunk_many(self, docs: Sequence[tuple[str, str]]) -> list[list[Chunk]]:
        """Chunk ``(doc_key, text)`` pairs (``Document.key``: tenant + id); tokenizes all texts in one batch."""
        spans = self.token_spans([text for _, text in docs])
        chunked = [self._chunk(key, text, s) for (key, text), s in zip(docs, spans, strict=True)]
        return [self._enforce_limit(chunks) for chunks in chunked]

    def _enforce_limit(self, chunks: list[Chunk]) -> list[Chunk]:
        """Re-measure each chunk on its own; split any that the tokenizer counts over the limit.

        Token counts of sentences are additive for whitespace-separated text, so this almost
        never splits; it turns "almost never exceeds" into "never exceeds".
        """
        counts = self.token_spans([c.text for c in chunks])
        if all(len(spans) <= self.max_tokens for spans in counts):
            return chunks
        fixed: list[Chunk] = []
        for chunk, spans in zip(chunks, counts, strict=True):
            if len(spans) <= self.max_tokens:
                fixed.append(chunk)
                continue
            for part in _even_parts(spans, self.max_tokens):
                piece = chunk.text[part[0][0] : part[-1][1]]
                if _WORD.search(piece):
                    fixed.append(Chunk(chunk_id(chunk.doc_key, piece), chunk.doc_key, 0, piece,
                                       chunk.start + part[0][0], chunk.start + part[-1][1], len(part)))
        return [Chunk(c.chunk_id, c.doc_key, i, c.text, c.start, c.end, c.n_tokens) for i, c in enumerate(fixed)]

    def _chunk(self, doc_key: str, text: str, spans: list[tuple[int, int]]) -> list[Chunk]:
        units = _units(text, spans, self.max_tokens)
        windows: list[tuple[int, int]] = []  # [first unit, last unit + 1)
        first, tokens = 0, 0
        for i, (_, _, n) in enumerate(units):
            if i > first and tokens + n > self.max_tokens:
                windows.append((first, i))
                first = _overlap_start(units, first, i, self.overlap_tokens)
                tokens = sum(u[2] for u in units[first:i])
            tokens += n
        if units:
            windows.append((first, len(units)))
        chunks, seen = [], {}
        for lo, hi in windows:
            start, end = units[lo][0], units[hi - 1][1]
            piece = text[start:end].strip()
            if not _WORD.search(piece):
                continue  # punctuation only: nothing to retrieve
            n_tokens = sum(u[2] for u in units[lo:hi])
            occurrence = seen.get(piece, 0)
            seen[piece] = occurrence + 1
            chunks.append(Chunk(chunk_id(doc_key, piece, occurrence), doc_key, len(chunks), piece, start, end,
                                n_tokens))
        return chunks


def _overlap_start(units: list[tuple[int, int, int]], first: int, stop: int, budget: int) -> int:
    """First unit of the next window: trailing units of this one that fit in ``budget`` tokens."""
    start, used = stop, 0
    while start - 1 > first and used + units[start - 1][2] <= budget:
        start -= 1
        used += units[start][2]
    return start


def _units(text: str, spans: list[tuple[int, int]], max_tokens: int) -> list[tuple[int, int, int]]:
    """Sentences as (start, end, n_tokens); a sentence over ``max_tokens`` is split by tokens."""
    bounds = [0] + [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]
    units: list[tuple[int, int, int]] = []
    t = 0
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        first = t
        while t < len(spans) and spans[t][0] < hi:
            t += 1
        parts = _even_parts(spans[first:t], max_tokens)
        for k, part in enumerate(parts):
            start = lo if k == 0 else part[0][0]
            end = hi if k == len(parts) - 1 else part[-1][1]
            units.append((start, end, len(part)))
    return [u for u in units if u[2] > 0]


def _even_parts(spans: list[tuple[int, int]], limit: int) -> list[list[tuple[int, int]]]:
    """``spans`` cut into the fewest parts of at most ``limit`` tokens, of (nearly) equal size."""
    if len(spans) <= limit:
        return [spans] if spans else []
    n = -(-len(spans) // limit)
    size, extra = divmod(len(spans), n)
    parts, start = [], 0
    for i in range(n):
        stop = start + size + (1 if i < extra else 0)
        parts.append(spans[start:stop])
        start = stop
    return parts
