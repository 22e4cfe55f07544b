"""Feature pipeline: re-embed an index's chunks with another embedder, as ONE new index version.

The chunks are kept as they are (same ids, text and metadata); only the ``embedding`` column and
the table's embedder record change. That is only right when the new embedder cuts text the same
way: same tokenizer fingerprint and token limit (a fine-tuned version of the index's embedder);
anything else is refused with the fix (rebuild from the documents into a new index name).

The old versions stay (Lance time travel) with their own embedder record, so a search of an old
version with the new embedder is refused, and ``llmfti index rollback`` (or ``llmfti embedder
rollback``, which also moves the embedder alias) brings back the old vectors *and* their record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from llmfti.config import Settings
from llmfti.embedders.index_pairing import index_versions_of, open_as_built, recorded_embedder, settings_for_index
from llmfti.errors import ConfigError
from llmfti.text.document import Document

Progress = Callable[[str, int, int], None]


def reembed_index(settings: Settings, index: str, *, documents: Sequence[Document] = (),
                  on_progress: Progress | None = None) -> dict[str, Any]:
    """Re-embed every chunk of ``index``'s newest version with ``settings.embedder``; returns the summary.

    ``documents``: the documents a build is about to sync; their stored content hashes are moved to
    the new embedder's chunking salt when unchanged, so that build finds nothing to redo.
    """
    import numpy as np
    import pyarrow as pa

    from llmfti.embedders import load_embedder
    from llmfti.index import VectorIndex
    from llmfti.index.vector_index import chunks_schema, table_name
    from llmfti.lance import connect
    from pipelines.index_build import _chunking_salt

    started = time.perf_counter()
    report = on_progress or (lambda stage, done, total: None)
    old_settings = settings_for_index(settings, index)
    old = VectorIndex.open(old_settings, index)
    embedder = load_embedder(settings)
    info = embedder.info
    if info.to_dict() == old.info:
        return {"index": index, "version": old.version, "reembedded": 0, "embedder": info.name, "seconds": 0.0}
    for key in ("tokenizer_fingerprint", "max_tokens"):
        if old.info.get(key) != getattr(info, key):
            raise ConfigError(
                f"index {index!r} was chunked for embedder {old.info['name']!r}; {info.name!r} has another "
                f"{key} ({getattr(info, key)} vs {old.info.get(key)}), so its chunks cannot be re-embedded as they are",
                expected="a fine-tuned version of the index's embedder (same tokenizer and token limit)",
                fix=f"build the documents into a new index name with --embedder {settings.embedder.model}")
    db = connect(settings)
    data = db.open_table(table_name(index), version=old.version).to_arrow()
    texts = data.column("text").to_pylist()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    vectors = np.zeros((len(texts), info.dimension), dtype=np.float32)
    batch = settings.embedder.batch_size
    report("embed", 0, len(texts))
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        vectors[rows] = embedder.encode([texts[i] for i in rows], batch_size=batch)
        report("embed", start + len(rows), len(texts))
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), info.dimension)
    data = data.set_column(data.schema.get_field_index("embedding"), "embedding", column)
    data = _with_sentences(data, embedder, texts, settings, report)  # the old ones were the old embedder's
    data = _rehash(data, documents, _chunking_salt(old_settings), _chunking_salt(settings))
    schema = chunks_schema(info)
    report("commit", 0, 1)
    db.create_table(table_name(index), data=data.select(schema.names).cast(schema), schema=schema,
                    mode="overwrite")  # a new Lance version of the same table: history and tags stay
    new = VectorIndex(settings, index, db.open_table(table_name(index)))  # the new head, not yet published
    new.refresh_search_indices()
    summary = {"index": index, "from_version": old.version, "reembedded": len(texts), "embedder": info.name,
               "previous_embedder": old.info["name"], "seconds": round(time.perf_counter() - started, 3)}
    summary["version"] = new.record_build("reembed", summary)
    report("commit", 1, 1)
    return summary


def _with_sentences(data: Any, embedder: Any, texts: list[str], settings: Settings, report: Progress) -> Any:
    """``data`` with its ``sentence_embeddings`` column made by ``embedder`` (null when index.sentence_vectors
    is off), added when the table predates the column."""
    import pyarrow as pa

    from llmfti.index.sentences import embed_sentences
    from pipelines.index_build import sentence_column

    name, dimension = "sentence_embeddings", embedder.info.dimension
    if settings.index.sentence_vectors:
        report("embed sentences", 0, len(texts))
        column = sentence_column(embed_sentences(embedder, texts, settings.embedder.batch_size), dimension)
        report("embed sentences", len(texts), len(texts))
    else:
        column = pa.nulls(len(texts), pa.list_(pa.list_(pa.float32(), dimension)))
    if name in data.schema.names:
        return data.set_column(data.schema.get_field_index(name), name, column)
    return data.append_column(name, column)


def _rehash(data: Any, documents: Sequence[Document], old_salt: str, new_salt: str) -> Any:
    """Stored document hashes of unchanged ``documents`` recomputed with the new chunking salt."""
    import pyarrow as pa

    if not documents:
        return data
    moved = {d.identity: (d.fingerprint(old_salt), d.fingerprint(new_salt)) for d in documents}
    hashes = []
    for tenant, doc_id, stored in zip(data.column("tenant").to_pylist(), data.column("doc_id").to_pylist(),
                                      data.column("doc_hash").to_pylist(), strict=True):
        old_hash, new_hash = moved.get((tenant, doc_id), (None, None))
        hashes.append(new_hash if stored == old_hash else stored)
    return data.set_column(data.schema.get_field_index("doc_hash"), "doc_hash", pa.array(hashes, pa.string()))


def switch_embedder(settings: Settings, embedder: str, paths: Sequence[Any], index: str | None, *,
                    tenant: str | None = None, on_progress: Progress | None = None,
                    ) -> tuple[Settings, dict[str, Any] | None]:
    """Settings that build with ``embedder`` (a registry alias pinned to its version now); an existing
    index built with another embedder is re-embedded first (its summary is returned, else None)."""
    from pathlib import Path

    from llmfti.embedders.registry_embedder import with_embedder
    from llmfti.index import VectorIndex
    from pipelines.index_build import _check_paths, _load

    new_settings = with_embedder(settings, embedder)
    name = index or settings.index.name
    if not VectorIndex.exists(settings, name) or recorded_embedder(settings, name)["name"] == \
            new_settings.embedder.model:
        return new_settings, None
    roots = [Path(p) for p in paths]
    _check_paths(roots)
    documents, _rejected = _load(new_settings, roots, tenant or settings.ingest.default_tenant)
    return new_settings, reembed_index(new_settings, name, documents=documents, on_progress=on_progress)


def rollback_embedder(settings: Settings, model_name: str, index: str, alias: str = "production", *,
                      reason: str | None = None) -> dict[str, Any]:
    """Move the embedder ``alias`` back one version AND restore ``index`` to that version's newest vectors.

    Checked before anything moves: the index must hold a published version embedded by the version
    the alias goes back to (else nothing is changed and the error says how to build one).
    """
    from llmfti.errors import NotFoundError, PromotionRefusedError
    from llmfti.registry.model_registry import ModelRegistry

    registry = ModelRegistry(settings, model_name)
    stack = registry._stacks().get(alias, [])
    if len(stack) < 2:
        raise PromotionRefusedError(
            f"embedder alias {alias!r} of {model_name!r} has no earlier version (history: {stack or 'empty'})",
            expected="an alias promoted at least twice",
            fix=f"to go back to the base embedder, roll the index back (llmfti index rollback VERSION --index "
                f"{index}) and set embedder.model to the base")
    target = f"registry:{model_name}:v{stack[-2]}"
    versions = index_versions_of(settings, index, target)
    if not versions:
        raise NotFoundError(f"index {index!r} has no version embedded by {target}; nothing was moved",
                            fix=f"llmfti index build PATH --index {index} --embedder {target}")
    event = registry.rollback(alias, reason=reason)
    idx = open_as_built(settings, index)
    restored = idx.rollback(versions[-1])
    return {"model": model_name, "alias": alias, "embedder": target, "from_version": event.from_version,
            "to_version": event.version, "index": index, "restored_index_version": versions[-1],
            "index_version": restored}
