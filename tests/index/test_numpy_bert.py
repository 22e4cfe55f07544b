"""The numpy MiniLM (llmfti/embedders/numpy_bert.py) is the same embedder as sentence-transformers: the same
identity record (so an index accepts it only where it accepts the full model), the same token spans, and
vectors at cosine >= 0.9999 on a few hundred varied texts (short, long past the 256-token limit, unicode,
empty, whitespace, code), encoded in padded batches."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np

from llmfti.config import load_settings
from llmfti.embedders.numpy_bert import NumpyBertEmbedder, model_folder, supports
from tests.conftest import SQUAD_DEV


def _texts() -> list[str]:
    data = json.loads(SQUAD_DEV.read_text(encoding="utf-8"))["data"]
    rng = random.Random(13)
    paragraphs = [p for article in data for p in article["paragraphs"]]
    picked = rng.sample(paragraphs, 80)
    questions = [qa["question"] for p in picked for qa in p["qas"][:2]]  # 160
    contexts = [p["context"] for p in picked[:40]]
    long = [" ".join(p["context"] for p in picked[i:i + 4]) for i in range(0, 40, 4)]  # > 256 tokens: truncated
    odd = ["", "   ", "\n\t", "a", "?", "Ünïcödé naïve café — “quotes” 東京 北京 🙂🚀", "ΑΒΓ δεζ ηθι",
           "def f(x):\n    return x ** 2  # code", "12345 67.89 1e-9 0xFF", "UPPER lower MiXeD", "word " * 300,
           "[CLS] [SEP] [PAD] [MASK] [UNK]", "e-mail: someone@example.org, url: https://example.org/a?b=c"]
    return questions + contexts + long + odd


def test_same_vectors_and_identity_as_sentence_transformers(embedder) -> None:
    import torch

    torch.set_num_threads(1)
    settings = load_settings().embedder
    light = NumpyBertEmbedder(settings, model_folder(settings))
    assert light.info == embedder.info  # name, dimension, max tokens, tokenizer fingerprint
    texts = _texts()
    assert len(texts) >= 200
    reference = embedder.encode(texts, batch_size=32)
    vectors = light.encode(texts, batch_size=16)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    cosines = np.sum(vectors * reference, axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= 0.9999, (texts[worst][:80], float(cosines[worst]))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one = light.encode([texts[0]])[0]  # alone (no padding) == in a batch
    assert float(one @ vectors[0]) >= 0.99999
    assert light.token_spans(texts[:50] + texts[-13:]) == embedder.token_spans(texts[:50] + texts[-13:])
    assert light.token_spans([]) == [] and light.encode([]).shape == (0, 384)


def test_only_the_shape_it_knows(tmp_path: Path) -> None:
    settings = load_settings().embedder
    folder = model_folder(settings)
    assert folder is not None and supports(folder)
    assert model_folder(settings.model_copy(update={"model": "registry:emb@production"})) is None
    assert model_folder(settings.model_copy(update={"model": str(tmp_path / "missing")})) is None
    copy = tmp_path / "cls-pooling"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(folder / "model.safetensors")
    assert supports(copy)
    pooling = copy / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.write_text(json.dumps(config | {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}))
    assert not supports(copy)  # a pooling it does not run: the full loader's job
