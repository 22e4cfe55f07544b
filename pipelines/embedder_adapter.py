"""Corpus adapter: a residual linear map on top of a frozen embedder, fitted to an index's own text.

The default adaptation recipe of ``llmfti train-embedder`` (``method="adapter"``). The transformer is
frozen. Its mean pooling first becomes a weighted mean, each token weighted by its IDF over the index's
chunks (:func:`idf_word_weights`: sentence-transformers' own ``WordWeights`` module, a corpus statistic,
not trained), so the rare words a question shares with its passage count for more. Every pair text is then
encoded once, and a linear map ``z -> normalize(z + z W + b)`` (``W = 0, b = 0`` at the start: the
identity) is fitted with MultipleNegativesRankingLoss, each query scored against up to ``corpus_negatives``
of the pairs' passages (every other chunk is a negative, not only the batch's), with an L2 penalty on
``(W, b)`` that keeps the map near the identity. The result is the base model with ``WordWeights`` before
its pooling and a ``Dense`` (identity activation) + ``Normalize`` appended: a plain sentence-transformers
model, applied to queries and passages alike. The pairs are pseudo-queries made from one sentence of a
chunk -> the whole chunk (:mod:`pipelines.embedder_pairs`).

Measured (``python -m benchmarks.embedder_adaptation``, SQuAD dev, dense, no question used for training):
4 articles hit@5 +2.0 points, MRR@10 +4.6, hit@1 +5.7; 4 other articles +2.2, +4.2, +5.3; 12 articles +2.7,
+3.7, +4.4 (the recipe before this one, inverse cloze + in-batch negatives + plain pooling: +1.7, +2.8, +3.4;
+1.4, +2.0, +2.4 and +1.3, +1.8, +2.1); the
whole dev set (2,067 paragraphs) +1.0, +1.1, +1.2 with 4,000 pairs, +1.5, +1.7, +1.8 with 16,000 pairs and 800
steps. The gain shrinks as a fixed pair budget spreads thinner, so the budget now grows with the index by default
(:func:`pipelines.train_embedder.pairs_for`: 8 per chunk, 4,000 to 16,000; steps one per 20 pairs).
Every rule comes from the index's own text (token IDF, common words, sentences), so nothing is SQuAD's.

Why not fine-tune the whole transformer here: all-MiniLM-L6-v2 was trained on about a billion pairs; a full
fine-tuning step of 32 pairs takes ~20 s on the shared CPU, so a proper run (hundreds of steps at lr ~2e-5)
is a GPU's job (``--method full --device cuda``); the adapter keeps what the encoder knows, costs one
encoding pass over the pairs, then seconds of training on 384-d vectors. Pilots that lost (see the
benchmark's docstring): mined hard negatives, learned token weights, low-rank and MLP maps, whitening, and a
GPL-style distillation of the BM25 + dense hybrid, which added nothing over the contrastive loss. The map is
the linear "embedding adapter" of retrieval toolkits (e.g. LlamaIndex's adapter fine-tuning, trained there on
generated questions); here its training signal is label-free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llmfti.errors import InvalidInputError
from pipelines.embedder_pairs import Pair, StepBatches
from pipelines.encoder_optimizer import loss_summary


@dataclass(frozen=True)
class AdapterFit:
    """What fitting the adapter produced: the map's weight (``out x in``, for ``Dense``), bias and curve."""

    weight: Any  # torch.Tensor: I + W transposed
    bias: Any
    metrics: dict[str, Any]


