"""Index rebuilds while a real `llmfti serve` answers (benchmarks/chaos/rebuild_while_serving.py, short form)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_rebuilds_under_load_cause_no_errors_and_citations_match_their_version() -> None:
    from benchmarks.chaos.rebuild_while_serving import run

    result = run(full=False)
    m = result.measured
    assert m["requests"] > 0 and m["failed_requests"] == 0, result.notes
    assert m["rebuilds"] == 2 and all(list(c) == [1, 1, 1] for c in m["rebuild_changes"]), m
    assert len(m["index_versions_served"]) >= 2, m  # clients saw the index change while they queried
    assert set(m["index_versions_served"]) <= set(m["published_versions"]), m
    assert m["citations_checked"] > 0, m
    assert m["citations_missing_from_named_version"] == 0, result.notes
    assert m["responses_naming_unopenable_version"] == 0, result.notes
    assert m["newest_build_served_at_end"] is True, m
    assert result.passed
