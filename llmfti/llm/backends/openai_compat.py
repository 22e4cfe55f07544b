"""Any OpenAI-compatible server as the generator: ``vllm serve`` (with LoRA modules), another llmfti.

The upstream server renders the chat template and counts tokens, so ``usage`` comes from its
responses. The API key is read from the environment variable named by
``agent.generator.api_key_env``; it is never stored in settings.

**Pinned tokenizer.** Given the tokenizer a model was trained with (a registry version's pinned
copy, or ``agent.generator.tokenizer``), :meth:`start` checks the upstream's tokenizer where the
server offers vLLM's ``POST /tokenize``: a fixed probe set (texts, and a conversation rendered by
the chat template) must give exactly the pinned ids, or the generator refuses to start, naming
both tokenizers. A server that does not offer ``/tokenize`` (405/501, a plain 404 "Not Found", or an
llmfti serving a model without a tokenizer: 400 ``no_tokenizer``)
is served unverified, with a warning. Prompts are then rendered and counted with the pinned
tokenizer; without one, prompt length is estimated with the extractive word tokenizer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmfti.errors import ConfigError, GenerationError, TokenizerMismatchError
from llmfti.llm.backends.base import GenerationRequest, GenerationResult
from llmfti.llm.backends.extractive import count_tokens, render_plain
from llmfti.tracing import inject_headers

if TYPE_CHECKING:
    from llmfti.config import GeneratorSettings
    from llmfti.llm.tokenization import PinnedTokenizer
    from llmfti.registry.model_version import ModelVersion

log = logging.getLogger("llmfti.llm")


class OpenAICompatGenerator:
    """Chat completions from an upstream OpenAI-compatible server via the ``openai`` client."""

    backend = "openai"

    def __init__(self, base_url: str, model: str, *, api_key: str | None, timeout_s: float,
                 model_id: str | None = None, tokenizer: str | None = None,
                 tokenizer_fingerprint: str | None = None, version: str | None = None):
        """``tokenizer`` (+ ``tokenizer_fingerprint``): the pinned tokenizer to check the upstream against;
        ``version``: what to log as the model version (e.g. a registry ref)."""
        self.base_url = base_url.rstrip("/")
        self.upstream_model = model
        self.api_key = api_key or "none"
        self.timeout_s = timeout_s
        self.model_id = model_id or model
        self.model_version = version or f"{model}@{self.base_url}"
        self.tokenizer_source = tokenizer
        self.tokenizer_fingerprint_expected = tokenizer_fingerprint
        self.tokenizer_verified: bool | None = None
        """True: the probes matched; False: the server offers no /tokenize; None: no pinned tokenizer."""
        self.aliases: list[str] = []
        self.context_length: int | None = None  # the upstream's max_model_len, learnt from /tokenize
        self._pinned: PinnedTokenizer | None = None
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
                   timeout_s=settings.timeout_s, model_id=settings.served_name,
                   tokenizer=settings.tokenizer)

    @classmethod
    def for_model_version(cls, settings: GeneratorSettings, mv: ModelVersion) -> OpenAICompatGenerator:
        """A registry version served upstream as the LoRA module ``llmfti registry export`` names."""
        from llmfti.registry.export import lora_module_name

        if not settings.base_url:
            raise ConfigError(
                f"agent.generator.model {settings.model!r} on the openai backend needs agent.generator.base_url",
                expected="the upstream serving the exported adapter, e.g. http://vllm:8000/v1",
                fix=f"llmfti registry export {mv.version} --to DIR, run the printed vllm serve command, and set "
                    "LLMFTI_AGENT__GENERATOR__BASE_URL")
        return cls(settings.base_url, lora_module_name(mv), api_key=os.environ.get(settings.api_key_env),
                   timeout_s=settings.timeout_s, model_id=settings.served_name or mv.name,
                   tokenizer=str(mv.tokenizer_dir), tokenizer_fingerprint=mv.tokenizer_fingerprint, version=mv.ref)

    async def start(self) -> None:
        from openai import AsyncOpenAI

        if self.tokenizer_source:
            self._pinned = await asyncio.to_thread(self._load_pinned)
            self.tokenizer_verified = await self._verify_upstream_tokenizer(self._pinned)
        self._client = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout_s,
                                   max_retries=0)

    def _load_pinned(self) -> PinnedTokenizer:
        from llmfti.llm.tokenization import load_pinned_tokenizer, load_tokenizer

        if self.tokenizer_fingerprint_expected:
            return load_pinned_tokenizer(self.tokenizer_source, self.tokenizer_fingerprint_expected,  # type: ignore[arg-type]
                                         what=f"model {self.model_version}")
        return load_tokenizer(self.tokenizer_source)  # type: ignore[arg-type]

    @property
    def server_root(self) -> str:
        """Where vLLM serves /tokenize: the base URL without its /v1."""
        return self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url

    async def _verify_upstream_tokenizer(self, pinned: PinnedTokenizer) -> bool:
        """True if the upstream tokenizes every probe exactly as ``pinned``; False if it offers no /tokenize."""
        import httpx

        from llmfti.llm.tokenization import probe_differences, tokenizer_probes

        probes = tokenizer_probes(pinned)
        url = f"{self.server_root}/tokenize"
        remote: list[list[int]] = []
        fingerprint = None
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                for probe in probes:
                    response = await client.post(url, json={"model": self.upstream_model, **probe.body},
                                                 headers=headers)
                    if _not_offered(response):
                        log.warning("upstream %s offers no POST /tokenize (HTTP %s): serving %s with tokenizer "
                                    "%s UNVERIFIED", self.server_root, response.status_code, self.upstream_model,
                                    pinned.fingerprint)
                        return False
                    if response.status_code != 200:
                        raise GenerationError(
                            f"upstream {url} refused the tokenizer check for model {self.upstream_model!r}: "
                            f"HTTP {response.status_code} {response.text[:300]}",
                            fix="serve the model under that name upstream (vllm serve ... --lora-modules "
                                "NAME=DIR; see llmfti registry export), or check agent.generator.model")
                    body = response.json()
                    remote.append(list(body["tokens"]))
                    self.context_length = body.get("max_model_len") or self.context_length
                    fingerprint = body.get("tokenizer_fingerprint") or fingerprint
        except httpx.HTTPError as exc:
            raise GenerationError(f"upstream {url} is unreachable, so its tokenizer cannot be checked: {exc}",
                                  fix="start the upstream server first (the agent refuses to serve a pinned "
                                      "model with an unchecked tokenizer)") from exc
        differences = probe_differences(probes, remote)
        if differences:
            theirs = f"the tokenizer of {self.upstream_model!r} at {self.server_root}" + (
                f" (fingerprint {fingerprint})" if fingerprint else "")
            raise TokenizerMismatchError(
                f"{theirs} differs from the pinned tokenizer {pinned.source!r} (fingerprint {pinned.fingerprint}) "
                f"of {self.model_version}: {'; '.join(differences)}",
                expected="identical token ids for every probe text and for the rendered chat template",
                fix="serve the model with its exported tokenizer and chat template (llmfti registry export N "
                    "--to DIR; vllm serve BASE --tokenizer DIR --chat-template DIR/chat_template.jinja ...)")
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    def ready(self) -> bool:
        return self._client is not None

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        return self._pinned.render(messages) if self._pinned else render_plain(messages)

    def count_tokens(self, text: str) -> int:
        return len(self._pinned.encode_text(text)) if self._pinned else count_tokens(text)

    @property
    def tokenizer_fingerprint(self) -> str | None:
        return self._pinned.fingerprint if self._pinned else None

    @property
    def pinned_tokenizer(self) -> PinnedTokenizer | None:
        return self._pinned

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
        trace_headers = inject_headers()  # traceparent: the upstream's spans join this request's trace
        if trace_headers:
            params["extra_headers"] = trace_headers
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


def _not_offered(response: Any) -> bool:
    """The server has no /tokenize route (as opposed to refusing this model or request)."""
    if response.status_code in (405, 501):
        return True
    if response.status_code not in (400, 404):
        return False
    try:
        body = response.json()
    except ValueError:
        return response.status_code == 404
    if response.status_code == 400:  # an llmfti serving a model that has no tokenizer
        return isinstance(body, dict) and isinstance(body.get("error"), dict) and \
            body["error"].get("code") == "no_tokenizer"
    message = body.get("detail") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
    return message == "Not Found"