def encode_texts(model: Any, texts: Sequence[str], batch_size: int = 64) -> Any:
    """Normalised float32 vectors of ``texts`` by the frozen ``model``, each distinct text encoded once."""
    import numpy as np

    unique = list(dict.fromkeys(texts))
    vectors = np.asarray(model.encode(unique, batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
    row = {t: i for i, t in enumerate(unique)}
    return vectors[[row[t] for t in texts]]


def fit_adapter(model: Any, pairs: Sequence[Pair], *, steps: int, batch_size: int, learning_rate: float,
                l2: float, scale: float, seed: int, corpus_negatives: int = 0,
                on_step: Callable[[int, float], None] | None = None) -> AdapterFit:
    """Encode ``pairs`` with the frozen ``model`` and fit the residual linear map (see the module doc).

    ``corpus_negatives`` > 0: each anchor is scored against up to that many distinct positives of the
    whole pair set (its batch's among them), not only its batch's: every other passage is a negative."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    started = time.perf_counter()
    texts = [p.anchor for p in pairs] + [p.positive for p in pairs] + [p.negative for p in pairs if p.negative]
    vectors = torch.from_numpy(encode_texts(model, texts))
    n = len(pairs)
    anchors, positives = vectors[:n], vectors[n:2 * n]
    first: dict[str, int] = {}  # each distinct positive (a passage) -> its first pair's row
    for i, p in enumerate(pairs):
        first.setdefault(p.positive, i)
    distinct = {t: k for k, t in enumerate(first)}
    target = torch.tensor([distinct[p.positive] for p in pairs])
    corpus = positives[torch.tensor(list(first.values()))] if corpus_negatives > 0 else None
    sampler = torch.Generator().manual_seed(seed)
    negative_row, next_row = {}, 2 * n
    for i, p in enumerate(pairs):
        if p.negative:
            negative_row[i], next_row = next_row, next_row + 1
    encode_seconds = time.perf_counter() - started

    dim = vectors.shape[1]
    torch.manual_seed(seed)
    delta = torch.nn.Parameter(torch.zeros(dim, dim))
    bias = torch.nn.Parameter(torch.zeros(dim))
    optimizer = torch.optim.Adam([delta, bias], lr=learning_rate)

    def mapped(z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z + z @ delta + bias, dim=-1)

    position = {id(p): i for i, p in enumerate(pairs)}
    curve: list[float] = []
    plan = StepBatches(pairs, batch_size, seed, steps)
    for step, batch in enumerate(plan, start=1):
        rows = torch.tensor([position[id(p)] for p in batch])
        if corpus is None:
            candidates, labels = mapped(positives[rows]), torch.arange(len(batch))
        else:
            candidates, labels = _corpus_candidates(corpus, target[rows], corpus_negatives, sampler)
            candidates = mapped(candidates)
        negatives = [negative_row[int(r)] for r in rows if int(r) in negative_row]
        if negatives:
            candidates = torch.cat([candidates, mapped(vectors[torch.tensor(negatives)])])
        logits = scale * mapped(anchors[rows]) @ candidates.T
        loss = F.cross_entropy(logits, labels) + l2 * (delta.square().sum() + bias.square().sum())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        curve.append(round(float(loss.detach()), 4))
        if on_step is not None:
            on_step(step, curve[-1])
    weight = (torch.eye(dim) + delta.detach()).T.contiguous()
    metrics = {"epochs_started": plan.epochs, "encode_seconds": round(encode_seconds, 2),
               "train_seconds": round(time.perf_counter() - started, 2), **loss_summary(curve),
               "adapter_delta_norm": round(float(delta.detach().norm()), 4)}
    return AdapterFit(weight, bias.detach().clone(), metrics)


def _corpus_candidates(corpus: Any, wanted: Any, limit: int, generator: Any) -> tuple[Any, Any]:
    """(candidate rows of ``corpus``: ``wanted``'s and a random sample of the others, up to ``limit``; each
    wanted row's position among them)."""
    import torch

    if len(corpus) <= limit:
        return corpus, wanted
    keep = torch.unique(wanted)
    others = torch.ones(len(corpus), dtype=torch.bool)
    others[keep] = False
    pool = others.nonzero().squeeze(1)
    extra = pool[torch.randperm(len(pool), generator=generator)[:max(0, limit - len(keep))]]
    rows = torch.cat([keep, extra])
    where = {int(r): i for i, r in enumerate(rows)}
    return corpus[rows], torch.tensor([where[int(w)] for w in wanted])


def idf_word_weights(model: Any, texts: Sequence[str], alpha: float = 1.0) -> Any:
    """A ``WordWeights`` module weighting each token by its IDF over ``texts`` (the index's chunks) to the
    power ``alpha``: ``log((N + 1) / (df + 1)) + 1``; a token no chunk holds gets the largest weight, the
    [CLS]/[SEP]-like special tokens the mean of the seen ones."""
    import math

    from sentence_transformers.sentence_transformer.modules import WordWeights

    tokenizer = model.tokenizer
    df: dict[int, int] = {}
    for ids in tokenizer(list(texts), add_special_tokens=False, truncation=True,
                         max_length=model.max_seq_length)["input_ids"]:  # the tokens the model reads
        for token in set(ids):
            df[token] = df.get(token, 0) + 1
    n = len(texts)
    vocab = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    weights = {vocab[i]: (math.log((n + 1) / (c + 1)) + 1) ** alpha for i, c in df.items() if i < len(vocab)}
    mean = sum(weights.values()) / max(1, len(weights))
    for special in tokenizer.all_special_tokens:
        weights[special] = mean
    return WordWeights(vocab, weights, unknown_word_weight=(math.log(n + 1) + 1) ** alpha)


def insert_word_weights(model: Any, module: Any) -> Any:
    """``model`` with ``module`` between its transformer and its pooling (mean pooling becomes weighted)."""
    from sentence_transformers.sentence_transformer.modules import Pooling

    if not isinstance(model[1], Pooling) or model[1].pooling_mode != "mean":
        raise InvalidInputError(f"token weights need a mean-pooling model, not {type(model[1]).__name__}",
                                expected="transformer -> mean pooling", fix="set idf_alpha=0 for this base model")
    model.insert(1, module.to(model.device))
    return model


def attach_adapter(model: Any, fitted: AdapterFit) -> Any:
    """``model`` with the fitted map appended as ``Dense`` (identity activation) + ``Normalize`` modules."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    dim = fitted.weight.shape[0]
    model.append(Dense(dim, dim, bias=True, activation_function=torch.nn.Identity(),
                       init_weight=fitted.weight, init_bias=fitted.bias).to(model.device))
    model.append(Normalize())
    model.eval()
    return model
