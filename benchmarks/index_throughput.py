"""Index build throughput: (a) the full pipeline vs raw SentenceTransformer.encode, (b) incremental rebuilds.

(a) ``build_index`` (load, clean, chunk, embed, write, search indices) into a fresh data dir vs
    ``SentenceTransformer.encode`` on exactly the chunk texts that build wrote, with the same model
    object and batch size, alternating pipeline and raw runs after a warm-up. Goal: >= 0.9x.
(b) After a full build, edit the text of 1% of the documents (seeded) and rebuild: the incremental
    build's time vs the full build's. Goal: <= 0.05x. A rebuild with no change is reported too.

The corpus is the first ``--docs`` SQuAD v1.1 dev paragraphs, written as a JSONL copy in a temporary
folder (never into the repository).

    python -m benchmarks.index_throughput                # all 2,067 paragraphs
    python -m benchmarks.index_throughput --docs 200     # quick
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import squad
from benchmarks.reporting import print_table, save

INDEX = "bench"


class StageClock:
    """Turns ``on_progress(stage, done, total)`` calls into per-stage seconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.first.setdefault(stage, now)
        self.last[stage] = now

    def breakdown(self, end: float) -> dict[str, float]:
        """load (everything before chunking), chunk, embed, commit (write + search indices), other."""
        marks = {s: (self.first[s], self.last[s]) for s in self.first}
        out: dict[str, float] = {}
        begin = min((a for a, _ in marks.values()), default=end)
        out["load_s"] = begin - self.start
        for stage in ("chunk", "embed", "commit"):
            if stage in marks:
                out[f"{stage}_s"] = marks[stage][1] - marks[stage][0]
        out["other_s"] = (end - self.start) - sum(out.values())
        return {k: round(v, 3) for k, v in out.items()}


