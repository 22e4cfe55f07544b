"""Any OpenAI-compatible server as the generator: ``vllm serve`` (with LoRA modules), another llmfti.

The upstream server renders the chat template and counts tokens, so ``usage`` comes from its
responses. Before sending, prompt length is estimated with the extractive word tokenizer (the
upstream tokenizer is not available locally). The API key is read from the environment variable
named by ``agent.generator.api_key_env``; it is never stored in settings.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmfti.errors import ConfigError, GenerationError
from llmfti.llm.backends.base import GenerationRequest, GenerationResult
from llmfti.llm.backends.extractive import count_tokens, render_plain

if TYPE_CHECKING:
    from llmfti.config import GeneratorSettings


class OpenAICompatGenerator:
    """Chat completions from an upstream OpenAI-compatible server via the ``openai`` client."""

    backend = "openai"

    def __init__(self, base_url: str, model: str, *, api_key: str | None, timeout_s: float,
                 model_id: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.upstream_model = model
        self.api_key = api_key or "none"
        self.timeout_s = timeout_s
        self.model_id = model_id or model
        self.model_version = f"{model}@{self.base_url}"
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> OpenAICompatGenerator:
        if not settings.base_url or not settings.model:
            raise ConfigError(
                "the openai backend needs agent.generator.base_url and agent.generator.model",
                expected="e.g. base_url http://vllm:8000/v1 and model my-lora",
                fix="set LLMFTI_AGENT__GENERATOR__BASE_URL and LLMFTI_AGENT__GENERATOR__MODEL",
            )
        return cls(settings.base_url, settings.model, api_key=os.environ.get(settings.api_key_env),
                   timeout_s=settings.timeout_s, model_id=settings.served_name)

    async def start(self) -> None:
        from openai import AsyncOpenAI

        self._client = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s,
                                   max_retries=0)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def ready(self) -> bool:
        return self._client is not None

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        return render_plain(messages)

    def count_tokens(self, text: str) -> int:
        return count_tokens(text)

    def _params(self, request: GenerationRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.upstream_model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages],
            "max_tokens": request.max_tokens,
        }
        for name in ("temperature", "top_p", "seed"):
            if getattr(request, name) is not None:
                params[name] = getattr(request, name)
        if request.stop:
            params["stop"] = list(request.stop)
        return params

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        from openai import OpenAIError

        try:
            response = await self._client.chat.completions.create(**self._params(request))
        except OpenAIError as exc:
            raise GenerationError(f"upstream {self.base_url} failed: {exc}",
                                  fix="check the upstream server (agent.generator.base_url)") from exc
        choice = response.choices[0]
        usage = response.usage
        text = choice.message.content or ""
        prompt = self.render_prompt(request.messages)
        return GenerationResult(
            text=text,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=usage.prompt_tokens if usage else count_tokens(prompt),
            completion_tokens=usage.completion_tokens if usage else count_tokens(text),
            prompt=prompt,
        )

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | GenerationResult]:
        from openai import OpenAIError

        parts: list[str] = []
        finish, usage = "stop", None
        try:
            chunks = await self._client.chat.completions.create(
                **self._params(request), stream=True, stream_options={"include_usage": True}
            )
            async for chunk in chunks:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        parts.append(choice.delta.content)
                        yield choice.delta.content
                    if choice.finish_reason:
                        finish = "length" if choice.finish_reason == "length" else "stop"
        except OpenAIError as exc:
            raise GenerationError(f"upstream {self.base_url} failed while streaming: {exc}",
                                  fix="check the upstream server (agent.generator.base_url)") from exc
        text = "".join(parts)
        prompt = self.render_prompt(request.messages)
        yield GenerationResult(
            text=text,
            finish_reason=finish,  # type: ignore[arg-type]
            prompt_tokens=usage.prompt_tokens if usage else count_tokens(prompt),
            completion_tokens=usage.completion_tokens if usage else count_tokens(text),
            prompt=prompt,
        )
