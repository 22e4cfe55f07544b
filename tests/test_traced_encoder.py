"""The agent's traced query encoder (llmfti/embedders/traced.py) on the real MiniLM: the same vectors as the
model's ``encode`` for every batch shape, also for an adapted model (IDF word weights + linear adapter, what
``llmfti train-embedder`` registers), and the eager ``encode`` kept whenever a trace cannot be trusted."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from llmfti.config import load_settings
from llmfti.embedders import traced
from llmfti.embedders.base import load_embedder
from llmfti.embedders.sentence_transformer import resolve_model_path

TEXTS = ["Which NFL team represented the AFC at Super Bowl 50?", "x", "  spaced   out  question ",
         "Où est la gare ?", "How do I roll back an index? " * 40, "what is 2 + 2", "a", "Normans"]


def _agree(encode, model, texts: list[str]) -> float:
    eager = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    got = encode(texts)
    assert got.dtype == np.float32 and got.shape == eager.shape
    return float(np.min(np.sum(got * eager, axis=1)))


def test_the_traced_encoder_gives_the_models_vectors_for_every_batch_shape() -> None:
    embedder = load_embedder(load_settings())
    encode = embedder.query_encoder()
    assert encode != embedder.encode  # MiniLM traces
    for n in (1, 2, 3, 8):
        for start in range(0, len(TEXTS) - n + 1, max(1, n)):
            assert _agree(encode, embedder._model, TEXTS[start:start + n]) >= traced.AGREEMENT
    assert encode([]).shape == (0, embedder.info.dimension)


def test_an_adapted_model_with_word_weights_and_a_linear_adapter_traces_too() -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    from pipelines.embedder_adapter import AdapterFit, attach_adapter, idf_word_weights, insert_word_weights

    model = SentenceTransformer(resolve_model_path(load_settings().embedder.model), device="cpu")
    insert_word_weights(model, idf_word_weights(model, TEXTS))
    generator = torch.Generator().manual_seed(0)
    weight = torch.eye(384) + 0.05 * torch.randn(384, 384, generator=generator)
    attach_adapter(model, AdapterFit(weight=weight, bias=0.01 * torch.randn(384, generator=generator), metrics={}))
    encode = traced.traced_encoder(model)
    assert encode is not None
    assert _agree(encode, model, TEXTS[:5]) >= traced.AGREEMENT


def test_a_trace_that_disagrees_or_fails_keeps_the_eager_encode(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    embedder = load_embedder(load_settings())
    monkeypatch.setattr(traced, "AGREEMENT", 1.5)  # no cosine reaches it: every probe disagrees
    with caplog.at_level(logging.WARNING, logger="llmfti.embedders.traced"):
        assert traced.traced_encoder(embedder._model) is None
        assert embedder.query_encoder() == embedder.encode
    assert "disagrees with the model" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llmfti.embedders.traced"):
        assert traced.traced_encoder(object()) is None  # not a model at all
    assert "not traced" in caplog.text
