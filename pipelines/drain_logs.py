"""Log-draining pipeline: inference-log and feedback records from their Redis streams (and spool
files) into LanceDB.

Idempotent by primary key (``request_id`` for the inference log, ``feedback_id`` for feedback):
records already in the table are skipped, so a drain interrupted between writing and deleting its
stream entries, a record both spooled and replayed, or two drains at once never store a record
twice. Stream entries are deleted only after the batch holding them is committed to LanceDB.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from llmfti.config import Settings
from llmfti.errors import StoreUnavailableError
from llmfti.feedback import FEEDBACK_SCHEMA, FEEDBACK_SPOOL, FeedbackRecord, feedback_to_table
from llmfti.inference_log import (
    SCHEMA,
    SPOOL_NAME,
    InferenceRecord,
    claim_spool,
    read_spool,
    read_stream,
    records_to_table,
)
from llmfti.lance import connect, table_names
from llmfti.naming import check_name


@dataclass(frozen=True)
class LogKind:
    """One kind of logged record: where it is streamed, spooled and stored, and its key."""

    table: str
    stream: str
    spool_name: str
    record_type: type[Any]
    key: str
    schema: pa.Schema
    to_table: Callable[[list[Any]], pa.Table]


def inference_log_kind(settings: Settings) -> LogKind:
    agent = settings.agent
    return LogKind(agent.log_table, agent.log_stream, SPOOL_NAME, InferenceRecord, "request_id", SCHEMA,
                   records_to_table)


def feedback_kind(settings: Settings) -> LogKind:
    agent = settings.agent
    return LogKind(agent.feedback_table, agent.feedback_stream, FEEDBACK_SPOOL, FeedbackRecord, "feedback_id",
                   FEEDBACK_SCHEMA, feedback_to_table)


def open_table(settings: Settings, kind: LogKind) -> Any:
    """The LanceDB table of ``kind`` (created with its schema if new)."""
    name = check_name(kind.table, what="log table name")
    db = connect(settings)
    if name in table_names(db):
        return db.open_table(name)
    return db.create_table(name, schema=kind.schema, exist_ok=True)


def open_log_table(settings: Settings) -> Any:
    """The LanceDB inference-log table."""
    return open_table(settings, inference_log_kind(settings))


def open_feedback_table(settings: Settings) -> Any:
    """The LanceDB feedback table."""
    return open_table(settings, feedback_kind(settings))


def _store(table: Any, kind: LogKind, records: list[Any]) -> int:
    """Insert records whose key is new; returns how many were inserted."""
    unique = list({getattr(r, kind.key): r for r in records}.values())
    if not unique:
        return 0
    result = table.merge_insert(kind.key).when_not_matched_insert_all().execute(kind.to_table(unique))
    return int(result.num_inserted_rows)


def _ensure_key_index(table: Any, key: str) -> None:
    from lancedb.index import BTree

    if not any(idx.columns == [key] for idx in table.list_indices()):
        table.create_index(key, config=BTree())


def drain_kind(settings: Settings, kind: LogKind, *, batch_size: int = 5000,
               include_stream: bool = True) -> dict[str, Any]:
    """Move every pending record of ``kind`` into its table; returns counts (read, inserted, ...)."""
    start = time.perf_counter()
    table = open_table(settings, kind)
    read = inserted = unreadable = 0
    stream_error = None

    for path in claim_spool(settings.data_dir / "spool", kind.spool_name):
        records = list(read_spool(path, kind.record_type))
        read += len(records)
        for first in range(0, len(records), batch_size):
            inserted += _store(table, kind, records[first : first + batch_size])
        path.unlink()
    spooled = read

    if include_stream:
        from llmfti.features.embedded_redis import redis_client, unavailable

        try:
            client = redis_client(settings)
            while True:
                entries = read_stream(client, kind.stream, batch_size, kind.record_type)
                if not entries:
                    break
                records = [r for _, r in entries if r is not None]
                unreadable += len(entries) - len(records)
                read += len(records)
                inserted += _store(table, kind, records)
                client.xdel(kind.stream, *[entry_id for entry_id, _ in entries])
        except StoreUnavailableError as exc:
            stream_error = str(exc)
        except Exception as exc:
            from redis.exceptions import RedisError

            if not isinstance(exc, RedisError | OSError):
                raise
            stream_error = str(unavailable(settings, exc, f"draining the stream {kind.stream}"))

    if inserted:
        _ensure_key_index(table, kind.key)
    return {
        "table": kind.table,
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


def drain_logs(settings: Settings, *, batch_size: int = 5000, include_stream: bool = True) -> dict[str, Any]:
    """Drain the inference log (counts at the top level) and the feedback log (under ``feedback``)."""
    result = drain_kind(settings, inference_log_kind(settings), batch_size=batch_size,
                        include_stream=include_stream)
    result["feedback"] = drain_kind(settings, feedback_kind(settings), batch_size=batch_size,
                                    include_stream=include_stream)
    return result
