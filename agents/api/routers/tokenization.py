"""``POST /tokenize`` and ``POST /detokenize`` in vLLM's shape, with the served model's pinned tokenizer.

Offered when the served generator has a tokenizer (the ``transformers`` backend, or ``openai`` with a
pinned one); otherwise both answer 400 with code ``no_tokenizer`` (a client error: this model
has nothing to tokenize with; never a 5xx). The ``openai`` backend of another llmfti calls ``/tokenize``
at start-up to check that this server tokenizes exactly like the tokenizer its model was trained with.
Request and response fields follow vLLM's ``serving_tokenization`` (``prompt`` or ``messages``;
``count``, ``max_model_len``, ``tokens``, ``token_strs``); ``tokenizer_fingerprint`` is added.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from agents.api.deps import AuthenticatedCaller, State
from agents.api.errors import error_body
from agents.api.protocol import ErrorResponse
from llmfti.errors import InvalidInputError, NotFoundError

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 429)}
MAX_TOKENS_DETOKENIZE = 65_536

router = APIRouter(responses=ERRORS)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class TokenizeRequest(BaseModel):
    """vLLM's TokenizeCompletionRequest (``prompt``) or TokenizeChatRequest (``messages``)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    prompt: str | None = Field(None, max_length=1_000_000)
    messages: list[Message] | None = Field(None, max_length=1_000)
    add_special_tokens: bool | None = Field(None, description="Default: true for prompt, false for messages.")
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int | None
    tokens: list[int]
    token_strs: list[str] | None = None
    tokenizer_fingerprint: str


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    tokens: list[int] = Field(max_length=MAX_TOKENS_DETOKENIZE)


class DetokenizeResponse(BaseModel):
    prompt: str


def _tokenizer(state: Any, model: str | None) -> tuple[Any, Any]:
    """(generator, pinned tokenizer) of the served model; None when it has no tokenizer."""
    generator = state.pipeline.generator
    names = [generator.model_id, *getattr(generator, "aliases", [])]
    if model is not None and model not in names:
        raise NotFoundError(f"model {model!r} is not served here", expected=f"one of {names}",
                            fix="send the model id that GET /v1/models lists (or no model)")
    return generator, getattr(generator, "pinned_tokenizer", None)


def _no_tokenizer(generator: Any) -> JSONResponse:
    message = (f"the served model {generator.model_id!r} ({generator.backend} backend) has no tokenizer here; "
               "/tokenize is offered when a transformers model (or a pinned tokenizer) is served")
    return JSONResponse(error_body(message, "invalid_request_error", code="no_tokenizer"), status_code=400)


def _tokenize(pinned: Any, body: TokenizeRequest) -> list[int]:
    if (body.prompt is None) == (body.messages is None):
        raise InvalidInputError("give exactly one of 'prompt' and 'messages'",
                                expected='{"prompt": "text"} or {"messages": [{"role", "content"}]}',
                                fix="send a prompt string or a list of messages")
    if body.prompt is not None:
        special = True if body.add_special_tokens is None else body.add_special_tokens
        return list(pinned.tokenizer(body.prompt, add_special_tokens=special)["input_ids"])
    from jinja2 import TemplateError

    try:
        text = pinned.render([m.model_dump() for m in body.messages or []],
                             add_generation_prompt=body.add_generation_prompt)
    except TemplateError as exc:  # e.g. a template that requires alternating roles
        raise InvalidInputError(f"the chat template cannot render these messages: {exc}",
                                expected="messages in the order this model's chat template accepts",
                                fix="reorder or merge the messages") from exc
    return list(pinned.tokenizer(text, add_special_tokens=bool(body.add_special_tokens))["input_ids"])


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, caller: AuthenticatedCaller, state: State):  # noqa: ANN201
    generator, pinned = _tokenizer(state, body.model)
    if pinned is None:
        return _no_tokenizer(generator)
    tokens = await asyncio.to_thread(_tokenize, pinned, body)
    strs = pinned.tokenizer.convert_ids_to_tokens(tokens) if body.return_token_strs else None
    return TokenizeResponse(count=len(tokens), max_model_len=getattr(generator, "context_length", None),
                            tokens=tokens, token_strs=strs, tokenizer_fingerprint=pinned.fingerprint)


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, caller: AuthenticatedCaller, state: State):  # noqa: ANN201
    generator, pinned = _tokenizer(state, body.model)
    if pinned is None:
        return _no_tokenizer(generator)
    size = len(pinned.tokenizer)
    bad = [t for t in body.tokens if not 0 <= t < size]
    if bad:
        raise InvalidInputError(f"token id {bad[0]} is outside the vocabulary", expected=f"ids in [0, {size})",
                                fix="send ids produced by POST /tokenize of this model")
    text = await asyncio.to_thread(pinned.tokenizer.decode, body.tokens)
    return DetokenizeResponse(prompt=text)
