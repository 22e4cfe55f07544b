"""The agent's query encoder: the sentence-transformers model as loaded (eager) vs traced into one graph
(llmfti/embedders/traced.py, ``agent.traced_query_encoder``), on held-out SQuAD dev questions.

Per batch size: CPU time per question (one torch thread, as the agent's encoder thread runs) and wall time
per batch; then the GIL: the rate of two threads encoding single questions at once, as a multiple of one
thread's (2.0 = the threads never wait for each other on 2 cores). Also the largest cosine gap between the
two encoders' vectors (they must agree: the agent checks >= 0.9999 at start-up).

    python -m benchmarks.query_encoder                  # batches of 1, 8, 32; 400 questions
    python -m benchmarks.query_encoder --questions 100  # quick
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks import squad
from benchmarks.reporting import print_table, save


def cpu_per_text(encode: Callable[[Sequence[str]], Any], texts: list[str], batch: int) -> tuple[float, float]:
    """(CPU ms per text, wall ms per batch) encoding ``texts`` in batches of ``batch`` after 3 warm-up batches."""
    batches = [texts[i:i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    for warm in batches[:3]:
        encode(warm)
    cpu, wall = time.process_time(), time.perf_counter()
    for chunk in batches:
        encode(chunk)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 1000 * cpu / (len(batches) * batch), 1000 * wall / len(batches)


def two_thread_speedup(encode: Callable[[Sequence[str]], Any], texts: list[str]) -> float:
    """Questions per second of two threads encoding one question at a time, over one thread's."""
    half = len(texts) // 2
    start = time.perf_counter()
    for text in texts[:half]:
        encode([text])
    one = half / (time.perf_counter() - start)
    threads = [threading.Thread(target=lambda part: [encode([t]) for t in part], args=(texts[i * half:(i + 1) * half],))
               for i in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (2 * half / (time.perf_counter() - start)) / one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=400, help="held-out SQuAD dev questions to encode")
    parser.add_argument("--batches", default="1,8,32", help="batch sizes, comma-separated")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from llmfti.config import load_settings
    from llmfti.embedders import load_embedder

    torch.set_num_threads(1)
    embedder = load_embedder(load_settings())
    start = time.perf_counter()
    traced = embedder.query_encoder()
    trace_s = time.perf_counter() - start
    if traced == embedder.encode:
        raise SystemExit("the model could not be traced (see the warning above): nothing to compare")
    texts = [q.text for q in squad.questions()][-args.questions:]
    encoders = {"eager (SentenceTransformer.encode)": embedder.encode, "traced graph": traced}
    rows, results = [], {}
    for batch in (int(b) for b in args.batches.split(",")):
        for name, encode in encoders.items():
            cpu_ms, wall_ms = cpu_per_text(encode, texts, batch)
            results.setdefault(name, {})[f"batch_{batch}"] = {"cpu_ms_per_text": round(cpu_ms, 3),
                                                              "wall_ms_per_batch": round(wall_ms, 3)}
            rows.append([name, batch, cpu_ms, wall_ms])
    for name, encode in encoders.items():
        results[name]["two_thread_speedup"] = round(two_thread_speedup(encode, texts[:200]), 3)
    gap = float(np.max(1.0 - np.sum(embedder.encode(texts[:64]) * traced(texts[:64]), axis=1)))
    results.update(trace_and_check_s=round(trace_s, 2), max_cosine_gap=gap)
    print_table(f"query encoder, {len(texts)} SQuAD dev questions, 1 torch thread",
                ["encoder", "batch", "CPU ms / question", "wall ms / batch"], rows,
                notes=["two threads at once, rate vs one thread: " + ", ".join(
                           f"{n} {r['two_thread_speedup']}x" for n, r in results.items() if isinstance(r, dict)),
                       f"largest cosine gap between the encoders' vectors: {gap:.2e}; trace + start-up check "
                       f"{trace_s:.2f} s; load average {os.getloadavg()[0]:.2f}"])
    save("query_encoder", parameters=vars(args), results=results)


if __name__ == "__main__":
    main()
