"""A bounded cache of text embeddings in front of the query batcher.

The extractive generator compares the question with every sentence of the retrieved passages;
popular passages come back again and again, so their sentence vectors are kept (least recently
used out first). Keys are the exact text: one cache belongs to one embedder (the pipeline makes a
new one when it opens an index), so vectors of different models never mix.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any


class EmbeddingCache:
    def __init__(self, embed_one: Callable[[str], Awaitable[Any]], *, max_entries: int = 20_000):
        self._embed_one = embed_one
        self.max_entries = max_entries
        self._vectors: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    async def embed(self, texts: Sequence[str]) -> list[Any]:
        """Vectors of ``texts`` in order; only the ones not cached are computed (batched together)."""
        found: dict[str, Any] = {}
        with self._lock:
            for text in texts:
                vector = self._vectors.get(text)
                if vector is not None:
                    self._vectors.move_to_end(text)
                    found[text] = vector
            missing = list(dict.fromkeys(t for t in texts if t not in found))
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            computed = await asyncio.gather(*(self._embed_one(t) for t in missing))
            with self._lock:
                for text, vector in zip(missing, computed, strict=True):
                    found[text] = vector
                    self._vectors[text] = vector
                while len(self._vectors) > self.max_entries:
                    self._vectors.popitem(last=False)
        return [found[t] for t in texts]

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
