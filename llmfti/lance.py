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

Creating a table: LanceDB's ``create_table`` (with or without ``exist_ok``) is not safe against a
concurrent create of the same name: the losing create is retried as an *Overwrite* at the next version,
which wipes rows another writer had added and fails that writer's concurrent update ("Incompatible
transaction ... concurrent transaction Overwrite"); pylance's ``mode="create"`` has the same race
(measured: 2 of 40 three-thread races on lance 13). Every table is therefore created empty through
:func:`open_or_create_table`, which serialises creates within a process and, when a create from another
process still lands as an overwrite, puts the replaced rows back; tables are filled with
``add``/``merge_insert`` afterwards. :func:`insert_if_absent` re-runs a merge that such an overwrite
made fail.
"""

from __future__ import annotations

import threading
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


def open_or_create_table(db: lancedb.DBConnection, name: str, schema: Any) -> Any:
    """The table ``name`` of ``db`` (from :func:`connect`), created empty with ``schema`` if it does not exist.

    Safe when several threads or processes create the same table at once: threads of one process take
    turns; of two processes, Lance may retry the losing create as an overwrite of the winner's table
    (see the module docstring), so a create that committed above version 1 puts back the rows it replaced.
    """
    try:
        return db.open_table(name)
    except ValueError:  # "Table 'x' was not found"
        pass
    import lance
    import pyarrow as pa

    uri = f"{str(db.uri).rstrip('/')}/{name}.lance"
    with _creating(uri):
        try:
            return db.open_table(name)
        except ValueError:
            pass
        try:
            created = lance.write_dataset(pa.Table.from_pylist([], schema=schema), uri, mode="create",
                                          storage_options=db.storage_options or None)
        except OSError as exc:  # another process created it first
            if "already exists" not in str(exc):
                raise
            return db.open_table(name)
        table = db.open_table(name)
        if created.version > 1:  # our create was retried as an overwrite: restore what it replaced
            replaced = created.checkout_version(created.version - 1).to_table()
            if replaced.num_rows:
                table.add(replaced)
        return table


_creating_locks: dict[str, threading.Lock] = {}
_creating_guard = threading.Lock()


def _creating(uri: str) -> threading.Lock:
    with _creating_guard:
        return _creating_locks.setdefault(uri, threading.Lock())


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

    data = pa.Table.from_pylist([row], schema=schema)
    for attempt in range(OVERWRITE_RETRIES + 1):
        try:
            result = (table.merge_insert(keys if len(keys) > 1 else keys[0]).when_not_matched_insert_all()
                      .execute(data))
            return int(result.num_inserted_rows) == 1
        except RuntimeError as exc:  # a racing create's overwrite landed under this merge: run it again
            if "concurrent transaction Overwrite" not in str(exc) or attempt == OVERWRITE_RETRIES:
                raise
            table.checkout_latest()
    raise AssertionError("unreachable")


OVERWRITE_RETRIES = 3


def newest_row(settings: Settings, name: str, **equal: str) -> dict[str, Any] | None:
    """The most recent row (by ``created_at``) of table ``name`` whose columns equal ``equal``; None when there
    is none or no such table (per-index models: abstention, sentence ranking)."""
    db = connect(settings)
    if name not in table_names(db):
        return None
    where = " AND ".join(f"{column} = {escape_literal(value)}" for column, value in equal.items())
    rows = db.open_table(name).search().where(where).limit(None).to_list()
    return max(rows, key=lambda r: r["created_at"]) if rows else None


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
