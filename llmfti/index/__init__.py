"""The versioned vector index: a LanceDB ``chunks`` table with dense, full-text and hybrid search."""

from llmfti.index.vector_index import SearchHit, SearchResult, VectorIndex

__all__ = ["SearchHit", "SearchResult", "VectorIndex"]
