"""The monitor's query-side signals: query embeddings and each query's best score against the index.

The inference log holds the query text, not its embedding, and its ``retrieved_scores`` are in the
units of the search mode that served it (hybrid: reciprocal-rank fusion scores, which say nothing
about how close the best passage was). So the monitor **re-embeds** a seeded sample of each
window's logged queries with the index's own embedder, and measures each one's best **cosine**
score against the chunks of the index version and tenant that served it. Both are comparable
across windows whatever search mode was configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from llmfti.embedders.base import encode_queries

if TYPE_CHECKING:
    from llmfti.config import Settings

_SCORE_BATCH = 1024  # queries per matrix product against the index


class QueryScorer:
    """Embeds query texts (each distinct text once per run) and scores them against index versions."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._vectors: dict[str, np.ndarray] = {}
        self._chunks: dict[tuple[str, int | None, str], np.ndarray | None] = {}
        self._indexes: dict[str, Any] = {}
        self._embedder: Any = None
        self.embedded = 0

    def _index(self, name: str) -> Any:
        if name not in self._indexes:
            from llmfti.errors import NotFoundError
            from llmfti.index import VectorIndex

            try:
                self._indexes[name] = VectorIndex.open(self.settings, name)
            except NotFoundError:
                self._indexes[name] = None
        return self._indexes[name]

    def embed(self, texts: list[str], index_name: str | None) -> np.ndarray:
        """L2-normalised vectors of ``texts`` by the embedder of ``index_name`` (or the configured one)."""
        missing = sorted({t for t in texts if t not in self._vectors})
        if missing:
            if self._embedder is None:
                index = self._index(index_name or self.settings.index.name)
                if index is not None:
                    self._embedder = index.embedder()
                else:
                    from llmfti.embedders import load_embedder

                    self._embedder = load_embedder(self.settings.embedder)
            vectors = encode_queries(self._embedder, missing)
            self._vectors.update(zip(missing, np.asarray(vectors, dtype=np.float32), strict=True))
            self.embedded += len(missing)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])

    def best_scores(self, vectors: np.ndarray, index_name: str | None, version: int | None,
                    tenant: str | None) -> np.ndarray:
        """Best cosine score of each vector against the index's chunks of ``tenant`` at ``version``
        (NaN when that index, version or tenant has no chunks)."""
        chunks = self._chunk_matrix(index_name or self.settings.index.name, version,
                                    tenant or self.settings.ingest.default_tenant)
        if chunks is None or not len(vectors):
            return np.full(len(vectors), np.nan)
        best = np.empty(len(vectors), dtype=np.float64)
        for start in range(0, len(vectors), _SCORE_BATCH):
            block = vectors[start:start + _SCORE_BATCH]
            best[start:start + len(block)] = (block @ chunks.T).max(axis=1)
        return best

    def _chunk_matrix(self, name: str, version: int | None, tenant: str) -> np.ndarray | None:
        key = (name, version, tenant)
        if key not in self._chunks:
            self._chunks[key] = self._load_chunks(name, version, tenant)
        return self._chunks[key]

    def _load_chunks(self, name: str, version: int | None, tenant: str) -> np.ndarray | None:
        from llmfti.errors import NotFoundError
        from llmfti.lance import escape_literal

        index = self._index(name)
        if index is None:
            return None
        try:
            table = index._at(version)  # noqa: SLF001 - the index's own cached version handle
        except NotFoundError:  # that version was cleaned up: score against the latest
            table = index._at(None)  # noqa: SLF001
        rows = (table.search().where(f"tenant = {escape_literal(tenant)}").select(["embedding"])
                .limit(None).to_arrow())
        if not rows.num_rows:
            return None
        flat = rows.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return np.asarray(flat, dtype=np.float32).reshape(rows.num_rows, -1)
