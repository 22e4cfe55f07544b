"""Instruction examples from served requests that users rated good (``POST /v1/feedback``).

For each request, only its **latest** feedback counts, and only a rating of ``1`` makes an example
(``-1``/``0`` never train, even with a correction: they stay in the ``feedback`` table for review).
The example is the request as logged in ``inference_log``:

- question: the last user message of the logged request;
- passages: the chunks the request retrieved (ids and scores as logged), read back from the index
  **at the logged index version**, so the model trains on exactly the passages it was shown;
- answer: the correction when one was given, else the logged answer.

Skipped, each with its reason: unknown request ids (not in ``inference_log``: not drained yet, or
a wrong id), feedback from a key of another tenant than the request's (keys may rate only their
own tenant's requests), failed requests, and requests whose passages can no longer be read.
Earlier turns of a conversation and the user's features are not part of the example. Only one
tenant's feedback is used per build (default: keys without a tenant; ``"*"``: every tenant).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from llmfti.config import Settings
from llmfti.errors import InvalidInputError
from llmfti.feedback import POSITIVE, latest_per_request
from llmfti.filters import Filter, where_clause
from llmfti.lance import connect, table_names
from llmfti.on_demand import query_text
from pipelines.instruction_templates import ALL_TENANTS

LOG_COLUMNS = ["request_id", "tenant", "query", "request_messages", "answer", "status", "error", "index_name",
               "index_version", "retrieved_chunk_ids", "retrieved_scores", "prompt_id"]
IN_BATCH = 500


def _rows_where_in(table: Any, column: str, values: list[str], columns: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for first in range(0, len(values), IN_BATCH):
        where = where_clause([Filter(column, "in", values[first : first + IN_BATCH])], {column: "string"})
        out.extend(table.search().where(where).select(columns).limit(None).to_arrow().to_pylist())
    return out


def _passages(settings: Settings, logged: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]] | str]:
    """request_id -> its passages as served, or the reason they cannot be recovered."""
    from llmfti.index.vector_index import table_name

    db = connect(settings)
    by_version: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    out: dict[str, list[dict[str, Any]] | str] = {}
    for record in logged:
        if not record["retrieved_chunk_ids"]:
            out[record["request_id"]] = []
        elif record["index_name"] is None or record["index_version"] is None:
            out[record["request_id"]] = "the log does not name the index version it retrieved from"
        else:
            by_version[(record["index_name"], int(record["index_version"]))].append(record)
    for (index, version), records in sorted(by_version.items()):
        try:
            chunks_table = db.open_table(table_name(index), version=version)
        except (ValueError, OSError, RuntimeError) as exc:
            for record in records:
                out[record["request_id"]] = f"index {index!r} version {version} cannot be read: {exc}"
            continue
        wanted = sorted({c for r in records for c in r["retrieved_chunk_ids"]})
        chunks = {c["chunk_id"]: c for c in _rows_where_in(chunks_table, "chunk_id", wanted,
                                                              ["chunk_id", "doc_id", "text"])}
        for record in records:
            ids, scores = record["retrieved_chunk_ids"], record["retrieved_scores"] or []
            lost = [c for c in ids if c not in chunks]
            if lost:
                out[record["request_id"]] = f"index {index!r} version {version} has no chunks {lost[:3]}"
                continue
            out[record["request_id"]] = [
                {"chunk_id": c, "doc_id": chunks[c]["doc_id"], "text": chunks[c]["text"],
                 "score": float(scores[i]) if i < len(scores) else 0.0}
                for i, c in enumerate(ids)
            ]
    return out


def _question(record: dict[str, Any]) -> str | None:
    try:
        return query_text(json.loads(record["request_messages"] or "[]"))
    except (ValueError, TypeError, InvalidInputError):
        return record["query"] or None


def feedback_rows(settings: Settings, *, tenant: str | None = None) -> tuple[
        list[dict[str, Any]], list[dict[str, str]], dict[str, Any]]:
    """(instruction rows, rejected {example_id, reason}, lineage of the tables read).

    Only feedback given by keys of ``tenant`` (default None: keys without a tenant); ``"*"``: all.
    """
    db = connect(settings)
    names = table_names(db)
    feedback_table, log_table = settings.agent.feedback_table, settings.agent.log_table
    info: dict[str, Any] = {"feedback_table": feedback_table, "log_table": log_table}
    if feedback_table not in names:
        return [], [], {**info, "feedback_rows": 0}
    fb = db.open_table(feedback_table)
    info["feedback_data_version"] = int(fb.version)
    latest = latest_per_request(fb.to_arrow().to_pylist())
    if tenant != ALL_TENANTS:
        latest = [f for f in latest if f["tenant"] == tenant]
    rejected = [{"example_id": f"feedback:{f['request_id']}", "reason": f"latest rating is {f['rating']}, not 1"}
                for f in latest if f["rating"] != POSITIVE]
    positive = [f for f in latest if f["rating"] == POSITIVE]
    info.update(feedback_rows=len(latest), positive=len(positive))
    logged: dict[str, dict[str, Any]] = {}
    if positive and log_table in names:
        log = db.open_table(log_table)
        info["log_data_version"] = int(log.version)
        ids = [f["request_id"] for f in positive]
        logged = {r["request_id"]: r for r in _rows_where_in(log, "request_id", ids, LOG_COLUMNS)}
    usable = []
    for f in positive:
        example_id, record = f"feedback:{f['request_id']}", logged.get(f["request_id"])
        reason = None
        if record is None:
            reason = "unknown request id: not in the inference log (run `llmfti logs drain`, or check the id)"
        elif record["tenant"] != f["tenant"]:
            reason = f"rated by a key of tenant {f['tenant']!r}; the request was tenant {record['tenant']!r}"
        elif record["error"] or (record["status"] or 200) != 200:
            reason = f"the request failed ({record['error'] or record['status']})"
        elif not (f["correction"] or record["answer"] or "").strip():
            reason = "no answer was logged and no correction given"
        if reason:
            rejected.append({"example_id": example_id, "reason": reason})
        else:
            usable.append((f, record))
    passages = _passages(settings, [r for _, r in usable])
    rows = []
    for f, record in usable:
        example_id, found = f"feedback:{f['request_id']}", passages[record["request_id"]]
        question = _question(record)
        if isinstance(found, str) or not question:
            rejected.append({"example_id": example_id, "reason": found if isinstance(found, str) else "no question"})
            continue
        corrected = bool(f["correction"] and f["correction"].strip())
        rows.append({
            "example_id": example_id, "event_time": f["created_at"], "question": question,
            "context": "\n\n".join(p["text"] for p in found), "doc_id": found[0]["doc_id"] if found else None,
            "passages": json.dumps(found, sort_keys=True),
            "answer": f["correction"] if corrected else record["answer"],
            "source": "feedback:correction" if corrected else "feedback:answer",
        })
    return rows, rejected, info
