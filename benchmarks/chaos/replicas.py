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

import hashlib
import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.chaos.harness import (
    HIGH_LIMIT,
    KEYS,
    SAMPLE_DOCS,
    ScenarioResult,
    ServedAgent,
    base_env,
    build_index,
    chat_body,
    llmfti_exe,
    load,
    run_cli,
    scratch_dir,
    write_docs,
)

NAME = "replicas"
GOAL = ("2 replicas on one data_dir: a key's limit holds in total (N, not 2N), logs of both drain exactly "
        "once, an index build and an alias move are seen by both within seconds")
LIMITED_KEY = "key-limited"
NEW_DOC = {"zebra.md": "# Zebra protocol\n\nThe zebra protocol of llmfti listens on port 4711 and speaks "
           "only in stripes.\n"}
NEW_QUESTION = "Which port does the zebra protocol listen on?"
VISIBLE_WITHIN_S = 15.0


def api_keys(limit: int) -> str:
    keys = [{"name": name, "sha256": hashlib.sha256(key.encode()).hexdigest(), "tenant": tenant,
             "requests_per_minute": HIGH_LIMIT} for key, (name, tenant) in KEYS.items()]
    keys.append({"name": "limited-app", "sha256": hashlib.sha256(LIMITED_KEY.encode()).hexdigest(),
                 "tenant": None, "requests_per_minute": limit})
    return json.dumps(keys)


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
    registry = ModelRegistry(load_settings(data_dir=data_dir))
    for _ in range(2):
        mv = registry.register(adapter_dir=adapter, tokenizer=load_tokenizer(base), base_model=str(base),
                               training_dataset_id="replicas-scenario")
        registry.record_eval(mv.version, f"run-{mv.version}", passed=True)
    registry.promote(1, "production")


def answer(url: str, question: str, key: str = "key-default") -> dict[str, Any]:
    import httpx

    body = chat_body(question, model="production", max_tokens=4)
    response = httpx.post(url + "/v1/chat/completions", json=body, timeout=60,
                          headers={"authorization": f"Bearer {key}"})
    return {"status": response.status_code, "request_id": response.headers.get("x-request-id"),
            **(response.json() if response.status_code == 200 else {})}


def seconds_until(replicas: list[ServedAgent], seen: Any, timeout_s: float) -> list[float | None]:
    """Per replica: seconds from now until ``seen(answer)`` holds (polled every 0.2 s), None if never."""
    start = time.monotonic()
    found: list[float | None] = [None] * len(replicas)
    while time.monotonic() - start < timeout_s and None in found:
        for i, replica in enumerate(replicas):
            if found[i] is None and seen(answer(replica.url, NEW_QUESTION)):
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
    limit = 40 if full else 8
    load_requests = 400 if full else 60
    measured: dict[str, Any] = {}
    with scratch_dir(NAME) as folder:
        data_dir = folder / "data"
        build_index(data_dir, write_docs(folder / "docs", SAMPLE_DOCS))
        register_tiny_models(data_dir, folder)
        env = {"LLMFTI_AGENT__API_KEYS": api_keys(limit), "LLMFTI_AGENT__REGISTRY_POLL_S": "1",
               "LLMFTI_AGENT__GENERATOR__BACKEND": "transformers",
               "LLMFTI_AGENT__GENERATOR__MODEL": "registry:production", "OMP_NUM_THREADS": "1"}
        replicas = [ServedAgent(data_dir, env=env, args=["--no-samples"]) for _ in range(2)]
        try:
            start_all(replicas)
            measured["redis_servers"] = len({r.redis_pid() for r in replicas})

            # 1. one rate limit across both replicas
            limited = []
            for i in range(3 * limit):
                limited.append(answer(replicas[i % 2].url, f"limited question {i}", key=LIMITED_KEY))
            statuses = Counter(r["status"] for r in limited)
            measured["rate_limit"] = limit
            measured["limited_answered"] = statuses.get(200, 0)
            measured["limited_refused_429"] = statuses.get(429, 0)
            served_by = Counter(i % 2 for i, r in enumerate(limited) if r["status"] == 200)
            measured["limited_answered_per_replica"] = [served_by.get(0, 0), served_by.get(1, 0)]

            # 2. logs of both replicas drain exactly once (two drains racing, then one more)
            outcomes = []
            for replica in replicas:
                outcomes += load(replica.url, clients=2, requests=load_requests // 2,
                                 body=lambda i: chat_body(f"How do I roll back an index? (#{i})",
                                                          model="production", max_tokens=4))
            answered = {o.request_id for o in outcomes if o.ok and o.request_id}
            answered |= {r["request_id"] for r in limited if r["status"] == 200}
            every_response = {o.request_id for o in outcomes if o.request_id} | answered
            every_response |= {r["request_id"] for r in limited if r["request_id"]}
            drains = [subprocess.Popen([llmfti_exe(), "logs", "drain", "--json"], env=base_env(data_dir, env),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
            for proc in drains:
                proc.communicate(timeout=300)
            run_cli(data_dir, "logs", "drain", env=env)
            counts = logged_counts(data_dir)
            logged = set(counts)
            measured["answered"] = len(answered)
            measured["answered_missing_from_log"] = len(answered - logged)
            measured["logged_more_than_once"] = sum(1 for n in counts.values() if n > 1)
            measured["logged_not_served"] = len(logged - every_response - {None})
            measured["drain_exit_codes"] = [p.returncode for p in drains]

            # 3. an index build is seen by both
            measured["new_doc_cited_before_build"] = [cites_new_doc(answer(r.url, NEW_QUESTION)) for r in replicas]
            build_index(data_dir, write_docs(folder / "docs-new", NEW_DOC))
            measured["index_build_seen_after_s"] = seconds_until(replicas, cites_new_doc, VISIBLE_WITHIN_S * 2)

            # 4. an alias move is seen by both
            before = [answer(r.url, NEW_QUESTION).get("model_version") for r in replicas]
            run_cli(data_dir, "registry", "promote", "2", "--alias", "production", env=env)
            measured["model_before_promote"] = before
            measured["alias_move_seen_after_s"] = seconds_until(
                replicas, lambda reply: reply.get("model_version") == "assistant:v2", VISIBLE_WITHIN_S * 2)
        finally:
            for replica in replicas:
                replica.terminate()
            logs = [replica.log_tail(1500) for replica in replicas]
            for replica in replicas:
                replica.stop()

    seen_index = measured["index_build_seen_after_s"]
    seen_alias = measured["alias_move_seen_after_s"]
    passed = (
        measured["redis_servers"] == 1
        and measured["limited_answered"] == limit
        and measured["limited_refused_429"] == 2 * limit
        and measured["answered_missing_from_log"] == 0
        and measured["logged_more_than_once"] == 0
        and measured["logged_not_served"] == 0
        and measured["drain_exit_codes"] == [0, 0]
        and measured["new_doc_cited_before_build"] == [False, False]
        and all(s is not None and s <= VISIBLE_WITHIN_S for s in seen_index)
        and measured["model_before_promote"] == ["assistant:v1", "assistant:v1"]
        and all(s is not None and s <= VISIBLE_WITHIN_S for s in seen_alias)
    )
    notes = f"visibility bound {VISIBLE_WITHIN_S:.0f} s; registry_poll_s=1, LanceDB read_consistency_interval=1 s"
    if not passed:
        notes += "".join(f"\nreplica {i} log tail:\n{tail}" for i, tail in enumerate(logs))
    return ScenarioResult(NAME, GOAL, measured, passed, notes=notes)
