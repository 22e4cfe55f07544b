"""Two agent replicas over the same stores: one rate limit, one log, one index, one registry.

Two real ``llmfti serve`` processes on different ports share a data_dir (LanceDB tables, registry,
and the embedded redis-server both find on its socket). They serve ``registry:production`` (a tiny
random Llama + LoRA adapter registered twice, no index pin) with ``agent.registry_poll_s`` = 1 s.

Measured:

1. **Shared rate limit**: a key allowed ``LIMIT`` requests per window sends ``3 × LIMIT``
   alternating between the replicas: exactly ``LIMIT`` are answered (per-process counters would
   let ``2 × LIMIT`` through).
2. **Logs drain exactly once**: load on both replicas, then two ``llmfti logs drain`` at the same
   time and a third after: every answered request id is in ``inference_log`` exactly once, and
   nothing that was not served is there.
3. **Index build seen by both**: ``llmfti index build`` adds a document with a unique phrase while
   both serve; seconds until each replica retrieves it (Lance re-checks the latest version every
   ``read_consistency_interval`` = 1 s).
4. **Alias move seen by both**: ``llmfti registry promote 2 --alias production``; seconds until
   each replica answers with ``assistant:v2``.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.chaos.harness import (
    LIMITED_KEY,
    SAMPLE_DOCS,
    ScenarioResult,
    ServedAgent,
    base_env,
    build_index,
    chat_body,
    limited_api_keys,
    llmfti_exe,
    load,
    run_cli,
    scratch_dir,
    write_docs,
)

NAME = "replicas"
GOAL = ("2 replicas on one data_dir: a key's limit holds in total (N, not 2N), logs of both drain exactly "
        "once, an index build and an alias move are seen by both within seconds")
NEW_DOC = {"zebra.md": "# Zebra protocol\n\nThe zebra protocol of llmfti listens on port 4711 and speaks "
           "only in stripes.\n"}
NEW_QUESTION = "Which port does the zebra protocol listen on?"
VISIBLE_WITHIN_S = 15.0


def register_tiny_models(data_dir: Path, folder: Path) -> None:
    """Register a tiny random Llama + LoRA adapter as v1 (production) and v2 (same weights), unpinned."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmfti.config import load_settings
    from llmfti.llm.tokenization import load_tokenizer
    from llmfti.registry.model_registry import ModelRegistry
    from tests.tiny_llm import build_llama, build_tokenizer

    torch.set_num_threads(1)
    base = folder / "tiny-base"
    build_tokenizer(base)
    build_llama(base, vocab_size=len(AutoTokenizer.from_pretrained(str(base))))
    adapter = folder / "tiny-adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                   LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(str(adapter))
    settings = load_settings(data_dir=data_dir)
    registry = ModelRegistry(settings)
    for _ in range(2):
        mv = registry.register(adapter_dir=adapter, tokenizer=load_tokenizer(base), base_model=str(base),
                               training_dataset_id="replicas-scenario")
        # a passing run of each gating suite is recorded, not run (random weights have nothing to evaluate)
        for suite in settings.registry.gate_suites:
            registry.record_eval(mv.version, f"run-{mv.version}-{suite}", passed=True, metrics={"suite": suite})
    registry.promote(1, "production")


def answer(url: str, question: str, key: str = "key-default", model: str = "production") -> dict[str, Any]:
    import httpx

    body = chat_body(question, model=model, max_tokens=4)
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60,
                          headers={"authorization": f"Bearer {key}"})
    return {"status": response.status_code, "request_id": response.headers.get("x-request-id"),
            **(response.json() if response.status_code == 200 else {})}


def seconds_until(replicas: list[ServedAgent], seen: Any, timeout_s: float,
                  model: str = "production") -> list[float | None]:
    """Per replica: seconds from now until ``seen(answer)`` holds (polled every 0.2 s), None if never."""
    start = time.monotonic()
    found: list[float | None] = [None] * len(replicas)
    while time.monotonic() - start < timeout_s and None in found:
        for i, replica in enumerate(replicas):
            if found[i] is None and seen(answer(replica.url, NEW_QUESTION, model=model)):
                found[i] = round(time.monotonic() - start, 2)
        time.sleep(0.2)
    return found


