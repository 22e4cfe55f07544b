"""Feature pipeline: documents -> clean -> chunk -> embed -> one commit to the versioned index.

A build *syncs* the index with the paths it is given, for one tenant: documents are added or
updated (by content hash), and documents that this tenant's builds of these paths wrote before
but that are gone now are deleted. A document's identity is ``(tenant, doc_id)``: a build never
deletes rows written by a build for another tenant, and a build given ``tenant`` rejects
documents that name another one. Documents from other paths are untouched. Unchanged documents
are not re-embedded, nor are unchanged chunks of changed documents.

Faults lose nothing: a path that does not exist is an error before anything is written; a file
that fails to load, or loads only in part (a bad JSONL line, a bad SQuAD article), is
quarantined with its reason (and line number), and every document it held before that this load
did not read is kept. A document is deleted only when its file is gone or a clean load of its
file no longer contains it.
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
from llmfti.errors import ConfigError, NotFoundError
from llmfti.index import VectorIndex, history
from llmfti.lance import connect
from llmfti.text.chunking import Chunk, Chunker
from llmfti.text.document import Document, Quarantined
from llmfti.text.loaders import discover
from llmfti.text.loaders.base import missing_paths
from llmfti.tracing import span, traced

# on_progress(stage, done, total)
Progress = Callable[[str, int, int], None]


@traced("index.build")
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
    _check_paths(roots)
    build_tenant = tenant or settings.ingest.default_tenant
    with span("index.load", index=name, engine=type(engine).__name__) as step:
        docs, rejected = engine.load(settings, roots, tenant or settings.ingest.default_tenant)
        step.set(docs=len(docs), quarantined=len(rejected))
    if tenant is not None:
        docs, rejected = _only_tenant(docs, rejected, tenant)
    idx = VectorIndex.open(settings, name) if VectorIndex.exists(settings, name) else None
    state = idx.doc_state() if idx else {}
    salt = _chunking_salt(settings)
    hashes = {d.identity: d.fingerprint(salt) for d in docs}

    added = [d for d in docs if d.identity not in state]
    updated = [d for d in docs if d.identity in state and state[d.identity].doc_hash != hashes[d.identity]]
    sources = {str(r.resolve()) for r in roots}
    deleted = _gone(state, docs, rejected, sources, build_tenant)

    chunks_embedded = 0
    sentence_s = 0.0
    changed = added + updated
    if changed:
        reuse = idx.embeddings_of([d.identity for d in updated]) if idx else {}
        with span("index.chunk_and_embed", docs=len(changed), reused=len(reuse)) as step:
            info, chunked, fresh = engine.chunk_and_embed(settings, idx, changed, set(reuse), report)
            step.set(chunks_embedded=len(fresh))
        vectors = {**reuse, **fresh}
        chunks_embedded = len(fresh)
        sentence_started = time.perf_counter()
        sentence_vectors = _sentence_vectors(settings, idx, updated, chunked, report)
        sentence_s = time.perf_counter() - sentence_started
        rows = _rows(changed, chunked, vectors, hashes, info.dimension, build_tenant, sentence_vectors)
        if idx is None:
            idx = VectorIndex.create(settings, name, info)
    if idx is not None and (changed or deleted):
        report("commit", 0, 1)
        with span("index.commit", index=name) as step:
            idx.apply(rows if changed else None, [d.identity for d in updated] + deleted)
            idx.refresh_search_indices()
            step.set(version=idx.version)
        report("commit", 1, 1)

    db = connect(settings)
    summary = {
        "index": name,
        "version": idx.head_version if idx else None,
        "docs_added": len(added),
        "docs_updated": len(updated),
        "docs_deleted": len(deleted),
        "docs_unchanged": len(docs) - len(added) - len(updated),
        "chunks_embedded": chunks_embedded,
        "quarantined": len(rejected),
        "sentence_seconds": round(sentence_s, 3),  # of "seconds": embedding sentences (index.sentence_vectors)
        "seconds": round(time.perf_counter() - started, 3),
    }
    if idx is not None and idx.head_version not in idx.published_versions():
        idx.record_build("build", {**summary, "paths": sorted(sources)})  # publish: readers switch to it
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
        with span("index.chunk", docs=len(docs)):
            chunked = make_chunker(settings, embedder).chunk_many([(d.key, d.text) for d in docs])
        report("chunk", len(docs), len(docs))
        pending = [c for chunks in chunked for c in chunks if c.chunk_id not in reuse]
        batch_size = settings.embedder.batch_size
        with span("index.embed", chunks=len(pending)):
            return embedder.info, chunked, _encode(embedder, pending, report, batch_size)


def _sentence_vectors(settings: Settings, idx: VectorIndex | None, updated: list[Document],
                      chunked: list[list[Chunk]], report: Progress) -> dict[str, Any] | None:
    """``chunk_id -> (sentences, dim)`` of every chunk (stored ones reused: chunk ids change with their text);
    None when ``index.sentence_vectors`` is off. Embedded here, by the driver, whatever the engine: the same
    vectors whichever engine embedded the chunks."""
    if not settings.index.sentence_vectors or (idx is not None and not idx.has_sentence_vectors()):
        return None  # off, or a table from before the column (it keeps its schema; see VectorIndex)
    from llmfti.index.sentences import embed_sentences

    reuse = idx.sentence_embeddings_of([d.identity for d in updated]) if idx else {}
    pending = list({c.chunk_id: c for chunks in chunked for c in chunks if c.chunk_id not in reuse}.values())
    if not pending:
        return reuse
    embedder = idx.embedder() if idx else _load_embedder(settings)
    report("embed sentences", 0, len(pending))
    with span("index.embed_sentences", chunks=len(pending)):
        fresh = embed_sentences(embedder, [c.text for c in pending], settings.embedder.batch_size)
    report("embed sentences", len(pending), len(pending))
    return {**reuse, **{c.chunk_id: m for c, m in zip(pending, fresh, strict=True)}}


def make_chunker(settings: Settings, embedder: Any) -> Chunker:
    """The chunker of a build: the embedder's tokenizer, its token limit, the configured overlap."""
    return Chunker(embedder.token_spans, _max_tokens(settings, embedder.info.max_tokens),
                   settings.chunking.overlap_tokens)


