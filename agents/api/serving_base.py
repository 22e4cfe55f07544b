"""What chat and text completions share: turning a request into an AgentRequest, SSE framing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel

from agents.api.auth import Caller
from agents.api.errors import stream_error_event
from agents.api.metrics import AgentMetrics
from agents.api.serving_models import ModelsService
from agents.pipeline import AgentAnswer, AgentPipeline, AgentRequest

DONE = "data: [DONE]\n\n"


def sse(payload: BaseModel | dict[str, Any]) -> str:
    if isinstance(payload, BaseModel):
        return f"data: {payload.model_dump_json()}\n\n"
    import json

    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def extensions(answer: AgentAnswer) -> dict[str, Any]:
    """llmfti's extension fields of a response (or of the last streamed chunk)."""
    return {
        "citations": answer.citations,
        "index_version": answer.index_version,
        "prompt_id": answer.prompt_id,
        "model_version": answer.model_version,
        "timings_ms": answer.timings_ms,
        "fallback": answer.fallback,
        "fallback_reason": answer.fallback_reason,
        "degraded": answer.degraded,
    }


def annotations(answer: AgentAnswer, index_name: str) -> list[dict[str, Any]]:
    """OpenAI-style ``url_citation`` annotations: one per ``[n]`` marker of the answer text."""
    import re
    from urllib.parse import quote

    by_n = {c["n"]: c for c in answer.citations}
    found = []
    for match in re.finditer(r"\[(\d{1,3})\]", answer.text):
        cited = by_n.get(int(match.group(1)))
        if cited is None:
            continue
        doc = cited["doc_id"]
        url = doc if re.match(r"^https?://", doc) else f"llmfti:{index_name}/{quote(doc)}#{quote(cited['chunk_id'])}"
        found.append({"type": "url_citation", "url_citation": {
            "start_index": match.start(), "end_index": match.end(), "title": doc, "url": url}})
    return found


def usage(answer: AgentAnswer) -> dict[str, int]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    }


class OpenAIServing:
    """Base of the chat and completion services: no routing, dependencies passed in."""

    endpoint = ""

    def __init__(self, pipeline: AgentPipeline, models: ModelsService, metrics: AgentMetrics):
        self.pipeline = pipeline
        self.models = models
        self.metrics = metrics

    def agent_request(self, body: Any, caller: Caller, messages: list[dict[str, str]]) -> AgentRequest:
        return AgentRequest(
            messages=messages,
            endpoint=self.endpoint,
            user_id=body.user or caller.user_header,
            tenant=caller.principal.tenant,
            api_key_name=caller.principal.name,
            max_tokens=body.requested_max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=body.stop_list,
            request_id=caller.request_id,
            degraded=list(caller.degraded),
            timings_ms=dict(caller.timings_ms),
        )

    def observe(self, answer: AgentAnswer) -> None:
        self.metrics.observe_answer(answer.timings_ms, answer.prompt_tokens, answer.completion_tokens,
                                    answer.fallback, answer.degraded)

    async def start_stream(self, request: AgentRequest) -> tuple[str | AgentAnswer, AsyncIterator[str | AgentAnswer]]:
        """The first item is awaited here, so failures before any output get a normal error status."""
        events = self.pipeline.stream(request)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return first, events

    async def frame(
        self,
        first: str | AgentAnswer,
        events: AsyncIterator[str | AgentAnswer],
        *,
        opening: BaseModel | None,
        delta: Callable[[str], BaseModel],
        final: Callable[[AgentAnswer], BaseModel],
        usage_chunk: Callable[[AgentAnswer], BaseModel] | None,
    ) -> AsyncIterator[str]:
        """SSE events: optional opening chunk, one per delta, the final chunk, the usage chunk, [DONE]."""
        try:
            if opening is not None:
                yield sse(opening)
            item = first
            while True:
                if isinstance(item, AgentAnswer):
                    self.observe(item)
                    yield sse(final(item))
                    if usage_chunk is not None:
                        yield sse(usage_chunk(item))
                    break
                yield sse(delta(item))
                item = await anext(events)
        except Exception as exc:  # noqa: BLE001 - after the 200 went out, errors travel as an SSE event
            yield sse(stream_error_event(exc))
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        yield DONE
