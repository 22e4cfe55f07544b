"""``kill -9`` of the embedded redis-server mid-load: nothing acknowledged is lost, nothing fails.

A real ``llmfti serve`` over a small index; 8 clients (6 plain, 2 streaming) send chat requests for
60 s (full) or 12 s (short). At a third of the run the embedded redis-server gets ``kill -9`` (no
SAVE, no shutdown). The agent must keep answering (user features missing and flagged meanwhile),
restart the server by itself, replay what it spooled and turn ``/readyz`` green again; afterwards the
log is drained (``llmfti logs drain``, which restarts Redis from its append-only file) and every
acknowledged request id (HTTP 200, or a stream that ended with ``[DONE]``) must be in the
``inference_log`` table.

Measured: requests sent / failed, acknowledged ids missing from the drained log (goal 0), seconds from
the kill until ``/readyz`` is 200 again with a new redis-server pid (goal <= 5 s), responses flagged
degraded after that, and latency p50 before / after the kill.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.chaos.harness import (
    SAMPLE_DOCS,
    Outcome,
    ScenarioResult,
    ServedAgent,
    build_index,
    load,
    logged_request_ids,
    percentile,
    scratch_dir,
    write_docs,
)

NAME = "redis_kill"
GOAL = "0 failed requests; 0 acknowledged records lost; /readyz green again within 5 s (no API restart)"
READY_GOAL_S = 5.0


def indexed_data_dir(folder: Path) -> Path:
    """A data_dir holding an index of the sample docs (built by the real CLI)."""
    data_dir = folder / "data"
    build_index(data_dir, write_docs(folder / "docs", SAMPLE_DOCS))
    return data_dir


def mixed_load(url: str, *, clients: int, duration_s: float, stop: threading.Event | None = None) -> list[Outcome]:
    """``clients`` concurrent chat clients for ``duration_s``: a quarter of them (at least one) stream."""
    streaming = max(1, clients // 4)
    results: dict[str, list[Outcome]] = {}

    def run(kind: str, n: int, stream: bool) -> None:
        results[kind] = load(url, clients=n, duration_s=duration_s, stream=stream, stop=stop, timeout_s=30)

    threads = [threading.Thread(target=run, args=("plain", clients - streaming, False)),
               threading.Thread(target=run, args=("stream", streaming, True))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results.get("plain", []) + results.get("stream", [])


def degraded(outcome: Outcome) -> list[str]:
    body = outcome.body
    if isinstance(body, dict):
        return list(body.get("degraded") or [])
    if isinstance(body, str):  # SSE text: the final chunk carries the extensions
        import json

        for line in reversed(body.splitlines()):
            if line.startswith("data: {") and '"degraded"' in line:
                return list(json.loads(line[6:]).get("degraded") or [])
    return []


def run(full: bool = False) -> ScenarioResult:
    duration_s, clients = (60.0, 8) if full else (12.0, 8)
    with scratch_dir(NAME) as folder:
        data_dir = indexed_data_dir(folder)
        with ServedAgent(data_dir) as agent:
            outcomes: list[Outcome] = []
            loader = threading.Thread(target=lambda: outcomes.extend(
                mixed_load(agent.url, clients=clients, duration_s=duration_s)))
            loader.start()
            time.sleep(duration_s / 3)
            killed = agent.kill_redis9()
            t_kill = time.monotonic()
            ready_s = None
            while time.monotonic() - t_kill < 30:  # bounded: green again, with a new server
                pid = agent.redis_pid()
                if agent.readyz()[0] == 200 and pid is not None and pid != killed:
                    ready_s = time.monotonic() - t_kill
                    break
                time.sleep(0.05)
            new_pid = agent.redis_pid()
            loader.join()
            server_log = agent.log_tail(1500)
        logged = logged_request_ids(data_dir)
    return summarize(outcomes, logged, t_kill, ready_s, killed, new_pid, server_log)


def summarize(outcomes: list[Outcome], logged: set[str], t_kill: float, ready_s: float | None,
              killed: int | None, new_pid: int | None, server_log: str) -> ScenarioResult:
    acked = [o for o in outcomes if o.ok and o.request_id]
    failed = [o for o in outcomes if not o.ok]
    missing = sorted({o.request_id for o in acked} - logged)  # type: ignore[misc]
    recovered_at = t_kill + (ready_s or 0.0)
    after = [o for o in acked if o.t_start > recovered_at + 1.0]
    before = [o.t_end - o.t_start for o in acked if o.t_end < t_kill]
    later = [o.t_end - o.t_start for o in after]
    measured: dict[str, Any] = {
        "requests": len(outcomes),
        "streamed": sum(1 for o in outcomes if isinstance(o.body, str)),
        "failed": len(failed),
        "acknowledged": len(acked),
        "acknowledged_served_before_kill": sum(1 for o in acked if o.t_end < t_kill),
        "acknowledged_missing_from_log": len(missing),
        "readyz_green_after_s": None if ready_s is None else round(ready_s, 2),
        "redis_pid_killed": killed,
        "redis_pid_after": new_pid,
        "degraded_after_recovery": sum(1 for o in after if degraded(o)),
        "degraded_total": sum(1 for o in acked if degraded(o)),
        "latency_p50_ms_before_kill": _ms(percentile(before, 50)),
        "latency_p50_ms_after_recovery": _ms(percentile(later, 50)),
    }
    passed = (killed is not None and not failed and not missing and ready_s is not None
              and ready_s <= READY_GOAL_S and measured["degraded_after_recovery"] == 0 and bool(acked))
    notes = ""
    if failed:
        notes += f"first failure: {failed[0].status} {failed[0].error}; "
    if missing:
        notes += f"missing e.g. {missing[:3]}; "
    if not passed:
        notes += f"server log tail: {server_log[-600:]}"
    return ScenarioResult(NAME, GOAL, measured, passed, notes.strip())


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


if __name__ == "__main__":
    import json
    import sys

    result = run(full="--full" in sys.argv)
    print(json.dumps(result.as_dict(), indent=2))
