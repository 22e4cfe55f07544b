"""On-demand features: computed from a request when it arrives (Hopsworks' third transformation).

One function, :func:`request_features`, serves both the agent (at request time) and backfills
(over logged requests, e.g. the ``inference_log`` table's ``request_messages`` and ``created_at``),
so a feature can never be computed two different ways. The query embedding is the other on-demand
feature; it is computed by the index's own embedder (``VectorIndex.embed_query``), never here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from llmfti.errors import InvalidInputError

_WORD = re.compile(r"\w+")


def query_text(messages: Sequence[Mapping[str, str]]) -> str:
    """The question being asked: the content of the last user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    raise InvalidInputError(
        "the request has no user message",
        expected="at least one message with role 'user'",
        fix="add the question as a user message",
    )


_REFERRING = frozenset(
    "it its it's they them their theirs this that these those he him his she her there then such one ones "
    "former latter above same".split()
)
_FOLLOW_UP_START = re.compile(r"^\s*(and|but|also|so|or|what about|how about|why|then)\b", re.IGNORECASE)
_FILLER = frozenset("a an the is are was were do does did how what why when where which who can could should "
                    "would will i you we to of in on for and or but so about with".split())


def is_follow_up(text: str) -> bool:
    """Whether a message leans on what was said before: it refers back ("it", "that", "those"...),
    opens like a continuation ("and ...", "what about ..."), or names fewer than two things itself."""
    words = [w.lower() for w in _WORD.findall(text)]
    content = [w for w in words if w not in _FILLER and w not in _REFERRING]
    return bool(_REFERRING & set(words)) or bool(_FOLLOW_UP_START.match(text)) or len(content) < 2


def retrieval_query(messages: Sequence[Mapping[str, str]], history_turns: int = 2) -> str:
    """What to search for: the last user message, preceded by up to ``history_turns`` earlier user
    messages when it is a follow-up (:func:`is_follow_up`), so "and how do I undo that?" is searched
    together with the question it follows. ``history_turns=0``: the last message only."""
    question = query_text(messages)
    if history_turns <= 0 or not is_follow_up(question):
        return question
    earlier = [str(m.get("content") or "") for m in messages if m.get("role") == "user"][:-1]
    return " ".join([*earlier[-history_turns:], question]).strip()


def request_features(messages: Sequence[Mapping[str, str]], *, at: datetime) -> dict[str, Any]:
    """Request-time features of a conversation ``messages`` received at ``at`` (UTC)."""
    query = query_text(messages)
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    return {
        "query_chars": len(query),
        "query_words": len(_WORD.findall(query)),
        "is_question": query.rstrip().endswith("?"),
        "conversation_turns": sum(1 for m in messages if m.get("role") == "user"),
        "history_messages": max(0, len(messages) - 1),
        "has_system_message": any(m.get("role") == "system" for m in messages),
        "hour_of_day": at.hour,
        "day_of_week": at.weekday(),
    }


def backfill_request_features(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """:func:`request_features` for logged requests (``request_messages`` JSON + ``created_at``)."""
    out = []
    for row in rows:
        messages = row["request_messages"]
        if isinstance(messages, str):
            messages = json.loads(messages)
        at = row["created_at"]
        if isinstance(at, str):
            at = datetime.fromisoformat(at)
        out.append({"request_id": row.get("request_id"), **request_features(messages, at=at)})
    return out
