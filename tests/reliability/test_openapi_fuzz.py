"""Schema fuzz of every OpenAPI operation of a real `llmfti serve` (benchmarks/chaos/openapi_fuzz.py, short form)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_no_generated_request_gets_a_5xx_and_stream_and_metrics_bodies_are_valid() -> None:
    from benchmarks.chaos.openapi_fuzz import run

    result = run(full=False)
    m = result.measured
    assert m["operations"] >= 8 and m["cases"] >= 100, m
    assert m["server_errors"] == [], m  # every operation, /tokenize of a model without tokenizer included
    assert m["failed_checks_agent_api"] == {}, m  # responses of the agent's own API conform to its OpenAPI
    assert m["valid_cases_accepted"]["POST /v1/chat/completions"] > 0  # the fuzz reached the pipeline
    assert m["sse_events_valid"] > 0 and m["sse_events_invalid"] == [], m
    assert m["metrics_status"] == 200 and m["metric_families"] > 0
    assert m["ready_after"] is True
    assert result.passed
