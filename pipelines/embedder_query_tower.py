"""Query tower: fine-tune the top layers of a copy of the encoder for queries; passages keep the frozen encoder.

``llmfti train-embedder --method query-tower``. The passages of an index are encoded by the base model (with the
index's IDF-weighted pooling, as the adapter recipe), once, and stay fixed. A copy of the transformer whose top
``layers`` encoder layers are trainable encodes the pseudo-queries; each query is scored, with a softmax at
``scale``, against every passage of the corpus (and every pair's positive): the exact full-corpus negatives that
an in-batch loss only samples, with nothing stale, because the passage side never changes. Passages of the
query's own document other than its positive are masked out (not negatives).

The result is one sentence-transformers model with a ``Router`` (``Router.for_query_document``): the ``query``
route runs the tuned copy, the ``document`` route (the default, what ``encode`` runs) the frozen base;
``encode_query`` / ``encode_document`` pick them (:meth:`llmfti.embedders.sentence_transformer
.SentenceTransformerEmbedder.encode_queries`). An asymmetric dual encoder in the sense of Dong et al., 2022
("Exploring Dual Encoder Architectures for Question Answering"); the training signal is the same label-free
pseudo-queries as the adapter's (:mod:`pipelines.embedder_pairs`).

Measured on SQuAD dev, dense only, all 10,570 questions over all 2,067 paragraphs, no question used for training
(``python -m benchmarks.embedder_adaptation --method query-tower --articles 48 --max-pairs 36000 --threads 2``,
2026-12-01): hit@5 0.864 -> **0.895 (+3.1 points)**, MRR@10 0.727 -> 0.769 (+4.2), hit@1 0.625 -> 0.675 (+4.9);
29,411 pairs, 800 steps of 128, 16 min of training on 2 CPU cores (~1.1 s a step: 3 layers, queries cut at 40
tokens). The adapter, its best setting: +1.75. Pilots on cached states (same split): 2 layers, 14,480 pairs, 400
steps: +1.9; 3 layers at lr 1e-4: 14,480 pairs +2.4, ~35,000 pairs +2.8 at 400 steps, +3.3 at 800, +3.3 at 1,200
(more distinct queries, less memorised; the gain stops growing after ~800 steps). Tuning the top layer of both
sides with a bank of stale passage vectors lost 1.3 points: the model learned to tell fresh vectors from stale
ones, the shortcut a frozen passage side rules out.

Serving cost: none per query (the agent traces the query route as it traces a plain model,
llmfti/embedders/traced.py); the model folder holds two transformers (~2 x 90 MB for MiniLM).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

from llmfti.embedders.sentence_transformer import routes
from llmfti.errors import InvalidInputError
from pipelines.embedder_pairs import Pair, StepBatches
from pipelines.encoder_optimizer import EncoderOptimizer, loss_summary


def fit_query_tower(model: Any, pairs: Sequence[Pair], corpus: Sequence[tuple[str, str]], *, layers: int,
                    steps: int, batch_size: int, learning_rate: float, scale: float, seed: int,
                    max_query_tokens: int, weight_decay: float = 0.01, warmup_ratio: float = 0.1,
                    on_step: Callable[[int, float], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """(the routed model, training metrics). ``model``: a sentence-transformers model ``[Transformer, ...]``
    (frozen, becomes the document route), or a query tower trained before (its document route stays, its query
    route is where this one starts: an index it embedded needs no new passage vectors); ``corpus``: ``(text,
    group)`` of the index's passages."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Router

    document, start = list(model), list(model)
    routed = routes(model)
    if routed is not None:
        document, start = list(routed["document"]), list(routed["query"])
        model = SentenceTransformer(modules=document, device=str(model.device))
    transformer = start[0]
    encoder_layers = _encoder_layers(transformer)
    if not 1 <= layers <= len(encoder_layers):
        raise InvalidInputError(f"tower_layers={layers} for an encoder of {len(encoder_layers)} layers",
                                expected=f"1 to {len(encoder_layers)}", fix="use the default 3")
    started = time.perf_counter()
    torch.manual_seed(seed)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    groups: dict[str, str] = {}
    for text, group in corpus:
        groups.setdefault(text, group)
    for p in pairs:
        groups.setdefault(p.positive, p.group)
        if p.negative:
            groups.setdefault(p.negative, "")
    texts = list(groups)
    row = {t: i for i, t in enumerate(texts)}
    with torch.no_grad():
        passages = torch.from_numpy(model.encode(texts, batch_size=64, normalize_embeddings=True,
                                                 convert_to_numpy=True, show_progress_bar=False))
    candidate_groups = [groups[t] for t in texts]
    encode_seconds = time.perf_counter() - started

    query = SentenceTransformer(modules=[copy.deepcopy(m) for m in start], device=str(model.device))
    for p in query.parameters():  # only the top layers learn (a loaded route comes with every weight trainable)
        p.requires_grad_(False)
    for layer in _encoder_layers(query[0])[-layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    query.max_seq_length = min(model.max_seq_length, max_query_tokens)
    optimizer = EncoderOptimizer((p for p in query.parameters() if p.requires_grad), steps=steps,
                                 learning_rate=learning_rate, weight_decay=weight_decay, warmup_ratio=warmup_ratio)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(candidate_groups):
        by_group.setdefault(g, []).append(i)

    plan = StepBatches(pairs, batch_size, seed, steps)
    query.train()
    try:
        for step, batch in enumerate(plan, start=1):
            features = {k: v.to(query.device) if hasattr(v, "to") else v
                        for k, v in query.preprocess([p.anchor for p in batch]).items()}
            vectors = F.normalize(query(features)["sentence_embedding"], dim=-1)
            logits = scale * vectors @ passages.T
            target = torch.tensor([row[p.positive] for p in batch])
            mask = torch.zeros_like(logits, dtype=torch.bool)
            for i, p in enumerate(batch):  # the query's own document's other passages are no negatives
                mask[i, by_group.get(p.group, [])] = True
            mask[torch.arange(len(batch)), target] = False
            loss = optimizer.step(F.cross_entropy(logits.masked_fill(mask, float("-inf")), target))
            if on_step is not None:
                on_step(step, loss)
    finally:
        query.eval()
    for p in query.parameters():
        p.requires_grad_(False)
    query.max_seq_length = model.max_seq_length  # served queries are read as far as passages are
    routed = SentenceTransformer(
        modules=[Router.for_query_document(query_modules=list(query), document_modules=document)],
        device=str(model.device))
    metrics = {"epochs_started": plan.epochs, "encode_seconds": round(encode_seconds, 2),
               "train_seconds": round(time.perf_counter() - started, 2), "candidates": len(texts),
               **loss_summary(optimizer.curve)}
    return routed, metrics


def is_routed(model: Any) -> bool:
    """Whether a sentence-transformers model has a query and a document route (a query tower)."""
    return routes(model) is not None


def encode_model_queries(model: Any, texts: Sequence[str], **kwargs: Any) -> Any:
    """``model.encode`` of search queries: by the query route of a routed model (plain ``encode`` otherwise, as
    the index's embedder encodes them: no query prompt the model's config may name)."""
    return model.encode_query(list(texts), **kwargs) if is_routed(model) else model.encode(list(texts), **kwargs)


def _encoder_layers(transformer: Any) -> Any:
    """The transformer blocks of a sentence-transformers ``Transformer`` module (BERT-style encoders)."""
    encoder = getattr(transformer.auto_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise InvalidInputError(f"the query tower needs a BERT-style encoder (encoder.layer), not "
                                f"{type(transformer.auto_model).__name__}", expected="e.g. MiniLM, BERT, BGE",
                                fix="use --method adapter for this base model")
    return layers