def cites_new_doc(reply: dict[str, Any]) -> bool:
    return any("zebra protocol" in c.get("snippet", "").lower() for c in reply.get("citations", []))


def logged_counts(data_dir: Path) -> Counter[str]:
    from llmfti.config import load_settings
    from llmfti.lance import connect, table_names

    db = connect(load_settings(data_dir=data_dir))
    if "inference_log" not in table_names(db):
        return Counter()
    return Counter(db.open_table("inference_log").to_arrow().column("request_id").to_pylist())


def start_all(replicas: list[ServedAgent], timeout_s: float = 400) -> None:
    errors: list[BaseException] = []

    def start(replica: ServedAgent) -> None:
        try:
            replica.start(timeout_s)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def run(full: bool = False) -> ScenarioResult:
    """Two replicas on one data_dir and its embedded Redis, serving ``registry:production``."""
    with scratch_dir(NAME) as folder:
        return run_replicas(folder, full=full)


def run_on_cluster(full: bool = False) -> ScenarioResult:
    """The same two replicas on a real 3-master Redis Cluster (extractive model, no alias step)."""
    from tests.redis_cluster_support import LocalRedisCluster, cluster_env

    with scratch_dir(f"{NAME}-cluster") as folder, LocalRedisCluster(folder / "cluster") as cluster:
        return run_replicas(folder, full=full, redis_env=cluster_env(cluster), follow_alias=False)


def run_replicas(folder: Path, *, full: bool, redis_env: dict[str, str] | None = None,
                 follow_alias: bool = True) -> ScenarioResult:
    """The measurements of the module docstring for two replicas under ``folder`` (``redis_env``: point
    them at an external Redis instead of the data_dir's embedded one; ``follow_alias``: step 4)."""
    limit = 40 if full else 8
    data_dir = folder / "data"
    build_index(data_dir, write_docs(folder / "docs", SAMPLE_DOCS))
    env = {"LLMFTI_AGENT__API_KEYS": limited_api_keys(limit), "OMP_NUM_THREADS": "1", **(redis_env or {})}
    model = "llmfti-extractive"
    if follow_alias:
        register_tiny_models(data_dir, folder)
        model = "production"
        env.update({"LLMFTI_AGENT__REGISTRY_POLL_S": "1", "LLMFTI_AGENT__GENERATOR__BACKEND": "transformers",
                    "LLMFTI_AGENT__GENERATOR__MODEL": "registry:production"})
    measured: dict[str, Any] = {"redis": "cluster" if redis_env else "embedded", "rate_limit": limit}
    replicas = [ServedAgent(data_dir, env=env, args=["--no-samples"]) for _ in range(2)]
    try:
        start_all(replicas)
        # embedded: both use the one redis-server of the data_dir; on a cluster none is started
        measured["embedded_redis_servers"] = len({r.redis_pid() for r in replicas} - {None})
        measure_rate_limit(replicas, measured, limit, model)
        measure_logs(replicas, measured, data_dir, env, model, requests=400 if full else 60)
        measure_index_build(replicas, measured, data_dir, folder, model)
        if follow_alias:
            measure_alias_move(replicas, measured, data_dir, env)
    finally:
        for replica in replicas:
            replica.terminate()
        logs = [replica.log_tail(1500) for replica in replicas]
        for replica in replicas:
            replica.stop()

    passed = (
        measured["embedded_redis_servers"] == (0 if redis_env else 1)
        and measured["limited_answered"] == limit
        and measured["limited_refused_429"] == 2 * limit
        and measured["answered_missing_from_log"] == 0
        and measured["logged_more_than_once"] == 0
        and measured["logged_not_served"] == 0
        and measured["stream_left_after_drain"] == 0
        and measured["drain_exit_codes"] == [0, 0]
        and measured["new_doc_cited_before_build"] == [False, False]
        and all(s is not None and s <= VISIBLE_WITHIN_S for s in measured["index_build_seen_after_s"])
        and (not follow_alias or (
            measured["model_before_promote"] == ["assistant:v1", "assistant:v1"]
            and all(s is not None and s <= VISIBLE_WITHIN_S for s in measured["alias_move_seen_after_s"])))
    )
    notes = f"visibility bound {VISIBLE_WITHIN_S:.0f} s; registry_poll_s=1, LanceDB read_consistency_interval=1 s"
    if not passed:
        notes += "".join(f"\nreplica {i} log tail:\n{tail}" for i, tail in enumerate(logs))
    return ScenarioResult(NAME if not redis_env else f"{NAME}-cluster", GOAL, measured, passed, notes=notes)


