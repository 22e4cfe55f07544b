"""The FastAPI app: built once from settings; the pipeline loads in the lifespan."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agents.api.errors import install_error_handlers
from agents.api.middleware import RequestContextMiddleware
from agents.api.routers import chat_page, dashboard, feedback, health, openai, tokenization
from agents.api.state import AgentState
from agents.pipeline import AgentPipeline
from llmfti.config import Settings, load_settings
from llmfti.tracing import AsgiRequestTracing


def _openapi_with_stream_chunks(app: FastAPI) -> dict:
    """FastAPI's OpenAPI plus the chunk models the SSE responses reference (no route returns them directly)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        from agents.api.protocol import ChatCompletionChunk, CompletionChunk

        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ChatCompletionChunk, CompletionChunk):
            generated = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
            components.update(generated.pop("$defs", {}))
            components[model.__name__] = generated
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings | None = None, *, pipeline: AgentPipeline | None = None) -> FastAPI:
    """The service for ``settings``; raises ConfigError at once (not per request) if misconfigured."""
    settings = settings or load_settings()
    pipeline = pipeline or AgentPipeline.from_settings(settings)
    state = AgentState.build(settings, pipeline)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pipeline.start()
        state.feedback.start()
        # Everything loaded so far (torch, transformers, lance, the model) lives as long as the process: move it
        # out of the collector's reach, so a full collection scans only what requests made since (it scanned it
        # all: up to 655 ms per gen-2 collection under load, the p99 tail of benchmarks/serve.py)
        gc.collect()
        gc.freeze()
        state.metrics.watch_gc()
        publisher = asyncio.create_task(state.metrics.publish_every(pipeline)) if state.metrics.multiprocess else None
        try:
            yield
        finally:
            if publisher is not None:
                publisher.cancel()
            await asyncio.to_thread(state.feedback.close)
            await pipeline.close()
            state.metrics.close()

    app = FastAPI(
        title="llmfti agent",
        summary="OpenAI-compatible chat and completions over your documents and users.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.agent = state
    app.openapi = lambda: _openapi_with_stream_chunks(app)  # type: ignore[method-assign]
    install_error_handlers(app)
    app.include_router(openai.router)
    app.include_router(feedback.router)
    app.include_router(health.router)
    app.include_router(chat_page.router)
    app.include_router(tokenization.router)  # POST /tokenize, /detokenize (vLLM shape)
    app.include_router(dashboard.router)  # GET /dashboard (admin keys)
    app.add_middleware(AsgiRequestTracing)  # inside RequestContextMiddleware: sees the request id
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.agent.max_request_bytes,
                       metrics=state.metrics)
    return app
