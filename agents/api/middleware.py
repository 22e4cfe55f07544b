"""One ASGI middleware: request ids, the request-size limit (413) and per-route metrics.

Pure ASGI (not BaseHTTPMiddleware), so streaming responses pass straight through.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agents.api.errors import error_response
from agents.api.metrics import AgentMetrics
from llmfti.errors import RequestLimitError
from llmfti.inference_log import new_request_id


def _too_large(size: int, limit: int, *, chunked: bool = False) -> RequestLimitError:
    return RequestLimitError(
        f"the request body is {'over ' if chunked else ''}{size} bytes, over the limit of {limit} bytes",
        param=None, code="request_too_large",
        fix="send a smaller request (fewer or shorter messages)",
    )


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: AgentMetrics):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status: dict[str, Any] = {"code": 500}
        route = scope["path"] if scope["path"].startswith("/v1/") or scope["path"] in (
            "/healthz", "/readyz", "/metrics") else "other"

        too_large: list[RequestLimitError] = []

        async def send_own(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        async def send_with_id(message: Message) -> None:
            if too_large:  # the body went over the limit while streaming in: answer 413, whatever the app says
                if message["type"] == "http.response.start" and status["code"] != 413:
                    await error_response(too_large[0])(scope, receive, send_own)
                return
            await send_own(message)

        try:
            declared = dict(scope.get("headers", [])).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await error_response(_too_large(int(declared), self.max_body_bytes))(scope, receive, send_own)
                return
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:  # a chunked body (no Content-Length) over the limit
                        too_large.append(_too_large(received, self.max_body_bytes, chunked=True))
                        raise too_large[0]
                return message

            await self.app(scope, limited_receive, send_with_id)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
