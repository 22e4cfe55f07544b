"""Feedback on served answers: one record per ``POST /v1/feedback``, kept like the inference log.

A rating is ``-1`` (bad), ``0`` (neutral) or ``1`` (good); a ``correction`` is the answer the user
would have wanted. Records travel exactly like inference-log records (the same writer: a Redis
stream on the hot path, a spool file ``<data_dir>/spool/feedback.jsonl`` when Redis is down) and
``llmfti logs drain`` stores them in the LanceDB table :data:`FEEDBACK_SCHEMA`, idempotently by
``feedback_id``.

The endpoint does not look the request up (it may still be in the stream, not yet drained): the
dataset build resolves each feedback against the ``inference_log`` table and skips, with a reason,
unknown request ids and feedback given by a key of another tenant than the request's.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa

from llmfti.inference_log import JsonLineRecord

FEEDBACK_SPOOL = "feedback.jsonl"
RATINGS = (-1, 0, 1)
POSITIVE = 1
RESPONSE_ID_PREFIXES = ("chatcmpl-", "cmpl-")


@dataclass
class FeedbackRecord(JsonLineRecord):
    """One rating of one served request, with who gave it."""

    feedback_id: str
    request_id: str
    created_at: datetime
    rating: int
    correction: str | None = None
    comment: str | None = None
    api_key_name: str | None = None
    tenant: str | None = None
    user_id: str | None = None

    @property
    def key(self) -> str:
        return self.feedback_id


FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("feedback_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("rating", pa.int64(), nullable=False),
        pa.field("correction", pa.string()),
        pa.field("comment", pa.string()),
        pa.field("api_key_name", pa.string()),
        pa.field("tenant", pa.string()),
        pa.field("user_id", pa.string()),
    ],
    metadata={b"llmfti.table": b"feedback", b"llmfti.primary_key": b"feedback_id"},
)
"""Schema of the LanceDB ``feedback`` table."""


def feedback_to_table(records: list[FeedbackRecord]) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in records], schema=FEEDBACK_SCHEMA)


def new_feedback_id() -> str:
    return f"fb-{uuid.uuid4().hex}"


def request_id_of(value: str) -> str:
    """The request id in ``value``: a request id itself (``req-...``, the ``x-request-id`` header)
    or a response id (``chatcmpl-req-...``, ``cmpl-req-...``)."""
    value = value.strip()
    for prefix in RESPONSE_ID_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix):]
    return value


def latest_per_request(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last feedback given on each request (by ``created_at``, then ``feedback_id``)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: (r["created_at"], r["feedback_id"])):
        latest[row["request_id"]] = row
    return [latest[k] for k in sorted(latest)]
