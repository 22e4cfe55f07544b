"""A local causal LM (path or hub id) with an optional PEFT adapter, on CPU or GPU.

The model loads once in :meth:`start`. Prompts are rendered and tokenized by the pinned tokenizer
(``llmfti.llm.tokenization``), the same code training used. Generation runs on one dedicated
thread (calls are serialised: one model, one forward pass at a time), streaming goes through a
``TextIteratorStreamer``, and a cancelled request (timeout, client gone) stops the model at the next
token through a stopping criterion.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmfti.errors import ConfigError, GenerationError, NotFoundError, RequestLimitError
from llmfti.llm.backends.base import GenerationRequest, GenerationResult

if TYPE_CHECKING:
    from llmfti.config import GeneratorSettings

_DONE = object()


def _folder_digest(path: str) -> str:
    """A short content hash of a model folder: its small files whole, weights by name and size."""
    folder = Path(path)
    if not folder.is_dir():
        return hashlib.sha256(path.encode()).hexdigest()[:12]
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        size = file.stat().st_size
        digest.update(file.read_bytes() if size < 32 * 1024 * 1024 else str(size).encode())
    return digest.hexdigest()[:12]


class TransformersGenerator:
    """Generates with ``transformers`` (+ ``peft``); heavy imports happen in :meth:`start`."""

    backend = "transformers"

    def __init__(self, model: str, *, adapter: str | None = None, device: str = "cpu",
                 model_id: str | None = None, tokenizer: str | None = None,
                 tokenizer_fingerprint: str | None = None, version: str | None = None):
        """``tokenizer``/``tokenizer_fingerprint``: serve with this pinned tokenizer (refused if it differs);
        ``version``: what to log as the model version (e.g. a registry ref) instead of a content hash."""
        self.model_path = model
        self.adapter = adapter
        self.device = device
        self.tokenizer_source = tokenizer
        self.tokenizer_fingerprint_expected = tokenizer_fingerprint
        self._version = version
        name = Path(model).name + (f"+{Path(adapter).name}" if adapter else "")
        self.model_id = model_id or name
        self.model_version = version or name
        self.aliases: list[str] = []
        self.context_length: int | None = None
        self._model: Any = None
        self._pinned: Any = None
        self._stop_ids: list[int] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmfti-generate")

    @classmethod
    def from_settings(cls, settings: GeneratorSettings) -> TransformersGenerator:
        if not settings.model:
            raise ConfigError(
                "the transformers backend needs a model",
                expected="agent.generator.model: a local model folder or a hub id",
                fix="set LLMFTI_AGENT__GENERATOR__MODEL, or use the extractive backend",
            )
        return cls(settings.model, adapter=settings.adapter, device=settings.device,
                   model_id=settings.served_name)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from llmfti.llm.tokenization import load_pinned_tokenizer, load_tokenizer

        tokenizer_source = self.tokenizer_source or (
            self.adapter if self.adapter and _has_tokenizer(self.adapter) else self.model_path)
        if self.tokenizer_fingerprint_expected:
            self._pinned = load_pinned_tokenizer(tokenizer_source, self.tokenizer_fingerprint_expected,
                                                 what=f"model {self.model_version}")
        else:
            self._pinned = load_tokenizer(tokenizer_source)
        dtype = torch.float32 if self.device == "cpu" else "auto"
        try:
            model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
        except OSError as exc:
            raise NotFoundError(
                f"cannot load a causal LM from {self.model_path!r}: {exc}",
                expected="a folder with config.json and weights, or a cached hub id",
                fix="check agent.generator.model (runs are offline: download models beforehand)",
            ) from exc
        if self.adapter:
            try:
                from peft import PeftModel
            except ImportError as exc:  # pragma: no cover - peft is a declared extra
                from llmfti.errors import MissingDependencyError

                raise MissingDependencyError("a PEFT adapter needs peft", fix="pip install peft") from exc
            model = PeftModel.from_pretrained(model, self.adapter)
        self._model = model.to(self.device).eval()
        config = getattr(self._model, "config", None)
        self.context_length = getattr(config, "max_position_embeddings", None)
        self._stop_ids = self._pinned.stop_token_ids
        if self._version is None:
            digest = _folder_digest(self.model_path)
            if self.adapter:
                digest += "+" + _folder_digest(self.adapter)
            self.model_version = f"{self.model_version}@{digest}"

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def ready(self) -> bool:
        return self._model is not None

    # -- tokenizer -------------------------------------------------------------------------------

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        return self._pinned.render(messages)

    def count_tokens(self, text: str) -> int:
        return len(self._pinned.encode_text(text))

    @property
    def tokenizer_fingerprint(self) -> str | None:
        return self._pinned.fingerprint if self._pinned else None

    @property
    def pinned_tokenizer(self) -> Any:
        """The loaded :class:`~llmfti.llm.tokenization.PinnedTokenizer` (None before :meth:`start`)."""
        return self._pinned

    # -- generation ------------------------------------------------------------------------------

    def _prepare(self, request: GenerationRequest) -> tuple[str, list[int]]:
        if self._model is None:
            raise GenerationError("the transformers generator is not started", fix="await start() first")
        prompt = self.render_prompt(request.messages)
        ids = self._pinned.encode_text(prompt)
        if self.context_length and len(ids) + request.max_tokens > self.context_length:
            raise RequestLimitError(
                f"prompt is {len(ids)} tokens and max_tokens is {request.max_tokens}: "
                f"{len(ids) + request.max_tokens} > the model's context of {self.context_length}",
                param="max_tokens",
                code="context_length_exceeded",
                fix="shorten the messages or lower max_tokens",
            )
        return prompt, ids

    def _run(self, ids: list[int], request: GenerationRequest, cancel: threading.Event,
             streamer: Any = None) -> list[int]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        sample = bool(request.temperature and request.temperature > 0)
        if request.seed is not None:
            torch.manual_seed(request.seed)
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            kwargs["temperature"] = request.temperature
            if request.top_p is not None:
                kwargs["top_p"] = request.top_p
        input_ids = torch.tensor([ids], device=self.device)
        try:
            with torch.inference_mode():
                out = self._model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=request.max_tokens,
                    eos_token_id=self._stop_ids,
                    pad_token_id=self._pinned.pad_token_id,
                    stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                    streamer=streamer,
                    **kwargs,
                )
        except Exception:
            if streamer is not None:
                streamer.end()
            raise
        return out[0, len(ids):].tolist()

    def _result(self, prompt: str, prompt_ids: list[int], new_ids: list[int],
                request: GenerationRequest) -> GenerationResult:
        stopped = bool(new_ids) and new_ids[-1] in self._stop_ids
        content = new_ids[:-1] if stopped else new_ids
        return GenerationResult(
            text=self._pinned.decode(content),
            finish_reason="stop" if stopped or len(new_ids) < request.max_tokens else "length",
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(new_ids),
            prompt=prompt,
        )

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        prompt, ids = self._prepare(request)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            new_ids = await loop.run_in_executor(self._executor, self._run, ids, request, cancel)
        finally:
            cancel.set()
        return self._result(prompt, ids, new_ids, request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str | GenerationResult]:
        from transformers import TextIteratorStreamer

        prompt, ids = self._prepare(request)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        streamer = TextIteratorStreamer(self._pinned.tokenizer, skip_prompt=True, skip_special_tokens=True)
        future = loop.run_in_executor(self._executor, self._run, ids, request, cancel, streamer)
        try:
            while True:
                piece = await loop.run_in_executor(None, next, streamer, _DONE)
                if piece is _DONE:
                    break
                if piece:
                    yield piece
            new_ids = await future
            yield self._result(prompt, ids, new_ids, request)
        finally:
            cancel.set()
            if not future.done():
                streamer.end()


def _has_tokenizer(folder: str) -> bool:
    path = Path(folder)
    return (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()
