"""Search an index with pylance and a numpy query encoder alone: the fast start of ``llmfti search``.

A CLI search runs one query per process, so its start-up is its latency. :class:`VectorIndex` opens
tables through lancedb (``import lancedb``: ~1.5 s on an idle 2-core machine) and embeds with
sentence-transformers (torch + transformers: 2-7 s). The searches themselves already run on pylance
datasets, so this reader opens the same dataset with ``import lance`` alone (~0.5 s) and embeds the query
with :class:`~llmfti.embedders.numpy_bert.NumpyBertEmbedder` (same model files, same fingerprint).

It reads exactly what :meth:`VectorIndex.search` reads: the newest *published* version (from the build
log) unless ``version`` names a published version or a tag, the same tenant and ``--filter`` clauses
(``llmfti.filters``), the same scans (``VectorIndex._fts`` / ``_dense``) and the version's own hybrid
fusion, from ``storage.uri`` with ``storage.options`` like every table (:func:`llmfti.lance.open_dataset`).

It serves only the plain case and answers None for anything else (an index, version or tag that does not
exist, an embedder other than the recorded one, a registry embedder, a bad ``k``, an empty query, an
unreadable stored fusion), so the caller falls back to :class:`VectorIndex`, which gives that case its
usual answer or error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from llmfti.embedders.base import encode_queries
from llmfti.errors import ConfigError
from llmfti.filters import Filter
from llmfti.index.fusion import Fusion, decode
from llmfti.index.vector_index import EMBEDDER_KEY, FUSION_KEY, SearchResult, VectorIndex, search_where, table_name
from llmfti.lance import escape_literal, open_dataset

if TYPE_CHECKING:
    from llmfti.config import Settings
    from llmfti.embedders.numpy_bert import NumpyBertEmbedder

_embedders: dict[str, NumpyBertEmbedder] = {}


def search_published(settings: Settings, query: str, *, index: str | None = None, k: int | None = None,
                     mode: str | None = None, tenant: str | None = None, version: int | str | None = None,
                     filters: Iterable[Filter] = ()) -> SearchResult | None:
    """What ``VectorIndex.open(settings, index).search(...)`` returns, or None where it cannot say cheaply."""
    name = index or settings.index.name
    k = k or settings.index.default_k
    mode = mode or settings.index.default_mode
    if mode not in ("dense", "fts", "hybrid") or not 1 <= k <= settings.index.max_k or not query.strip():
        return None
    embedder = None
    if mode != "fts":
        embedder = query_embedder(settings)
        if embedder is None:
            return None
    try:
        head = open_dataset(settings, table_name(name))
    except (ValueError, OSError):  # no such table (or a v1 index), or unreachable: VectorIndex explains
        return None
    recorded = _recorded(head)
    if recorded is None or recorded.get("name") != settings.embedder.model:
        return None
    number = _resolve(settings, head, name, version)
    if number is None:
        return None
    dataset = head if number == head.version else head.checkout_version(number)
    if _recorded(dataset) != recorded:  # re-embedded since: VectorIndex refuses to mix embedders
        return None
    vector = fusion = None
    if mode != "fts":
        assert embedder is not None
        if embedder.info.to_dict() != recorded:
            return None
        vector = encode_queries(embedder, [query])[0]
    if mode == "hybrid":
        raw = (dataset.schema.metadata or {}).get(FUSION_KEY.encode())
        try:
            fusion = Fusion(rrf_k=settings.index.rrf_k) if raw is None else decode(raw)[0]
        except ConfigError:  # an unreadable stored fusion: VectorIndex warns and fuses with plain RRF
            return None
    where = search_where(settings, tenant, filters)
    return SearchResult(number, mode, VectorIndex.ranked(dataset, mode, query, vector, where, k, fusion))


def query_embedder(settings: Settings) -> NumpyBertEmbedder | None:
    """The numpy encoder of ``embedder.model`` (loaded once per process), or None if it cannot run that model."""
    from llmfti.embedders.numpy_bert import NumpyBertEmbedder, model_folder

    folder = model_folder(settings.embedder)
    if folder is None:
        return None
    key = f"{settings.embedder.model}\x00{folder}"
    if key not in _embedders:
        _embedders[key] = NumpyBertEmbedder(settings.embedder, folder)
    return _embedders[key]


def published_versions(settings: Settings, name: str) -> list[int]:
    """The versions the build log published for index ``name``, oldest first ([] without a build log)."""
    from llmfti.index.history import BUILDS_TABLE

    try:
        builds = open_dataset(settings, BUILDS_TABLE)
    except ValueError:
        return []
    rows = builds.to_table(columns=["version"], filter=f"index_name = {escape_literal(table_name(name))}")
    return sorted({int(v) for v in rows.column("version").to_pylist()})


def _resolve(settings: Settings, head: Any, name: str, version: int | str | None) -> int | None:
    """The version a search of ``version`` reads (as VectorIndex resolves it), None if it is not one."""
    published = published_versions(settings, name)
    if version is None:
        return published[-1] if published else int(head.version)
    if isinstance(version, int) or str(version).isdigit():
        known = published or [int(v["version"]) for v in head.versions()]
        return int(version) if int(version) in known else None
    tag = head.tags.list().get(str(version))
    return None if tag is None else int(tag["version"])


def _recorded(dataset: Any) -> dict[str, Any] | None:
    raw = (dataset.schema.metadata or {}).get(EMBEDDER_KEY)
    return None if raw is None else json.loads(raw)
