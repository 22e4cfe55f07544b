"""The agent service on loopback: (a) the pipeline's overhead vs its raw parts, (b) load at 32 clients.

Setup: an index of SQuAD v1.1 dev sentences (one chunk each; >= 10k with the default size), 200
users in the ``user_profile`` online store, and ``llmfti serve`` (extractive generator, real API-key auth,
rate limit and inference log; ``--workers`` processes, by default what ``llmfti serve`` runs: one per core)
in its own process. The agent's CPU time is that of the serve process and all its workers.

(a) Sequential requests. Overhead = client latency of ``/v1/chat/completions`` minus the generation
    time the server reports, i.e. auth + rate limit + user features + query embedding + retrieval
    + prompt + logging + HTTP. In the same rounds (interleaved, same question) the raw parts are
    timed: a hello-world FastAPI round trip on its own uvicorn, one query encode, one index search
    with that vector (same k, mode, tenant), one Redis HGETALL of the user's features. Goal:
    overhead p50 <= 1.25x the sum of the raw parts' p50.
(b) 32 concurrent keep-alive clients (a raw asyncio HTTP/1.1 client: httpx would saturate the CPU
    first) for 60 s. Reports requests/s, p50/p99, errors, and served = logged (every 200 drained
    exactly once from the inference log into LanceDB). Goal: >= 3x 29.3 requests/s (issue 13) with p99
    <= 500 ms. CPU-time split of the load: the agent process, its redis-server and the load client
    (from /proc), per request; requests/s is set next to the capacity the raw parts allow,
    cores / (CPU time of encode + search + HGETALL + hello-world HTTP per request, from (a)). Also the
    garbage-collector pauses during the load (``llmfti_gc_pause_seconds`` of all workers: a full collection
    of the unfrozen start-up heap took up to 655 ms, the p99 tail before ``gc.freeze()``).
(c) The same load on a workload of repeated questions (a pool of --repeat-pool questions): latency and
    the query-embedding cache's hit rate as /metrics reports it.
(e) With --compare-code DIR (another version's source tree, e.g. ``git archive <commit> | tar -x -C DIR``):
    the load of (b) in alternating windows against this tree's agent and one running DIR's code on the same
    index and Redis, so both see the same machine load (a busy shared machine drifts too much between runs).
(d) The CPU-time split per stage: the load of (b) again for --profile-duration s while py-spy samples the
    agent process (:mod:`benchmarks.cpu_profile`; unmeasured without py-spy). Sampling perturbs, so
    (b)'s figures come from the unprofiled run; (d) gives the shares.

    python -m benchmarks.serve                                   # full: >= 10k chunks, 60 s
    python -m benchmarks.serve --sentences 1500 --requests 60 --duration 5   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import squad
from benchmarks.reporting import percentiles_ms, print_table, save

KEY = "bench-key"
MODEL = "llmfti-extractive"
USERS = 200
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def hello_app():  # noqa: ANN201 - the hello-world baseline, served by uvicorn --factory
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


# -- setup ---------------------------------------------------------------------------------------------


def corpus_rows(limit: int) -> list[dict[str, str]]:
    """SQuAD dev sentences (>= 4 words) as documents, one sentence each (at most ``limit``)."""
    rows = []
    for p in squad.paragraphs():
        for i, sentence in enumerate(s for s in _SENTENCE.split(p.context) if len(s.split()) >= 4):
            rows.append({"id": f"{p.doc_id}/s{i}", "text": sentence})
    return rows[:limit]


def write_corpus(folder: Path, rows: list[dict[str, str]]) -> Path:
    path = folder / "squad_sentences.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def prepare(data_dir: Path, sentences: int) -> dict[str, Any]:
    from llmfti.config import load_settings
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.features.materialization import materialize
    from llmfti.index import VectorIndex
    from pipelines.index_build import build_index
    from pipelines.user_features import USER_PROFILE

    settings = load_settings(data_dir=data_dir)
    info: dict[str, Any] = {}
    corpus = corpus_rows(sentences)  # fewer than asked when SQuAD dev has fewer (~10.2k)
    if not VectorIndex.exists(settings) or VectorIndex.open(settings).count_rows() < len(corpus):
        start = time.perf_counter()
        build_index(settings, [write_corpus(data_dir.parent, corpus)])
        info["index_build_s"] = round(time.perf_counter() - start, 1)
    info["chunks"] = VectorIndex.open(settings).count_rows()
    rng = random.Random(0)
    rows = [{**{f.name: f.default for f in USER_PROFILE.features}, "user_id": f"user-{i}",
             "event_time": "2026-11-01T00:00:00Z", "plan": rng.choice(["free", "pro", "team"]),
             "language": rng.choice(["en", "de", "fr"]), "events_30d": rng.randrange(100)} for i in range(USERS)]
    group = FeatureGroup.create(settings, USER_PROFILE)
    group.write(rows, mode="upsert")
    materialize(settings, group)
    return info


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` and its live child processes (``llmfti serve --workers``:
    the workers), all threads, from /proc; 0 when gone or unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + sum(map(cpu_seconds, children(pid)))


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def redis_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "redis" / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{args[0]} exited: {proc.stderr.read()[-2000:]}")
        try:
            status, _ = asyncio.run(_once(port, "GET", "/healthz" if "serve" in args else "/docs"))
            if status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not start within 300 s")


# -- a small raw HTTP/1.1 client ---------------------------------------------------------------------


class RawClient:
    """One keep-alive connection; just enough HTTP/1.1 for JSON requests and Content-Length bodies."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: str = "") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{headers}\r\n")
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _once(port: int, method: str, path: str) -> tuple[int, bytes]:
    client = RawClient(port)
    try:
        return await client.request(method, path)
    finally:
        client.close()


