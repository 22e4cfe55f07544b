"""Search latency (p50/p99, CPU time) at 10k and 100k chunks, flat vs ANN with ANN recall@10 vs flat, and
the agent's own ``VectorIndex.search`` dense and hybrid (goal: hybrid p50 <= 8 ms at 10k, <= 10 ms at 100k).

Vectors are REAL all-MiniLM-L6-v2 embeddings (random vectors make ANN recall look wrong): SQuAD v1.1
dev sentences and questions (~21k texts). Sizes above that are reached with noise-perturbed,
re-normalised copies of real vectors: copy = normalise(v + noise * g / sqrt(dim)), g ~ N(0, I),
so ||perturbation|| ~= noise (default 0.6, i.e. cosine(copy, original) ~ 0.86; the measured mean
is printed). Queries are held-out SQuAD questions (never in the table).

Each size is written through ``VectorIndex`` (one commit) and ``refresh_search_indices`` builds the
index type llmfti builds (``index.ann_index_type``, IVF_HNSW_SQ, cosine; ``ann_min_rows`` is lowered
so 10k gets one too). Per query, in rotating order: flat (``bypass_vector_index``), ANN, ANN without
the tenant prefilter, and ``VectorIndex.search(mode="dense"|"hybrid", vector=...)``, the API the agent uses
(it runs on the pylance dataset directly; hybrid = dense + BM25 at depth max(4k, 50), fused by RRF).

    python -m benchmarks.search_latency                          # 10k and 100k, 200 queries
    python -m benchmarks.search_latency --sizes 5000 --queries 50  # quick
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import squad
from benchmarks.embedding_cache import embed_cached
from benchmarks.reporting import RESULTS_DIR, percentiles_ms, print_table, save

K = 10
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
HELD_OUT = 200
VARIANTS = ("flat", "ann", "ann_no_filter", "api_dense", "api_hybrid")
RANKED_LIKE_FLAT = ("flat", "ann", "ann_no_filter", "api_dense")  # hybrid fuses BM25 in: no recall vs flat


def texts_and_queries(n_queries: int, seed: int) -> tuple[list[str], list[str]]:
    """Corpus texts (sentences + non-held-out questions) and the held-out question queries."""
    sentences = [s.strip() for p in squad.paragraphs() for s in _SENTENCE.split(p.context) if len(s.split()) >= 4]
    questions = list(dict.fromkeys(q.text.strip() for q in squad.questions()))
    rng = random.Random(seed)
    # The held-out pool does not shrink below HELD_OUT, so smaller --queries keep the same corpus (and cache).
    held = set(rng.sample(range(len(questions)), max(HELD_OUT, n_queries)))
    queries = [questions[i] for i in sorted(held)][:n_queries]
    corpus = list(dict.fromkeys(sentences + [q for i, q in enumerate(questions) if i not in held]))
    return corpus, queries


def grow(real: np.ndarray, size: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, float | None]:
    """``size`` vectors: real ones first, then perturbed re-normalised copies; also each row's origin."""
    if size <= len(real):
        return real[:size], np.arange(size), None
    rng = np.random.default_rng(seed)
    origin = np.concatenate([np.arange(len(real)), np.arange(size - len(real)) % len(real)])
    base = real[origin[len(real):]]
    copies = base + noise * rng.standard_normal(base.shape, dtype=np.float32) / np.sqrt(real.shape[1])
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    mean_cos = float(np.mean(np.sum(copies * base, axis=1)))
    return np.vstack([real, copies.astype(np.float32)]), origin, mean_cos


def rows_table(vectors: np.ndarray, origin: np.ndarray, texts: list[str], n_real: int) -> Any:
    import pyarrow as pa

    n = len(vectors)
    now = datetime.now(UTC)
    ids = [f"r{i}" if i < n_real else f"s{i}" for i in range(n)]
    body = [texts[o] for o in origin]
    return pa.table({
        "chunk_id": ids, "doc_id": ids, "text": body, "metadata": ["{}"] * n, "tenant": ["default"] * n,
        "source": ["benchmark"] * n, "origin": ["squad"] * n, "build_tenant": ["default"] * n,
        "title": ["squad"] * n, "content_hash": ids, "doc_hash": ids,
        "event_time": [now] * n, "ingested_at": [now] * n,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), vectors.shape[1]),
    })


