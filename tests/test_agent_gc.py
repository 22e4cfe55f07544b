"""The agent's garbage-collector policy (agents/api/app.py): what the pipeline loaded at start-up is frozen out
of the collector's reach, and every collection's pause is on /metrics (``llmfti_gc_pause_seconds``)."""

from __future__ import annotations

import gc
import re

from fastapi.testclient import TestClient

from tests.agent_support import agent_settings, data_dir_with_index


def gc_pauses(metrics: str, generation: int) -> float:
    match = re.search(rf'llmfti_gc_pause_seconds_count{{generation="{generation}"}} (\S+)', metrics)
    return float(match.group(1)) if match else 0.0


def test_start_up_objects_are_frozen_and_collections_are_timed_on_metrics(tmp_path):
    from agents.api.app import create_app
    from llmfti.features.embedded_redis import shutdown_embedded

    settings = agent_settings(data_dir_with_index(tmp_path / "data"))
    app = create_app(settings)
    callbacks_before = len(gc.callbacks)
    gc.unfreeze()
    try:
        with TestClient(app) as client:
            assert gc.get_freeze_count() > 10_000  # the loaded model, index and libraries
            assert len(gc.callbacks) == callbacks_before + 1
            before = gc_pauses(client.get("/metrics").text, 2)
            gc.collect(2)
            gc.collect(2)
            assert gc_pauses(client.get("/metrics").text, 2) >= before + 2
        assert len(gc.callbacks) == callbacks_before  # the app's shutdown stops timing
    finally:
        gc.unfreeze()
        shutdown_embedded(settings, save=False)


def test_a_collection_while_a_metric_lock_is_held_does_not_deadlock():
    """The collector can run inside any allocation, e.g. one prometheus_client makes while holding a metric's
    lock (a worker deadlocked so when the pause was observed from the gc callback itself)."""
    import threading

    from agents.api.metrics import AgentMetrics

    metrics = AgentMetrics()
    metrics.watch_gc()
    done = threading.Event()

    def collect_under_the_lock() -> None:
        with metrics.gc_pause._lock:  # what labels() holds while it creates a child
            gc.collect()
        done.set()

    try:
        threading.Thread(target=collect_under_the_lock, daemon=True).start()
        assert done.wait(30), "gc.collect() under the histogram's lock never returned: the callback deadlocked"
        metrics.publish_gc_pauses()
        assert sum(b.get() for b in metrics.gc_pause.labels("2")._buckets) >= 1
    finally:
        metrics.close()
