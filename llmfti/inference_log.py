"""The inference log: one record per request, appended to a Redis stream on the hot path.

:class:`InferenceLogWriter` takes records from the request path without blocking it (a queue and
one writer thread that appends them in batches with ``XADD``). When Redis cannot be reached, the
batch is **spooled** as JSON lines to ``<data_dir>/spool/inference_log.jsonl`` and replayed into the
stream once Redis is back. ``pipelines/drain_logs.py`` moves records from the stream (and any spool
file) into the LanceDB table :data:`SCHEMA`, idempotently by ``request_id``; nothing is lost and
nothing is stored twice.

Spool files are shared safely between processes: appends hold an exclusive ``flock`` and check the
file was not renamed under them; a reader *claims* the file by renaming it, then takes the lock once
so any append already in flight finishes first.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

log = logging.getLogger(__name__)

SPOOL_NAME = "inference_log.jsonl"
STREAM_FIELD = b"r"


class JsonLineRecord:
    """A dataclass record that travels as one JSON line (Redis stream entry, spool file line).

    ``created_at`` is an ISO timestamp on the wire; unknown keys from newer writers are ignored.
    """

    created_at: datetime

    def to_json(self) -> str:
        data = asdict(self)  # type: ignore[call-overload]
        data["created_at"] = self.created_at.isoformat()
        return json.dumps(data, separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, text: str | bytes) -> Any:
        data = json.loads(text)
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class InferenceRecord(JsonLineRecord):
    """Everything about one request, with the features exactly as they were looked up."""

    request_id: str
    created_at: datetime
    endpoint: str
    model_id: str
    model_version: str
    prompt_id: str
    api_key_name: str | None = None
    tenant: str | None = None
    user_id: str | None = None
    index_name: str | None = None
    index_version: int | None = None
    user_features: dict[str, Any] | None = None
    user_features_missing: bool = False
    on_demand_features: dict[str, Any] = field(default_factory=dict)
    query: str = ""
    request_messages: list[dict[str, str]] = field(default_factory=list)
    retrieved_chunk_ids: list[str] = field(default_factory=list)
    retrieved_scores: list[float] = field(default_factory=list)
    prompt: str = ""
    answer: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float = 0.0
    streamed: bool = False
    fallback: bool = False
    fallback_reason: str | None = None
    degraded: list[str] = field(default_factory=list)
    error: str | None = None
    status: int = 200

    def to_row(self) -> dict[str, Any]:
        """The record as a row of :data:`SCHEMA` (dicts as JSON text, lists as lists)."""
        row = asdict(self)
        for name in ("user_features", "on_demand_features", "request_messages", "timings_ms"):
            row[name] = None if row[name] is None else json.dumps(row[name], default=str, sort_keys=True)
        return row


SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("endpoint", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("prompt_id", pa.string()),
        pa.field("api_key_name", pa.string()),
        pa.field("tenant", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("index_name", pa.string()),
        pa.field("index_version", pa.int64()),
        pa.field("user_features", pa.string()),
        pa.field("user_features_missing", pa.bool_()),
        pa.field("on_demand_features", pa.string()),
        pa.field("query", pa.string()),
        pa.field("request_messages", pa.string()),
        pa.field("retrieved_chunk_ids", pa.list_(pa.string())),
        pa.field("retrieved_scores", pa.list_(pa.float32())),
        pa.field("prompt", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("timings_ms", pa.string()),
        pa.field("total_ms", pa.float64()),
        pa.field("streamed", pa.bool_()),
        pa.field("fallback", pa.bool_()),
        pa.field("fallback_reason", pa.string()),
        pa.field("degraded", pa.list_(pa.string())),
        pa.field("error", pa.string()),
        pa.field("status", pa.int64()),
    ],
    metadata={b"llmfti.table": b"inference_log", b"llmfti.primary_key": b"request_id"},
)
"""Schema of the LanceDB ``inference_log`` table; dict-valued fields are JSON text."""


def records_to_table(records: Iterable[InferenceRecord]) -> pa.Table:
    return pa.Table.from_pylist([r.to_row() for r in records], schema=SCHEMA)


def now_utc() -> datetime:
    return datetime.now(UTC)


# -- spool files -------------------------------------------------------------------------------------


def spool_append(spool_dir: Path, lines: Iterable[str], name: str = SPOOL_NAME) -> None:
    """Append JSON lines to the spool file ``name`` under an exclusive lock, fsync'd."""
    data = "".join(line + "\n" for line in lines).encode()
    if not data:
        return
    spool_dir.mkdir(parents=True, exist_ok=True)
    path = spool_dir / name
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # a reader claimed (renamed) the file between our open and lock: reopen
                continue
            os.write(fd, data)
            os.fsync(fd)
            return
        finally:
            os.close(fd)


