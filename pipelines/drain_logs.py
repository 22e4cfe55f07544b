"""Log-draining pipeline: inference-log records from the Redis stream (and spool files) into LanceDB.

Idempotent by ``request_id``: records already in the ``inference_log`` table are skipped, so a
drain interrupted between writing and deleting its stream entries, a record both spooled and
replayed, or two drains at once never store a request twice. Stream entries are deleted only
after the batch holding them is committed to LanceDB.
"""

from __future__ import annotations

import time
from typing import Any

from llmfti.config import Settings
from llmfti.errors import StoreUnavailableError
from llmfti.inference_log import SCHEMA, InferenceRecord, claim_spool, read_spool, read_stream, records_to_table
from llmfti.lance import connect, table_names
from llmfti.naming import check_name


def open_log_table(settings: Settings) -> Any:
    """The LanceDB inference-log table (created with :data:`SCHEMA` and a request_id index if new)."""
    name = check_name(settings.agent.log_table, what="log table name")
    db = connect(settings)
    if name in table_names(db):
        return db.open_table(name)
    return db.create_table(name, schema=SCHEMA, exist_ok=True)


def _store(table: Any, records: list[InferenceRecord]) -> int:
    """Insert records whose request_id is new; returns how many were inserted."""
    unique = list({r.request_id: r for r in records}.values())
    if not unique:
        return 0
    result = (
        table.merge_insert("request_id").when_not_matched_insert_all().execute(records_to_table(unique))
    )
    return int(result.num_inserted_rows)


def _ensure_key_index(table: Any) -> None:
    from lancedb.index import BTree

    if not any(idx.columns == ["request_id"] for idx in table.list_indices()):
        table.create_index("request_id", config=BTree())


def drain_logs(settings: Settings, *, batch_size: int = 5000, include_stream: bool = True) -> dict[str, Any]:
    """Move every pending record into the table; returns counts (read, inserted, duplicates, ...)."""
    start = time.perf_counter()
    table = open_log_table(settings)
    read = inserted = unreadable = 0
    stream_error = None

    for path in claim_spool(settings.data_dir / "spool"):
        records = list(read_spool(path))
        read += len(records)
        for first in range(0, len(records), batch_size):
            inserted += _store(table, records[first : first + batch_size])
        path.unlink()
    spooled = read

    if include_stream:
        from llmfti.features.embedded_redis import redis_client, unavailable

        stream = settings.agent.log_stream
        try:
            client = redis_client(settings)
            while True:
                entries = read_stream(client, stream, batch_size)
                if not entries:
                    break
                records = [r for _, r in entries if r is not None]
                unreadable += len(entries) - len(records)
                read += len(records)
                inserted += _store(table, records)
                client.xdel(stream, *[entry_id for entry_id, _ in entries])
        except StoreUnavailableError as exc:
            stream_error = str(exc)
        except Exception as exc:
            from redis.exceptions import RedisError

            if not isinstance(exc, RedisError | OSError):
                raise
            stream_error = str(unavailable(settings, exc, f"draining the stream {stream}"))

    if inserted:
        _ensure_key_index(table)
    return {
        "table": settings.agent.log_table,
        "read": read,
        "from_spool": spooled,
        "from_stream": read - spooled,
        "inserted": inserted,
        "duplicates_skipped": read - inserted,
        "unreadable_skipped": unreadable,
        "table_rows": table.count_rows(),
        "table_version": int(table.version),
        "stream_error": stream_error,
        "seconds": round(time.perf_counter() - start, 3),
    }
