"""The one place where errors become HTTP responses, always ``{"error": {message, type, param, code}}``.

No stack trace ever reaches a client: unexpected exceptions are logged here with the request id
and answered with a 500 that names only that id.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agents.api.protocol import ErrorInfo, ErrorResponse
from llmfti.errors import (
    AuthenticationError,
    GenerationError,
    InvalidInputError,
    LLMFTIError,
    NotFoundError,
    RateLimitError,
    RequestLimitError,
    StoreUnavailableError,
)

log = logging.getLogger("llmfti.agent")

# (exception class, HTTP status, OpenAI error type); the first match wins.
STATUS_OF: list[tuple[type[LLMFTIError], int, str]] = [
    (AuthenticationError, 401, "authentication_error"),
    (RateLimitError, 429, "rate_limit_error"),
    (RequestLimitError, 400, "invalid_request_error"),
    (InvalidInputError, 400, "invalid_request_error"),
    (NotFoundError, 404, "invalid_request_error"),
    (StoreUnavailableError, 503, "service_unavailable_error"),
    (GenerationError, 503, "service_unavailable_error"),
]
_HTTP_TYPES = {401: "authentication_error", 404: "invalid_request_error", 405: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable_error"}


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorInfo(message=message, type=type_, param=param, code=code)).model_dump()


def status_of(exc: LLMFTIError) -> tuple[int, str]:
    if isinstance(exc, RequestLimitError) and exc.code in ("request_too_large", "input_too_large"):
        return 413, "invalid_request_error"
    for cls, status, type_ in STATUS_OF:
        if isinstance(exc, cls):
            return status, type_
    return 500, "server_error"


def error_response(exc: LLMFTIError) -> JSONResponse:
    status, type_ = status_of(exc)
    headers = {}
    if isinstance(exc, RateLimitError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    body = error_body(str(exc), type_, param=getattr(exc, "param", None), code=exc.code)
    return JSONResponse(body, status_code=status, headers=headers)


def stream_error_event(exc: BaseException) -> dict[str, Any]:
    """The body of the SSE ``data:`` event that reports a failure after streaming started."""
    if isinstance(exc, LLMFTIError):
        _, type_ = status_of(exc)
        return error_body(str(exc), type_, param=getattr(exc, "param", None), code=exc.code)
    return error_body("internal error while streaming; see the server log", "server_error", code="internal_error")


def _param_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "header", "path")]
    return ".".join(parts) or None


def _json_message(err: dict[str, Any], body: bytes) -> str:
    """Where and why the body is not JSON: line, column and the parser's reason."""
    loc = err.get("loc", ())
    position = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
    reason = (err.get("ctx") or {}).get("error") or "not valid JSON"
    if position is None:
        return f"the body is not valid JSON: {reason}"
    text = body.decode("utf-8", "replace")
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return (f"the body is not valid JSON: {reason} at line {line}, column {column} (character {position}); "
            "fix: send one JSON object (check quotes, commas and brackets there)")


def _not_json(err: dict[str, Any]) -> bool:
    """The whole body failed as an object because it was never parsed as JSON (no JSON content-type)."""
    return tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), bytes | str)


def _validation_message(exc: RequestValidationError, body: bytes, content_type: str) -> tuple[str, str | None]:
    problems, first_param = [], None
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            problems.append(_json_message(err, body))
            continue
        if _not_json(err):
            sent = f"'{content_type}'" if content_type else "missing"
            problems.append(f"the body was not read as JSON because the content-type header is {sent}; "
                            "fix: send the header 'content-type: application/json'")
            continue
        param = _param_of(tuple(err.get("loc", ())))
        first_param = first_param or param
        got = err.get("input")
        shown = repr(got) if not isinstance(got, dict | list | bytes) else type(got).__name__
        problems.append(f"{param or 'body'}: {err.get('msg')} (got {shown[:80]})")
    return "invalid request: " + "; ".join(problems[:5]), first_param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LLMFTIError)
    async def _llmfti(request: Request, exc: LLMFTIError) -> JSONResponse:
        status, _ = status_of(exc)
        if status >= 500:
            log.warning("request %s failed: %s", getattr(request.state, "request_id", "?"), exc)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = await request.body() if any(e.get("type") == "json_invalid" for e in exc.errors()) else b""
        message, param = _validation_message(exc, body, request.headers.get("content-type", ""))
        code = ("invalid_json" if any(e.get("type") == "json_invalid" for e in exc.errors())
                else "invalid_content_type" if any(_not_json(e) for e in exc.errors()) else "invalid_value")
        return JSONResponse(error_body(message, "invalid_request_error", param=param, code=code), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}; see GET /v1/models and /docs"
        type_ = _HTTP_TYPES.get(exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error")
        return JSONResponse(error_body(message, type_, code=str(exc.status_code)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", "?")
        log.exception("unexpected error in request %s", request_id)
        return JSONResponse(
            error_body(f"internal error (request {request_id}); the server log has the details", "server_error",
                       code="internal_error"),
            status_code=500,
        )
