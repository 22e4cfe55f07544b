"""A client honouring Retry-After on a real `llmfti serve` (benchmarks/chaos/retry_after.py, short form)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_a_client_that_waits_the_advertised_retry_after_succeeds() -> None:
    from benchmarks.chaos.retry_after import run

    result = run(full=False)
    m = result.measured
    assert m["accepted_before_limit"] >= m["limit"]
    assert m["rejected_429"] >= m["cycles"]  # it was limited in every cycle
    assert all(0 < wait <= m["window_s"] for wait in m["advertised_waits_s"]), m  # never more than the window
    assert m["statuses_after_wait"] == [200] * m["cycles"], m
    assert result.passed
