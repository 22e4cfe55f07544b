"""The inference log: one record per request, durable before the response is sent.

**The guarantee.** Once a response (or the first byte of a streamed one) has been sent, its record
survives ``kill -9`` of redis-server and of the API process. The request path hands its record to
:class:`InferenceLogWriter` and awaits the returned future before answering; the future resolves
only when the record is durable:

* appended to the Redis stream with ``XADD``; the embedded redis-server runs ``appendonly yes`` with
  ``appendfsync always`` (setting ``redis.appendfsync``), so Redis writes *and fsyncs* its AOF before
  it replies. An external server (``redis.url``) is checked at start-up (``CONFIG GET appendonly
  appendfsync``) and a warning says what to set when it is not durable; or
* when Redis fails, appended to the spool file ``<data_dir>/spool/inference_log.jsonl`` and
  ``fsync``'d (:mod:`llmfti.log_spool`); the writer replays it into the stream once Redis is back.

Group commit: one writer thread takes every queued record (up to ``logs.batch_size``) and appends
them in one pipelined round trip, so concurrent requests share one fsync. With ``appendfsync
always`` no window remains for process kills or power loss (given a disk that honours fsync);
with ``everysec`` a crash may cost the last ~1 s. Setting ``logs.durable_ack: false`` answers
without waiting (a kill -9 then loses what is still queued).

Cost (``python -m benchmarks.log_durability``, shared 2-core machine at load ~11): XADD + AOF fsync
p50 2.8 ms for one writer (8 concurrent writers: ~4 records per commit, p50 20 ms, ~390 records/s);
fsync'd spool append p50 0.4 ms; an agent chat request p50 +3.9 ms (60.2 vs 56.1 ms).

A streamed request writes two records with the same ``request_id``: a *started* one (request,
prompt, retrieval; ``error`` = :data:`INCOMPLETE`) before its first byte, and the final one at the
end. ``pipelines/drain_logs.py`` moves records from the stream and spool files into the LanceDB table
:data:`SCHEMA` idempotently by ``request_id``: a final record replaces a started one, never the other
way round, so a stream cut by a crash still leaves its (incomplete) record. Unreadable entries go to a
dead-letter table, never away.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from llmfti import log_spool
from llmfti.errors import StoreUnavailableError

log = logging.getLogger(__name__)

SPOOL_NAME = "inference_log.jsonl"
STREAM_FIELD = b"r"
INCOMPLETE = "incomplete"
"""``error`` of a streamed request's *started* record; the final record replaces it."""


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


# -- spool files (re-exported with the inference log's default name) -----------------------------------


def spool_append(spool_dir: Path, lines: Iterable[str | bytes], name: str = SPOOL_NAME) -> None:
    """Append lines to a spool file, fsync'd (see :mod:`llmfti.log_spool`)."""
    log_spool.spool_append(spool_dir, lines, name)


def claim_spool(spool_dir: Path, name: str = SPOOL_NAME) -> list[Path]:
    """Take the spool file ``name`` (and any left by an interrupted reader) for reading."""
    return log_spool.claim_spool(spool_dir, name)


def spool_size(spool_dir: Path, name: str = SPOOL_NAME) -> int:
    return log_spool.spool_size(spool_dir, name)


@dataclass
class LogEntry:
    """One raw entry of a stream or spool file, parsed when readable (``reason`` says why not)."""

    entry_id: str
    raw: bytes
    record: Any = None
    reason: str | None = None


def parse_entry(entry_id: str, raw: bytes | None, record_type: type[Any]) -> LogEntry:
    if raw is None:
        return LogEntry(entry_id, b"", None, f"no {STREAM_FIELD.decode()!r} field in the entry")
    try:
        return LogEntry(entry_id, raw, record_type.from_json(raw))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return LogEntry(entry_id, raw, None, f"unreadable as {record_type.__name__}: {type(exc).__name__}: {exc}")


