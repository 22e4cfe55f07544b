"""``POST /v1/completions``: the prompt is the question; same agent, text-completion shapes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from agents.api.auth import Caller
from agents.api.protocol import (
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    Usage,
    check_encodable,
)
from agents.api.serving_base import OpenAIServing, extensions, usage
from agents.pipeline import AgentAnswer, AgentRequest


class CompletionService(OpenAIServing):
    endpoint = "completions"

    async def create(self, body: CompletionRequest, caller: Caller) -> CompletionResponse | AsyncIterator[str]:
        check_encodable(body)
        body.check_supported()
        model = self.models.resolve(body.model)
        request = self.agent_request(body, caller, [{"role": "user", "content": body.prompt_text}])
        if body.stream:
            return await self._stream(body, request, model)
        answer = await self.pipeline.answer(request)
        self.observe(answer)
        return CompletionResponse(
            id=f"cmpl-{answer.request_id}",
            model=model,
            system_fingerprint=answer.model_version,
            choices=[CompletionChoice(text=answer.text, finish_reason=answer.finish_reason)],  # type: ignore[arg-type]
            usage=usage(answer),
            **extensions(answer),
        )

    async def _stream(self, body: CompletionRequest, request: AgentRequest, model: str) -> AsyncIterator[str]:
        first, events = await self.start_stream(request)
        created = int(time.time())
        chunk_id = f"cmpl-{request.request_id}"

        def chunk(choices: list[CompletionChoice], **extra: Any) -> CompletionChunk:
            return CompletionChunk(id=chunk_id, created=created, model=model, choices=choices, **extra)

        def final(answer: AgentAnswer) -> CompletionChunk:
            choice = CompletionChoice(text="", finish_reason=answer.finish_reason)  # type: ignore[arg-type]
            return chunk([choice], system_fingerprint=answer.model_version, **extensions(answer))

        return self.frame(
            first, events,
            opening=None,
            delta=lambda text: chunk([CompletionChoice(text=text)]),
            final=final,
            usage_chunk=(lambda answer: chunk([], usage=Usage(**usage(answer)))) if body.include_usage else None,
        )