def write_corpus(path: Path, docs: list[squad.Paragraph], edits: dict[str, str]) -> None:
    lines = []
    for p in docs:
        text = edits.get(p.doc_id, p.context)
        lines.append(json.dumps({"id": p.doc_id, "text": text,
                                 "metadata": {"title": p.title.replace("_", " "), "article": p.title,
                                              "paragraph_index": p.index}}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def timed_build(settings: Any, corpus: Path) -> dict[str, Any]:
    from pipelines.index_build import build_index

    cpu = time.process_time()
    clock = StageClock()
    summary = build_index(settings, [corpus], INDEX, on_progress=clock)
    end = time.perf_counter()
    return {"seconds": round(end - clock.start, 3), "cpu_s": round(time.process_time() - cpu, 3),
            **clock.breakdown(end), "summary": summary}


def chunk_texts(settings: Any) -> list[str]:
    from llmfti.index import VectorIndex

    table = VectorIndex.open(settings, INDEX)._table
    return table.search().select(["text"]).limit(None).to_arrow().column("text").to_pylist()


def timed_encode(model: Any, texts: list[str], batch_size: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one raw encode."""
    cpu, start = time.process_time(), time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                 show_progress_bar=False)
    return round(time.perf_counter() - start, 3), round(time.process_time() - cpu, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=None, help="paragraphs to index (default: all 2,067)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating pipeline/raw rounds for (a)")
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of documents edited for (b)")
    parser.add_argument("--incremental-rounds", type=int, default=2, help="incremental rebuilds for (b)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = parser.parse_args()
    started = datetime.now(UTC)

    from llmfti.config import load_settings
    from llmfti.embedders import load_embedder

    docs = squad.paragraphs()[: args.docs]
    tmp = Path(tempfile.mkdtemp(prefix="llmfti-bench-throughput-"))
    corpus = tmp / "corpus" / "squad.jsonl"
    corpus.parent.mkdir()
    write_corpus(corpus, docs, {})

    loaded = load_settings(data_dir=tmp / "warmup")  # once: the shared configs/ may change during a long run

    def settings_for(run: str) -> Any:
        return loaded.model_copy(update={"data_dir": tmp / run})

    base = settings_for("warmup")
    t0 = time.perf_counter()
    embedder = load_embedder(base.embedder)
    model_load_s = time.perf_counter() - t0
    model, batch_size = embedder._model, base.embedder.batch_size  # the very object build_index encodes with

    # Warm-up: model kernels, tokenizer, lancedb, FTS, imports; not measured.
    warm_corpus = tmp / "corpus-warmup" / "warm.jsonl"
    warm_corpus.parent.mkdir()
    write_corpus(warm_corpus, docs[:32], {})
    from pipelines.index_build import build_index

    build_index(base, [warm_corpus], INDEX)
    timed_encode(model, [p.context for p in docs[:64]], batch_size)

    # (a) alternate: pipeline into a fresh data dir, then raw encode of exactly the chunks it wrote.
    pipeline_runs, raw_runs, texts = [], [], []
    for r in range(args.rounds):
        run = timed_build(settings_for(f"full-{r}"), corpus)
        pipeline_runs.append(run)
        texts = chunk_texts(settings_for(f"full-{r}"))
        wall, cpu = timed_encode(model, texts, batch_size)
        raw_runs.append({"seconds": wall, "cpu_s": cpu})
        print(f"round {r}: pipeline {run['seconds']:.1f}s (cpu {run['cpu_s']:.1f}s), "
              f"raw encode {wall:.1f}s (cpu {cpu:.1f}s), {len(texts)} chunks")
    n_chunks = len(texts)
    pipe_s = statistics.median(r["seconds"] for r in pipeline_runs)
    ratio_a = statistics.median(r["seconds"] for r in raw_runs) / pipe_s
    ratio_cpu = (statistics.median(r["cpu_s"] for r in raw_runs)
                 / statistics.median(r["cpu_s"] for r in pipeline_runs))

    rows_a = []
    for r, (run, raw) in enumerate(zip(pipeline_runs, raw_runs, strict=True)):
        rows_a.append([f"pipeline build_index (round {r})", n_chunks, run["seconds"], run["cpu_s"],
                       n_chunks / run["seconds"], run["load_s"], run.get("chunk_s", 0.0), run.get("embed_s", 0.0),
                       run.get("commit_s", 0.0), run["other_s"]])
        rows_a.append([f"raw ST.encode (round {r})", n_chunks, raw["seconds"], raw["cpu_s"],
                       n_chunks / raw["seconds"], "", "", raw["seconds"], "", ""])
    rows_a.append(["ratio pipeline/raw, wall (medians)", "", "", "", round(ratio_a, 3), "", "", "", "", ""])
    rows_a.append(["ratio pipeline/raw, CPU (medians)", "", "", "", round(ratio_cpu, 3), "", "", "", "", ""])
    print_table(
        f"(a) full pipeline vs raw encode: {len(docs):,} docs -> {n_chunks:,} chunks, batch {batch_size}",
        ["run", "chunks", "wall s", "cpu s", "chunks/s", "load s", "chunk s", "embed s", "commit s", "other s"],
        rows_a,
        [f"goal >= 0.9x: {'MET' if ratio_a >= 0.9 else 'NOT MET'} on wall time ({ratio_a:.3f}x), "
         f"{'MET' if ratio_cpu >= 0.9 else 'NOT MET'} on process CPU time ({ratio_cpu:.3f}x)",
         f"model load {model_load_s:.1f}s excluded from both; load = read+clean before chunking; "
         "commit = write + FTS/ANN index; cpu s = process CPU time (all threads), less sensitive to other load"],
    )

    # (b) incremental rebuilds on the last full build's data dir.
    rng = random.Random(args.seed)
    settings = settings_for(f"full-{args.rounds - 1}")
    n_changed = max(1, math.ceil(len(docs) * args.changed))
    edits: dict[str, str] = {}
    incremental = []
    for r in range(args.incremental_rounds):
        for p in rng.sample(docs, n_changed):
            edits[p.doc_id] = f"{p.context} This paragraph was revised in edit {r} of the benchmark."
        write_corpus(corpus, docs, edits)
        incremental.append(timed_build(settings, corpus))
    unchanged = timed_build(settings, corpus)
    rows_b = [["full build (median of (a))", len(docs), pipe_s, "", "", 1.0, ""]]  # same corpus, same run
    for r, run in enumerate(incremental):
        s = run["summary"]
        rows_b.append([f"incremental, {n_changed} docs edited (round {r})", len(docs), run["seconds"],
                       s["docs_updated"], s["chunks_embedded"], round(run["seconds"] / pipe_s, 4),
                       f"cpu {run['cpu_s']:.2f} load {run['load_s']:.2f} embed {run.get('embed_s', 0):.2f} "
                       f"commit {run.get('commit_s', 0):.2f} other {run['other_s']:.2f}"])
    s = unchanged["summary"]
    rows_b.append(["rebuild, nothing changed", len(docs), unchanged["seconds"], s["docs_updated"],
                   s["chunks_embedded"], round(unchanged["seconds"] / pipe_s, 4),
                   f"cpu {unchanged['cpu_s']:.2f} load {unchanged['load_s']:.2f} other {unchanged['other_s']:.2f}"])
    ratio_b = statistics.median(run["seconds"] for run in incremental) / pipe_s
    problems = [f"round {r}: expected {n_changed} updated, got {run['summary']}" for r, run in enumerate(incremental)
                if run["summary"]["docs_updated"] != n_changed or run["summary"]["docs_added"]
                or run["summary"]["docs_deleted"]]
    print_table(
        f"(b) incremental rebuild after editing {args.changed:.0%} of {len(docs):,} docs",
        ["run", "docs", "seconds", "docs updated", "chunks embedded", "x full build", "breakdown (s)"], rows_b,
        [f"goal <= 0.05x: {'MET' if ratio_b <= 0.05 else 'NOT MET'} ({ratio_b:.4f}x, median of incremental rounds)",
         *problems],
    )

    save("index_throughput", started=started,
         parameters={"docs": len(docs), "rounds": args.rounds, "changed_fraction": args.changed,
                     "docs_changed": n_changed, "incremental_rounds": args.incremental_rounds, "seed": args.seed,
                     "batch_size": batch_size, "embedder": base.embedder.model, "corpus": "SQuAD v1.1 dev (JSONL)"},
         results={"chunks": n_chunks, "model_load_s": round(model_load_s, 3),
                  "a_pipeline_runs": pipeline_runs, "a_raw_encode_runs": raw_runs,
                  "a_ratio_pipeline_over_raw": round(ratio_a, 4), "a_ratio_cpu": round(ratio_cpu, 4),
                  "a_goal_met": ratio_a >= 0.9,
                  "b_incremental_runs": incremental, "b_unchanged_rebuild": unchanged,
                  "b_ratio_incremental_over_full": round(ratio_b, 4), "b_goal_met": ratio_b <= 0.05,
                  "b_problems": problems})
    if args.keep:
        print(f"kept {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
