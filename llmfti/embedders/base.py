"""The embedder protocol, its identity record, and the per-process cache of loaded models."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from llmfti.config import EmbedderSettings


@dataclass(frozen=True)
class EmbedderInfo:
    """What an index records about the embedder that built it, and checks on every open."""

    name: str
    dimension: int
    max_tokens: int  # content tokens per input, special tokens excluded
    tokenizer_fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Embedder(Protocol):
    info: EmbedderInfo

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        ...

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character spans of each text's tokens (no special tokens), in this model's tokenizer."""
        ...


_cache: dict[tuple[str, str], Embedder] = {}
_lock = threading.Lock()


def load_embedder(settings: EmbedderSettings) -> Embedder:
    """The embedder for ``settings``, loaded once per process."""
    key = (settings.model, settings.device)
    with _lock:
        if key not in _cache:
            from llmfti.embedders.sentence_transformer import SentenceTransformerEmbedder

            _cache[key] = SentenceTransformerEmbedder(settings)
        return _cache[key]
