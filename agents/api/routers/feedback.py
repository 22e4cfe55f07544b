"""``POST /v1/feedback``: rate a served answer (-1/0/1), optionally with a correction."""

from __future__ import annotations

from fastapi import APIRouter

from agents.api.deps import AuthenticatedCaller, State
from agents.api.protocol import ErrorResponse, FeedbackRequest, FeedbackResponse

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 503)}

router = APIRouter(prefix="/v1", responses=ERRORS)


@router.post("/feedback", response_model=FeedbackResponse)
async def feedback(body: FeedbackRequest, caller: AuthenticatedCaller, state: State) -> FeedbackResponse:
    return await state.feedback.submit(body, caller)