def measure(idx: Any, queries: list[str], vectors: np.ndarray, warmup: int) -> dict[str, Any]:
    table = idx._table
    tenant = "tenant = 'default'"
    cols = ["chunk_id", "doc_id", "text", "metadata", "_distance"]

    def base(v: np.ndarray) -> Any:
        return table.search(v, vector_column_name="embedding").distance_type("cosine").select(cols).limit(K)

    run = {
        "flat": lambda q, v: [r["chunk_id"] for r in base(v).bypass_vector_index().where(tenant, prefilter=True)
                              .to_list()],
        "ann": lambda q, v: [r["chunk_id"] for r in base(v).where(tenant, prefilter=True).to_list()],
        "ann_no_filter": lambda q, v: [r["chunk_id"] for r in base(v).to_list()],
        "api_dense": lambda q, v: [h.chunk_id for h in idx.search(q, k=K, mode="dense", vector=v).hits],
        "api_hybrid": lambda q, v: [h.chunk_id for h in idx.search(q, k=K, mode="hybrid", vector=v).hits],
    }
    for q, v in list(zip(queries, vectors, strict=True))[:warmup]:
        for name in VARIANTS:
            run[name](q, v)
    latency: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, float] = dict.fromkeys(VARIANTS, 0.0)
    found: dict[str, list[list[str]]] = {name: [] for name in VARIANTS}
    for i, (q, v) in enumerate(zip(queries, vectors, strict=True)):
        order = VARIANTS[i % len(VARIANTS):] + VARIANTS[: i % len(VARIANTS)]  # rotate: no variant always first
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            ids = run[name](q, v)
            latency[name].append(time.perf_counter() - start)
            cpu[name] += time.process_time() - start_cpu
            found[name].append(ids)
    out: dict[str, Any] = {}
    for name in VARIANTS:
        recall = [len(set(a) & set(f)) / len(f) for a, f in zip(found[name], found["flat"], strict=True) if f]
        out[name] = {**percentiles_ms(latency[name]), "cpu_ms_per_query": round(1000 * cpu[name] / len(queries), 3),
                     "recall_at_10_vs_flat": round(float(np.mean(recall)), 4) if name in RANKED_LIKE_FLAT else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated row counts")
    parser.add_argument("--queries", type=int, default=200, help="held-out questions (>= 100 for the recall figure)")
    parser.add_argument("--warmup", type=int, default=10, help="queries run once per variant before measuring")
    parser.add_argument("--noise", type=float, default=0.6, help="norm of the perturbation of synthetic copies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=RESULTS_DIR / "data" / "search_latency")
    args = parser.parse_args()
    started = datetime.now(UTC)
    sizes = [int(s) for s in args.sizes.split(",")]

    from llmfti.config import load_settings
    from llmfti.embedders import load_embedder
    from llmfti.index import VectorIndex

    corpus, queries = texts_and_queries(args.queries, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="llmfti-bench-latency-"))
    settings = load_settings(data_dir=tmp, index={"ann_min_rows": min(1000, *sizes)})
    embedder = load_embedder(settings.embedder)
    corpus = corpus[:max(sizes)]  # sizes within the real texts embed only what they use
    real, _ = embed_cached(embedder, corpus, args.cache_dir)
    query_vectors = embedder.encode(queries)

    results: dict[str, Any] = {}
    rows = []
    try:
        for size in sizes:
            vectors, origin, mean_cos = grow(real, size, args.noise, args.seed)
            idx = VectorIndex.create(settings, f"latency_{size}", embedder.info)
            start = time.perf_counter()
            idx.apply(rows_table(vectors, origin, corpus, len(real)), [])
            write_s = time.perf_counter() - start
            start = time.perf_counter()
            idx.refresh_search_indices()
            index_s = time.perf_counter() - start
            ann = [i for i in idx._table.list_indices() if i.columns[0] == "embedding"]
            print(f"{size:,} rows: write {write_s:.1f}s, FTS+ANN index {index_s:.1f}s, "
                  f"vector index {[(i.index_type, i.index_details.get('metric_type')) for i in ann]}")
            figures = measure(idx, queries, query_vectors, args.warmup)
            results[str(size)] = {"rows": size, "real_rows": min(size, len(real)),
                                  "synthetic_rows": max(0, size - len(real)),
                                  "synthetic_mean_cosine_to_original": mean_cos, "write_s": round(write_s, 3),
                                  "index_build_s": round(index_s, 3), "ann_index": [str(i) for i in ann],
                                  "variants": figures}
            synthetic = f"{max(0, size - len(real)):,} synthetic" if size > len(real) else "all real"
            for name in VARIANTS:
                f = figures[name]
                rows.append([f"{size:,} ({synthetic})", name, f["p50_ms"], f["p99_ms"], f["mean_ms"],
                             f["cpu_ms_per_query"], f["recall_at_10_vs_flat"]])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    notes = [
        f"{len(real):,} real MiniLM vectors (SQuAD dev sentences + questions); larger sizes add copies "
        f"normalise(v + {args.noise} * g/sqrt(384)), mean cosine to their original "
        + ", ".join(f"{r['synthetic_mean_cosine_to_original']:.3f} at {int(s):,}" for s, r in results.items()
                    if r["synthetic_mean_cosine_to_original"] is not None),
        f"{len(queries)} held-out SQuAD questions, k={K}, cosine; ANN = {settings.index.ann_index_type} with "
        "lancedb defaults; flat/ann prefilter tenant = 'default' like VectorIndex; api_dense = VectorIndex.search",
        "index build times: " + ", ".join(f"{int(s):,}: {r['index_build_s']:.1f}s" for s, r in results.items()),
    ]
    import os

    load = os.getloadavg()
    notes.append(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; "
                 "cpu ms = process CPU time per query (lancedb and lance use their own threads too)")
    print_table("Search latency: flat vs ANN (lancedb query builder), and VectorIndex.search dense/hybrid",
                ["rows", "variant", "p50 ms", "p99 ms", "mean ms", "cpu ms", "recall@10 vs flat"], rows, notes)
    save("search_latency", started=started,
         parameters={"sizes": sizes, "queries": len(queries), "warmup": args.warmup, "noise": args.noise,
                     "seed": args.seed, "k": K, "real_vectors": len(real), "embedder": settings.embedder.model,
                     "ann_index_type": settings.index.ann_index_type,
                     "method": "real MiniLM vectors of SQuAD sentences+questions; sizes beyond them padded with "
                               "noise-perturbed re-normalised copies; held-out questions as queries"},
         results=results, notes=notes)


if __name__ == "__main__":
    main()
