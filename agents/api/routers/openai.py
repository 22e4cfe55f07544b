"""``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from agents.api.deps import AuthenticatedCaller, State
from agents.api.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelList,
    ResponseObject,
    ResponsesRequest,
)

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 503)}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

router = APIRouter(prefix="/v1", responses=ERRORS)


def _sse(chunk: str) -> dict:
    """The OpenAPI declaration of a streamed (``stream: true``) 200 response: the schema of each event
    (OpenAPI 3.1 style), whose ``data`` is a JSON ``chunk`` (or an error object), or ``[DONE]`` last."""
    payload = {"anyOf": [{"$ref": f"#/components/schemas/{chunk}"}, {"$ref": "#/components/schemas/ErrorResponse"}]}
    return {"text/event-stream": {"schema": {
        "type": "object",
        "description": f"Server-sent events: one per delta ({chunk}), the last content chunk carrying citations, "
        "index_version and the other extensions, an optional usage chunk, an error object if generation fails "
        "after the first byte, then [DONE].",
        "required": ["data"],
        "properties": {
            "event": {"type": "string", "enum": ["message"]},
            "data": {"anyOf": [
                {"type": "string", "enum": ["[DONE]"]},
                {"type": "string", "pattern": "^\\{", "contentMediaType": "application/json",
                 "contentSchema": payload},
            ]},
        },
    }}}


STREAMED = {
    "chat": {200: {"description": "The completion, or its stream of chunks", "content": _sse("ChatCompletionChunk")}},
    "text": {200: {"description": "The completion, or its stream of chunks", "content": _sse("CompletionChunk")}},
}


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses=STREAMED["chat"])
async def chat_completions(body: ChatCompletionRequest, caller: AuthenticatedCaller, state: State):  # noqa: ANN201
    result = await state.chat.create(body, caller)
    if isinstance(result, ChatCompletionResponse):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/completions", response_model=CompletionResponse, responses=STREAMED["text"])
async def completions(body: CompletionRequest, caller: AuthenticatedCaller, state: State):  # noqa: ANN201
    result = await state.completions.create(body, caller)
    if isinstance(result, CompletionResponse):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/responses", response_model=ResponseObject)
async def responses(body: ResponsesRequest, caller: AuthenticatedCaller, state: State) -> ResponseObject:
    """OpenAI's Responses API (text, not streamed); the answer's sources are url_citation annotations."""
    return await state.responses.create(body, caller)


@router.get("/models", response_model=ModelList)
async def list_models(caller: AuthenticatedCaller, state: State) -> ModelList:
    return state.models.list()
