"""FastAPI dependencies as ``Annotated`` aliases: the shared state and the authenticated caller."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import Depends, Header, Request

from agents.api.auth import Caller
from agents.api.state import AgentState
from llmfti.errors import RateLimitError
from llmfti.tracing import annotate_request, span


def get_state(request: Request) -> AgentState:
    return request.app.state.agent


State = Annotated[AgentState, Depends(get_state)]


async def authenticated_caller(
    request: Request,
    state: State,
    authorization: Annotated[str | None, Header()] = None,
    x_user_id: Annotated[str | None, Header(max_length=256)] = None,
) -> Caller:
    start = time.perf_counter()
    with span("agent.auth") as traced:
        principal = state.authenticator.authenticate(authorization)
        traced.set(api_key_name=principal.name, tenant=principal.tenant)
    annotate_request(api_key_name=principal.name, tenant=principal.tenant)
    auth_ms = (time.perf_counter() - start) * 1000
    caller = Caller(principal, request.state.request_id, x_user_id, {"auth": round(auth_ms, 3)})
    start = time.perf_counter()
    limiter = state.rate_limiter
    try:  # always on a thread: a Redis retry (or reconnect) may block
        shared = await asyncio.to_thread(limiter.check, principal.name, principal.requests_per_minute)
    except RateLimitError:
        state.metrics.rate_limited.labels(principal.name).inc()
        raise
    if not shared:
        caller.degraded.append("rate_limit")
    caller.timings_ms["rate_limit"] = round((time.perf_counter() - start) * 1000, 3)
    return caller


AuthenticatedCaller = Annotated[Caller, Depends(authenticated_caller)]
