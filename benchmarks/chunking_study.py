"""Chunk size and overlap: retrieval quality per embedding second on SQuAD v1.1 dev (issue 13 §2).

A seeded sample of whole SQuAD articles (all their paragraphs, one document each, doc id
``{title}#{i}`` like the SQuAD importer) is indexed once per chunking setting (``chunking.max_tokens``
x ``chunking.overlap_tokens``) into its own temporary data dir; the build's wall-clock seconds (almost
all of it embedding) and chunk count are recorded; then every question of those articles is searched
(dense and hybrid, the question embedded once) and hit@5 / MRR@10 against the gold paragraph are
computed. The table puts quality next to the embedding cost, so the default can be chosen from it.

SQuAD paragraphs are short (median ~140 words, ~180 tokens): at max 254 tokens most are one chunk
whatever the overlap, so the study is mostly about 128-token chunks and their overlap. Long documents
(the scientific abstracts of issue 13) split more; read the figures with that in mind.

    python -m benchmarks.chunking_study                           # 6 articles, 4 settings
    python -m benchmarks.chunking_study --articles 3 --settings 254:32,128:0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import squad
from benchmarks.reporting import print_table, save

K = 10


def rank_of(doc_ids: list[str], gold: str) -> int | None:
    return next((i for i, d in enumerate(doc_ids, start=1) if d == gold), None)


def study(root: Path, paragraphs: list[Any], questions: list[Any], max_tokens: int, overlap: int,
          vectors: Any) -> dict[str, Any]:
    from llmfti.config import load_settings
    from llmfti.index import VectorIndex
    from pipelines.index_build import build_index

    data_dir = root / f"data-{max_tokens}-{overlap}"
    source = root / "articles.jsonl"
    settings = load_settings(data_dir=data_dir, chunking={"max_tokens": max_tokens, "overlap_tokens": overlap})
    start = time.perf_counter()
    build_index(settings, [source])
    build_s = time.perf_counter() - start
    idx = VectorIndex.open(settings)
    chunks = idx.count_rows()
    out: dict[str, Any] = {"max_tokens": max_tokens, "overlap_tokens": overlap, "chunks": chunks,
                           "chunks_per_paragraph": round(chunks / len(paragraphs), 3), "build_s": round(build_s, 1)}
    for mode in ("dense", "hybrid"):
        ranks = []
        for question, vector in zip(questions, vectors, strict=True):
            hits = idx.search(question.text, k=K, mode=mode, vector=vector).hits
            ranks.append(rank_of([h.doc_id for h in hits], question.doc_id))
        n = len(ranks)
        out[mode] = {"hit@5": round(sum(r is not None and r <= 5 for r in ranks) / n, 4),
                     "mrr@10": round(sum(1 / r for r in ranks if r is not None) / n, 4)}
    out["hybrid_hit@5_per_build_minute"] = round(out["hybrid"]["hit@5"] / (build_s / 60), 4)
    shutil.rmtree(data_dir, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--articles", type=int, default=6, help="seeded sample of whole SQuAD dev articles")
    parser.add_argument("--settings", default="254:32,254:0,128:0,128:32",
                        help="comma-separated max_tokens:overlap_tokens pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings_list = [tuple(int(x) for x in pair.split(":")) for pair in args.settings.split(",")]

    from llmfti.config import load_settings
    from llmfti.embedders import load_embedder

    paragraphs_all = squad.paragraphs()
    titles = sorted({p.title for p in paragraphs_all})
    chosen = set(random.Random(args.seed).sample(titles, min(args.articles, len(titles))))
    paragraphs = [p for p in paragraphs_all if p.title in chosen]
    gold = {p.doc_id for p in paragraphs}
    questions = [q for q in squad.questions() if q.doc_id in gold]
    words = [len(p.context.split()) for p in paragraphs]
    print(f"{len(chosen)} articles, {len(paragraphs)} paragraphs (median {statistics.median(words):.0f} words), "
          f"{len(questions)} questions")

    root = Path(tempfile.mkdtemp(prefix="llmfti-bench-chunking-"))
    try:
        (root / "articles.jsonl").write_text(
            "".join(json.dumps({"id": p.doc_id, "text": p.context}) + "\n" for p in paragraphs), encoding="utf-8")
        embedder = load_embedder(load_settings(data_dir=root / "unused"))
        vectors = embedder.encode([q.text for q in questions])
        results = [study(root, paragraphs, questions, m, o, vectors) for m, o in settings_list]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rows = [[r["max_tokens"], r["overlap_tokens"], r["chunks"], r["chunks_per_paragraph"], r["build_s"],
             r["dense"]["hit@5"], r["dense"]["mrr@10"], r["hybrid"]["hit@5"], r["hybrid"]["mrr@10"],
             r["hybrid_hit@5_per_build_minute"]] for r in results]
    load = os.getloadavg()
    notes = [f"{len(chosen)} SQuAD dev articles (seed {args.seed}), {len(paragraphs)} paragraphs, {len(questions)} "
             f"questions searched among them only; build s = index build wall clock (mostly embedding), "
             f"load average {load[0]:.2f} on {os.cpu_count()} cores (build seconds compare only within one run)"]
    print_table("Chunking: quality per embedding second", ["max tok", "overlap", "chunks", "chunks/para", "build s",
                                                           "dense hit@5", "dense MRR@10", "hybrid hit@5",
                                                           "hybrid MRR@10", "hybrid hit@5 per build min"], rows, notes)
    save("chunking_study", parameters=vars(args) | {"articles_chosen": sorted(chosen)}, results=results, notes=notes)


if __name__ == "__main__":
    main()
