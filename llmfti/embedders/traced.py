"""A sentence-transformers model's forward pass as one TorchScript graph: the agent's query encoder.

Encoding one short question with MiniLM is ~0.3 GFLOP, yet ``SentenceTransformer.encode`` takes ~14 ms of CPU
for it: most of that is Python dispatching ~100 small torch ops one by one, holding the GIL between them,
so the query-embedding thread also competes with the event loop and the search threads for the GIL. Traced
(``torch.jit.trace`` + ``torch.jit.freeze``), the same weights run as one graph in C++ with the GIL
released: measured in one run here, 15.7 -> 10.1 ms of CPU for one question, 5.7 -> 5.0 ms per question in
batches of 8, and two threads encoding at once went from 1.67x to 1.95x one thread's rate.

The whole module pipeline is traced (Transformer, Pooling, and whatever follows: Dense, WordWeights,
Normalize), with the model's own tokenization (``SentenceTransformer.preprocess``), and the result L2-normalised
as ``encode(normalize_embeddings=True)`` is. A trace records the ops one example ran, so before it is used it
must agree with the eager model on probe texts of other lengths and batch sizes (cosine >= 0.9999 each);
otherwise :func:`traced_encoder` answers ``None`` and the caller keeps the eager ``encode``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)
AGREEMENT = 0.9999
PROBES = (
    ["what?"],
    ["When did the Normans conquer England, and who led them?", "capital", "How do I roll back an index?"],
    ["a question " * 200],  # longer than the model's max_seq_length: truncated as encode() truncates
    [f"question number {i} about {'word ' * (i % 7)}" for i in range(17)],
)


def traced_encoder(model: Any) -> Callable[[Sequence[str]], np.ndarray] | None:
    """``texts -> L2-normalised float32 vectors`` equal to ``model.encode(texts, normalize_embeddings=True)``
    (``model``: a loaded ``SentenceTransformer``), run as a traced graph; ``None`` when it cannot be traced or
    disagrees with the eager model on :data:`PROBES`."""
    try:
        prepare = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers < 6: tokenize
        example = prepare(PROBES[1])
        keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in example]
        if keys[:2] != ["input_ids", "attention_mask"]:
            return None
        module = Pipeline(model, keys).eval()
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks recorded as constants: probed
            warnings.simplefilter("ignore", FutureWarning)  # transformers attributes the tracer walks over
            graph = torch.jit.freeze(torch.jit.trace(module, tuple(example[key] for key in keys),
                                                     check_trace=False, strict=False))
    except Exception as exc:  # noqa: BLE001 - any model the tracer cannot handle keeps the eager path
        log.warning("query encoder not traced (%s: %s); encoding eagerly", type(exc).__name__, exc)
        return None

    def encode(texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)
        features = prepare(list(texts))
        with torch.inference_mode():
            vectors = graph(*(features[key] for key in keys))
        return vectors.float().numpy()

    for probe in PROBES:
        eager = model.encode(probe, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        cosines = np.sum(encode(probe) * eager, axis=1)
        if float(cosines.min()) < AGREEMENT:
            log.warning("traced query encoder disagrees with the model (cosine %.6f on %d probe text(s)); "
                        "encoding eagerly", float(cosines.min()), len(probe))
            return None
    return encode


class Pipeline(torch.nn.Module):
    """A SentenceTransformer's modules on positional tensors (what ``torch.jit.trace`` takes), normalised."""

    def __init__(self, model: Any, keys: list[str]):
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, *tensors: Any) -> Any:
        embedding = self.model(dict(zip(self.keys, tensors, strict=True)))["sentence_embedding"]
        return torch.nn.functional.normalize(embedding, p=2.0, dim=1)
