"""Poison requests among concurrent good ones on a real `llmfti serve` (benchmarks/chaos/poison.py, short form)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_poison_requests_fail_alone_with_their_4xx() -> None:
    from benchmarks.chaos.poison import POISONS, run

    result = run(full=False)
    m = result.measured
    assert m["good_requests"] >= 48 and m["collateral_errors"] == 0, m
    assert m["good_ok"] == m["good_requests"]
    assert m["poison_5xx"] == 0 and m["poison_wrong_status"] == [], m
    expected = {name: [status] for name, (_, status) in POISONS.items()}
    expected |= {"chunked_over_limit": [413], "no_content_type": [400]}
    assert m["poison_statuses"] == expected
    assert m["ready_after"] is True
    assert result.passed
