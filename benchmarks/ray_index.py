"""Index build on the local engine vs on Ray Data with 1 and 2 embedding workers, same corpus, same run.

Each build is a full build into a fresh data dir of the first ``--docs`` SQuAD v1.1 dev paragraphs,
written as JSONL files in a temporary folder (never into the repository), split into ``--files``
files so the Ray load step has several tasks. Reported per engine: chunks/s of the build (Ray
cluster start excluded, shown apart), and where the time goes: startup (the local Ray's start; the
embedder load for local), load + clean, chunk, embed, commit (write + search indices). For Ray,
chunk and embed run fused in the workers: their sums over workers (model load, chunking, encoding)
are shown next to the wall time of the whole step. Every process computes with one torch thread.

    python -m benchmarks.ray_index                 # 200 paragraphs
    python -m benchmarks.ray_index --docs 100      # quick
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import squad
from benchmarks.index_throughput import StageClock
from benchmarks.reporting import print_table, save

INDEX = "bench"


def write_corpus(folder: Path, docs: list[squad.Paragraph], files: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(files):
        part = docs[k::files]
        (folder / f"part-{k:02d}.jsonl").write_text(
            "".join(json.dumps({"id": p.doc_id, "title": p.title, "text": p.context}) + "\n" for p in part),
            encoding="utf-8")
    return folder


def build_local(corpus: Path, data_dir: Path) -> dict[str, Any]:
    from llmfti.config import load_settings
    from llmfti.embedders import load_embedder
    from pipelines.index_build import build_index

    settings = load_settings(data_dir=data_dir)
    started = time.perf_counter()
    load_embedder(settings.embedder)  # what the process pays once, like a Ray worker's model load
    startup = time.perf_counter() - started
    clock = StageClock()
    summary = build_index(settings, [corpus], INDEX, on_progress=clock)
    end = time.perf_counter()
    return {"engine": "local", "workers": 1, "startup_s": round(startup, 3), "build_s": round(end - clock.start, 3),
            "chunks": summary["chunks_embedded"], **clock.breakdown(end), "summary": summary}


def build_ray(corpus: Path, data_dir: Path, workers: int, startup_s: float) -> dict[str, Any]:
    from llmfti.config import load_settings
    from pipelines.index_build import build_index
    from pipelines.index_build_ray import RayEngine

    settings = load_settings(data_dir=data_dir)
    engine = RayEngine(workers=workers)
    clock = StageClock()
    summary = build_index(settings, [corpus], INDEX, on_progress=clock, engine=engine)
    end = time.perf_counter()
    t = engine.timings
    stages = clock.breakdown(end)
    return {"engine": "ray", "workers": workers, "startup_s": round(startup_s, 3),
            "build_s": round(end - clock.start, 3), "chunks": summary["chunks_embedded"],
            "load_s": round(t["load_s"], 3), "chunk_embed_s": round(t["chunk_embed_s"], 3),
            "commit_s": stages.get("commit_s"),
            "worker_model_load_s": round(t["worker_model_load_s"], 3), "worker_chunk_s": round(t["worker_chunk_s"], 3),
            "worker_embed_s": round(t["worker_embed_s"], 3), "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200, help="SQuAD paragraphs to index")
    parser.add_argument("--files", type=int, default=8, help="JSONL files the paragraphs are split into")
    args = parser.parse_args()
    started_at = datetime.now(UTC)

    import torch

    torch.set_num_threads(1)
    docs = squad.paragraphs()[: args.docs]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ray-index-") as tmp:
        root = Path(tmp)
        corpus = write_corpus(root / "corpus", docs, args.files)
        from pipelines.index_build_ray import ray_session

        # Ray first: a Ray started after lancedb is in use warns about forking
        with ray_session() as ray_startup:
            for workers in (1, 2):
                runs.append(build_ray(corpus, root / f"ray-{workers}", workers, ray_startup))
        runs.insert(0, build_local(corpus, root / "local"))

    local = runs[0]
    for run in runs:
        run["chunks_per_s"] = round(run["chunks"] / run["build_s"], 2)
        run["ratio_vs_local"] = round(run["chunks_per_s"] / local["chunks_per_s"], 3)
        run["same_summary_as_local"] = {k: v for k, v in run["summary"].items() if k != "seconds"} == {
            k: v for k, v in local["summary"].items() if k != "seconds"}
    rows = [[r["engine"], r["workers"], r["chunks"], r["chunks_per_s"], r["ratio_vs_local"], r["startup_s"],
             r["build_s"], r["load_s"],
             round(r["chunk_s"] + r["embed_s"], 3) if r["engine"] == "local" else r["chunk_embed_s"],
             r.get("commit_s"), r.get("worker_model_load_s", "-"), r.get("worker_embed_s", "-")] for r in runs]
    notes = [f"{args.docs} SQuAD dev paragraphs in {args.files} JSONL files; full build into a fresh data dir each",
             "chunks/s = chunks embedded / build wall time (Ray start excluded: startup_s; local: embedder load)",
             "Ray: chunk+embed run fused in the workers; worker_* = sums over workers (model load, chunk, encode)",
             "one torch thread per process; 2 shared cores: Ray pays process start-up, model load per worker and "
             "(de)serialisation, and cannot beat local here"]
    print_table("index build: local vs Ray Data", ["engine", "workers", "chunks", "chunks/s", "vs local",
                                                   "start s", "build s", "load s", "chunk+embed s", "commit s",
                                                   "worker model s", "worker encode s"], rows, notes)
    save("ray_index", parameters={"docs": args.docs, "files": args.files, "torch_threads": 1},
                results=runs, notes=notes, started=started_at)


if __name__ == "__main__":
    main()
