"""kill -9 of the API process under load, restart, drain (benchmarks/chaos/api_kill.py, short form)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_an_api_kill_under_load_loses_no_acknowledged_record() -> None:
    from benchmarks.chaos.api_kill import run

    result = run(full=False)
    m = result.measured
    assert m["acknowledged"] > 0 and m["acknowledged_streams"] > 0, m
    assert m["acknowledged_missing_from_log"] == 0, result.notes
    assert m["cut_streams_logged"] == m["streams_cut_by_kill"], m  # a cut stream still left its record
    assert m["drain"]["dead_lettered"] == 0, m
    assert result.passed
