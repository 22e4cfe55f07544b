"""``/healthz`` (the process answers), ``/readyz`` (stores reachable, model loaded), ``/metrics``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from agents.api.deps import State

router = APIRouter()
METRICS_RESPONSE = {200: {"description": "Prometheus text exposition format", "content": {
    "text/plain": {"schema": {"type": "string", "description": "# HELP / # TYPE lines and samples"}}}}}
READY_RESPONSES = {200: {"description": "Ready: index, model and Redis checks all pass"},
                   503: {"description": "Not ready: the same report with the failing check false"}}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=READY_RESPONSES)
async def readyz(state: State) -> JSONResponse:
    report = await asyncio.to_thread(state.pipeline.readiness)
    return JSONResponse(report, status_code=200 if report["ready"] else 503)


@router.get("/metrics", response_class=Response, responses=METRICS_RESPONSE)
async def metrics(state: State) -> Response:
    state.metrics.observe_pipeline(state.pipeline)
    await asyncio.to_thread(state.metrics.monitoring.refresh_if_stale, state.settings)  # LanceDB read: off the loop
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
