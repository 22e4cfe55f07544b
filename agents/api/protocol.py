"""Request and response models in OpenAI's shapes, plus llmfti's extension fields.

Unknown request fields are ignored (clients add new optional fields all the time); fields we
cannot honour (``n`` > 1, tools, logprobs, non-text content) are refused with a 400 naming them.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmfti.errors import RequestLimitError

_UNSUPPORTED_CHAT = ("tools", "functions", "tool_choice", "function_call", "audio", "prediction")
RESPONSE_FORMAT_SHAPE = '{"type": "text"}'


def check_encodable(body: BaseModel) -> None:
    """Refuse text that is not valid Unicode (a lone UTF-16 surrogate such as ``\\ud800``) with a 400
    naming where it is: such text cannot be tokenized, stored or logged."""
    for path, text in _strings(body.model_dump(), ()):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            where = ".".join(str(p) for p in path)
            raise RequestLimitError(
                f"{where} is not valid Unicode text: it holds a lone surrogate "
                f"U+{ord(text[exc.start]):04X} at character {exc.start}",
                param=where, code="invalid_encoding",
                expected="UTF-8 text; a JSON \\uD800-\\uDFFF escape only as one half of a surrogate pair",
                fix=f"remove the unpaired surrogate from {where}, or send the character it belongs to",
            ) from None


def _strings(value: Any, path: tuple[Any, ...]) -> Any:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key, (*path, "<key>")) if isinstance(key, str) else ()
            yield from _strings(item, (*path, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, (*path, i))


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    def refuse_unsupported(self, names: tuple[str, ...]) -> None:
        extra = self.model_extra or {}
        for name in names:
            if extra.get(name) not in (None, [], {}, "none", "auto"):
                raise RequestLimitError(
                    f"'{name}' is not supported by this server",
                    param=name,
                    code="unsupported_parameter",
                    fix=f"remove '{name}' from the request",
                )


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """A chat turn; ``developer`` is read as ``system``; content may be text parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_dict(self) -> dict[str, str]:
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


StopField = Annotated[str | list[str] | None, Field(description="Up to 4 stop strings.")]


def _stops(value: str | list[str] | None) -> list[str]:
    stops = [value] if isinstance(value, str) else list(value or [])
    if len(stops) > 4:
        raise ValueError(f"at most 4 stop strings are allowed, got {len(stops)}")
    return stops


class _SamplingRequest(_Request):
    model: str = Field(description="A model id of GET /v1/models.", examples=["llmfti-extractive"])
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="Only one choice per request.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: StopField = None
    seed: int | None = None
    user: str | None = Field(None, max_length=256, description="Whose features to use (else X-User-Id).")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        _stops(value)
        return value

    @property
    def stop_list(self) -> list[str]:
        return _stops(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingRequest):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "llmfti-extractive", "messages": [{"role": "user", "content": "How do I roll back an index?"}]},
        {"model": "llmfti-extractive", "stream": True, "stream_options": {"include_usage": True},
         "messages": [{"role": "user", "content": "Which port does the agent listen on?"}]},
    ]})

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    response_format: Any = Field(
        None, description=f"Only {RESPONSE_FORMAT_SHAPE} (plain text answers) is supported.",
        json_schema_extra={"type": "object", "properties": {"type": {"type": "string", "enum": ["text"]}}},
    )

    def check_supported(self) -> None:
        self.refuse_unsupported(_UNSUPPORTED_CHAT)
        if self.logprobs:
            raise RequestLimitError("'logprobs' is not supported by this server", param="logprobs",
                                    code="unsupported_parameter", fix="remove 'logprobs' or set it to false")
        response_format = self.response_format
        if response_format is not None and not (
            isinstance(response_format, dict) and isinstance(response_format.get("type", "text"), str)
        ):
            raise RequestLimitError(
                f"response_format must be an object with a string 'type', got {type(response_format).__name__} "
                f"{str(response_format)[:40]}",
                param="response_format", code="invalid_value", expected=RESPONSE_FORMAT_SHAPE,
                fix=f"send response_format as {RESPONSE_FORMAT_SHAPE} or leave it out",
            )
        if response_format and response_format.get("type", "text") != "text":
            raise RequestLimitError(
                f"response_format type {response_format['type'][:40]!r} is not supported; only 'text' is",
                param="response_format.type", code="unsupported_parameter", expected=RESPONSE_FORMAT_SHAPE,
                fix="remove 'response_format' (answers are plain text with [n] citations)",
            )
        if self.messages[-1].role != "user":
            raise RequestLimitError(
                f"the last message must be from the user, got role {self.messages[-1].role!r}",
                param=f"messages.{len(self.messages) - 1}.role",
                code="invalid_value",
                fix="end the conversation with the user's question",
            )

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingRequest):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "llmfti-extractive", "prompt": "How do I roll back an index?", "max_tokens": 64},
    ]})

    prompt: str | list[str]
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None

    def check_supported(self) -> None:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise RequestLimitError(
                f"one prompt per request is supported, got {len(self.prompt)}",
                param="prompt",
                code="invalid_value",
                fix="send one request per prompt",
            )
        for name, bad in (("logprobs", self.logprobs), ("echo", self.echo), ("suffix", self.suffix)):
            if bad:
                raise RequestLimitError(f"'{name}' is not supported by this server", param=name,
                                        code="unsupported_parameter", fix=f"remove '{name}'")
        self.refuse_unsupported(("best_of",) if (self.model_extra or {}).get("best_of", 1) != 1 else ())

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class InputText(BaseModel):
    type: Literal["input_text", "output_text", "text"]
    text: str


