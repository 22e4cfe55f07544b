"""``POST /v1/chat/completions`` without routing: request in, response or SSE events out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from agents.api.auth import Caller
from agents.api.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    DeltaMessage,
    Usage,
    check_encodable,
)
from agents.api.serving_base import OpenAIServing, annotations, extensions, usage
from agents.pipeline import AgentAnswer, AgentRequest


class ChatCompletionService(OpenAIServing):
    endpoint = "chat.completions"

    def annotations(self, answer: AgentAnswer) -> list[dict[str, Any]]:
        return annotations(answer, self.pipeline.settings.index.name)

    async def create(self, body: ChatCompletionRequest, caller: Caller) -> ChatCompletionResponse | AsyncIterator[str]:
        check_encodable(body)
        body.check_supported()
        model = self.models.resolve(body.model)
        request = self.agent_request(body, caller, [m.as_dict() for m in body.messages])
        if body.stream:
            return await self._stream(body, request, model)
        answer = await self.pipeline.answer(request)
        self.observe(answer)
        return ChatCompletionResponse(
            id=f"chatcmpl-{answer.request_id}",
            model=model,
            system_fingerprint=answer.model_version,
            choices=[ChatChoice(message=AssistantMessage(content=answer.text, annotations=self.annotations(answer)),
                                finish_reason=answer.finish_reason)],  # type: ignore[arg-type]
            usage=usage(answer),
            **extensions(answer),
        )

    async def _stream(self, body: ChatCompletionRequest, request: AgentRequest, model: str) -> AsyncIterator[str]:
        first, events = await self.start_stream(request)
        created = int(time.time())
        chunk_id = f"chatcmpl-{request.request_id}"

        def chunk(choices: list[ChatChunkChoice], **extra: Any) -> ChatCompletionChunk:
            return ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=choices, **extra)

        def final(answer: AgentAnswer) -> ChatCompletionChunk:
            choice = ChatChunkChoice(delta=DeltaMessage(annotations=self.annotations(answer) or None),
                                     finish_reason=answer.finish_reason)  # type: ignore[arg-type]
            return chunk([choice], system_fingerprint=answer.model_version, **extensions(answer))

        return self.frame(
            first, events,
            opening=chunk([ChatChunkChoice(delta=DeltaMessage(role="assistant", content=""))]),
            delta=lambda text: chunk([ChatChunkChoice(delta=DeltaMessage(content=text))]),
            final=final,
            usage_chunk=(lambda answer: chunk([], usage=Usage(**usage(answer)))) if body.include_usage else None,
        )
