"""Training pipeline: fine-tune the embedder on pairs from an index (and labels where they exist).

Reads the chunks of a named index version (the feature store), makes training pairs
(:mod:`pipelines.embedder_pairs`: self-supervised from the text itself, plus labelled pairs,
qrels and positive feedback when given), adapts the index's embedder with
``MultipleNegativesRankingLoss`` (the adapter: against the corpus' other chunks; full: in-batch
negatives; optionally one mined hard negative per pair), and registers the result as an embedder
version of the model registry with its lineage: base model, index + version, pair counts per source,
objective, hyper-parameters, and a label-free held-out score (MRR@10 of held-out pairs, before and after).

Three methods: ``adapter`` (the default) freezes the encoder and fits a residual linear map on its output
(:mod:`pipelines.embedder_adapter`: no forgetting of what the base learned, seconds of training on a
CPU, measured better on SQuAD dev); ``query-tower`` fine-tunes the top layers of a copy of the encoder for
queries only, against the frozen vectors of every passage (:mod:`pipelines.embedder_query_tower`: the larger
gain, minutes to tens of minutes on a CPU); ``full`` fine-tunes every weight (a GPU's job; measured worse
on CPU-sized runs). All weight the mean pooling by the index's token IDF (``idf_alpha``; 0: plain mean).
A plain loop over the loss, not ``SentenceTransformerTrainer``: bounded by ``max_steps`` and
``max_pairs``, one torch thread by default (a loaded CPU machine), nothing written but the run folder.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmfti.config import Settings
from llmfti.errors import InvalidInputError, NotFoundError
from llmfti.tracing import span
from pipelines.embedder_pairs import (
    DEFAULT_OBJECTIVES,
    Pair,
    PairConfig,
    Passage,
    StepBatches,
    corpus_pairs,
    feedback_pairs,
    file_pairs,
    qrels_pairs,
)
from pipelines.encoder_optimizer import EncoderOptimizer, loss_summary

DEFAULT_MODEL_NAME = "embedder"
OBJECTIVE = "MultipleNegativesRankingLoss (in-batch negatives)"
METHODS = ("adapter", "query-tower", "full")
# per method: (max_steps, batch_size, learning_rate) when not given
METHOD_DEFAULTS = {"adapter": (400, 64, 3e-4), "query-tower": (800, 128, 1e-4), "full": (100, 32, 2e-5)}


PAIRS_PER_CHUNK, MIN_PAIRS, MAX_PAIRS = 8, 4000, 16000
TOWER_PAIRS_PER_CHUNK, TOWER_MAX_PAIRS = 16, 64000


def pairs_for(chunks: int, method: str = "adapter") -> int:
    """Default self-supervised pairs for an index of ``chunks``: 8 per chunk, 4,000 to 16,000 (the query tower: 16
    per chunk, up to 64,000). SQuAD dev (2,250 chunks), dense hit@5 gain: adapter, 4,000 pairs / 400 steps +1.0
    point, 16,000 / 800 steps +1.5; query tower at 400 steps, 14,480 pairs +2.4, 35,200 +2.8
    (benchmarks/embedder_adaptation.py): a fixed budget spreads thinner as the corpus grows, and the tower, which
    sees every query many times, memorises a small one."""
    per_chunk, most = (TOWER_PAIRS_PER_CHUNK, TOWER_MAX_PAIRS) if method == "query-tower" else (PAIRS_PER_CHUNK,
                                                                                               MAX_PAIRS)
    return min(most, max(MIN_PAIRS, per_chunk * chunks))


def steps_for(method: str, pairs: int | None) -> int:
    """Default optimizer steps: the adapter one per 20 pairs (at least 400); the query tower 800; full 100."""
    default = METHOD_DEFAULTS[method][0]
    return max(default, (pairs or 0) // 20) if method == "adapter" else default


@dataclass(frozen=True)
class EmbedderTrainConfig:
    """Hyper-parameters of one embedder fine-tuning run (recorded in the registry)."""

    method: str = "adapter"  # adapter: frozen encoder + residual linear map; query-tower; full: every weight
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES  # pseudo-queries -> whole passage, + title -> first chunk
    max_pairs: int | None = None  # self-supervised pairs (labelled ones come on top); None: pairs_for(chunks)
    max_steps: int | None = None  # None: adapter one per 20 pairs, at least 400 (steps_for); full 100
    batch_size: int | None = None
    learning_rate: float | None = None
    adapter_l2: float = 0.03  # adapter: L2 penalty on (W, b), i.e. on the distance from the identity map
    corpus_negatives: int = 4096  # adapter: every query scored against up to this many of the pairs' passages
    idf_alpha: float = 1.0  # mean pooling weighted by the index's own token IDF ** alpha (0: plain mean)
    tower_layers: int = 3  # query-tower: the encoder's top layers tuned for queries
    max_query_tokens: int = 40  # query-tower: training queries cut here (a question is short; batches stay small)
    warmup_ratio: float = 0.1  # full and query-tower
    weight_decay: float = 0.01
    max_seq_length: int = 128  # full only (training inputs); the adapter encodes at the base's own limit
    scale: float = 20.0  # MNRL's inverse temperature
    ict_keep: float = 0.5  # the sentence stays in its passage half the time (pilot: better than 0.1 and 0)
    hard_negatives: bool = False  # one mined negative per pair: the base model's best passage of another document
    heldout: int = 128  # self-supervised pairs held out for the before/after score (never trained on)
    threads: int = 1
    device: str = "cpu"
    seed: int = 13

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"unknown method {self.method!r}", expected=f"one of {list(METHODS)}",
                                    fix="use adapter (default), query-tower or full")
        _, batch_size, learning_rate = METHOD_DEFAULTS[self.method]
        for name, value in (("batch_size", batch_size), ("learning_rate", learning_rate)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.max_steps is None and (self.method != "adapter" or self.max_pairs is not None):
            object.__setattr__(self, "max_steps", steps_for(self.method, self.max_pairs))  # adapter: see sized_for
        for name in ("adapter_l2", "corpus_negatives", "idf_alpha"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name}={getattr(self, name)} is negative", expected=">= 0 (0: off)",
                                        fix=f"use the default {getattr(EmbedderTrainConfig, name)}")
        for name, low in (("max_pairs", 2), ("max_steps", 1), ("batch_size", 2), ("threads", 1), ("heldout", 0),
                          ("max_seq_length", 8), ("tower_layers", 1), ("max_query_tokens", 4)):
            if getattr(self, name) is not None and getattr(self, name) < low:
                raise InvalidInputError(f"{name}={getattr(self, name)} is too small", expected=f">= {low}",
                                        fix=f"raise {name}")
        if not 0 < self.learning_rate < 1:
            raise InvalidInputError(f"learning_rate={self.learning_rate}", expected="0 < learning_rate < 1",
                                    fix="use e.g. 2e-5")

    def sized_for(self, chunks: int) -> EmbedderTrainConfig:
        """This config with the pair budget left open filled in for ``chunks`` (the adapter's steps follow it)."""
        return self if self.max_pairs is not None else replace(self, max_pairs=pairs_for(chunks, self.method))

    def pair_config(self) -> PairConfig:
        return PairConfig(objectives=tuple(self.objectives), max_pairs=self.max_pairs + self.heldout,
                          ict_keep=self.ict_keep, seed=self.seed)


@dataclass(frozen=True)
class LabelledSources:
    """Labelled pairs to add: a pairs JSONL, BEIR qrels (+ queries), positive feedback of the log."""

    pairs_file: Path | None = None
    queries_file: Path | None = None
    qrels_file: Path | None = None
    feedback: bool = False


@dataclass
class EmbedderRun:
    run_dir: Path
    model_dir: Path
    base: str
    index: str
    index_version: int
    pair_counts: dict[str, int]
    pairs_sha256: str
    config: EmbedderTrainConfig
    metrics: dict[str, Any] = field(default_factory=dict)


# -- data --------------------------------------------------------------------------------------

def read_passages(settings: Settings, index: str, version: int | str | None = None,
                  ) -> tuple[list[Passage], int, str, Any]:
    """(chunks of ``index`` at ``version`` (default: newest published), that version, the name of the embedder
    that built it, its vectors).

    Each version is read as it was built, with the embedder its own record names: a version from before a
    re-embedding (``index build --embedder registry:...``) is read with the embedder that filled it, whatever the
    newest version or the settings use."""
    import numpy as np

    from llmfti.embedders.index_pairing import open_as_built
    from llmfti.index import VectorIndex

    if not VectorIndex.exists(settings, index):
        raise NotFoundError(f"index {index!r} does not exist under {settings.data_dir}",
                            fix=f"build it first: llmfti index build PATH --index {index}")
    newest = open_as_built(settings, index)
    number = newest.version if version is None else newest.resolve_version(version)  # unknown: names the versions
    idx = newest if number == newest.version else open_as_built(settings, index, number)
    table = idx._at(number).search().select(["chunk_id", "doc_id", "title", "text", "metadata", "tenant",
                                             "embedding"]).limit(None).to_arrow()
    passages = []
    for cid, doc, title, text, meta, tenant in zip(*(table.column(c).to_pylist() for c in (
            "chunk_id", "doc_id", "title", "text", "metadata", "tenant")), strict=True):
        position = json.loads(meta or "{}").get("chunk_index", 0)
        passages.append(Passage(cid, f"{tenant}/{doc}", title or "", text, position))
    vectors = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32) if passages else None
    if not passages:
        raise InvalidInputError(f"index {index!r} version {number} holds no chunks", expected="a built index",
                                fix="build it from documents first")
    return passages, number, idx.info["name"], vectors