class ResponseInputMessage(BaseModel):
    """One item of a Responses API ``input`` list (messages only: no tool calls or files)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[InputText]

    def as_dict(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ResponsesRequest(_Request):
    """``POST /v1/responses`` (OpenAI's Responses API, text in and out, not streamed): what LangChain's
    ``ChatOpenAI(use_responses_api=True)`` sends; its answer carries the citations as annotations."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "llmfti-extractive", "input": "How do I roll back an index?"},
    ]})

    model: str = Field(description="A model id of GET /v1/models.", examples=["llmfti-extractive"])
    input: str | list[ResponseInputMessage] = Field(description="The question, or the conversation so far.")
    instructions: str | None = Field(None, description="A system message put before the input.")
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool = Field(False, description="Not supported here: stream with /v1/chat/completions.")
    user: str | None = Field(None, max_length=256, description="Whose features to use (else X-User-Id).")
    seed: int | None = None

    def check_supported(self) -> None:
        self.refuse_unsupported(("tools", "tool_choice", "previous_response_id", "reasoning", "text_format"))
        if self.stream:
            raise RequestLimitError("stream is not supported on /v1/responses", param="stream",
                                    code="unsupported_parameter",
                                    fix="send stream: false, or stream with POST /v1/chat/completions")
        if isinstance(self.input, list) and (not self.input or self.input[-1].role != "user"):
            raise RequestLimitError("the last input item must be a user message", param="input",
                                    code="invalid_value", fix="end the input with the user's question")

    def messages(self) -> list[dict[str, str]]:
        turns = ([{"role": "user", "content": self.input}] if isinstance(self.input, str)
                 else [m.as_dict() for m in self.input])
        return ([{"role": "system", "content": self.instructions}] if self.instructions else []) + turns

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_output_tokens

    @property
    def stop_list(self) -> list[str]:
        return []


# -- responses ------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Citation(BaseModel):
    """A retrieved passage given to the generator; ``referenced``: the answer cites it as [n]."""

    n: int
    chunk_id: str
    doc_id: str
    score: float
    snippet: str
    referenced: bool


class AgentExtensions(BaseModel):
    """llmfti's additions to OpenAI's response objects."""

    citations: list[Citation] = []
    index_version: int | None = None
    prompt_id: str | None = None
    model_version: str | None = None
    timings_ms: dict[str, float] = {}
    fallback: bool = False
    fallback_reason: str | None = None
    degraded: list[str] = []


class URLCitation(BaseModel):
    """Where a cited passage is: ``[start_index, end_index)`` of the content is its ``[n]`` marker."""

    start_index: int
    end_index: int
    title: str = Field(description="The document id of the passage.")
    url: str = Field(description="The document's URL if it has one, else llmfti:<index>/<doc id>#<chunk id>.")


class Annotation(BaseModel):
    """OpenAI's message annotation shape (what the openai SDK parses as ``message.annotations``)."""

    type: Literal["url_citation"] = "url_citation"
    url_citation: URLCitation


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    annotations: list[Annotation] = Field(
        default_factory=list, description="One url_citation per [n] marker in the content (the same sources as "
        "the citations extension, in OpenAI's shape, so standard clients keep them).")


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletionResponse(AgentExtensions):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage


def _is_none(value: Any) -> bool:
    return value is None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = Field(None, exclude_if=_is_none)
    content: str | None = Field(None, exclude_if=_is_none)
    annotations: list[Annotation] | None = Field(None, exclude_if=_is_none)


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event; the last content chunk also carries the extension fields."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class CompletionResponse(AgentExtensions):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ResponseURLCitation(BaseModel):
    type: Literal["url_citation"] = "url_citation"
    start_index: int
    end_index: int
    title: str
    url: str


class ResponseOutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[ResponseURLCitation] = []


class ResponseOutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: Literal["completed"] = "completed"
    role: Literal["assistant"] = "assistant"
    content: list[ResponseOutputText]


class ResponseUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class ResponseObject(AgentExtensions):
    id: str
    object: Literal["response"] = "response"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    status: Literal["completed", "incomplete"] = "completed"
    model: str
    output: list[ResponseOutputMessage]
    usage: ResponseUsage
    error: None = None
    incomplete_details: dict[str, str] | None = None
    instructions: str | None = None
    parallel_tool_calls: bool = False
    tool_choice: Literal["none"] = "none"
    tools: list[Any] = []


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmfti"
    root: str | None = None
    parent: str | None = None
    version: str | None = None
    aliases: list[str] = []
    backend: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: a rating of one served answer (limits are checked by the service)."""

    model_config = ConfigDict(extra="ignore")

    request_id: str = Field(description="The request's id: the x-request-id header, or the response id "
                            "(chatcmpl-... / cmpl-...).")
    rating: int = Field(description="-1: bad, 0: neutral, 1: good. Only 1 makes a training example.")
    correction: str | None = Field(None, description="The answer that should have been given.")
    comment: str | None = Field(None, description="Free text for whoever reviews the feedback.")


class FeedbackResponse(BaseModel):
    id: str
    object: Literal["feedback"] = "feedback"
    created: int
    request_id: str
    rating: int
    status: Literal["accepted"] = "accepted"


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
