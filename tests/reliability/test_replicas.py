"""Two real `llmfti serve` replicas over one data_dir (benchmarks/chaos/replicas.py, short form):
on the data_dir's embedded Redis, and on a real 3-master Redis Cluster."""

from __future__ import annotations

import pytest


def check_shared_stores(m: dict) -> None:
    from benchmarks.chaos.replicas import VISIBLE_WITHIN_S

    limit = m["rate_limit"]
    assert m["limited_answered"] == limit and m["limited_refused_429"] == 2 * limit, m  # N in total, not 2N
    assert min(m["limited_answered_per_replica"]) > 0  # both replicas did answer some of them
    assert m["answered"] > limit
    assert m["answered_missing_from_log"] == 0 and m["logged_more_than_once"] == 0, m
    assert m["logged_not_served"] == 0 and m["drain_exit_codes"] == [0, 0], m
    assert m["stream_left_after_drain"] == 0, m
    assert m["new_doc_cited_before_build"] == [False, False]
    assert all(s is not None and s <= VISIBLE_WITHIN_S for s in m["index_build_seen_after_s"]), m


@pytest.mark.slow
def test_two_replicas_share_rate_limits_logs_index_and_aliases() -> None:
    from benchmarks.chaos.replicas import VISIBLE_WITHIN_S, run

    result = run(full=False)
    m = result.measured
    assert m["embedded_redis_servers"] == 1  # both replicas use the one redis-server of the data_dir
    check_shared_stores(m)
    assert m["model_before_promote"] == ["assistant:v1", "assistant:v1"]
    assert all(s is not None and s <= VISIBLE_WITHIN_S for s in m["alias_move_seen_after_s"]), m
    assert result.passed, result.notes


@pytest.mark.slow
def test_two_replicas_on_a_redis_cluster_share_rate_limits_and_logs() -> None:
    from benchmarks.chaos.replicas import run_on_cluster

    result = run_on_cluster(full=False)
    m = result.measured
    assert m["redis"] == "cluster" and m["embedded_redis_servers"] == 0
    check_shared_stores(m)
    assert result.passed, result.notes
