"""The erasure audit table: one row per ``llmfti users forget``, never the erased values.

Each row says who asked, when, which tables lost how many rows and versions, which tags were
removed, and which frozen training datasets can no longer be recreated (because rows they were
built from, or their spine rows, were erased). The subject is recorded only as a SHA-256 of
(tenant, user id), so an auditor can check whether a given user was erased without the table
naming anyone. :func:`unrecreatable_reason` is what ``TrainingDataset.read`` consults.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llmfti.lance import connect, open_or_create_table, table_names

if TYPE_CHECKING:
    from llmfti.config import Settings

AUDIT_TABLE = "erasures"


def subject_digest(user_id: str, tenant: str | None) -> str:
    """SHA-256 hex of ``tenant`` + NUL + ``user_id`` (tenant '*' when every tenant was erased)."""
    return hashlib.sha256(f"{tenant or '*'}\0{user_id}".encode()).hexdigest()


@dataclass
class ErasureRecord:
    erasure_id: str
    subject_sha256: str
    tenant: str | None
    requested_by: str
    at: datetime
    tables: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> {rows_deleted, versions_removed}
    online_keys_deleted: int = 0
    tags_removed: list[str] = field(default_factory=list)  # "table:tag"
    datasets_unrecreatable: list[str] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        pa.field("erasure_id", pa.string(), nullable=False),
        pa.field("subject_sha256", pa.string(), nullable=False),
        pa.field("tenant", pa.string()),
        pa.field("requested_by", pa.string(), nullable=False),
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("tables", pa.string()),
        pa.field("online_keys_deleted", pa.int64()),
        pa.field("tags_removed", pa.list_(pa.string())),
        pa.field("datasets_unrecreatable", pa.list_(pa.string())),
        pa.field("reason", pa.string()),
    ])


def record_erasure(settings: Settings, record: ErasureRecord) -> None:
    row = {**record.to_dict(), "tables": json.dumps(record.tables, sort_keys=True)}
    db = connect(settings)
    table = open_or_create_table(db, AUDIT_TABLE, _schema())
    table.add([row])


def erasures(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded erasure, oldest first (``tables`` decoded)."""
    db = connect(settings)
    if AUDIT_TABLE not in table_names(db):
        return []
    rows = db.open_table(AUDIT_TABLE).to_arrow().to_pylist()
    for row in rows:
        row["tables"] = json.loads(row["tables"] or "{}")
    return sorted(rows, key=lambda r: r["at"])


def unrecreatable_reason(settings: Settings, dataset: str) -> str | None:
    """Why training dataset ``dataset`` can no longer be recreated, or None."""
    for row in erasures(settings):
        if dataset in (row["datasets_unrecreatable"] or []):
            return (f"erasure {row['erasure_id']} at {row['at'].isoformat()} removed rows it was built from "
                    f"(requested by {row['requested_by']}: {row['reason'] or 'user erasure'})")
    return None
