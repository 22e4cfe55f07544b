"""``POST /v1/responses`` without routing: OpenAI's Responses API over the same agent.

It exists so that clients that keep sources only in Responses-API annotations (LangChain's
``ChatOpenAI(use_responses_api=True)``) see the citations: each ``[n]`` marker of the answer is a
``url_citation`` annotation of the output text. Text in, text out, not streamed.
"""

from __future__ import annotations

from agents.api.auth import Caller
from agents.api.protocol import (
    ResponseObject,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponsesRequest,
    ResponseUsage,
    check_encodable,
)
from agents.api.serving_base import OpenAIServing, annotations, extensions


class ResponsesService(OpenAIServing):
    endpoint = "responses"

    async def create(self, body: ResponsesRequest, caller: Caller) -> ResponseObject:
        check_encodable(body)
        body.check_supported()
        model = self.models.resolve(body.model)
        answer = await self.pipeline.answer(self.agent_request(body, caller, body.messages()))
        self.observe(answer)
        cited = [a["url_citation"] for a in annotations(answer, self.pipeline.settings.index.name)]
        text = ResponseOutputText(text=answer.text, annotations=cited)  # type: ignore[arg-type]
        return ResponseObject(
            id=f"resp-{answer.request_id}",
            model=model,
            output=[ResponseOutputMessage(id=f"msg-{answer.request_id}", content=[text])],
            usage=ResponseUsage(input_tokens=answer.prompt_tokens, output_tokens=answer.completion_tokens,
                                total_tokens=answer.prompt_tokens + answer.completion_tokens),
            status="incomplete" if answer.finish_reason == "length" else "completed",
            incomplete_details={"reason": "max_output_tokens"} if answer.finish_reason == "length" else None,
            instructions=body.instructions,
            **extensions(answer),
        )
