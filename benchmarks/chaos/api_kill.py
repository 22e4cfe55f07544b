"""``kill -9`` of the API process mid-load, restart on the same data_dir, drain: nothing acknowledged lost.

A real ``llmfti serve`` over a small index; 8 clients (6 plain chat, 2 streaming) load it. Halfway
through 20 s (full: 40 s) of load the API process gets ``kill -9`` (its embedded redis-server keeps
running, as after a real crash). The agent is started again on the same data_dir and port, serves
a few more seconds of load, and the log is drained with ``llmfti logs drain``.

Acknowledged = HTTP 200 with its body read, or a stream whose headers arrived (its first byte was
sent). Every acknowledged request id must be in the ``inference_log`` table; a stream cut by the kill
must be there too: its *started* record (written before the first byte, ``error = incomplete``), or its
final record when that was already durable.

Measured: requests, acknowledged, streams cut by the kill, acknowledged ids missing from the drained
log (goal 0), cut streams logged as incomplete, and the failures (expected only around the kill).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.chaos.harness import (
    ScenarioResult,
    ServedAgent,
    default_body,
    drain,
    load,
    scratch_dir,
)
from benchmarks.chaos.redis_kill import indexed_data_dir

NAME = "api_kill"
GOAL = "acknowledged records lost after kill -9 of the API, restart and drain: 0 (streams included)"


@dataclass
class StreamOutcome:
    request_id: str | None  # from the response headers: known once the first byte arrived
    status: int
    done: bool  # saw [DONE]
    error: str | None


def stream_clients(url: str, clients: int, stop: threading.Event, key: str = "key-default") -> list[StreamOutcome]:
    """Streaming chat clients until ``stop``; a stream cut mid-way keeps the request id of its headers."""
    import httpx

    outcomes: list[StreamOutcome] = []
    lock = threading.Lock()
    counter = iter(range(10**9))

    def client_loop() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                body = {**default_body(next(counter)), "stream": True}
                request_id, status, done, error = None, 0, False, None
                try:
                    with client.stream("POST", "/v1/chat/completions", json=body,
                                       headers={"authorization": f"Bearer {key}"}) as response:
                        status, request_id = response.status_code, response.headers.get("x-request-id")
                        for line in response.iter_lines():
                            done = done or line.strip() == "data: [DONE]"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if status == 0:
                        time.sleep(0.05)  # the server is down: do not spin
                with lock:
                    outcomes.append(StreamOutcome(request_id, status, done, error))

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def run(full: bool = False) -> ScenarioResult:
    load_s, after_s, clients, streaming = (40.0, 10.0, 8, 2) if full else (10.0, 3.0, 8, 2)
    plain: list[Any] = []
    streams: list[StreamOutcome] = []
    with scratch_dir(NAME) as folder:
        data_dir = indexed_data_dir(folder)
        agent = ServedAgent(data_dir)
        try:
            agent.start()
            stop = threading.Event()
            workers = [
                threading.Thread(target=lambda: plain.extend(
                    load(agent.url, clients=clients - streaming, duration_s=load_s, stop=stop, timeout_s=30))),
                threading.Thread(target=lambda: streams.extend(stream_clients(agent.url, streaming, stop))),
            ]
            for worker in workers:
                worker.start()
            time.sleep(load_s / 2)
            agent.kill9()  # mid-load: requests in flight are cut
            stop.set()
            for worker in workers:
                worker.join()
            agent.start()  # same data_dir, same port; the embedded Redis is still the old one
            stop_after = threading.Event()
            timer = threading.Timer(after_s, stop_after.set)
            timer.start()
            after_streams = stream_clients(agent.url, 1, stop_after)
            after_plain = load(agent.url, clients=2, duration_s=after_s, timeout_s=30)
            timer.cancel()
        finally:
            agent.stop()
        drained = drain(data_dir)
        rows = logged_rows(data_dir)
    return summarize(plain + after_plain, streams + after_streams, rows, drained)


def logged_rows(data_dir: Any) -> dict[str, dict[str, Any]]:
    from llmfti.config import load_settings
    from llmfti.lance import connect, table_names

    db = connect(load_settings(data_dir=data_dir))
    if "inference_log" not in table_names(db):
        return {}
    table = db.open_table("inference_log").to_arrow().select(["request_id", "error", "streamed", "status"])
    return {row["request_id"]: row for row in table.to_pylist()}


def summarize(plain: list[Any], streams: list[StreamOutcome], rows: dict[str, dict[str, Any]],
              drained: dict[str, Any]) -> ScenarioResult:
    acked_plain = {o.request_id for o in plain if o.ok and o.request_id}
    acked_streams = {s.request_id for s in streams if s.status == 200 and s.request_id}
    cut = {s.request_id for s in streams if s.status == 200 and s.request_id and not s.done}
    acked = acked_plain | acked_streams
    missing = sorted(acked - rows.keys())
    cut_logged = [rid for rid in cut if rid in rows]
    cut_incomplete = sum(1 for rid in cut_logged if rows[rid]["error"] == "incomplete")
    failed_plain = [o for o in plain if not o.ok]
    measured = {
        "requests": len(plain) + len(streams),
        "acknowledged": len(acked),
        "acknowledged_streams": len(acked_streams),
        "streams_cut_by_kill": len(cut),
        "acknowledged_missing_from_log": len(missing),
        "cut_streams_logged": len(cut_logged),
        "cut_streams_logged_incomplete": cut_incomplete,  # the rest had their final record durable already
        "failed_around_kill": len(failed_plain) + sum(1 for s in streams if s.status != 200),
        "drain": {k: drained.get(k) for k in ("read", "inserted", "completed", "dead_lettered")},
    }
    passed = bool(acked) and not missing and len(cut_logged) == len(cut)
    notes = f"missing e.g. {missing[:3]}" if missing else ""
    return ScenarioResult(NAME, GOAL, measured, passed, notes)


if __name__ == "__main__":
    import sys

    print(json.dumps(run(full="--full" in sys.argv).as_dict(), indent=2))
