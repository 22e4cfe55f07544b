"""Two small LanceDB tables beside every index: its build log and its quarantine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmfti.lance import escape_literal, open_or_create_table

if TYPE_CHECKING:
    import lancedb

    from llmfti.text.document import Quarantined

BUILDS_TABLE = "index_builds"
QUARANTINE_TABLE = "quarantine"


def _schemas() -> dict[str, Any]:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return {
        BUILDS_TABLE: pa.schema(
            [("index_name", pa.string()), ("version", pa.int64()), ("kind", pa.string()),
             ("summary", pa.string()), ("at", ts)]
        ),
        QUARANTINE_TABLE: pa.schema(
            [("index_name", pa.string()), ("path", pa.string()), ("doc_id", pa.string()), ("reason", pa.string()),
             ("size_bytes", pa.int64()), ("at", ts)]
        ),
    }


def _table(db: lancedb.DBConnection, name: str) -> Any:
    return open_or_create_table(db, name, _schemas()[name])


def _whoami() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def record_build(db: lancedb.DBConnection, index: str, version: int, kind: str, summary: dict[str, Any]) -> None:
    """Append one entry (``kind`` is 'build' or 'rollback') to the index's build log; the summary records
    who made it (``by``: the caller's, else the OS user) for the operator's timeline."""
    summary = {**summary, "by": summary.get("by") or _whoami()}
    row = {"index_name": index, "version": version, "kind": kind, "summary": json.dumps(summary),
           "at": datetime.now(UTC)}
    _table(db, BUILDS_TABLE).add([row])


def builds(db: lancedb.DBConnection, index: str) -> list[dict[str, Any]]:
    rows = _table(db, BUILDS_TABLE).search().where(f"index_name = {escape_literal(index)}").limit(None).to_list()
    for row in rows:
        row["summary"] = json.loads(row["summary"])
    return sorted(rows, key=lambda r: (r["at"], r["version"]))


def published_versions(db: lancedb.DBConnection, index: str) -> list[int]:
    """The versions builds and rollbacks of ``index`` published, oldest first."""
    return sorted({int(e["version"]) for e in builds(db, index)})


def quarantine(db: lancedb.DBConnection, index: str, items: list[Quarantined]) -> None:
    """Keep every rejected input with its reason and time."""
    if not items:
        return
    now = datetime.now(UTC)
    rows = [{"index_name": index, "path": q.path, "doc_id": q.doc_id, "reason": q.reason,
             "size_bytes": q.size_bytes, "at": now} for q in items]
    _table(db, QUARANTINE_TABLE).add(rows)


def quarantined(db: lancedb.DBConnection, index: str) -> list[dict[str, Any]]:
    table = _table(db, QUARANTINE_TABLE)
    return table.search().where(f"index_name = {escape_literal(index)}").limit(None).to_list()
