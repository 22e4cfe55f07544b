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