def claim_spool(spool_dir: Path, name: str = SPOOL_NAME) -> list[Path]:
    """Take the current spool file ``name`` (and any left by an interrupted reader) for reading."""
    if not spool_dir.is_dir():
        return []
    path = spool_dir / name
    stem = name.removesuffix(".jsonl")
    if path.exists():
        claimed = spool_dir / f"{stem}.{uuid.uuid4().hex}.claimed.jsonl"
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            pass
    files = sorted(spool_dir.glob(f"{stem}.*.claimed.jsonl"))
    for file in files:  # wait for appends that opened the file before the rename
        with open(file, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
    return files


def read_spool(path: Path, record_type: type[Any] = InferenceRecord) -> Iterator[Any]:
    """Records (of ``record_type``) of a claimed spool file; a torn last line (crash mid-write) is
    skipped with a warning."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield record_type.from_json(line)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("skipping unreadable line %d of %s: %s", number, path, exc)


def spool_size(spool_dir: Path, name: str = SPOOL_NAME) -> int:
    """Bytes waiting in the spool files of ``name``."""
    if not spool_dir.is_dir():
        return 0
    stem = name.removesuffix(".jsonl")
    return sum(p.stat().st_size for p in spool_dir.glob(f"{stem}*.jsonl") if p.is_file())


# -- the hot-path writer ------------------------------------------------------------------------------


class InferenceLogWriter:
    """Queues records and appends them to a Redis stream from one background thread.

    ``redis_client`` is a zero-argument callable returning a ``redis.Redis`` (or raising when no
    server can be reached). Failures spool to ``spool_dir / spool_name``; the spool is replayed into
    the stream every ``replay_every_s`` once Redis answers again. Any record type with ``to_json()``
    and a ``from_json()`` class method works (the feedback log uses the same writer).
    """

    def __init__(
        self,
        redis_client: Callable[[], Any],
        stream: str,
        spool_dir: Path,
        *,
        batch_size: int = 256,
        replay_every_s: float = 5.0,
        spool_name: str = SPOOL_NAME,
        record_type: type[Any] = InferenceRecord,
    ):
        self._redis_client = redis_client
        self.stream = stream
        self.spool_dir = spool_dir
        self.spool_name = spool_name
        self.record_type = record_type
        self.batch_size = batch_size
        self.replay_every_s = replay_every_s
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._last_replay = 0.0
        self.appended = 0
        self.spooled = 0
        self.replayed = 0
        self.lost = 0

    def start(self) -> None:
        if self._thread is None:
            name = f"llmfti-{self.spool_name.removesuffix('.jsonl')}"
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def submit(self, record: Any) -> None:
        """Hand a record to the writer; never blocks, never raises on Redis trouble."""
        self._queue.put(record)

    def flush(self) -> None:
        """Block until every submitted record is in the stream or the spool."""
        self._queue.join()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        else:  # never started: write what was queued synchronously
            self._drain_queue_now()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _drain_queue_now(self) -> None:
        batch = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                batch.append(item)
            self._queue.task_done()
        if batch:
            self._write(batch)

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=self.replay_every_s)
            except queue.Empty:
                self._maybe_replay()
                continue
            batch: list[Any] = []
            taken = 1
            if first is None:
                stop = True
            else:
                batch.append(first)
            while len(batch) < self.batch_size and not stop:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                taken += 1
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            try:
                if batch:
                    self._write(batch)
                self._maybe_replay()
            except Exception:  # noqa: BLE001 - e.g. the spool disk is full: report, keep the writer alive
                log.exception("%s: %d records could be neither appended nor spooled", self.stream, len(batch))
                self.lost += len(batch)
            finally:
                for _ in range(taken):
                    self._queue.task_done()

    def _write(self, batch: list[Any]) -> None:
        lines = [r.to_json() for r in batch]
        try:
            self._xadd(lines)
            self.appended += len(lines)
        except Exception as exc:  # noqa: BLE001 - any Redis failure means: spool, never lose
            log.warning("%s: Redis unavailable (%s); spooling %d records", self.stream, exc, len(lines))
            spool_append(self.spool_dir, lines, self.spool_name)
            self.spooled += len(lines)

    def _xadd(self, lines: list[str]) -> None:
        client = self._redis_client()
        pipe = client.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(self.stream, {STREAM_FIELD: line.encode()})
        pipe.execute()

    def _maybe_replay(self) -> None:
        now = time.monotonic()
        if now - self._last_replay < self.replay_every_s or not (self.spool_dir / self.spool_name).exists():
            return
        self._last_replay = now
        self.replay_spool()

    def replay_spool(self) -> int:
        """Move spooled records into the stream; returns how many. Safe to call from any process."""
        moved = 0
        for path in claim_spool(self.spool_dir, self.spool_name):
            lines = [r.to_json() for r in read_spool(path, self.record_type)]
            try:
                for start in range(0, len(lines), self.batch_size):
                    self._xadd(lines[start : start + self.batch_size])
                    moved += len(lines[start : start + self.batch_size])
            except Exception as exc:  # noqa: BLE001 - still down: put the rest back
                log.warning("%s: replay failed (%s); keeping %d records spooled", self.stream, exc,
                            len(lines) - moved)
                spool_append(self.spool_dir, lines[moved:], self.spool_name)
                path.unlink()
                break
            path.unlink()
        self.replayed += moved
        return moved


# -- reading the stream (used by the drain pipeline) -------------------------------------------------


def read_stream(client: Any, stream: str, count: int,
                record_type: type[Any] = InferenceRecord) -> list[tuple[bytes, Any]]:
    """Up to ``count`` oldest entries as (entry id, record or None when unreadable)."""
    out: list[tuple[bytes, Any]] = []
    for entry_id, values in client.xrange(stream, min="-", max="+", count=count):
        raw = values.get(STREAM_FIELD) or values.get(STREAM_FIELD.decode())
        try:
            out.append((entry_id, record_type.from_json(raw)))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("unreadable entry %r of %s: %s", entry_id, stream, exc)
            out.append((entry_id, None))
    return out


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"