def gather_pairs(settings: Settings, passages: list[Passage], config: EmbedderTrainConfig,
                 labelled: LabelledSources) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, held-out self-supervised pairs)."""
    made = corpus_pairs(passages, config.pair_config())
    held = min(config.heldout, len(made) // 4)  # a small index keeps most of its pairs for training
    heldout, train = made[:held], made[held:]
    if labelled.pairs_file is not None:
        train += file_pairs(labelled.pairs_file)
    if labelled.qrels_file is not None or labelled.queries_file is not None:
        if labelled.qrels_file is None or labelled.queries_file is None:
            raise InvalidInputError("qrels need both a queries file and a qrels file", expected="both or neither",
                                    fix="pass --queries and --qrels together")
        train += qrels_pairs(labelled.queries_file, labelled.qrels_file, passages)
    if labelled.feedback:
        train += feedback_pairs(_positive_feedback(settings), passages)
    if len(train) < 2:
        raise InvalidInputError(f"only {len(train)} training pair(s) could be made from {len(passages)} chunks",
                                expected="at least 2 (in-batch negatives need a batch)",
                                fix="index more text, or add labelled pairs with --pairs")
    return train, heldout


def _positive_feedback(settings: Settings) -> list[dict[str, Any]]:
    """Positively rated, drained requests: their query and the chunks their answer cited ([n] markers)."""
    import re

    from llmfti.lance import connect, table_names

    db = connect(settings)
    names = table_names(db)
    if settings.agent.feedback_table not in names or settings.agent.log_table not in names:
        return []
    good = {r["request_id"] for r in db.open_table(settings.agent.feedback_table).search().select(
        ["request_id", "rating"]).limit(None).to_list() if r["rating"] == 1}
    out = []
    for r in db.open_table(settings.agent.log_table).search().select(
            ["request_id", "query", "answer", "retrieved_chunk_ids"]).limit(None).to_list():
        if r["request_id"] not in good or not r["query"] or not r["retrieved_chunk_ids"]:
            continue
        ids = r["retrieved_chunk_ids"]
        cited = [ids[int(n) - 1] for n in re.findall(r"\[(\d+)\]", r["answer"] or "") if 0 < int(n) <= len(ids)]
        out.append({"question": r["query"], "chunk_ids": list(dict.fromkeys(cited)) or ids[:1]})
    return out


def mine_hard_negatives(model: Any, pairs: list[Pair], passages: list[Passage], vectors: Any) -> list[Pair]:
    """Each pair gets the base model's best-ranked passage of another document as its negative."""
    import numpy as np

    from pipelines.embedder_query_tower import encode_model_queries

    anchors = encode_model_queries(model, [p.anchor for p in pairs], batch_size=64, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
    scores = np.asarray(anchors, dtype=np.float32) @ vectors.T
    out = []
    for pair, row in zip(pairs, scores, strict=True):
        negative = next((passages[j].text for j in np.argsort(-row)[:20] if passages[j].doc_id != pair.group
                         and passages[j].text not in pair.positive and pair.positive not in passages[j].text), None)
        out.append(replace(pair, negative=negative) if pair.negative is None else pair)
    return out


# -- model -------------------------------------------------------------------------------------

def load_base(settings: Settings, base: str, device: str) -> tuple[Any, str]:
    """(sentence-transformers model, its folder) behind embedder name ``base`` (packaged, path, registry version)."""
    from sentence_transformers import SentenceTransformer

    from llmfti.embedders.registry_embedder import is_registry_ref, resolve_version
    from llmfti.embedders.sentence_transformer import resolve_model_path

    path = str(resolve_version(settings, base).adapter_dir) if is_registry_ref(base) else resolve_model_path(base)
    return SentenceTransformer(path, device=device), path


def heldout_mrr(model: Any, pairs: list[Pair], k: int = 10) -> float | None:
    """MRR@k of each held-out anchor against all held-out positives (label-free sanity score)."""
    import numpy as np

    from pipelines.embedder_query_tower import encode_model_queries

    if len(pairs) < 2:
        return None
    encode = {"normalize_embeddings": True, "convert_to_numpy": True, "show_progress_bar": False, "batch_size": 64}
    a = np.asarray(encode_model_queries(model, [p.anchor for p in pairs], **encode))
    b = np.asarray(model.encode([p.positive for p in pairs], **encode))
    ranks = (a @ b.T > np.diag(a @ b.T)[:, None]).sum(axis=1) + 1
    return round(float(np.mean([1.0 / r if r <= k else 0.0 for r in ranks])), 4)


def adapt(model: Any, pairs: list[Pair], config: EmbedderTrainConfig, corpus: list[Passage] | None = None,
          on_step: Callable[[int, float], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Adapt ``model`` on ``pairs`` by ``config.method``: (the adapted model, the training metrics). The adapter
    and full fine-tuning change ``model`` in place; the query tower returns a new, routed model.

    ``corpus``: the index's chunks, whose token IDF weights the pooling (``config.idf_alpha`` > 0; default: the
    pairs' distinct positives) and whose frozen vectors the query tower scores against."""
    from pipelines.embedder_adapter import attach_adapter, fit_adapter, idf_word_weights, insert_word_weights
    from pipelines.embedder_query_tower import is_routed

    corpus = corpus or [Passage(f"pair-{i}", p.group, "", p.positive) for i, p in enumerate(pairs)]
    if is_routed(model):
        if config.method != "query-tower":
            raise InvalidInputError(f"the base is a query-tower embedder (a query and a document route); "
                                    f"--method {config.method} adapts a single-route model",
                                    expected="--method query-tower to go on from it",
                                    fix="use --method query-tower, or --base the embedder the tower was trained from")
        return _query_tower(model, pairs, config, corpus, on_step)  # its routes keep their IDF weights
    weighted = any(type(m).__name__ == "WordWeights" for m in model)  # a base adapted before keeps its weights
    if config.idf_alpha > 0 and not weighted:
        weights = idf_word_weights(model, list(dict.fromkeys(p.text for p in corpus)), config.idf_alpha)
        insert_word_weights(model, weights)
    for module in model:
        if type(module).__name__ == "WordWeights":
            module.emb_layer.weight.requires_grad_(False)  # a corpus statistic, not trained
    if config.method == "full":
        return model, fit(model, pairs, config, on_step)
    if config.method == "query-tower":
        return _query_tower(model, pairs, config, corpus, on_step)
    fitted = fit_adapter(model, pairs, steps=config.max_steps, batch_size=config.batch_size,
                         learning_rate=config.learning_rate, l2=config.adapter_l2, scale=config.scale,
                         seed=config.seed, corpus_negatives=config.corpus_negatives, on_step=on_step)
    attach_adapter(model, fitted)
    return model, fitted.metrics


def _query_tower(model: Any, pairs: list[Pair], config: EmbedderTrainConfig, corpus: list[Passage],
                 on_step: Callable[[int, float], None] | None) -> tuple[Any, dict[str, Any]]:
    from pipelines.embedder_query_tower import fit_query_tower

    return fit_query_tower(model, pairs, [(p.text, p.doc_id) for p in corpus], layers=config.tower_layers,
                           steps=config.max_steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                           scale=config.scale, seed=config.seed, max_query_tokens=config.max_query_tokens,
                           weight_decay=config.weight_decay, warmup_ratio=config.warmup_ratio, on_step=on_step)


def fit(model: Any, pairs: list[Pair], config: EmbedderTrainConfig,
        on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Full fine-tuning: MultipleNegativesRankingLoss over batches with one pair per document; returns the loss
    curve."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(config.seed)
    loss_fn = MultipleNegativesRankingLoss(model, scale=config.scale)
    optimizer = EncoderOptimizer((p for p in model.parameters() if p.requires_grad), steps=config.max_steps,
                                 learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                                 warmup_ratio=config.warmup_ratio)
    saved_length = model.max_seq_length
    model.max_seq_length = min(saved_length, config.max_seq_length)
    started = time.perf_counter()
    plan = StepBatches(pairs, config.batch_size, config.seed, config.max_steps)
    model.train()
    try:
        for step, batch in enumerate(plan, start=1):
            columns = [[p.anchor for p in batch], [p.positive for p in batch]]
            if all(p.negative for p in batch):
                columns.append([p.negative for p in batch])
            features = [{k: v.to(model.device) if hasattr(v, "to") else v
                         for k, v in model.preprocess(c).items()} for c in columns]
            loss = optimizer.step(loss_fn(features, labels=None))
            if on_step is not None:
                on_step(step, loss)
    finally:
        model.max_seq_length = saved_length  # the saved model keeps the base's limit (same chunking, same record)
        model.eval()
    seconds = time.perf_counter() - started
    return {"epochs_started": plan.epochs, "train_seconds": round(seconds, 2), **loss_summary(optimizer.curve)}


# -- the pipeline --------------------------------------------------------------------------------

def train_embedder(settings: Settings, *, index: str | None = None, index_version: int | str | None = None,
                   base: str | None = None, config: EmbedderTrainConfig | None = None,
                   labelled: LabelledSources | None = None, run_dir: Path | None = None) -> EmbedderRun:
    """Make pairs from ``index`` at ``index_version`` (default: newest), fine-tune ``base`` (default: the embedder
    that built that version, as its record names it), save to ``run_dir``."""
    import torch

    config = config or EmbedderTrainConfig()
    labelled = labelled or LabelledSources()
    name = index or settings.index.name
    torch.set_num_threads(config.threads)
    with span("train_embedder.prepare", index=name) as step:
        passages, number, recorded, vectors = read_passages(settings, name, index_version)
        config = config.sized_for(len(passages))
        base = base or recorded
        train, heldout = gather_pairs(settings, passages, config, labelled)
        step.set(pairs=len(train), heldout=len(heldout))
    run_dir = Path(run_dir or Path(settings.data_dir) / "train_runs" / f"embedder-{datetime.now(UTC):%Y%m%dT%H%M%S}")
    run_dir.mkdir(parents=True, exist_ok=True)
    with span("train_embedder.load", base=base):
        model, base_path = load_base(settings, base, config.device)
    if config.hard_negatives:
        if base != recorded:
            raise InvalidInputError(f"hard negatives are mined with the vectors of {name}@v{number}, made by "
                                    f"{recorded}, not by {base}",
                                    expected="--base left at the embedder that built the version read",
                                    fix="drop --hard-negatives or --base")
        train = mine_hard_negatives(model, train, passages, vectors)
    counts = dict(Counter(p.source for p in train))
    counts["heldout"] = len(heldout)
    counts["hard_negatives"] = sum(1 for p in train if p.negative)
    digest = hashlib.sha256(json.dumps([[p.anchor, p.positive, p.negative] for p in train]).encode()).hexdigest()
    with (run_dir / "pairs_sample.jsonl").open("w", encoding="utf-8") as out:
        for p in random.Random(config.seed).sample(train, min(50, len(train))):
            out.write(json.dumps({"source": p.source, "query": p.anchor, "positive": p.positive,
                                  "negative": p.negative}, ensure_ascii=False) + "\n")
    before = heldout_mrr(model, heldout)
    with span("train_embedder.fit", pairs=len(train), steps=config.max_steps):
        model, metrics = adapt(model, train, config, corpus=passages)
    metrics.update(heldout_mrr10_before=before, heldout_mrr10_after=heldout_mrr(model, heldout))
    model_dir = run_dir / "embedder"
    model.save(str(model_dir))
    _keep_base_tokenizer(Path(base_path), model_dir)
    run = EmbedderRun(run_dir, model_dir, base, name, number, counts, digest, config, metrics)
    (run_dir / "train_config.json").write_text(json.dumps(_lineage(run), indent=2, default=str), encoding="utf-8")
    return run


def _keep_base_tokenizer(base: Path, model_dir: Path) -> None:
    """The base's own tokenizer files: training changes no token, and saving a tokenizer also writes its transient
    truncation state, which would change the fingerprint an index checks (and the chunking it implies). A routed
    model (query tower) keeps them in each route's transformer folder."""
    import shutil

    for folder in transformer_dirs(model_dir):
        for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):  # tokenizer_config: max length
            if (base / name).is_file():
                shutil.copy2(base / name, folder / name)


def transformer_dirs(model_dir: Path) -> list[Path]:
    """The folders of a saved model's transformer(s): the model folder itself, or, for a routed model (query
    tower), each route's (``document_0_Transformer`` first: the route ``encode`` runs)."""
    routed = sorted((p for p in model_dir.glob("*_Transformer") if p.is_dir()),
                    key=lambda p: not p.name.startswith("document"))
    return routed or [model_dir]


def _lineage(run: EmbedderRun) -> dict[str, Any]:
    return {"base": run.base, "index": run.index, "index_version": run.index_version, "pairs": run.pair_counts,
            "pairs_sha256": run.pairs_sha256, "objective": objective(run.config),
            "hyperparameters": asdict(run.config), "metrics": run.metrics}


def objective(config: EmbedderTrainConfig) -> str:
    text = OBJECTIVE
    if config.method == "adapter" and config.corpus_negatives:
        text = text.replace("in-batch negatives", f"up to {config.corpus_negatives} of the corpus' passages as "
                                                  "negatives")
    text = text.replace(")", " + 1 mined hard negative)") if config.hard_negatives else text
    text += f" on pairs {'+'.join(config.objectives)}"
    if config.idf_alpha:
        text += f"; mean pooling weighted by the corpus' token IDF^{config.idf_alpha}"
    if config.method == "adapter":
        return f"{text}; a residual linear adapter over the frozen encoder (L2 {config.adapter_l2} to identity)"
    if config.method == "query-tower":
        return (f"{text.replace('in-batch negatives', 'every passage of the corpus as a negative')}; the top "
                f"{config.tower_layers} layers of a query copy of the encoder tuned, passages by the frozen encoder")
    return f"{text}; full fine-tuning"


class EmbedderTokenizer:
    """What the registry pins of an embedder's tokenizer: its fingerprint and a saved copy.

    (A chat model's :class:`~llmfti.llm.tokenization.PinnedTokenizer` also demands an eos token and a chat
    template; an encoder's tokenizer has neither.)"""

    def __init__(self, model_dir: Path):
        from transformers import AutoTokenizer

        from llmfti.llm.tokenization import tokenizer_fingerprint

        self.tokenizer = AutoTokenizer.from_pretrained(str(transformer_dirs(model_dir)[0]))
        self.fingerprint = tokenizer_fingerprint(self.tokenizer)

    def save(self, path: Path) -> Path:
        self.tokenizer.save_pretrained(str(path))
        return path


def register_run(settings: Settings, run: EmbedderRun, model_name: str | None = None) -> Any:
    """Record ``run`` as a new embedder version (kind ``embedder``) with its lineage."""
    from llmfti.registry.model_registry import ModelRegistry

    registry = ModelRegistry(settings, model_name or DEFAULT_MODEL_NAME)
    hyper = {"kind": "embedder", "objective": objective(run.config),
             "self_supervised": list(run.config.objectives), **asdict(run.config)}
    with span("train_embedder.register", model=registry.model_name):
        return registry.register(
            adapter_dir=run.model_dir, tokenizer=EmbedderTokenizer(run.model_dir), base_model=run.base,
            training_dataset_id=f"embedder-pairs:{run.pairs_sha256[:16]}",
            data_versions={run.index: run.index_version, "pairs": run.pair_counts, "pairs_sha256": run.pairs_sha256},
            index_name=run.index, index_version=run.index_version, embedder=run.base, hyperparameters=hyper,
            metrics={k: v for k, v in run.metrics.items() if k != "loss_curve"},
            extra_files={"train_config.json": run.run_dir / "train_config.json",
                         "pairs_sample.jsonl": run.run_dir / "pairs_sample.jsonl"},
        )


def train_and_register(settings: Settings, *, model_name: str | None = None, **kwargs: Any) -> dict[str, Any]:
    run = train_embedder(settings, **kwargs)
    mv = register_run(settings, run, model_name)
    return {"run_dir": str(run.run_dir), **_lineage(run), "model_version": mv.to_dict(),
            "embedder_ref": f"registry:{mv.name}:v{mv.version}"}
