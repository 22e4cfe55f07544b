"""Feature pipeline: documents -> clean -> chunk -> embed -> one commit to the versioned index.

A build *syncs* the index with the paths it is given: documents are added or updated (by
content hash), and documents that came from one of these paths before but are gone now are
deleted. Documents from other paths are untouched. Unchanged documents are not re-embedded,
nor are unchanged chunks of changed documents. A file that fails to load is quarantined with
its reason and its previously indexed version is kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from llmfti.config import Settings
from llmfti.embedders.base import EmbedderInfo
from llmfti.errors import ConfigError
from llmfti.index import VectorIndex, history
from llmfti.lance import connect
from llmfti.text.chunking import Chunk, Chunker
from llmfti.text.document import Document, Quarantined
from llmfti.text.loaders import discover

# on_progress(stage, done, total)
Progress = Callable[[str, int, int], None]
ENCODE_GROUP = 1024  # chunks per encode call: large enough for length-sorted batching


def build_index(
    settings: Settings,
    paths: Sequence[Path | str],
    index: str | None = None,
    *,
    tenant: str | None = None,
    on_progress: Progress | None = None,
    engine: BuildEngine | None = None,
) -> dict[str, Any]:
    """Build or incrementally rebuild ``index`` from ``paths``; returns the build summary.

    ``engine`` runs the per-document steps (load, chunk, embed): this process by default, or
    e.g. Ray workers (``pipelines.index_build_ray``); planning and the one commit stay here.
    """
    started = time.perf_counter()
    engine = engine or LocalEngine()
    name = index or settings.index.name
    report = on_progress or (lambda stage, done, total: None)
    roots = [Path(p) for p in paths]
    docs, rejected = engine.load(settings, roots, tenant or settings.ingest.default_tenant)
    idx = VectorIndex.open(settings, name) if VectorIndex.exists(settings, name) else None
    state = idx.doc_state() if idx else {}
    salt = _chunking_salt(settings)
    hashes = {d.doc_id: d.fingerprint(salt) for d in docs}

    added = [d for d in docs if d.doc_id not in state]
    updated = [d for d in docs if d.doc_id in state and state[d.doc_id][0] != hashes[d.doc_id]]
    kept = {q.doc_id for q in rejected if q.doc_id}  # failed to load now: keep the last good version
    sources = {str(r.resolve()) for r in roots}
    present = {d.doc_id for d in docs}
    deleted = sorted(
        doc_id for doc_id, (_, src) in state.items() if src in sources and doc_id not in present | kept
    )

    chunks_embedded, version_before = 0, idx.version if idx else None
    changed = added + updated
    if changed:
        reuse = idx.embeddings_of([d.doc_id for d in updated]) if idx else {}
        info, chunked, fresh = engine.chunk_and_embed(settings, idx, changed, set(reuse), report)
        vectors = {**reuse, **fresh}
        chunks_embedded = len(fresh)
        rows = _rows(changed, chunked, vectors, hashes, info.dimension)
        if idx is None:
            idx = VectorIndex.create(settings, name, info)
    if idx is not None and (changed or deleted):
        report("commit", 0, 1)
        idx.apply(rows if changed else None, [d.doc_id for d in updated] + deleted)
        idx.refresh_search_indices()
        report("commit", 1, 1)

    db = connect(settings)
    summary = {
        "index": name,
        "version": idx.version if idx else None,
        "docs_added": len(added),
        "docs_updated": len(updated),
        "docs_deleted": len(deleted),
        "docs_unchanged": len(docs) - len(added) - len(updated),
        "chunks_embedded": chunks_embedded,
        "quarantined": len(rejected),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if idx is not None and idx.version != version_before:
        history.record_build(db, name, idx.version, "build", {**summary, "paths": sorted(sources)})
    history.quarantine(db, name, rejected)
    return summary


class BuildEngine(Protocol):
    """Where the per-document steps run; the driver (``build_index``) plans and commits."""

    def load(self, settings: Settings, roots: list[Path], tenant: str) -> tuple[list[Document], list[Quarantined]]:
        """Every document under ``roots`` (as :func:`_load` returns them, in the same order)."""
        ...

    def chunk_and_embed(self, settings: Settings, idx: VectorIndex | None, docs: list[Document], reuse: set[str],
                        report: Progress) -> tuple[EmbedderInfo, list[list[Chunk]], dict[str, Any]]:
        """Chunks of each document, and vectors of every chunk whose id is not in ``reuse``."""
        ...


class LocalEngine:
    """Every step in this process."""

    def load(self, settings: Settings, roots: list[Path], tenant: str) -> tuple[list[Document], list[Quarantined]]:
        return _load(settings, roots, tenant)

    def chunk_and_embed(self, settings: Settings, idx: VectorIndex | None, docs: list[Document], reuse: set[str],
                        report: Progress) -> tuple[EmbedderInfo, list[list[Chunk]], dict[str, Any]]:
        embedder = idx.embedder() if idx else _load_embedder(settings)
        report("chunk", 0, len(docs))
        chunked = make_chunker(settings, embedder).chunk_many([(d.doc_id, d.text) for d in docs])
        report("chunk", len(docs), len(docs))
        pending = [c for chunks in chunked for c in chunks if c.chunk_id not in reuse]
        return embedder.info, chunked, _encode(embedder, pending, report)


def make_chunker(settings: Settings, embedder: Any) -> Chunker:
    """The chunker of a build: the embedder's tokenizer, its token limit, the configured overlap."""
    return Chunker(embedder.token_spans, _max_tokens(settings, embedder.info.max_tokens),
                   settings.chunking.overlap_tokens)


