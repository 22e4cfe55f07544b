"""A bounded cache of text embeddings in front of the query batcher.

Two caches of this one kind sit in the agent: the **query** cache (questions asked again and again:
the encode is skipped and the request goes straight to the search) and the **sentence** cache of the
extractive generator (popular passages come back again and again, so their sentence vectors are
kept). Least recently used entries go first once ``max_entries`` is reached.

Keys are ``(embedder fingerprint, normalised text)``: the fingerprint names the model, its tokenizer
and its dimension, so a vector of one embedder is never returned for another (an index re-embedded
with a new model gets a new fingerprint, and old entries simply stop matching). Normalising only
strips and collapses whitespace, which the WordPiece/BERT pre-tokenizer ignores anyway: the vector of
a normalised text is the vector of the text itself (tests/test_hot_path.py checks it on MiniLM).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any


def normalise(text: str) -> str:
    """The cache key's text: outer whitespace stripped, inner runs of whitespace as one space."""
    return " ".join(text.split())


class EmbeddingCache:
    """``await cache.embed(texts)`` -> vectors in order; only uncached texts reach ``embed_one``."""

    def __init__(self, embed_one: Callable[[str], Awaitable[Any]], *, fingerprint: str,
                 max_entries: int = 20_000):
        if max_entries < 0:
            raise ValueError(f"max_entries={max_entries} is negative; use 0 to disable the cache")
        self._embed_one = embed_one
        self.fingerprint = fingerprint
        self.max_entries = max_entries
        self._vectors: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def key(self, text: str) -> tuple[str, str]:
        return self.fingerprint, normalise(text)

    def __len__(self) -> int:
        return len(self._vectors)

    async def embed_one(self, text: str) -> Any:
        return (await self.embed([text]))[0]

    async def embed(self, texts: Sequence[str], *, known: Mapping[str, Any] | None = None) -> list[Any]:
        """Vectors of ``texts`` in order; the ones not cached are computed concurrently (the batcher
        encodes them together), each distinct normalised text once. ``known``: vectors the caller already
        has (text -> vector of the same embedder), used as they are and neither counted nor stored."""
        keys = [self.key(t) for t in texts]
        found: dict[tuple[str, str], Any] = {self.key(t): v for t, v in (known or {}).items()}
        looked_up = [k for k in keys if k not in found]
        with self._lock:
            for key in dict.fromkeys(looked_up):
                vector = self._vectors.get(key)
                if vector is not None:
                    self._vectors.move_to_end(key)
                    found[key] = vector
            missing = list(dict.fromkeys(k for k in looked_up if k not in found))
            self.hits += len(looked_up) - len(missing)
            self.misses += len(missing)
        if missing:
            computed = await asyncio.gather(*(self._embed_one(text) for _, text in missing))
            with self._lock:
                for key, vector in zip(missing, computed, strict=True):
                    found[key] = vector
                    if self.max_entries:
                        self._vectors[key] = vector
                while len(self._vectors) > self.max_entries:
                    self._vectors.popitem(last=False)
        return [found[k] for k in keys]

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