def _load(settings: Settings, roots: list[Path], tenant: str) -> tuple[list[Document], list[Quarantined]]:
    return collect(discover(roots, tenant=tenant, max_file_bytes=settings.ingest.max_file_bytes,
                            max_doc_chars=settings.ingest.max_doc_chars))


def collect(items: Iterable[Document | Quarantined]) -> tuple[list[Document], list[Quarantined]]:
    """Loaded items in load order -> documents and rejected inputs (a repeated (tenant, doc id) is rejected)."""
    docs: dict[tuple[str, str], Document] = {}
    rejected: list[Quarantined] = []
    for item in items:
        if isinstance(item, Quarantined):
            rejected.append(item)
        elif item.identity in docs:
            first = docs[item.identity]
            rejected.append(Quarantined(
                item.origin or item.source,
                f"duplicate doc_id {item.doc_id!r} of tenant {item.tenant!r} (already loaded from "
                f"{first.origin or first.source}); fix: give the documents distinct ids or build them into "
                "separate indexes", doc_id=item.doc_id, origin=item.origin))
        else:
            docs[item.identity] = item
    return list(docs.values()), rejected


def _check_paths(roots: list[Path]) -> None:
    """A path that does not exist is a mistake (a typo, an unmounted disk): stop before writing anything."""
    missing = missing_paths(roots)
    if missing:
        raise NotFoundError(
            f"{', '.join(map(str, missing))}: no such file or folder (nothing was built)",
            expected="existing files or folders: .md .txt .html .pdf .jsonl, SQuAD .json",
            fix="check the path (relative paths start at the current folder "
                f"{Path.cwd()}); to remove documents from the index, build their folder without them",
        )


def _only_tenant(docs: list[Document], rejected: list[Quarantined], tenant: str,
                 ) -> tuple[list[Document], list[Quarantined]]:
    """A build for ``tenant`` never writes another tenant's documents: those that name one are quarantined."""
    own = [d for d in docs if d.tenant == tenant]
    for d in docs:
        if d.tenant != tenant:
            rejected.append(Quarantined(
                d.origin or d.source,
                f"{d.doc_id}: names tenant {d.tenant!r} but this build is for tenant {tenant!r} (a build for one "
                f"tenant never writes another tenant's documents); fix: build it with --tenant {d.tenant}, or "
                "without --tenant to use each document's own tenant", doc_id=d.doc_id, origin=d.origin))
    return own, rejected


