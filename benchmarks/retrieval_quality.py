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
from benchmarks.reporting import RESULTS_DIR, percentiles_ms, print_table, save

INDEX = "squad"
MODES = ("dense", "fts", "hybrid")
K = 10


def rank_of(doc_ids: list[str], gold: str) -> int | None:
    """1-based rank of the first retrieved chunk of the gold paragraph, None if absent."""
    return next((i for i, d in enumerate(doc_ids, start=1) if d == gold), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=None, help="seeded sample of questions (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=RESULTS_DIR / "data" / "retrieval_quality",
                        help="where the index lives; an existing index there is reused (synced, not rebuilt)")
    parser.add_argument("--fresh", action="store_true", help="build into a temporary data dir instead")
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
    t0 = time.perf_counter()
    vectors = embedder.encode([q.text for q in questions])
    encode_s = time.perf_counter() - t0
    print(f"embedded {len(questions):,} questions in {encode_s:.1f}s")

    ranks: dict[str, list[int | None]] = {m: [] for m in MODES}
    latency: dict[str, list[float]] = {m: [] for m in MODES}
    errors: dict[str, list[str]] = {m: [] for m in MODES}
    t0 = time.perf_counter()
    for n, (question, vector) in enumerate(zip(questions, vectors, strict=True), start=1):
        for mode in MODES:
            start = time.perf_counter()
            try:
                hits = idx.search(question.text, k=K, mode=mode, vector=None if mode == "fts" else vector).hits
            except Exception as exc:  # noqa: BLE001 - a failing query is a miss, counted and reported
                errors[mode].append(f"{question.qid}: {type(exc).__name__}: {exc}"[:300])
                hits = []
            latency[mode].append(time.perf_counter() - start)
            ranks[mode].append(rank_of([h.doc_id for h in hits], question.doc_id))
        if n % 1000 == 0:
            print(f"  {n:,}/{len(questions):,} questions, {time.perf_counter() - t0:.0f}s")
    search_s = time.perf_counter() - t0

    results: dict[str, Any] = {}
    rows = []
    for mode in MODES:
        r = ranks[mode]
        metrics = {
            "hit@1": sum(x == 1 for x in r) / len(r),
            "hit@5": sum(x is not None and x <= 5 for x in r) / len(r),
            "mrr@10": sum(1 / x for x in r if x is not None) / len(r),
            "hit@10": sum(x is not None for x in r) / len(r),
        }
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
         f"question embedding {encode_s:.1f}s ({len(questions) / encode_s:.0f}/s, once per question, batched); "
         f"searches {search_s:.0f}s; index build/sync {build_s:.1f}s"],
    )
    save("retrieval_quality", started=started,
         parameters={"questions": len(questions), "sample": bool(args.questions), "seed": args.seed, "k": K,
                     "index": INDEX, "data_dir": str(data_dir), "embedder": settings.embedder.model,
                     "rrf_k": settings.index.rrf_k, "ann_min_rows": settings.index.ann_min_rows},
         results={"docs": n_docs, "chunks": n_chunks, "has_ann_index": idx.has_ann_index(), "build_summary": summary,
                  "build_or_sync_s": round(build_s, 3), "question_encode_s": round(encode_s, 3),
                  "search_s": round(search_s, 3), "modes": results, "goal_hybrid_hit5_met": goal})
    if args.fresh:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
