"""The LanceDB connection under ``data_dir``: one place that decides where tables live."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import lancedb

    from llmfti.config import Settings


def connect(settings: Settings) -> lancedb.DBConnection:
    """The LanceDB database of these settings (a local folder, or an object-store URI)."""
    return _connect(settings.lancedb_uri)


@lru_cache(maxsize=8)
def _connect(uri: str) -> lancedb.DBConnection:
    from datetime import timedelta

    import lancedb

    # Long-running readers (the agent) see commits of other processes within a second.
    return lancedb.connect(uri, read_consistency_interval=timedelta(seconds=1))


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
