"""Which embedder filled which index version: read from each version's own embedder record.

Every index version records its embedder (``llmfti.embedder`` in the table's schema metadata), so a
re-embedded index keeps, version by version, which vectors came from which embedder version. These
helpers read that pairing for re-embedding, the retrieval gate and rollback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmfti.config import Settings
    from llmfti.index import VectorIndex


def recorded_embedder(settings: Settings, index: str, version: int | None = None) -> dict[str, Any]:
    """The embedder record of ``index`` at ``version`` (default: its newest published version, so a re-embed
    whose commit was never published, e.g. killed before, changes nothing for readers)."""
    from llmfti.index.vector_index import _recorded_embedder, published_embedder, table_name
    from llmfti.lance import connect

    db = connect(settings)
    if version is None:
        return published_embedder(db, index)
    return _recorded_embedder(db.open_table(table_name(index), version=version))


def settings_for_index(settings: Settings, index: str) -> Settings:
    """``settings`` with the embedder the index's newest published version was built with (to read it as it is)."""
    from llmfti.embedders.registry_embedder import with_embedder

    return with_embedder(settings, recorded_embedder(settings, index)["name"])


def open_as_built(settings: Settings, index: str, version: int | None = None) -> VectorIndex:
    """``index`` opened with the embedder of ``version`` (default: the newest published), whatever is configured."""
    from llmfti.embedders.registry_embedder import with_embedder
    from llmfti.index import VectorIndex
    from llmfti.index.vector_index import table_name
    from llmfti.lance import connect

    if version is None:
        return VectorIndex.open(settings_for_index(settings, index), index)
    table = connect(settings).open_table(table_name(index), version=version)
    return VectorIndex(with_embedder(settings, recorded_embedder(settings, index, version)["name"]), index, table)


def index_versions_of(settings: Settings, index: str, embedder_name: str) -> list[int]:
    """Published versions of ``index`` whose vectors ``embedder_name`` made (oldest first)."""
    published = open_as_built(settings, index).published_versions()
    return [v for v in published if recorded_embedder(settings, index, v)["name"] == embedder_name]