def chat_body(question: str, user: str) -> bytes:
    return json.dumps({"model": MODEL, "user": user, "messages": [{"role": "user", "content": question}]}).encode()


AUTH = f"Authorization: Bearer {KEY}\r\n"


# -- (a) overhead vs raw parts -----------------------------------------------------------------------


async def overhead(settings: Any, agent_port: int, hello_port: int, questions: list[str], n: int,
                   hello_pid: int) -> dict[str, Any]:
    import torch

    from llmfti.embedders import load_embedder
    from llmfti.embedders.base import query_encoder
    from llmfti.features.embedded_redis import redis_client
    from llmfti.features.online_store import OnlineStore
    from llmfti.index import VectorIndex

    torch.set_num_threads(1)  # the raw encode's CPU time per request, without idle threads spinning
    index = VectorIndex.open(settings)
    embedder = load_embedder(settings.embedder)
    encode_query = query_encoder(embedder, settings.agent.traced_query_encoder)  # the one the agent runs
    redis = redis_client(settings)
    store = OnlineStore(settings, redis)
    agent, hello = RawClient(agent_port), RawClient(hello_port)
    k, mode = settings.agent.retrieval_k, settings.agent.retrieval_mode or settings.index.default_mode
    samples: dict[str, list[float]] = {n: [] for n in ("overhead", "total", "http", "encode", "search", "hgetall",
                                                      "raw_sum")}
    raw_cpu = dict.fromkeys(("encode", "search", "hgetall", "http"), 0.0)
    stages: dict[str, list[float]] = {}
    rng = random.Random(1)
    for i in range(n + 10):  # the first 10 rounds warm up
        question, user = questions[i % len(questions)], f"user-{rng.randrange(USERS)}"
        t = time.perf_counter()
        status, payload = await agent.request("POST", "/v1/chat/completions", chat_body(question, user), AUTH)
        total = time.perf_counter() - t
        assert status == 200, payload[:500]
        timings = json.loads(payload)["timings_ms"]
        t, c, h = time.perf_counter(), time.process_time(), cpu_seconds(hello_pid)
        status, _ = await hello.request("POST", "/hello")
        http = time.perf_counter() - t
        cpu_http = time.process_time() - c + cpu_seconds(hello_pid) - h  # client + server side
        t, c = time.perf_counter(), time.process_time()
        vector = encode_query([question])[0]
        encode, cpu_encode = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        index.search(question, k=k, mode=mode, vector=vector)
        search, cpu_search = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        redis.hgetall(store.entity_key("user_profile", 1, user))
        hgetall, cpu_hgetall = time.perf_counter() - t, time.process_time() - c
        if i < 10:
            continue
        for part, value in (("encode", cpu_encode), ("search", cpu_search), ("hgetall", cpu_hgetall),
                            ("http", cpu_http)):
            raw_cpu[part] += value
        for name, value in (("overhead", total - timings["generation"] / 1000), ("total", total), ("http", http),
                            ("encode", encode), ("search", search), ("hgetall", hgetall),
                            ("raw_sum", http + encode + search + hgetall)):
            samples[name].append(value)
        for stage, ms in timings.items():
            stages.setdefault(stage, []).append(ms / 1000)
    agent.close()
    hello.close()
    stats = {name: percentiles_ms(values) for name, values in samples.items()}
    server = {s: percentiles_ms(v) for s, v in stages.items()}
    raw_p50 = sum(stats[p]["p50_ms"] for p in ("http", "encode", "search", "hgetall"))
    raw_p99 = sum(stats[p]["p99_ms"] for p in ("http", "encode", "search", "hgetall"))
    # The same sum with encode and search as the server itself measured them (same process, same load).
    in_server_p50 = (stats["http"]["p50_ms"] + server["query_embedding"]["p50_ms"] + server["retrieval"]["p50_ms"]
                     + stats["hgetall"]["p50_ms"])
    raw_cpu_ms = {part: round(1000 * value / n, 3) for part, value in raw_cpu.items()}
    return {
        "requests": n,
        "raw_parts_cpu_ms_per_request": raw_cpu_ms,
        "raw_parts_cpu_ms_per_request_sum": round(sum(raw_cpu_ms.values()), 3),
        "stats": stats,
        "server_stages": server,
        "raw_parts_in_server_p50_sum_ms": round(in_server_p50, 3),
        "ratio_p50_vs_in_server_parts": round(stats["overhead"]["p50_ms"] / in_server_p50, 3),
        "raw_parts_p50_sum_ms": round(raw_p50, 3),
        "raw_parts_p99_sum_ms": round(raw_p99, 3),
        "ratio_p50": round(stats["overhead"]["p50_ms"] / raw_p50, 3),
        "ratio_p99": round(stats["overhead"]["p99_ms"] / raw_p99, 3),
        "goal": "overhead p50 <= 1.25x raw parts p50",
    }