def _load(settings: Settings, roots: list[Path], tenant: str) -> tuple[list[Document], list[Quarantined]]:
    return collect(discover(roots, tenant=tenant, max_file_bytes=settings.ingest.max_file_bytes,
                            max_doc_chars=settings.ingest.max_doc_chars))


def collect(items: Iterable[Document | Quarantined]) -> tuple[list[Document], list[Quarantined]]:
    """Loaded items in load order -> documents and rejected inputs (a repeated doc id is rejected)."""
    docs: dict[str, Document] = {}
    rejected: list[Quarantined] = []
    for item in items:
        if isinstance(item, Quarantined):
            rejected.append(item)
        elif item.doc_id in docs:
            rejected.append(Quarantined(
                item.source, f"duplicate doc_id {item.doc_id!r} (already loaded from {docs[item.doc_id].source}); "
                "fix: give the documents distinct ids or build them into separate indexes", doc_id=None))
        else:
            docs[item.doc_id] = item
    return list(docs.values()), rejected


def _chunking_salt(settings: Settings) -> str:
    """Everything besides the document that changes its chunks: a change re-chunks every document."""
    return json.dumps({"embedder": settings.embedder.model, **settings.chunking.model_dump()}, sort_keys=True)


def _load_embedder(settings: Settings):  # noqa: ANN202
    from llmfti.embedders import load_embedder

    return load_embedder(settings.embedder)


def _max_tokens(settings: Settings, limit: int) -> int:
    wanted = settings.chunking.max_tokens or limit
    if wanted > limit:
        raise ConfigError(
            f"chunking.max_tokens={wanted} is above the embedder's limit of {limit} tokens "
            "(longer input would be silently truncated)",
            expected=f"at most {limit}",
            fix="lower chunking.max_tokens or leave it unset",
        )
    return wanted


def _encode(embedder: Any, chunks: list[Chunk], report: Progress) -> dict[str, list[float]]:
    vectors: dict[str, Any] = {}
    report("embed", 0, len(chunks))
    for start in range(0, len(chunks), ENCODE_GROUP):
        group = chunks[start:start + ENCODE_GROUP]
        for chunk, vector in zip(group, embedder.encode([c.text for c in group]), strict=True):
            vectors[chunk.chunk_id] = vector
        report("embed", start + len(group), len(chunks))
    return vectors


def _rows(docs: list[Document], chunked: list[list[Chunk]], vectors: dict[str, Any], hashes: dict[str, str],
          dimension: int) -> Any:
    import numpy as np
    import pyarrow as pa

    now = datetime.now(UTC)
    columns: dict[str, list[Any]] = {name: [] for name in (
        "chunk_id", "doc_id", "text", "metadata", "tenant", "source", "title", "content_hash", "doc_hash",
        "event_time", "ingested_at")}
    embeddings = []
    for doc, chunks in zip(docs, chunked, strict=True):
        for chunk in chunks:
            meta = {**doc.metadata, "chunk_index": chunk.index, "start_char": chunk.start, "end_char": chunk.end,
                    "n_tokens": chunk.n_tokens}
            for key, value in (("chunk_id", chunk.chunk_id), ("doc_id", doc.doc_id), ("text", chunk.text),
                               ("metadata", json.dumps(meta, ensure_ascii=False, default=str)),
                               ("tenant", doc.tenant), ("source", doc.source), ("title", doc.title),
                               ("content_hash", chunk.content_hash), ("doc_hash", hashes[doc.doc_id]),
                               ("event_time", doc.event_time), ("ingested_at", now)):
                columns[key].append(value)
            embeddings.append(np.asarray(vectors[chunk.chunk_id], dtype=np.float32))
    flat = np.concatenate(embeddings) if embeddings else np.zeros(0, dtype=np.float32)
    arrays = {k: pa.array(v) for k, v in columns.items()}
    arrays["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dimension)
    return pa.table(arrays)
