"""What durable log acceptance costs: the wait a request adds before it may answer.

``python -m benchmarks.log_durability [--records N]``

1. The writer alone (a real embedded redis-server under a temporary data_dir): latency of
   ``InferenceLogWriter.write`` (submit + wait until durable) for a realistic ~3 KB record, with 1 and
   8 concurrent writers, for ``appendfsync always`` (the default), ``everysec``, the fsync'd spool
   (Redis down), and ``submit`` only (``logs.durable_ack: false``: no wait at all).
2. The agent end to end (in-process app over a small index, sequential chat requests): p50 of the
   response time with ``logs.durable_ack`` on and off, interleaved request by request.

Writes ``benchmarks/results/log_durability.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.reporting import percentiles_ms, print_table, save


def record(i: int) -> Any:
    from llmfti.inference_log import InferenceRecord, now_utc

    passage = "The command llmfti index rollback restores an older index version. " * 8
    return InferenceRecord(request_id=f"req-bench-{i}", created_at=now_utc(), endpoint="chat.completions",
                           model_id="llmfti-extractive", model_version="extractive@1", prompt_id="rag_answer@0",
                           query="How do I roll back?", prompt=passage * 4, answer=passage,
                           retrieved_chunk_ids=[f"c{j}" for j in range(5)], retrieved_scores=[0.5] * 5,
                           timings_ms={"retrieval": 3.1, "generation": 12.0})


def writer_latencies(settings: Any, mode: str, threads: int, records: int) -> list[float]:
    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import InferenceLogWriter

    client = redis_client(settings)
    if mode in ("always", "everysec"):
        client.config_set("appendfsync", mode)

    def factory() -> Any:
        if mode == "spool":
            raise ConnectionError("redis is down (benchmark)")
        return client

    writer = InferenceLogWriter(factory, f"bench:{mode}", settings.data_dir / "spool", spool_name=f"{mode}.jsonl")
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = records // threads

    def work(t: int) -> None:
        mine = []
        for i in range(per_thread):
            rec = record(t * per_thread + i)
            start = time.perf_counter()
            if mode == "no_wait":
                writer.submit(rec)
            else:
                writer.write(rec, timeout_s=30)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    writer.close()
    client.delete(f"bench:{mode}")
    client.config_set("appendfsync", "always")
    return latencies


def agent_latencies(folder: Path, requests: int) -> dict[str, list[float]]:
    from fastapi.testclient import TestClient

    from agents.api.app import create_app
    from llmfti.config import load_settings
    from pipelines.index_build import build_index

    docs = folder / "docs"
    docs.mkdir()
    (docs / "rollback.md").write_text("# Rolling back\n\nThe command llmfti index rollback restores an older "
                                      "index version. Old versions stay searchable.\n")
    settings = load_settings(data_dir=folder / "agent", agent={"auth_mode": "dev"})
    build_index(settings, [docs])
    app = create_app(settings)
    out: dict[str, list[float]] = {"durable": [], "no_wait": []}
    body = {"model": "llmfti-extractive", "messages": [{"role": "user", "content": "How do I roll back?"}]}
    with TestClient(app) as client:
        for _ in range(5):  # warm up
            client.post("/v1/chat/completions", json=body)
        for i in range(requests):
            durable = i % 2 == 0
            settings.logs.durable_ack = durable  # read per request by the pipeline
            start = time.perf_counter()
            response = client.post("/v1/chat/completions", json=body)
            elapsed = time.perf_counter() - start
            assert response.status_code == 200, response.text
            out["durable" if durable else "no_wait"].append(elapsed)
        settings.logs.durable_ack = True
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=800, help="records per writer configuration")
    parser.add_argument("--requests", type=int, default=200, help="agent requests (half durable, half not)")
    args = parser.parse_args()
    from llmfti.config import load_settings
    from llmfti.features.embedded_redis import shutdown_embedded

    results: dict[str, Any] = {"writer": {}, "agent": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmfti-logdur-") as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data")
        try:
            for mode in ("always", "everysec", "spool", "no_wait"):
                for threads in (1, 8):
                    lat = writer_latencies(settings, mode, threads, args.records)
                    stats = percentiles_ms(lat)
                    results["writer"][f"{mode}/{threads}"] = stats
                    rows.append([f"writer {mode}", threads, stats["p50_ms"], stats["p99_ms"]])
        finally:
            shutdown_embedded(settings)
        agent_settings_dir = Path(tmp)
        lat = agent_latencies(agent_settings_dir, args.requests)
        shutdown_embedded(load_settings(data_dir=agent_settings_dir / "agent"))
        for name, values in lat.items():
            stats = percentiles_ms(values)
            results["agent"][name] = stats
            rows.append([f"agent request, {name}", 1, stats["p50_ms"], stats["p99_ms"]])
        added = statistics.median(lat["durable"]) - statistics.median(lat["no_wait"])
        results["agent"]["p50_added_ms"] = round(added * 1000, 2)
    print_table("Durable log acceptance", ["what", "concurrent", "p50 ms", "p99 ms"], rows,
                [f"agent p50 added by durable acceptance: {results['agent']['p50_added_ms']} ms"])
    save("log_durability", parameters=vars(args), results=results)


if __name__ == "__main__":
    main()