# -- (b) load ------------------------------------------------------------------------------------------


async def load(port: int, questions: list[str], clients: int, duration: float,
               pids: dict[str, int | None] | None = None, latencies: list[float] | None = None,
               seed: int = 0) -> dict[str, Any]:
    latencies = [] if latencies is None else latencies
    errors: dict[str, int] = {}
    ids: list[str] = []
    deadline = time.perf_counter() + duration

    async def worker(w: int) -> None:
        rng = random.Random(seed + w)
        client = RawClient(port)
        try:
            while time.perf_counter() < deadline:
                body = chat_body(rng.choice(questions), f"user-{rng.randrange(USERS)}")
                t = time.perf_counter()
                try:
                    status, payload = await client.request("POST", "/v1/chat/completions", body, AUTH)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    client.close()
                    client = RawClient(port)
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - t)
                    ids.append(json.loads(payload)["id"])
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        finally:
            client.close()

    pids = pids or {}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    cpu["load_client"] = time.process_time() - client_before
    served = max(len(latencies), 1)
    return {"clients": clients, "duration_s": round(elapsed, 1), "served": len(latencies),
            "unique_ids": len(set(ids)), "errors": errors, "requests_per_s": round(len(latencies) / elapsed, 1),
            **percentiles_ms(latencies),
            "cpu_s": {name: round(v, 2) for name, v in cpu.items()},
            "cpu_ms_per_request": {name: round(1000 * v / served, 3) for name, v in cpu.items()},
            "cpu_utilisation_of_cores": round(sum(cpu.values()) / elapsed / (os.cpu_count() or 1), 3)}


async def cache_lookups(port: int) -> dict[str, dict[str, float]]:
    """``llmfti_embedding_cache_lookups`` per cache and result (hit/miss), as /metrics reports them."""
    status, body = await _once(port, "GET", "/metrics")
    found: dict[str, dict[str, float]] = {}
    for line in body.decode().splitlines():
        if line.startswith("llmfti_embedding_cache_lookups{"):
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
            cache, result = labels["cache"].strip('"'), labels["result"].strip('"')
            found.setdefault(cache, {})[result] = float(line.rsplit(" ", 1)[1])
    return found


