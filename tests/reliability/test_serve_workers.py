"""``llmfti serve --workers 2``: real worker processes on one port (agents/api/workers.py).

Both workers answer (each has its own listening socket; the kernel spreads connections), a key's rate
limit holds across them (N in total, not 2N), every answered request is in the drained inference log
exactly once, ``/metrics`` sums the workers, a worker killed with ``kill -9`` is replaced while the
other keeps answering, and a ``kill -9`` of the supervisor takes its workers with it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

LIMIT = 6


def worker_pids(supervisor: int) -> list[int]:
    """The uvicorn workers among the supervisor's children (not multiprocessing's resource tracker)."""
    pids = []
    for task in Path(f"/proc/{supervisor}/task").glob("*"):
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                pids.append(int(child))
    return sorted(pids)


def metric(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of ``name`` whose labels include ``labels``."""
    found = []
    for line in text.splitlines():
        match = re.match(rf"{name}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            found.append(float(match.group(2)))
    return found


def distinct_connections(n: int) -> dict[str, str]:
    return {"connection": "close"}  # a new connection per request: the kernel picks a worker each time


@pytest.mark.slow
def test_two_workers_share_one_port_rate_limit_log_and_metrics(tmp_path: Path) -> None:
    import httpx

    from benchmarks.chaos.harness import (
        LIMITED_KEY,
        SAMPLE_DOCS,
        ServedAgent,
        build_index,
        limited_api_keys,
        load,
        logged_request_ids,
        wait_gone,
        write_docs,
    )

    data_dir = tmp_path / "data"
    build_index(data_dir, write_docs(tmp_path / "docs", SAMPLE_DOCS))
    agent = ServedAgent(data_dir, args=("--workers", "2"),
                        env={"LLMFTI_AGENT__API_KEYS": limited_api_keys(LIMIT),
                             "LLMFTI_AGENT__RATE_LIMIT_WINDOW_S": "600"})
    try:
        agent.start()
        workers = worker_pids(agent.pid)
        assert len(workers) == 2, workers

        # plain load on fresh connections: every request answered once, each with its own id
        answered = load(agent.url, clients=4, requests=40, headers=distinct_connections)
        assert [o.status for o in answered] == [200] * 40, [o.error for o in answered if not o.ok][:3]
        ids = {o.request_id for o in answered}
        assert len(ids) == 40

        # one rate limit for the key across both workers: LIMIT answered in total, the rest refused
        limited = load(agent.url, clients=3, requests=3 * LIMIT, key=LIMITED_KEY, headers=distinct_connections)
        statuses = sorted(o.status for o in limited)
        assert statuses == [200] * LIMIT + [429] * (2 * LIMIT), statuses
        ids |= {o.request_id for o in limited if o.ok}

        time.sleep(1.5)  # each worker publishes its gauges every second
        with httpx.Client(base_url=agent.url, timeout=30) as client:
            text = client.get("/metrics").text
        # counters summed over both workers, whichever answered the scrape
        assert sum(metric(text, "llmfti_requests_total", route="/v1/chat/completions", status="200")) == 40 + LIMIT
        assert sum(metric(text, "llmfti_requests_total", route="/v1/chat/completions", status="429")) == 2 * LIMIT
        # one live series per worker: both workers served and publish
        pids = {int(p) for p in re.findall(r'llmfti_embedding_cache_hit_rate\{cache="query",pid="(\d+)"\}', text)}
        assert pids == set(workers), (pids, workers)

        # kill -9 of one worker under load: the other keeps answering, the supervisor starts a replacement
        victim, survivor = workers
        during = []
        import threading

        loader = threading.Thread(target=lambda: during.extend(
            load(agent.url, clients=4, duration_s=8, headers=distinct_connections, timeout_s=30)))
        loader.start()
        time.sleep(2)
        import os
        import signal

        os.kill(victim, signal.SIGKILL)
        loader.join()
        assert sum(o.ok for o in during) > 0
        ids |= {o.request_id for o in during if o.ok}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            now = worker_pids(agent.pid)
            if len(now) == 2 and survivor in now and victim not in now:
                break
            time.sleep(0.5)
        replacement = [p for p in worker_pids(agent.pid) if p != survivor]
        assert len(replacement) == 1 and replacement[0] != victim, replacement
        agent.wait_ready(180, path="/readyz")
        after = load(agent.url, clients=4, requests=20, headers=distinct_connections)
        assert all(o.ok for o in after), [o.error for o in after if not o.ok][:3]
        ids |= {o.request_id for o in after}

        # kill -9 of the supervisor: its workers die with it (no orphan keeps the port)
        workers = worker_pids(agent.pid)
        agent.kill9()
        assert all(wait_gone(pid, 30) for pid in workers), workers
    finally:
        agent.stop()

    # every answered request is in the drained log exactly once (drain dedupes by id: count rows too)
    logged = logged_request_ids(data_dir)
    assert ids <= logged, sorted(ids - logged)[:5]
    from llmfti.config import load_settings
    from llmfti.lance import connect

    rows = connect(load_settings(data_dir=data_dir)).open_table("inference_log").to_arrow().column("request_id")
    assert len(rows) == len(set(rows.to_pylist()))
