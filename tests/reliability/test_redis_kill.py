"""kill -9 of the embedded redis-server under load (benchmarks/chaos/redis_kill.py, short form)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_a_redis_kill_under_load_fails_nothing_loses_nothing_and_recovers() -> None:
    from benchmarks.chaos.redis_kill import READY_GOAL_S, run

    result = run(full=False)
    m = result.measured
    assert m["redis_pid_killed"] is not None and m["redis_pid_after"] not in (None, m["redis_pid_killed"]), m
    assert m["acknowledged"] > 0 and m["streamed"] > 0, m
    assert m["acknowledged_served_before_kill"] > 0, m  # records that lived only in Redis at the kill
    assert m["failed"] == 0, result.notes
    assert m["acknowledged_missing_from_log"] == 0, result.notes
    assert m["readyz_green_after_s"] is not None and m["readyz_green_after_s"] <= READY_GOAL_S, m
    assert m["degraded_after_recovery"] == 0, m
    assert result.passed
