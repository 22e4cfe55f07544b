"""Embeddings cached on disk by (embedder identity, texts), so a rerun skips the slow encode."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from llmfti.embedders.base import encode_queries


def embed_cached(embedder: Any, texts: list[str], cache_dir: Path, *,
                 queries: bool = False) -> tuple[np.ndarray, float | None]:
    """``(vectors, encode seconds)``; seconds is None when the vectors came from the cache. ``queries``: the texts
    are search queries (a query tower encodes them by its query route)."""
    described = [embedder.info.to_dict(), texts] + (["queries"] if queries else [])
    key = hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]
    path = cache_dir / f"embeddings-{key}.npy"
    if path.is_file():
        print(f"reusing {len(texts):,} cached embeddings from {path}")
        return np.load(path), None
    start = time.perf_counter()
    vectors = encode_queries(embedder, texts) if queries else embedder.encode(texts)
    seconds = time.perf_counter() - start
    print(f"embedded {len(texts):,} texts in {seconds:.0f}s ({len(texts) / seconds:.0f}/s)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors, seconds
