"""Retrieval quality on SQuAD v1.1 dev: hit@1, hit@5 and MRR@10 for dense, fts and hybrid search.

All 2,067 dev paragraphs are indexed with the SQuAD importer (one document per paragraph, doc id
``{title}#{paragraph_index}``); every question is searched in each mode and a hit is a retrieved
chunk whose doc id is the question's gold paragraph. Each question is embedded once (batched) and
the vector passed to dense and hybrid search. Goal: hybrid hit@5 >= 0.95.

The index is built (or incrementally synced: a no-op when nothing changed) under ``--data-dir``,
so a second run does not re-embed.

    python -m benchmarks.retrieval_quality                    # all 10,570 questions
    python -m benchmarks.retrieval_quality --questions 500    # seeded sample, quick
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import squad
from benchmarks.embedding_cache import embed_cached
from benchmarks.reporting import RESULTS_DIR, percentiles_ms, print_table, save

INDEX = "squad"
MODES = ("dense", "fts", "hybrid")
K = 10
# --fusion-study: (rrf_k, fts weight) variants fused offline from the dense and fts rankings that hybrid
# search fuses (depth max(4k, 50) = 50); (index.rrf_k, 1.0) is what VectorIndex does, so that row must
# match the hybrid row (a check of the study itself).
FUSION_DEPTH = 50
FUSION_VARIANTS = [(rrf_k, w) for rrf_k in (60, 20, 10, 5, 2) for w in (1.0, 1.5, 2.0)]


def rank_of(doc_ids: list[str], gold: str) -> int | None:
    """1-based rank of the first retrieved chunk of the gold paragraph, None if absent."""
    return next((i for i, d in enumerate(doc_ids, start=1) if d == gold), None)


def fuse(dense: list[Any], fts: list[Any], rrf_k: int, fts_weight: float) -> list[str]:
    """Doc ids of the top-K chunks by weighted reciprocal-rank fusion (ties by chunk id, like VectorIndex)."""
    scores: dict[str, float] = {}
    docs: dict[str, str] = {}
    for ranking, weight in ((dense, 1.0), (fts, fts_weight)):
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (rrf_k + rank)
            docs[hit.chunk_id] = hit.doc_id
    return [docs[c] for c in sorted(scores, key=lambda c: (-scores[c], c))[:K]]


def metrics_of(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {"hit@1": sum(x == 1 for x in ranks) / n, "hit@5": sum(x is not None and x <= 5 for x in ranks) / n,
            "mrr@10": sum(1 / x for x in ranks if x is not None) / n, "hit@10": sum(x is not None for x in ranks) / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=None, help="seeded sample of questions (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=RESULTS_DIR / "data" / "retrieval_quality",
                        help="where the index lives; an existing index there is reused (synced, not rebuilt)")
    parser.add_argument("--fresh", action="store_true", help="build into a temporary data dir instead")
    parser.add_argument("--fusion-study", action="store_true",
                        help="also fuse dense@50 and fts@50 offline with other rrf_k / fts weights")
    args = parser.parse_args()
    started = datetime.now(UTC)

    from llmfti.config import load_settings
    from llmfti.index import VectorIndex
    from pipelines.index_build import build_index

    data_dir = Path(tempfile.mkdtemp(prefix="llmfti-bench-quality-")) if args.fresh else args.data_dir
    settings = load_settings(data_dir=data_dir)
    t0 = time.perf_counter()
    summary = build_index(settings, [squad.SQUAD_DEV], INDEX)
    build_s = time.perf_counter() - t0
    print(f"index {INDEX!r} under {data_dir}: {summary}")
    idx = VectorIndex.open(settings, INDEX)
    n_docs, n_chunks = len(idx.doc_state()), idx.count_rows()

    questions = squad.questions()
    if args.questions and args.questions < len(questions):
        questions = random.Random(args.seed).sample(questions, args.questions)
    embedder = idx.embedder()
    embedder.encode(["warm up"])
    vectors, encode_s = embed_cached(embedder, [q.text for q in questions], RESULTS_DIR / "data" / "question_vectors",
                                    queries=True)

    ranks: dict[str, list[int | None]] = {m: [] for m in MODES}
    latency: dict[str, list[float]] = {m: [] for m in MODES}
    errors: dict[str, list[str]] = {m: [] for m in MODES}
    fused: dict[tuple[int, float], list[int | None]] = {v: [] for v in FUSION_VARIANTS}
    depth = FUSION_DEPTH if args.fusion_study else K
    t0 = time.perf_counter()
    for n, (question, vector) in enumerate(zip(questions, vectors, strict=True), start=1):
        deep: dict[str, list[Any]] = {}
        for mode in MODES:
            start = time.perf_counter()
            try:
                deep[mode] = idx.search(question.text, k=K if mode == "hybrid" else depth, mode=mode,
                                        vector=None if mode == "fts" else vector).hits
            except Exception as exc:  # noqa: BLE001 - a failing query is a miss, counted and reported
                errors[mode].append(f"{question.qid}: {type(exc).__name__}: {exc}"[:300])
                deep[mode] = []
            latency[mode].append(time.perf_counter() - start)
            ranks[mode].append(rank_of([h.doc_id for h in deep[mode][:K]], question.doc_id))
        if args.fusion_study:
            for rrf_k, weight in FUSION_VARIANTS:
                fused[(rrf_k, weight)].append(rank_of(fuse(deep["dense"], deep["fts"], rrf_k, weight), question.doc_id))
        if n % 1000 == 0:
            print(f"  {n:,}/{len(questions):,} questions, {time.perf_counter() - t0:.0f}s")
    search_s = time.perf_counter() - t0

    results: dict[str, Any] = {}
    rows = []
    for mode in MODES:
        metrics = metrics_of(ranks[mode])
        lat = percentiles_ms(latency[mode])
        results[mode] = {**{k: round(v, 4) for k, v in metrics.items()}, "latency": lat,
                         "errors": len(errors[mode]), "error_examples": errors[mode][:5]}
        rows.append([mode, metrics["hit@1"], metrics["hit@5"], metrics["mrr@10"], metrics["hit@10"],
                     lat["p50_ms"], lat["p99_ms"], len(errors[mode])])
    goal = results["hybrid"]["hit@5"] >= 0.95
    print_table(
        f"Retrieval on SQuAD v1.1 dev: {n_docs:,} paragraphs ({n_chunks:,} chunks), "
        f"{len(questions):,} questions, k={K}",
        ["mode", "hit@1", "hit@5", "MRR@10", "hit@10", "p50 ms", "p99 ms", "errors"], rows,
        [f"goal hybrid hit@5 >= 0.95: {'MET' if goal else 'NOT MET'} ({results['hybrid']['hit@5']:.4f})",
         f"dense/fts latency at k={depth}" if args.fusion_study else f"latency at k={K}",
         f"question embedding {'cached' if encode_s is None else f'{encode_s:.1f}s'} (once per question, batched); "
         f"searches {search_s:.0f}s; index build/sync {build_s:.1f}s"],
    )
    study = {}
    if args.fusion_study:
        study_rows = []
        for (rrf_k, weight), r in fused.items():
            m = metrics_of(r)
            study[f"rrf_k={rrf_k},fts_weight={weight}"] = {k: round(v, 4) for k, v in m.items()}
            study_rows.append([f"rrf_k={rrf_k}, fts weight {weight}", m["hit@1"], m["hit@5"], m["mrr@10"],
                               m["hit@10"]])
        print_table(f"Fusion study: weighted RRF of dense@{FUSION_DEPTH} and fts@{FUSION_DEPTH}, offline",
                    ["variant", "hit@1", "hit@5", "MRR@10", "hit@10"], study_rows,
                    [f"rrf_k={settings.index.rrf_k}, weight 1.0 reproduces VectorIndex hybrid search (compare above)"])
    name = "retrieval_quality" if len(questions) == len(squad.questions()) else f"retrieval_quality_{len(questions)}q"
    save(name, started=started,
         parameters={"questions": len(questions), "sample": bool(args.questions), "seed": args.seed, "k": K,
                     "index": INDEX, "data_dir": str(data_dir), "embedder": settings.embedder.model,
                     "rrf_k": settings.index.rrf_k, "ann_min_rows": settings.index.ann_min_rows},
         results={"docs": n_docs, "chunks": n_chunks, "has_ann_index": idx.has_ann_index(), "build_summary": summary,
                  "build_or_sync_s": round(build_s, 3), "question_encode_s": encode_s and round(encode_s, 3),
                  "search_s": round(search_s, 3), "modes": results, "goal_hybrid_hit5_met": goal,
                  "fusion_study": study})
    if args.fresh:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
