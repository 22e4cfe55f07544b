"""The generator protocol every backend implements, and the request/result types it uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk as the generator sees it (``n`` is its 1-based citation number)."""

    n: int
    chunk_id: str
    doc_id: str
    text: str
    score: float


@dataclass(frozen=True)
class GenerationRequest:
    """What a generator is asked: rendered messages, plus the question and passages they came from."""

    messages: Sequence[Mapping[str, str]]
    question: str
    passages: Sequence[Passage] = ()
    max_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: Sequence[str] = ()
    embed: Callable[[Sequence[str]], Awaitable[Sequence[Any]]] | None = field(default=None, compare=False)
    """The agent's embedder (texts -> vectors, off the event loop), for generators that compare meaning."""
    embed_tokens: Callable[[Sequence[str]], Awaitable[Sequence[Any]]] | None = field(default=None, compare=False)
    """texts -> :class:`~llmfti.embedders.base.TokenEncoding` (pooled + token vectors), for token matching."""
    abstain_below: float | None = None
    """Calibrated evidence under which a generator that can tell should answer "I don't know"."""
    abstention: Any = field(default=None, compare=False)
    """A calibrated :class:`llmfti.answer_calibration.AbstentionModel`; when set it decides, not abstain_below."""
    ranker: Any = field(default=None, compare=False)
    """A :class:`llmfti.sentence_ranker.SentenceRanker` that picks the answering sentences (extractive)."""


@dataclass
class GenerationResult:
    """A finished generation; token counts come from the generator's own tokenizer."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    prompt: str = ""
    cited: list[int] = field(default_factory=list)
    abstained: bool = False
    """The generator judged the passages not to answer the question and said so."""
    evidence: float | None = None
    """How well the best passage sentence matches the question (extractive; None when not measured)."""
    evidence_features: dict[str, float] | None = None
    """What the abstention decision weighed (extractive, with an embedder; answer_selection.EVIDENCE_FEATURES)."""
    candidates: list[tuple[str, list[float]]] | None = None
    """(sentence, ranker features) per candidate, when the request carried a ranker (evals fit rankers on it)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@runtime_checkable
class Generator(Protocol):
    """A text generator. Methods never block the event loop; models load in :meth:`start`."""

    backend: str
    model_id: str
    """The id clients send as ``model`` and ``/v1/models`` lists."""
    model_version: str
    """What the inference log records: a path and content hash, a registry version, an upstream name."""

    async def start(self) -> None:
        """Load the model / open clients (once, at service start-up)."""

    async def close(self) -> None:
        """Release what :meth:`start` acquired."""

    def ready(self) -> bool:
        """True once :meth:`start` succeeded."""

    def render_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The model's input text for ``messages`` (its chat template)."""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in this generator's tokenizer."""

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """The whole answer at once."""

    def stream(self, request: GenerationRequest) -> AsyncIterator[str | GenerationResult]:
        """Text deltas as they are produced, then one :class:`GenerationResult` for the whole answer."""


class StopMatcher:
    """Applies OpenAI ``stop`` strings to streamed text, holding back only a possible stop prefix."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Text safe to emit now; after a stop string matched, nothing more."""
        if self.stopped:
            return ""
        if not self.stops:
            return delta
        self.buffer += delta
        cut = min((i for i in (self.buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.buffer, self.stopped = self.buffer[:cut], "", True
            return out
        safe = len(self.buffer) - self.hold
        if safe <= 0:
            return ""
        out, self.buffer = self.buffer[:safe], self.buffer[safe:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out

    def apply(self, text: str) -> tuple[str, bool]:
        """(text cut at the first stop string, whether one was found) for a whole answer."""
        out = self.feed(text) + self.flush()
        return out, self.stopped
