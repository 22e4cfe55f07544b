"""Two tenants with colliding doc ids through a real `llmfti serve` (benchmarks/chaos/tenants.py, short form)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_tenants_never_see_each_others_chunks_features_or_lose_documents() -> None:
    from benchmarks.chaos.tenants import run

    result = run(full=False)
    m = result.measured
    assert m["failed_requests"] == 0, result.notes
    assert m["requests_per_tenant"]["acme"] >= 40 and m["requests_per_tenant"]["globex"] >= 40, m
    assert m["citations_checked"] > 0 and m["questions_about_the_other_tenant"] > 0, m
    assert m["cross_tenant_chunks"] == 0 and m["unknown_chunks"] == 0, result.notes
    assert m["cross_tenant_user_features"] == 0, m
    found, total = map(int, m["control_default_key_features_found"].split("/"))
    assert total > 0 and found == total, m  # the users exist: the tenants' keys just may not read them
    assert m["requests_logged"] == sum(m["requests_per_tenant"].values()), m
    assert m["rebuilds"] == m["rebuilds_during_load"] == 2, m
    assert all(changes[1:] == [1, 1, 1] for changes in map(list, m["rebuild_changes"])), m
    assert m["documents_lost"] == 0 and m["documents_stale"] == 0, result.notes
    assert result.passed
