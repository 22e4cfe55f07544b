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
)

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 503)}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.post("/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(body: ChatCompletionRequest, caller: AuthenticatedCaller, state: State):  # noqa: ANN201
    result = await state.chat.create(body, caller)
    if isinstance(result, ChatCompletionResponse):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/completions", response_model=CompletionResponse)
async def completions(body: CompletionRequest, caller: AuthenticatedCaller, state: State):  # noqa: ANN201
    result = await state.completions.create(body, caller)
    if isinstance(result, CompletionResponse):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/models", response_model=ModelList)
async def list_models(caller: AuthenticatedCaller, state: State) -> ModelList:
    return state.models.list()
