"""The embedder protocol, its identity record, and the per-process cache of loaded models."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from llmfti.config import EmbedderSettings, Settings


def embedder_fingerprint(info: Any) -> str:
    """A short stable id of an embedder (name, dimension, max tokens, tokenizer fingerprint): what caches
    of its vectors and calibrations of its scores are keyed by. ``info``: an :class:`EmbedderInfo` or the
    dict an index records."""
    described = info.to_dict() if hasattr(info, "to_dict") else info
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EmbedderInfo:
    """What an index records about the embedder that built it, and checks on every open."""

    name: str
    dimension: int
    max_tokens: int  # content tokens per input, special tokens excluded
    tokenizer_fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class TokenEncoding:
    """One text's pooled vector and its per-token vectors, from one forward pass (late interaction).

    ``tokens``: one L2-normalised row per word piece the model read (special tokens excluded), float16 to
    halve what caches of them hold; ``pieces``: those word pieces (``"##ing"`` continues a word)."""

    vector: np.ndarray
    tokens: np.ndarray
    pieces: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return int(self.vector.nbytes + self.tokens.nbytes)


class Embedder(Protocol):
    info: EmbedderInfo

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """L2-normalised float32 vectors, one row per text."""
        ...

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character spans of each text's tokens (no special tokens), in this model's tokenizer."""
        ...

    # Optional (asymmetric models, a query tower): ``encode_queries(texts)``, the vectors of search queries where
    # they differ from ``encode``'s (passages, sentences). Callers use :func:`encode_queries`.

    # Optional (late interaction, :mod:`llmfti.token_match`): ``encode_tokens(texts) -> list[TokenEncoding]``,
    # the pooled vector equal to ``encode``'s plus the token vectors of the same forward pass. Callers check
    # ``hasattr(embedder, "encode_tokens")``: an embedder without it serves everything else.


def encode_queries(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Vectors of search queries: the embedder's ``encode_queries`` where it has one, else its ``encode``."""
    return getattr(embedder, "encode_queries", embedder.encode)(texts)


def query_encoder(embedder: Embedder, traced: bool = True) -> Callable[[Sequence[str]], np.ndarray]:
    """The encode the agent runs on queries: the embedder's traced graph when ``traced`` and it offers one
    (``agent.traced_query_encoder``; llmfti/embedders/traced.py), else its query encode (:func:`encode_queries`)."""
    if traced and hasattr(embedder, "query_encoder"):
        return embedder.query_encoder()
    return getattr(embedder, "encode_queries", embedder.encode)  # what encode_queries() calls


_cache: dict[tuple[str, str, str], Embedder] = {}
_lock = threading.Lock()


def load_embedder(settings: EmbedderSettings | Settings) -> Embedder:
    """The embedder for ``settings``, loaded once per process.

    Pass the whole :class:`~llmfti.config.Settings` to load registry embedder versions
    (``embedder.model: registry:NAME:vN`` or ``registry:NAME@ALIAS``): the registry lives under its data dir.
    """
    root = settings if hasattr(settings, "embedder") else None
    config: EmbedderSettings = root.embedder if root is not None else settings  # type: ignore[union-attr,assignment]
    name, path = config.model, None
    from llmfti.embedders.registry_embedder import is_registry_ref

    if is_registry_ref(name):
        from llmfti.embedders.registry_embedder import parse_ref, resolve_version
        from llmfti.errors import ConfigError

        if root is None:
            raise ConfigError(f"embedder {name!r} is a registry version, loaded with the embedder settings alone",
                              fix="call load_embedder(settings) with the whole Settings (the registry is under "
                                  "its data_dir)")
        mv = resolve_version(root, name)
        name, path = f"registry:{parse_ref(name).name}:v{mv.version}", str(mv.adapter_dir)
    key = (name, config.device, path or "")
    with _lock:
        if key not in _cache:
            from llmfti.embedders.sentence_transformer import SentenceTransformerEmbedder

            _cache[key] = SentenceTransformerEmbedder(config, name=name, path=path)
        return _cache[key]