def measure_rate_limit(replicas: list[ServedAgent], measured: dict[str, Any], limit: int, model: str) -> None:
    """``3 × limit`` requests of the limited key, alternating replicas: how many each answered."""
    limited = [answer(replicas[i % 2].url, f"limited question {i}", key=LIMITED_KEY, model=model)
               for i in range(3 * limit)]
    statuses = Counter(r["status"] for r in limited)
    measured["limited_answered"] = statuses.get(200, 0)
    measured["limited_refused_429"] = statuses.get(429, 0)
    served_by = Counter(i % 2 for i, r in enumerate(limited) if r["status"] == 200)
    measured["limited_answered_per_replica"] = [served_by.get(0, 0), served_by.get(1, 0)]
    measured["_limited_replies"] = limited


def measure_logs(replicas: list[ServedAgent], measured: dict[str, Any], data_dir: Path, env: dict[str, str],
                 model: str, *, requests: int) -> None:
    """Load on both replicas, two racing drains and one more: each answered request logged exactly once."""
    limited = measured.pop("_limited_replies")
    outcomes = []
    for replica in replicas:
        outcomes += load(replica.url, clients=2, requests=requests // 2,
                         body=lambda i: chat_body(f"How do I roll back an index? (#{i})", model=model, max_tokens=4))
    answered = {o.request_id for o in outcomes if o.ok and o.request_id}
    answered |= {r["request_id"] for r in limited if r["status"] == 200}
    every_response = answered | {o.request_id for o in outcomes if o.request_id}
    every_response |= {r["request_id"] for r in limited if r["request_id"]}
    drains = [subprocess.Popen([llmfti_exe(), "logs", "drain", "--json"], env=base_env(data_dir, env),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for proc in drains:
        proc.communicate(timeout=300)
    run_cli(data_dir, "logs", "drain", env=env)
    measured["stream_left_after_drain"] = run_cli(data_dir, "logs", "status", env=env).get("stream_pending")
    counts = logged_counts(data_dir)
    measured["answered"] = len(answered)
    measured["answered_missing_from_log"] = len(answered - set(counts))
    measured["logged_more_than_once"] = sum(1 for n in counts.values() if n > 1)
    measured["logged_not_served"] = len(set(counts) - every_response - {None})
    measured["drain_exit_codes"] = [p.returncode for p in drains]


def measure_index_build(replicas: list[ServedAgent], measured: dict[str, Any], data_dir: Path, folder: Path,
                        model: str) -> None:
    """``llmfti index build`` of a new document: seconds until each replica cites it."""
    measured["new_doc_cited_before_build"] = [cites_new_doc(answer(r.url, NEW_QUESTION, model=model))
                                              for r in replicas]
    build_index(data_dir, write_docs(folder / "docs-new", NEW_DOC))
    measured["index_build_seen_after_s"] = seconds_until(replicas, cites_new_doc, VISIBLE_WITHIN_S * 2, model)


def measure_alias_move(replicas: list[ServedAgent], measured: dict[str, Any], data_dir: Path,
                       env: dict[str, str]) -> None:
    """``llmfti registry promote 2``: seconds until each replica answers with assistant:v2."""
    measured["model_before_promote"] = [answer(r.url, NEW_QUESTION).get("model_version") for r in replicas]
    run_cli(data_dir, "registry", "promote", "2", "--alias", "production", env=env)
    measured["alias_move_seen_after_s"] = seconds_until(
        replicas, lambda reply: reply.get("model_version") == "assistant:v2", VISIBLE_WITHIN_S * 2)