def read_spool(path: Path, record_type: type[Any] = InferenceRecord) -> Iterator[LogEntry]:
    """Entries of a claimed spool file (``entry_id`` is ``<file name>:<line number>``); unreadable
    lines (e.g. a torn write) come back with their ``reason``, for the dead-letter table."""
    for number, raw in log_spool.spool_lines(path):
        yield parse_entry(f"{path.name}:{number}", raw, record_type)


# -- the hot-path writer ------------------------------------------------------------------------------

_STOP = object()
_REPLAY = object()


class InferenceLogWriter:
    """Group-commit writer: appends records to a Redis stream (``XADD``) or, when that fails, to an
    fsync'd spool file, and resolves each record's future only then.

    ``redis_client`` is a zero-argument callable returning a ``redis.Redis`` (or raising when Redis is
    down); ``on_redis_error(exc)`` is told of every Redis failure (the agent opens its breaker).
    :meth:`submit` returns a :class:`concurrent.futures.Future` that resolves to ``"stream"`` or
    ``"spool"`` once the record is durable, or fails when it could be neither appended nor spooled.
    One thread takes *everything* queued (up to ``batch_size``) per round trip, so concurrent
    requests share one XADD pipeline (and one AOF fsync in Redis) instead of queueing behind
    each other. The spool is replayed into the stream every ``replay_every_s`` and on
    :meth:`replay_soon`. Any record type with ``to_json()`` and ``from_json()`` works (the
    feedback log uses the same writer).
    """

    def __init__(
        self,
        redis_client: Callable[[], Any],
        stream: str,
        spool_dir: Path,
        *,
        batch_size: int = 512,
        replay_every_s: float = 1.0,
        spool_name: str = SPOOL_NAME,
        record_type: type[Any] = InferenceRecord,
        on_redis_error: Callable[[BaseException], None] | None = None,
    ):
        self._redis_client = redis_client
        self.stream = stream
        self.spool_dir = spool_dir
        self.spool_name = spool_name
        self.record_type = record_type
        self.batch_size = batch_size
        self.replay_every_s = replay_every_s
        self.on_redis_error = on_redis_error
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # the first timed replay is replay_every_s after construction (0.0 would replay at once whenever the
        # machine has been up longer than replay_every_s: time.monotonic() counts from boot)
        self._last_replay = time.monotonic()
        self.appended = 0
        self.spooled = 0
        self.replayed = 0
        self.lost = 0
        self.commits = 0
        self._down = False

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                name = f"llmfti-{self.spool_name.removesuffix('.jsonl')}"
                self._thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._thread.start()

    def submit(self, record: Any) -> Future[str]:
        """Queue a record; the future resolves once it is durable. Never blocks."""
        future: Future[str] = Future()
        self._queue.put((record, future))
        if self._thread is None:
            self.start()
        return future

    def write(self, record: Any, timeout_s: float | None = None) -> str:
        """Submit and wait until the record is durable; returns where it went (stream or spool)."""
        return self.submit(record).result(timeout_s)

    def replay_soon(self) -> None:
        """Ask the writer thread to replay the spool now (e.g. Redis just came back)."""
        self._queue.put(_REPLAY)

    def flush(self) -> None:
        """Block until every submitted record is in the stream or the spool."""
        self._queue.join()

    def close(self) -> None:
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=self.replay_every_s)
            except queue.Empty:
                self._maybe_replay(force=False)
                continue
            items = [first]
            batch: list[tuple[Any, Future[str]]] = []
            while True:
                item = items[-1]
                if item is _STOP:
                    stop = True
                elif item is not _REPLAY:
                    batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                if batch:
                    self._commit(batch)
                self._maybe_replay(force=any(i is _REPLAY for i in items))
            except Exception:  # noqa: BLE001 - keep the writer alive whatever happens
                log.exception("%s: the log writer failed", self.stream)
            finally:
                for _ in items:
                    self._queue.task_done()

    def _commit(self, batch: list[tuple[Any, Future[str]]]) -> None:
        lines: list[str] = []
        futures: list[Future[str]] = []
        for record, future in batch:
            try:
                lines.append(record.to_json())
                futures.append(future)
            except Exception as exc:  # noqa: BLE001 - one bad record fails only its own request
                future.set_exception(exc)
        where = "stream"
        try:
            self._xadd(lines)
            self.appended += len(lines)
        except Exception as exc:  # noqa: BLE001 - any Redis failure means: spool, never lose
            if self.on_redis_error is not None:
                self.on_redis_error(exc)
            self._report_down(exc)
            try:
                log_spool.spool_append(self.spool_dir, lines, self.spool_name)
            except Exception as spool_exc:  # noqa: BLE001 - e.g. the disk is full: fail these requests
                self.lost += len(lines)
                log.exception("%s: %d records could be neither appended nor spooled", self.stream, len(lines))
                error = StoreUnavailableError(
                    f"the log record could be neither appended to {self.stream} ({exc}) nor spooled to "
                    f"{self.spool_dir / self.spool_name} ({spool_exc})",
                    fix="bring Redis back or free disk space under data_dir/spool",
                )
                for future in futures:
                    if not future.done():  # a cancelled future (caller gave up) takes no result
                        future.set_exception(error)
                return
            self.spooled += len(lines)
            where = "spool"
        else:
            self._down = False
        self.commits += 1
        for future in futures:
            if not future.done():
                future.set_result(where)

    def _report_down(self, exc: BaseException) -> None:
        """Warn once per outage (not per batch) that records go to the spool."""
        if not self._down:
            log.warning("%s: Redis unavailable (%s); spooling records to %s until it is back", self.stream, exc,
                        self.spool_dir / self.spool_name)
        self._down = True

    def _xadd(self, lines: list[str] | list[bytes]) -> None:
        if not lines:
            return
        client = self._redis_client()
        pipe = client.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(self.stream, {STREAM_FIELD: line if isinstance(line, bytes) else line.encode()})
        pipe.execute()

    def _maybe_replay(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_replay < self.replay_every_s:
            return
        self._last_replay = now
        if log_spool.spool_pending(self.spool_dir, self.spool_name):
            try:
                self.replay_spool()
            except Exception as exc:  # noqa: BLE001 - still down: the records stay spooled
                log.debug("%s: replay failed: %s", self.stream, exc)

    def replay_spool(self) -> int:
        """Move spooled lines (raw, readable or not) into the stream; returns how many.

        A claimed file is deleted only after all its lines were appended; on failure the rest is
        spooled again first. Safe to call from any process (a drain may read the spool meanwhile).
        """
        moved = 0
        for path in log_spool.claim_spool(self.spool_dir, self.spool_name):
            try:
                lines = [raw for _, raw in log_spool.spool_lines(path)]
            except FileNotFoundError:  # a drain (or another process) took this file first
                continue
            done = 0
            try:
                for start in range(0, len(lines), self.batch_size):
                    self._xadd(lines[start : start + self.batch_size])
                    done = min(start + self.batch_size, len(lines))
            except Exception as exc:  # noqa: BLE001 - still down: put the rest back
                if self.on_redis_error is not None:
                    self.on_redis_error(exc)
                self._report_down(exc)
                log_spool.spool_append(self.spool_dir, lines[done:], self.spool_name)
                path.unlink(missing_ok=True)
                moved += done
                break
            path.unlink(missing_ok=True)
            moved += done
        self.replayed += moved
        return moved

# -- reading the stream (used by the drain pipeline) -------------------------------------------------


def read_stream(client: Any, stream: str, count: int, record_type: type[Any] = InferenceRecord) -> list[LogEntry]:
    """Up to ``count`` oldest entries; unreadable ones carry their raw bytes and the reason."""
    out: list[LogEntry] = []
    for entry_id, values in client.xrange(stream, min="-", max="+", count=count):
        raw = values.get(STREAM_FIELD, values.get(STREAM_FIELD.decode()))
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        entry = parse_entry(entry_id, raw.encode() if isinstance(raw, str) else raw, record_type)
        if entry.record is None:
            entry.raw = entry.raw or json.dumps({_text(k): _text(v) for k, v in values.items()}).encode()
            log.warning("unreadable entry %s of %s: %s", entry_id, stream, entry.reason)
        out.append(entry)
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"
