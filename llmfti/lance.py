"""The LanceDB connection of a settings object: the one place that decides where tables live.

Every table (chunks, feature groups, registry, inference log, feedback, eval runs, quarantine) is opened
through :func:`connect`, which honours ``storage.uri`` (a local folder or ``s3://``/``gs://``/``az://``, see
llmfti.storage) and ``storage.options``.

Several writers: every Lance write is an atomic commit of a new table version; concurrent commits are
checked against each other and the losing one is retried or fails with a commit conflict (on S3 Lance
commits with conditional PUTs, so no external lock is needed). Appends from many processes are safe.
A "claim" that must not be taken twice (a registry version number, an alias move) is a
``merge_insert`` on a table whose key columns carry ``lance-schema:unenforced-primary-key`` metadata:
of two writers inserting the same key, exactly one row lands (:func:`insert_if_absent`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lancedb

    from llmfti.config import Settings

PRIMARY_KEY_METADATA = {"lance-schema:unenforced-primary-key": "true"}


def connect(settings: Settings) -> lancedb.DBConnection:
    """The LanceDB database of these settings (a local folder, or an object-store URI)."""
    from llmfti.storage import lance_storage_options

    options = lance_storage_options(settings)
    return _connect(settings.lancedb_uri, tuple(sorted(options.items())) if options is not None else None)


@lru_cache(maxsize=8)
def _connect(uri: str, options: tuple[tuple[str, str], ...] | None) -> lancedb.DBConnection:
    from datetime import timedelta

    import lancedb

    # Long-running readers (the agent) see commits of other processes within a second.
    return lancedb.connect(uri, read_consistency_interval=timedelta(seconds=1),
                           storage_options=dict(options) if options is not None else None)


def open_dataset(settings: Settings, name: str) -> Any:
    """The table ``name`` as a pylance dataset at its newest commit, opened without lancedb: for short-lived
    readers (``llmfti search``), since ``import lance`` costs about a third of ``import lancedb``. Same
    location and storage options as :func:`connect`; raises ValueError if the table does not exist."""
    import lance

    from llmfti.storage import join_location, lance_storage_options

    return lance.dataset(join_location(settings.lancedb_uri, f"{name}.lance"),
                         storage_options=lance_storage_options(settings))


def insert_if_absent(table: Any, keys: list[str], row: dict[str, Any], schema: Any) -> bool:
    """Insert ``row`` unless a row with the same ``keys`` exists; True if this call inserted it.

    Safe with several writers on a table whose ``keys`` carry :data:`PRIMARY_KEY_METADATA` (Lance detects
    the conflicting insert at commit and re-runs the merge, which then finds the other writer's row).
    """
    import pyarrow as pa

    result = (table.merge_insert(keys if len(keys) > 1 else keys[0]).when_not_matched_insert_all()
              .execute(pa.Table.from_pylist([row], schema=schema)))
    return int(result.num_inserted_rows) == 1


def table_names(db: lancedb.DBConnection) -> list[str]:
    """Names of all tables (handles the paginated listing of newer LanceDB releases)."""
    names: list[str] = []
    token = None
    while True:
        page = db.list_tables(page_token=token)
        names.extend(page.tables)
        token = page.page_token
        if not token:
            return names


def escape_literal(value: str) -> str:
    """A SQL string literal for ``value`` (single quotes doubled). Use only via llmfti.filters."""
    return "'" + str(value).replace("'", "''") + "'"
