"""One turn of the agent: the request, the prepared turn (features, passages, prompt), the answer."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmfti.inference_log import InferenceRecord, new_request_id
from llmfti.llm.backends import GenerationRequest, GenerationResult, Passage

_CITATION = re.compile(r"\[(\d{1,3})\]")
SNIPPET_CHARS = 240


@dataclass
class AgentRequest:
    """What the agent is asked; the HTTP layer fills it from an OpenAI request and its key."""

    messages: list[dict[str, str]]
    endpoint: str = "chat.completions"
    user_id: str | None = None
    tenant: str | None = None
    api_key_name: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    request_id: str = field(default_factory=new_request_id)
    degraded: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)


@dataclass
class AgentAnswer:
    """The answer plus everything a caller (HTTP response, eval) may want to show or check."""

    request_id: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    citations: list[dict[str, Any]]
    index_version: int | None
    prompt_id: str
    model_id: str
    model_version: str
    timings_ms: dict[str, float]
    fallback: bool = False
    fallback_reason: str | None = None
    degraded: list[str] = field(default_factory=list)
    user_features: dict[str, Any] | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    abstained: bool = False  # the generator said it does not know (the passages do not answer)
    evidence: float | None = None  # extractive: question-sentence match of the best passage sentence
    evidence_features: dict[str, float] | None = None  # extractive: what abstaining weighed (evals fit on it)
    candidates: list[Any] | None = None  # extractive with a ranker: (sentence, features) per candidate (evals fit)


@dataclass
class Turn:
    """A prepared request: features, passages and the rendered prompt, before generation."""

    request: AgentRequest
    question: str
    on_demand: dict[str, Any]
    user_features: dict[str, Any] | None
    user_features_missing: bool
    passages: list[Passage]
    index_version: int | None
    messages: list[dict[str, str]]
    generation: GenerationRequest
    created_at: Any
    served: Any = None
    """The :class:`agents.served_model.ServedModel` (model + index version) captured at the request's start."""
    log_record: InferenceRecord | None = None


def elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def citations(passages: Sequence[Passage], result: GenerationResult) -> list[dict[str, Any]]:
    """Every passage the generator was given; ``referenced``: the answer cites it as [n]."""
    referenced = set(result.cited) | {int(n) for n in _CITATION.findall(result.text)}
    return [
        {"n": p.n, "chunk_id": p.chunk_id, "doc_id": p.doc_id, "score": p.score,
         "snippet": p.text[:SNIPPET_CHARS], "referenced": p.n in referenced}
        for p in passages
    ]