async def gc_pauses(port: int) -> dict[str, dict[str, float]]:
    """``llmfti_gc_pause_seconds`` per generation (all workers): collections, seconds, collections over 50 ms."""
    status, body = await _once(port, "GET", "/metrics")
    found: dict[str, dict[str, float]] = {}
    for line in body.decode().splitlines():
        match = re.match(r'llmfti_gc_pause_seconds_(count|sum|bucket)\{(.*)\} (\S+)$', line)
        if not match:
            continue
        labels = dict(part.split("=", 1) for part in match.group(2).split(","))
        entry = found.setdefault(labels["generation"].strip('"'), {"collections": 0.0, "seconds": 0.0, "le_50ms": 0.0})
        if match.group(1) == "count":
            entry["collections"] += float(match.group(3))
        elif match.group(1) == "sum":
            entry["seconds"] += float(match.group(3))
        elif labels.get("le") == '"0.05"':
            entry["le_50ms"] += float(match.group(3))
    return found


def gc_during(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Collections between two /metrics reads, per generation: how many, their total seconds, how many > 50 ms."""
    out = {}
    for generation, counts in sorted(after.items()):
        was = before.get(generation, {})
        n = counts["collections"] - was.get("collections", 0)
        fast = counts["le_50ms"] - was.get("le_50ms", 0)
        seconds = counts["seconds"] - was.get("seconds", 0)
        out[f"gen{generation}"] = {"collections": int(n), "seconds": round(seconds, 3), "over_50ms": int(n - fast)}
    return out


def misses_per_request(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                       requests: int) -> dict[str, float]:
    """Texts each cache sent to the embedder per request between two /metrics reads (its misses)."""
    return {cache: round((counts.get("miss", 0) - before.get(cache, {}).get("miss", 0)) / max(requests, 1), 3)
            for cache, counts in after.items()}


def hit_rates(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """Hit rate per cache over the lookups made between two /metrics reads."""
    rates: dict[str, float | None] = {}
    for cache, counts in after.items():
        hits = counts.get("hit", 0) - before.get(cache, {}).get("hit", 0)
        misses = counts.get("miss", 0) - before.get(cache, {}).get("miss", 0)
        rates[cache] = round(hits / (hits + misses), 4) if hits + misses else None
    return rates


def drain_until(settings: Any, expected: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Drain until ``expected`` new records are stored (the server's writer appends asynchronously)."""
    from pipelines.drain_logs import drain_logs

    inserted, read = 0, 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = drain_logs(settings)
        inserted, read = inserted + result["inserted"], read + result["read"]
        if inserted >= expected:
            time.sleep(1.0)  # anything late would be a duplicate or an extra: look once more
            result = drain_logs(settings)
            inserted, read = inserted + result["inserted"], read + result["read"]
            break
        time.sleep(0.5)
    return {"logged": inserted, "records_read": read, "table_rows": result["table_rows"]}


def compare(settings: Any, agents: dict[str, tuple[int, int]], questions: list[str], clients: int, windows: int,
            window_s: float) -> dict[str, Any]:
    """(e) The same load against each agent in turn, ``windows`` times, summed per agent."""
    sides: dict[str, dict[str, Any]] = {name: {"latencies": [], "errors": 0, "cpu": 0.0, "elapsed": 0.0}
                                        for name in agents}
    served = 0
    loads = []
    for window in range(windows):
        for name, (port, pid) in agents.items():
            latencies: list[float] = []
            result = asyncio.run(load(port, questions, clients, window_s, {"agent": pid}, latencies=latencies,
                                      seed=1000 * (window + 1)))  # both sides get the same questions
            side = sides[name]
            side["latencies"] += latencies
            side["errors"] += sum(result["errors"].values())
            side["cpu"] += result["cpu_s"]["agent"]
            side["elapsed"] += result["duration_s"]
            served += result["served"]
            loads.append(os.getloadavg()[0])
    logged = drain_until(settings, served)["logged"]
    out = {}
    for name, side in sides.items():
        n = len(side["latencies"])
        out[name] = {"requests_per_s": round(n / side["elapsed"], 1), **percentiles_ms(side["latencies"]),
                     "errors": side["errors"], "agent_cpu_ms_per_request": round(1000 * side["cpu"] / max(n, 1), 2)}
    return {"sides": out, "served": served, "logged": logged, "served_equals_logged": logged == served,
            "load_average": [round(min(loads), 2), round(max(loads), 2)]}


def profile(port: int, pid: int, questions: list[str], clients: int, duration: float) -> dict[str, Any]:
    """(d) The load of (b) while py-spy samples the agent: its CPU time per request, split by stage."""
    from benchmarks.cpu_profile import Profiler

    if duration <= 0:
        return {"error": "skipped (--profile-duration 0)"}
    with Profiler(pid, duration) as profiler:
        result = asyncio.run(load(port, questions, clients, duration, {"agent": pid}, seed=500))  # not (b)'s
    if profiler.error:
        return {"error": profiler.error, "served": result["served"]}
    sampled = profiler.per_request_ms(result["served"])
    total = sum(sampled.values()) or 1.0
    share = {stage: round(ms / total, 3) for stage, ms in sampled.items()}
    agent_ms = result["cpu_ms_per_request"]["agent"]
    return {**{k: result[k] for k in ("duration_s", "served", "requests_per_s", "p50_ms", "p99_ms",
                                     "cpu_ms_per_request")},
            "cpu_ms_per_request_by_stage": {stage: round(agent_ms * part, 2) for stage, part in share.items()},
            "share": share, "sampled_active_ms_per_request": sampled,
            "method": "py-spy record --nonblocking --rate 100 on the agent process: the share of each stage among "
                      "the samples of active Python threads (each stack given to the stage of its frame nearest "
                      "the leaf, benchmarks/cpu_profile.py), times the agent's CPU per request from /proc. On an "
                      "overloaded machine 'active' includes runnable threads waiting for a core, and native pools "
                      "(torch OpenMP workers, Lance's Rust threads) are not sampled: shares, not exact times"}


# -- main ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=12_000, help="chunks to index (max ~10.2k available)")
    parser.add_argument("--requests", type=int, default=400, help="sequential requests for (a)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load for (b)")
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse an index built by an earlier run")
    parser.add_argument("--repeat-pool", type=int, default=50, help="distinct questions of the repeated workload (c)")
    parser.add_argument("--profile-duration", type=float, default=20.0,
                        help="seconds of profiled load for the CPU split per stage (d); 0 skips it")
    parser.add_argument("--workers", type=int, default=None,
                        help="llmfti serve --workers (default: what llmfti serve does by default, agent.workers: "
                             "one per core)")
    parser.add_argument("--compare-code", type=Path, default=None,
                        help="(e) a source tree of another version: A/B against it in alternating windows")
    parser.add_argument("--compare-workers", type=int, default=None,
                        help="(e) --workers for the other tree's agent (default: none passed, its own default)")
    parser.add_argument("--compare-windows", type=int, default=4, help="(e) windows per side")
    parser.add_argument("--compare-window", type=float, default=15.0, help="(e) seconds per window")
    args = parser.parse_args()
    if args.repeat_pool < 1:
        parser.error(f"--repeat-pool must be at least 1 (got {args.repeat_pool}): (c) needs questions to repeat")

    from agents.api.auth import hash_key
    from llmfti.config import load_settings

    root = Path(tempfile.mkdtemp(prefix="llmfti-bench-serve-")) if args.data_dir is None else args.data_dir.parent
    data_dir = args.data_dir or root / "data"
    setup = prepare(data_dir, args.sentences)
    settings = load_settings(data_dir=data_dir)
    keys = [{"name": "bench", "sha256": hash_key(KEY), "requests_per_minute": 10**9}]
    env = {**os.environ, "LLMFTI_DATA_DIR": str(data_dir), "LLMFTI_AGENT__API_KEYS": json.dumps(keys),
           "HF_HUB_OFFLINE": "1"}
    exe = str(Path(sys.executable).with_name("llmfti"))
    agent_port, hello_port = 18400 + os.getpid() % 500, 18900 + os.getpid() % 500
    workers_args = [] if args.workers is None else ["--workers", str(args.workers)]
    agent = start([exe, "serve", "--no-samples", "--port", str(agent_port), "--log-level", "warning", *workers_args],
                  env, agent_port)
    hello = start([sys.executable, "-m", "uvicorn", "benchmarks.serve:hello_app", "--factory", "--port",
                   str(hello_port), "--log-level", "warning", "--no-access-log"], env, hello_port)
    questions = [q.text for q in squad.questions()]
    random.Random(2).shuffle(questions)
    try:
        part_a = asyncio.run(overhead(settings, agent_port, hello_port, questions, args.requests, hello.pid))
        before = drain_until(settings, args.requests + 10)
        pids = {"agent": agent.pid, "redis_server": redis_pid(data_dir)}
        lookups_before, gc_before = asyncio.run(cache_lookups(agent_port)), asyncio.run(gc_pauses(agent_port))
        part_b = asyncio.run(load(agent_port, questions[5000:], args.clients, args.duration, pids))
        lookups_after = asyncio.run(cache_lookups(agent_port))
        part_b["gc_pauses"] = gc_during(gc_before, asyncio.run(gc_pauses(agent_port)))
        logs = drain_until(settings, part_b["served"])
        part_b["cache_hit_rate"] = hit_rates(lookups_before, lookups_after)
        part_b["embedder_texts_per_request"] = misses_per_request(lookups_before, lookups_after, part_b["served"])
        lookups_before = asyncio.run(cache_lookups(agent_port))
        part_c = asyncio.run(load(agent_port, questions[1000:1000 + args.repeat_pool], args.clients,
                                  args.duration / 2, pids))
        part_c["cache_hit_rate"] = hit_rates(lookups_before, asyncio.run(cache_lookups(agent_port)))
        part_c.update(drain_until(settings, part_c["served"]))
        part_d = profile(agent_port, agent.pid, questions[5000:], args.clients, args.profile_duration)
        if "served" in part_d:
            drain_until(settings, part_d["served"])
        part_e = None
        if args.compare_code is not None:  # two fresh agents: equally cold caches
            fresh = {}
            try:
                for port, (name, code_env) in enumerate((
                        ("this tree", env),
                        (str(args.compare_code), {**env, "PYTHONPATH": str(args.compare_code.resolve())})),
                        start=agent_port + 1):
                    side_args = workers_args if name == "this tree" else (
                        [] if args.compare_workers is None else ["--workers", str(args.compare_workers)])
                    fresh[name] = (port, start([exe, "serve", "--no-samples", "--port", str(port), "--log-level",
                                                "warning", *side_args], code_env, port))
                part_e = compare(settings, {name: (port, proc.pid) for name, (port, proc) in fresh.items()},
                                 questions[5000:], args.clients, args.compare_windows, args.compare_window)
            finally:
                for _, proc in fresh.values():
                    proc.terminate()
                    proc.wait(timeout=60)
    finally:
        for proc in (agent, hello):
            proc.terminate()
            proc.wait(timeout=60)
    part_b.update(logs, served_equals_logged=logs["logged"] == part_b["served"] == part_b["unique_ids"])
    part_c["served_equals_logged"] = part_c["logged"] == part_c["served"] == part_c["unique_ids"]
    cores = os.cpu_count() or 1
    raw_cpu_ms = part_a["raw_parts_cpu_ms_per_request_sum"]
    capacity = cores / (raw_cpu_ms / 1000) if raw_cpu_ms else None
    part_b["capacity_from_raw_parts_rps"] = round(capacity, 1) if capacity else None
    part_b["ratio_to_capacity"] = round(part_b["requests_per_s"] / capacity, 3) if capacity else None
    part_b["goal"] = "requests/s >= 3 x 29.3 = 87.9 with p99 <= 500 ms, 0 errors, served = logged"
    from agents.api.workers import worker_count

    part_b["agent_workers"] = worker_count(settings.agent.workers if args.workers is None else args.workers)

    s = part_a["stats"]
    rows = [[name, s[name]["p50_ms"], s[name]["p99_ms"]] for name in ("http", "encode", "search", "hgetall")]
    rows += [["raw parts (sum)", part_a["raw_parts_p50_sum_ms"], part_a["raw_parts_p99_sum_ms"]],
             ["agent overhead", s["overhead"]["p50_ms"], s["overhead"]["p99_ms"]],
             ["agent end-to-end", s["total"]["p50_ms"], s["total"]["p99_ms"]],
             ["ratio overhead / raw", part_a["ratio_p50"], part_a["ratio_p99"]],
             ["raw parts, encode+search as timed in the server", part_a["raw_parts_in_server_p50_sum_ms"], None],
             ["ratio overhead / that", part_a["ratio_p50_vs_in_server_parts"], None]]
    print_table(f"(a) overhead vs raw parts, {part_a['requests']} sequential requests, {setup['chunks']} chunks",
                ["", "p50 ms", "p99 ms"], rows, notes=[part_a["goal"]])
    stage_rows = [[stage, v["p50_ms"], v["p99_ms"]] for stage, v in part_a["server_stages"].items()]
    print_table("(a) server-side stages", ["stage", "p50 ms", "p99 ms"], stage_rows)
    print_table(f"(b) {args.clients} concurrent clients for {part_b['duration_s']} s (extractive, "
                f"{part_b['agent_workers']} agent worker process(es))",
                ["requests/s", "p50 ms", "p99 ms", "served", "errors", "logged", "served = logged"],
                [[part_b["requests_per_s"], part_b["p50_ms"], part_b["p99_ms"], part_b["served"],
                  sum(part_b["errors"].values()), part_b["logged"], part_b["served_equals_logged"]]],
                notes=[part_b["goal"], f"garbage-collector pauses during the load: {part_b['gc_pauses']}"])
    split = part_b["cpu_ms_per_request"]
    print_table("(b) CPU time per request (ms) and capacity", [*split, "raw parts", "capacity rps", "achieved rps",
                                                                "ratio"],
                [[*split.values(), raw_cpu_ms, part_b["capacity_from_raw_parts_rps"], part_b["requests_per_s"],
                  part_b["ratio_to_capacity"]]],
                notes=[f"raw parts CPU ms per request: {part_a['raw_parts_cpu_ms_per_request']}; capacity = "
                       f"{cores} cores / raw parts CPU time; load average {os.getloadavg()[0]:.2f}"])
    print_table(f"(c) repeated questions: a pool of {args.repeat_pool}, {args.clients} clients",
                ["requests/s", "p50 ms", "p99 ms", "errors", "served = logged", "query cache hits",
                 "sentence cache hits"],
                [[part_c["requests_per_s"], part_c["p50_ms"], part_c["p99_ms"], sum(part_c["errors"].values()),
                  part_c["served_equals_logged"], part_c["cache_hit_rate"].get("query"),
                  part_c["cache_hit_rate"].get("sentence")]],
                notes=[f"(b) for comparison: {part_b['requests_per_s']} requests/s, p50 {part_b['p50_ms']} ms; "
                       f"cache hit rates in (b): {part_b['cache_hit_rate']}, texts embedded per request in (b): "
                       f"{part_b['embedder_texts_per_request']}"])
    if part_e is not None:
        print_table(f"(e) A/B in {args.compare_windows} alternating windows of {args.compare_window:g} s per side, "
                    f"{args.clients} clients", ["code", "requests/s", "p50 ms", "p99 ms", "errors",
                                                "agent CPU ms / request", "served = logged"],
                    [[name, r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["errors"], r["agent_cpu_ms_per_request"],
                      part_e["served_equals_logged"]] for name, r in part_e["sides"].items()],
                    notes=[f"load average during (e): {part_e['load_average']}"])
    if "cpu_ms_per_request_by_stage" in part_d:
        print_table(f"(d) agent CPU ms per request by stage (py-spy, {part_d['duration_s']} s of (b)'s load)",
                    ["stage", "CPU ms / request", "share"],
                    [[stage, ms, part_d["share"][stage]]
                     for stage, ms in part_d["cpu_ms_per_request_by_stage"].items()],
                    notes=[f"{part_d['requests_per_s']} requests/s while profiled; agent CPU from /proc "
                           f"{part_d['cpu_ms_per_request']['agent']} ms per request"])
    else:
        print(f"(d) CPU split per stage: {part_d.get('error')}")
    save("serve", parameters=vars(args) | {"data_dir": str(data_dir)},
         results={"setup": setup, "overhead": part_a, "load": part_b, "repeated_questions": part_c,
                  "cpu_split": part_d, "ab_comparison": part_e, "before_load_drain": before,
                  "load_average_at_end": os.getloadavg()})


if __name__ == "__main__":
    main()
