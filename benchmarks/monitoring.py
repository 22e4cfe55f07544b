"""Monitoring benchmark: drift-alert rates on shifted and unshifted synthetic traffic, and the
monitor's run time on 100k logged requests.

Synthetic traffic is written to the real ``inference_log`` table (the rows the drain pipeline would
write), against a real index of ``pipelines/samples/docs`` (llmfti's own documentation):

- **on-topic**: questions about indexing, search, versions and serving, asked by a population of
  mostly ``free``/``pro`` English-speaking users;
- **shifted**: questions on cooking, football and travel (another topic) by ``team`` users who
  prefer German or French and are far more active (another population).

Each seeded run logs a reference hour and a second on-topic hour (unshifted) and a shifted hour,
runs ``llmfti monitor``'s pipeline and records which drift alerts fired in each hour. The
false-alarm rate is the share of runs in which the unshifted hour raised any drift alert.

    .venv/bin/python -m benchmarks.monitoring              # 10 seeds x (300, 60)/hour, 100k-request timing
    .venv/bin/python -m benchmarks.monitoring --seeds 3 --per-hour 300 --requests 20000   # quicker
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "pipelines" / "samples" / "docs"
START = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
DRIFT_ALERTS = ("query_embedding_drift", "top_score_drift", "out_of_coverage", "user_feature_drift")

_ON_TOPIC = {
    "verbs": ["rebuild", "roll back", "search", "tag", "quarantine", "version", "serve", "embed", "chunk",
              "filter", "restore", "index", "query", "update", "inspect"],
    "objects": ["the index", "a document", "the chunks", "an old index version", "the vector index",
                "hybrid search", "the full-text index", "a tenant's documents", "the embeddings",
                "the quarantine table", "the agent", "a PDF file", "the ANN index", "search results"],
    "forms": ["How do I {v} {o}?", "Can I {v} {o} with llmfti?", "What happens when I {v} {o}?",
              "Which command should I use to {v} {o}?", "Why would I {v} {o}?", "Is it safe to {v} {o}?"],
}
_SHIFTED = {
    "verbs": ["cook", "bake", "grill", "season", "train for", "watch", "book", "plan", "pack for", "score in",
              "marinate", "visit", "defend against", "photograph", "choose"],
    "objects": ["a risotto", "sourdough bread", "a penalty kick", "a football match", "a trip to Lisbon",
                "the World Cup final", "a vegetarian lasagna", "a beach holiday", "chocolate cake",
                "a mountain hike", "the offside rule", "a ski weekend", "spicy curry", "a city break"],
    "forms": ["How do I {v} {o}?", "What is the best way to {v} {o}?", "Any tips to {v} {o}?",
              "When should I {v} {o}?", "Why is it hard to {v} {o}?", "What do I need to {v} {o}?"],
}


def question(rng: random.Random, shifted: bool) -> str:
    vocab = _SHIFTED if shifted else _ON_TOPIC
    return rng.choice(vocab["forms"]).format(v=rng.choice(vocab["verbs"]), o=rng.choice(vocab["objects"]))


def user_features(rng: random.Random, shifted: bool, at: datetime) -> dict[str, Any]:
    if shifted:
        plan, language = rng.choice(["team"] * 4 + ["pro"]), rng.choice(["de", "fr", "de", "en"])
        events_30d = rng.randint(60, 200)
        topics = rng.sample(["cooking", "football", "travel", "photography"], 2)
    else:
        plan, language = rng.choice(["free"] * 3 + ["pro"] * 2 + ["team"]), rng.choice(["en"] * 5 + ["de"])
        events_30d = rng.randint(0, 40)
        topics = rng.sample(["index", "search", "serving", "versions"], 2)
    return {"language": language, "plan": plan, "expertise_level": rng.choice(["beginner", "intermediate", "expert"]),
            "top_topics_7d": topics[:1], "top_topics_30d": topics, "events_24h": rng.randint(0, 5),
            "events_7d": min(events_30d, rng.randint(0, 30)), "events_30d": events_30d,
            "last_active": (at - timedelta(hours=rng.randint(1, 48))).isoformat()}


def records(rng: random.Random, *, start: datetime, count: int, shifted: bool, index_name: str,
            index_version: int, span: timedelta = timedelta(hours=1), users: int = 200) -> list[Any]:
    """``count`` logged requests spread uniformly over ``[start, start + span)``."""
    from llmfti.inference_log import InferenceRecord, new_request_id

    out = []
    prefix = "s" if shifted else "u"
    for _ in range(count):
        at = start + timedelta(seconds=rng.random() * span.total_seconds())
        query = question(rng, shifted)
        failed = rng.random() < 0.01
        out.append(InferenceRecord(
            request_id=new_request_id(), created_at=at, endpoint="/v1/chat/completions",
            model_id="llmfti-extractive", model_version="extractive-1", prompt_id="rag_answer@synthetic",
            api_key_name="bench", tenant=None, user_id=f"{prefix}-{rng.randrange(users)}",
            index_name=index_name, index_version=index_version,
            user_features=user_features(rng, shifted, at), query=query,
            request_messages=[{"role": "user", "content": query}],
            retrieved_chunk_ids=["c1", "c2"], retrieved_scores=[0.3, 0.2],
            answer="" if failed else "An answer from the passages [1] and [2].",
            timings_ms={"retrieval": rng.uniform(5, 20), "generation": rng.uniform(20, 80),
                        "query_embedding": rng.uniform(5, 15)},
            total_ms=rng.uniform(40, 120), error="boom" if failed else None, status=500 if failed else 200,
        ))
    return out


def write_log(settings: Any, logged: list[Any], batch: int = 20_000) -> None:
    """Append records to the real inference_log table (as ``llmfti logs drain`` stores them)."""
    from llmfti.inference_log import records_to_table
    from pipelines.drain_logs import open_log_table

    table = open_log_table(settings)
    for first in range(0, len(logged), batch):
        table.add(records_to_table(logged[first:first + batch]))


def build_docs_index(settings: Any) -> tuple[str, int]:
    """Index llmfti's sample docs; returns (index name, version)."""
    from llmfti.index import VectorIndex
    from pipelines.index_build import build_index

    build_index(settings, [DOCS])
    index = VectorIndex.open(settings)
    return index.name, index.version