def _gone(state: dict[tuple[str, str], Any], docs: list[Document], rejected: list[Quarantined],
          sources: set[str], build_tenant: str) -> list[tuple[str, str]]:
    """Documents to delete: written by this tenant's builds of these paths, and not in this load.

    Never deleted: another tenant's builds' rows, and documents of a file that failed to load or
    loaded only in part (its bad lines may be exactly those documents: they wait for a clean load).
    """
    present = {d.identity for d in docs}
    unread = {q.origin for q in rejected if q.origin}
    return sorted(
        identity for identity, row in state.items()
        if row.source in sources and row.build_tenant == build_tenant and identity not in present
        and row.origin not in unread
    )


def _chunking_salt(settings: Settings) -> str:
    """Everything besides the document that changes its chunks: a change re-chunks every document."""
    return json.dumps({"embedder": settings.embedder.model, **settings.chunking.model_dump()}, sort_keys=True)


def _load_embedder(settings: Settings):  # noqa: ANN202
    from llmfti.embedders import load_embedder

    return load_embedder(settings)  # whole settings: registry embedder versions too


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


def _encode(embedder: Any, chunks: list[Chunk], report: Progress, batch_size: int = 32) -> dict[str, list[float]]:
    """Vectors of ``chunks``, one encode call per batch (progress after each one).

    Chunks are sorted by token count first, so every batch holds chunks of similar length (the
    padding saving that one big length-sorted encode call would give) and progress moves steadily.
    """
    vectors: dict[str, Any] = {}
    ordered = sorted(chunks, key=lambda c: c.n_tokens)
    report("embed", 0, len(ordered))
    for start in range(0, len(ordered), batch_size):
        group = ordered[start:start + batch_size]
        for chunk, vector in zip(group, embedder.encode([c.text for c in group], batch_size=batch_size),
                                 strict=True):
            vectors[chunk.chunk_id] = vector
        report("embed", start + len(group), len(ordered))
    return vectors


def _rows(docs: list[Document], chunked: list[list[Chunk]], vectors: dict[str, Any],
          hashes: dict[tuple[str, str], str], dimension: int, build_tenant: str,
          sentence_vectors: dict[str, Any] | None = None) -> Any:
    import numpy as np
    import pyarrow as pa

    now = datetime.now(UTC)
    columns: dict[str, list[Any]] = {name: [] for name in (
        "chunk_id", "doc_id", "text", "metadata", "tenant", "source", "origin", "build_tenant", "title",
        "content_hash", "doc_hash", "event_time", "ingested_at")}
    embeddings = []
    for doc, chunks in zip(docs, chunked, strict=True):
        for chunk in chunks:
            meta = {**doc.metadata, "chunk_index": chunk.index, "start_char": chunk.start, "end_char": chunk.end,
                    "n_tokens": chunk.n_tokens}
            for key, value in (("chunk_id", chunk.chunk_id), ("doc_id", doc.doc_id), ("text", chunk.text),
                               ("metadata", json.dumps(meta, ensure_ascii=False, default=str)),
                               ("tenant", doc.tenant), ("source", doc.source), ("origin", doc.origin),
                               ("build_tenant", build_tenant), ("title", doc.title),
                               ("content_hash", chunk.content_hash), ("doc_hash", hashes[doc.identity]),
                               ("event_time", doc.event_time), ("ingested_at", now)):
                columns[key].append(value)
            embeddings.append(np.asarray(vectors[chunk.chunk_id], dtype=np.float32))
    flat = np.concatenate(embeddings) if embeddings else np.zeros(0, dtype=np.float32)
    arrays = {k: pa.array(v) for k, v in columns.items()}
    arrays["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dimension)
    if sentence_vectors is not None:
        ids = [chunk.chunk_id for chunks in chunked for chunk in chunks]
        arrays["sentence_embeddings"] = sentence_column([sentence_vectors[i] for i in ids], dimension)
    return pa.table(arrays)


def sentence_column(matrices: list[Any], dimension: int) -> Any:
    """A list<fixed_size_list<float32, dimension>> column: one ``(sentences, dimension)`` matrix per row."""
    import numpy as np
    import pyarrow as pa

    offsets = np.concatenate([[0], np.cumsum([len(m) for m in matrices])]).astype(np.int32)
    flat = np.concatenate([np.asarray(m, np.float32).reshape(-1) for m in matrices]) if matrices else \
        np.zeros(0, np.float32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dimension)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner)
