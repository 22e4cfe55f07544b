"""Log-draining pipeline: inference-log and feedback records from their Redis streams (and spool
files) into LanceDB.

Idempotent by primary key (``request_id`` for the inference log, ``feedback_id`` for feedback):
records already in the table are skipped, so a drain interrupted between writing and deleting its
stream entries, a record both spooled and replayed, a Redis that came back with entries already
drained, or two drains at once never store a record twice. One exception, by design: a streamed
request's *started* record (``error`` = ``incomplete``) is replaced by its final record whenever that
arrives, and never replaces one. Stream entries and spool files are deleted only after the LanceDB
commit of the batch holding them.

Unreadable entries (bad JSON, a torn spool line, a record of an unknown shape) are never dropped: each
goes to the dead-letter table (``logs.dead_letter_table``) with its raw bytes, where it came from
(stream or spool file, entry id or line), the reason and the time, before its entry is deleted.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from llmfti.config import Settings
from llmfti.errors import StoreUnavailableError
from llmfti.feedback import FEEDBACK_SCHEMA, FEEDBACK_SPOOL, FeedbackRecord, feedback_to_table
from llmfti.inference_log import (
    INCOMPLETE,
    SCHEMA,
    SPOOL_NAME,
    InferenceRecord,
    LogEntry,
    claim_spool,
    now_utc,
    read_spool,
    read_stream,
    records_to_table,
)
from llmfti.lance import connect, open_or_create_table
from llmfti.naming import check_name
from llmfti.tracing import annotate, traced


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
    incomplete: Callable[[Any], bool] | None = None
    """Records that a later record with the same key replaces (a stream's started record)."""


DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("dead_letter_id", pa.string(), nullable=False),
        pa.field("log_table", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("location", pa.string(), nullable=False),
        pa.field("entry_id", pa.string(), nullable=False),
        pa.field("raw", pa.binary(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("dead_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={b"llmfti.table": b"log_dead_letter", b"llmfti.primary_key": b"dead_letter_id"},
)
"""Unreadable log entries: ``source`` is stream or spool, ``location`` the stream name or spool file,
``entry_id`` the stream entry id or the line number, ``raw`` the bytes exactly as found."""


def inference_log_kind(settings: Settings) -> LogKind:
    agent = settings.agent
    return LogKind(agent.log_table, agent.log_stream, SPOOL_NAME, InferenceRecord, "request_id", SCHEMA,
                   records_to_table, incomplete=lambda r: r.error == INCOMPLETE)


def feedback_kind(settings: Settings) -> LogKind:
    agent = settings.agent
    return LogKind(agent.feedback_table, agent.feedback_stream, FEEDBACK_SPOOL, FeedbackRecord, "feedback_id",
                   FEEDBACK_SCHEMA, feedback_to_table)


def open_table(settings: Settings, kind: LogKind) -> Any:
    """The LanceDB table of ``kind`` (created with its schema if new)."""
    name = check_name(kind.table, what="log table name")
    return open_or_create_table(connect(settings), name, kind.schema)


def open_log_table(settings: Settings) -> Any:
    """The LanceDB inference-log table."""
    return open_table(settings, inference_log_kind(settings))


def open_feedback_table(settings: Settings) -> Any:
    """The LanceDB feedback table."""
    return open_table(settings, feedback_kind(settings))


def open_dead_letter_table(settings: Settings) -> Any:
    """The LanceDB dead-letter table of unreadable log entries (created if new)."""
    name = check_name(settings.logs.dead_letter_table, what="dead-letter table name")
    return open_or_create_table(connect(settings), name, DEAD_LETTER_SCHEMA)


def _dead_letter(settings: Settings, kind: LogKind, source: str, location: str, entries: list[LogEntry]) -> int:
    """Keep unreadable entries (idempotently: the same entry twice is one row); returns how many."""
    if not entries:
        return 0
    at = now_utc()
    rows = []
    for entry in entries:
        digest = hashlib.sha256(b"\0".join([kind.table.encode(), source.encode(), location.encode(),
                                             entry.entry_id.encode(), entry.raw])).hexdigest()[:32]
        rows.append({"dead_letter_id": digest, "log_table": kind.table, "source": source, "location": location,
                     "entry_id": entry.entry_id, "raw": entry.raw, "reason": entry.reason or "unreadable",
                     "dead_at": at})
    table = open_dead_letter_table(settings)
    data = pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA)
    table.merge_insert("dead_letter_id").when_not_matched_insert_all().execute(data)
    return len(rows)


def _check_fit(kind: LogKind, entries: list[LogEntry]) -> list[LogEntry]:
    """Mark parsed records that cannot become rows of the table (e.g. text where a number belongs) as
    unreadable, so one bad record goes to the dead-letter table instead of failing every drain."""
    parsed = [e for e in entries if e.record is not None]
    try:
        kind.to_table([e.record for e in parsed])
        return entries
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    for entry in parsed:
        try:
            kind.to_table([entry.record])
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            entry.record = None
            entry.reason = f"does not fit the {kind.table} table: {type(exc).__name__}: {exc}"
    return entries


def _store(table: Any, kind: LogKind, records: list[Any]) -> tuple[int, int]:
    """Insert records whose key is new, complete started ones; returns (inserted, completed)."""
    latest: dict[str, Any] = {}
    for record in records:  # per key, a final record wins over a started one
        key = getattr(record, kind.key)
        if key not in latest or kind.incomplete is None or not kind.incomplete(record):
            latest[key] = record
    if not latest:
        return 0, 0
    inserted = completed = 0
    final = [r for r in latest.values() if kind.incomplete is None or not kind.incomplete(r)]
    started = [r for r in latest.values() if kind.incomplete is not None and kind.incomplete(r)]
    if final:
        builder = table.merge_insert(kind.key)
        if kind.incomplete is not None:
            builder = builder.when_matched_update_all(where=f"target.error = '{INCOMPLETE}'")
        result = builder.when_not_matched_insert_all().execute(kind.to_table(final))
        inserted, completed = int(result.num_inserted_rows), int(result.num_updated_rows)
    if started:
        result = table.merge_insert(kind.key).when_not_matched_insert_all().execute(kind.to_table(started))
        inserted += int(result.num_inserted_rows)
    return inserted, completed


def _ensure_key_index(table: Any, key: str) -> None:
    """A BTree index on the key column; a drain that loses the race to create it (another drain of
    spooled records committed it first) accepts the winner's."""
    from lancedb.index import BTree

    def indexed() -> bool:
        return any(idx.columns == [key] for idx in table.list_indices())

    if indexed():
        return
    try:
        table.create_index(key, config=BTree())
    except Exception:
        table.checkout_latest()
        if not indexed():
            raise


DRAIN_LOCK_TTL_S = 120.0
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


@contextmanager
def _drain_lock(client: Any, stream: str, ttl_s: float = DRAIN_LOCK_TTL_S) -> Iterator[Callable[[], None]]:
    """One drainer of ``stream`` at a time (replicas, cron jobs and operators may start drains together).

    Two drains reading the same stream entries would both insert them: a LanceDB merge-insert does not
    conflict with a concurrent one that adds the same keys. The lock is a Redis key with a TTL, so a
    drain killed mid-way holds it ``ttl_s`` at most; a long drain extends it after every batch (``keep``).
    A second drain waits for the first, then finds the records stored and the entries gone.
    """
    import uuid

    key, token = f"{stream}:drain-lock", uuid.uuid4().hex
    deadline = time.monotonic() + ttl_s * 2
    while not client.set(key, token, nx=True, px=int(ttl_s * 1000)):
        if time.monotonic() > deadline:
            raise StoreUnavailableError(f"another drain of {stream} has held its lock for over {ttl_s * 2:.0f} s",
                                        fix=f"wait for it, or delete the Redis key {key} if that drain is dead")
        time.sleep(0.05)
    try:
        yield lambda: client.pexpire(key, int(ttl_s * 1000))
    finally:
        client.eval(_RELEASE, 1, key, token)


@traced("logs.drain_kind")
def drain_kind(settings: Settings, kind: LogKind, *, batch_size: int = 5000,
               include_stream: bool = True) -> dict[str, Any]:
    """Move every pending record of ``kind`` into its table; returns counts (read, inserted, ...)."""
    start = time.perf_counter()
    table = open_table(settings, kind)
    read = inserted = completed = unreadable = 0
    stream_error = None

    def store(records: list[Any]) -> None:
        nonlocal inserted, completed
        new, done = _store(table, kind, records)
        inserted, completed = inserted + new, completed + done

    for path in claim_spool(settings.data_dir / "spool", kind.spool_name):
        try:
            entries = _check_fit(kind, list(read_spool(path, kind.record_type)))
        except FileNotFoundError:  # another reader (a replaying writer, a second drain) took it first
            continue
        records = [e.record for e in entries if e.record is not None]
        unreadable += _dead_letter(settings, kind, "spool", path.name, [e for e in entries if e.record is None])
        read += len(records)
        for first in range(0, len(records), batch_size):
            store(records[first : first + batch_size])
        path.unlink(missing_ok=True)
    spooled = read

    if include_stream:
        from llmfti.features.embedded_redis import redis_client, unavailable

        try:
            client = redis_client(settings)
            with _drain_lock(client, kind.stream) as keep:
                while True:
                    entries = _check_fit(kind, read_stream(client, kind.stream, batch_size, kind.record_type))
                    if not entries:
                        break
                    records = [e.record for e in entries if e.record is not None]
                    unreadable += _dead_letter(settings, kind, "stream", kind.stream,
                                               [e for e in entries if e.record is None])
                    read += len(records)
                    store(records)
                    client.xdel(kind.stream, *[e.entry_id for e in entries])  # only after the commits
                    keep()
        except StoreUnavailableError as exc:
            stream_error = str(exc)
        except Exception as exc:
            from redis.exceptions import RedisError

            if not isinstance(exc, RedisError | OSError):
                raise
            stream_error = str(unavailable(settings, exc, f"draining the stream {kind.stream}"))

    if inserted:
        _ensure_key_index(table, kind.key)
    annotate(table=kind.table, read=read, inserted=inserted, unreadable=unreadable, stream_error=stream_error)
    return {
        "table": kind.table,
        "read": read,
        "from_spool": spooled,
        "from_stream": read - spooled,
        "inserted": inserted,
        "completed": completed,
        "duplicates_skipped": read - inserted - completed,
        "dead_lettered": unreadable,
        "table_rows": table.count_rows(),
        "table_version": int(table.version),
        "stream_error": stream_error,
        "seconds": round(time.perf_counter() - start, 3),
    }


@traced("logs.drain")
def drain_logs(settings: Settings, *, batch_size: int = 5000, include_stream: bool = True) -> dict[str, Any]:
    """Drain the inference log (counts at the top level) and the feedback log (under ``feedback``)."""
    result = drain_kind(settings, inference_log_kind(settings), batch_size=batch_size,
                        include_stream=include_stream)
    result["feedback"] = drain_kind(settings, feedback_kind(settings), batch_size=batch_size,
                                    include_stream=include_stream)
    return result