def seeded_run(settings: Any, index: tuple[str, int], seed: int, per_hour: int) -> dict[str, Any]:
    """Reference hour, unshifted hour, shifted hour; which drift alerts fired in the last two."""
    from pipelines.monitor import run_monitor, window_id

    rng = random.Random(seed)
    day = START + timedelta(days=seed)
    hours = [day, day + timedelta(hours=1), day + timedelta(hours=2)]
    logged = (records(rng, start=hours[0], count=per_hour, shifted=False, index_name=index[0], index_version=index[1])
              + records(rng, start=hours[1], count=per_hour, shifted=False, index_name=index[0],
                        index_version=index[1])
              + records(rng, start=hours[2], count=per_hour, shifted=True, index_name=index[0],
                        index_version=index[1]))
    write_log(settings, logged)
    result = run_monitor(settings, window="1h", since=day, reference=hours[0].isoformat())
    fired: dict[str, set[str]] = {window_id("1h", h): set() for h in hours}
    for alert in result.alerts:
        fired.setdefault(alert.window_id, set()).add(alert.name.split(":")[0])
    return {"unshifted": sorted(fired[window_id("1h", hours[1])] & set(DRIFT_ALERTS)),
            "shifted": sorted(fired[window_id("1h", hours[2])] & set(DRIFT_ALERTS))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--per-hour", default="300,60", help="requests per hour of each stream; a comma list "
                        "measures several window sizes (small windows are where PSI alone false-alarms)")
    parser.add_argument("--requests", type=int, default=100_000)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from benchmarks.reporting import print_table, save
    from llmfti.config import load_settings
    from pipelines.monitor import run_monitor

    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="llmfti-bench-monitor-") as tmp:
        template = load_settings(data_dir=Path(tmp) / "index")
        index = build_docs_index(template)
        sizes = [int(v) for v in str(args.per_hour).split(",")]
        runs: dict[int, list[dict[str, Any]]] = {}
        for size in sizes:
            runs[size] = []
            for seed in range(args.seeds):
                settings = load_settings(data_dir=Path(tmp) / f"n{size}-seed{seed}")
                _copy_lancedb(template, settings)
                runs[size].append(seeded_run(settings, index, seed, size))

        settings = load_settings(data_dir=Path(tmp) / "big")
        _copy_lancedb(template, settings)
        rng = random.Random(12345)
        span = timedelta(days=1)
        logged = (records(rng, start=START, count=args.requests // 2, shifted=False, index_name=index[0],
                          index_version=index[1], span=span, users=5000)
                  + records(rng, start=START + span, count=args.requests - args.requests // 2, shifted=True,
                            index_name=index[0], index_version=index[1], span=span, users=5000))
        write_log(settings, logged)
        t0, cpu0 = time.perf_counter(), time.process_time()
        big = run_monitor(settings, window="1h")
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0

    alerts: dict[str, dict[str, dict[str, float]]] = {}
    for size, size_runs in runs.items():
        alerts[f"{size}_per_hour"] = rates = {}
        for stream in ("unshifted", "shifted"):
            rates[stream] = {name: sum(name in r[stream] for r in size_runs) / len(size_runs) for name in DRIFT_ALERTS}
            rates[stream]["any_drift_alert"] = sum(bool(r[stream]) for r in size_runs) / len(size_runs)
        rows = [[name, rates["unshifted"][name], rates["shifted"][name]] for name in (*DRIFT_ALERTS, "any_drift_alert")]
        print_table(f"Drift alert rate over {args.seeds} seeded runs ({size} requests per hour)",
                    ["alert", "unshifted (false alarm)", "shifted (detection)"], rows)
    timing = {"requests": args.requests, "windows": len(big.rows), "seconds": round(seconds, 2),
              "cpu_seconds": round(cpu_seconds, 2), "load_average_1m": round(os.getloadavg()[0], 2),
              "queries_embedded": big.queries_embedded,
              "requests_per_second": round(args.requests / seconds, 1)}
    print_table("Monitor run time", list(timing), [list(timing.values())])
    path = save("monitoring", parameters=vars(args), started=started,
                results={"alert_rates": alerts, "runs": runs, "monitor_run": timing},
                notes=["drift alerts: MMD permutation p < monitoring.drift_p_value, KS p < drift_p_value, "
                       "out-of-coverage share > out_of_coverage_max, any user-feature PSI > psi_max with a "
                       "chi-square p < drift_p_value",
                       "queries are re-embedded by the monitor (sample of monitoring.max_embedded_queries per "
                       "window); each distinct text is embedded once per run"])
    print(f"wrote {path}")


def _copy_lancedb(source: Any, target: Any) -> None:
    import shutil

    shutil.copytree(Path(source.data_dir) / "lancedb", Path(target.data_dir) / "lancedb")


if __name__ == "__main__":
    main()
