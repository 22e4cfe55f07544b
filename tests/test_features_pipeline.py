"""The example user feature pipeline and the ``llmfti features`` CLI, end to end (real LanceDB + Redis)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmfti.features.embedded_redis import shutdown_embedded
from llmfti.features.feature_group import FeatureGroup
from llmfti.features.online_store import OnlineStore
from pipelines.samples.users.generate import write as generate
from pipelines.user_features import SAMPLES, compute_user_features, read_jsonl, run_user_features

LLMFTI = Path(sys.executable).with_name("llmfti")


@pytest.fixture
def stop_redis(settings):
    yield
    shutdown_embedded(settings, save=False)


def test_sample_dataset_is_generated_deterministically(tmp_path) -> None:
    generate(tmp_path / "a")
    generate(tmp_path / "b")
    for name in ("events.jsonl", "profiles.jsonl"):
        committed = (SAMPLES / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes() == committed


def test_features_use_only_what_was_known_at_each_snapshot() -> None:
    events, bad_events = read_jsonl(SAMPLES / "events.jsonl", ("user_id", "ts"))
    profiles, _ = read_jsonl(SAMPLES / "profiles.jsonl", ("user_id", "updated_at"))
    assert len(bad_events) == 2 and all(r[2][0].startswith("input: events.jsonl line") for r in bad_events)
    rows = compute_user_features(events, profiles)
    snapshot = datetime(2026, 3, 20, tzinfo=UTC)
    row = next(r for r in rows if r["user_id"] == "u001" and r["event_time"] == snapshot)
    mine = [e for e in events if e["user_id"] == "u001"]
    assert row["events_30d"] == sum(snapshot - timedelta(days=30) <= e["ts"] < snapshot for e in mine)
    assert row["events_24h"] == sum(snapshot - timedelta(days=1) <= e["ts"] < snapshot for e in mine)
    assert row["last_active"] == max(e["ts"] for e in mine if e["ts"] < snapshot)
    upgraded = [p for p in profiles if p["user_id"] == "u001"]
    assert row["plan"] == [p for p in upgraded if p["updated_at"] <= snapshot][-1]["plan"]
    assert all(r["last_active"] is None or r["last_active"] < r["event_time"] for r in rows)


def test_pipeline_end_to_end_quarantines_and_materializes(settings, stop_redis) -> None:
    summary = run_user_features(settings)
    write = summary["write"]
    assert write["rows_received"] == write["rows_written"] + write["rows_quarantined"] == summary["feature_rows"]
    assert write["violations"] == {"allowed_values": write["rows_quarantined"]}  # the 'platinum' plan rows
    assert summary["input_lines_quarantined"] == 2
    group = FeatureGroup.open(settings, "user_profile")
    reasons = [r for q in group.quarantined().to_pylist() for r in q["reasons"]]
    assert any("'platinum'" in r for r in reasons) and any("is not JSON" in r for r in reasons)
    assert summary["materialize"]["keys_written"] == 40

    vector = OnlineStore.from_settings(settings).get("user_profile", "u001")
    latest = group.history("u001").to_pylist()[-1]
    assert not vector.missing and vector.values["events_30d"] == latest["events_30d"]
    assert vector.values["top_topics_30d"] == latest["top_topics_30d"]

    again = run_user_features(settings)  # idempotent: upsert replaces the same snapshots
    assert group.count_rows() == write["rows_written"]
    assert again["materialize"]["mode"] == "incremental"


def _cli(*args: str, ok: bool = True) -> dict:
    out = subprocess.run([str(LLMFTI), "features", *args, "--json"], capture_output=True, text=True, timeout=300)
    assert (out.returncode == 0) == ok, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_ingest_materialize_get_history(tmp_path, settings, stop_redis) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: scores\nkey: user_id\nfeatures:\n"
        "  - {name: score, type: float64, description: a score, min: 0, max: 1, default: 0.0}\n"
        "  - {name: tier, type: string, description: tier, allowed: [a, b]}\n"
    )
    assert _cli("create", str(spec))["table"] == "fg_scores_v1"
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"user_id": "u1", "event_time": "2026-03-01T00:00:00Z", "score": 0.5, "tier": "a"}\n'
        '{"user_id": "u1", "event_time": "2026-03-02T00:00:00Z", "score": 0.7, "tier": "b"}\n'
        '{"user_id": "u2", "event_time": "2026-03-02T00:00:00Z", "score": 7, "tier": "a"}\n'
        "not json\n"
    )
    error = _cli("ingest", str(rows), "--group", "scores", ok=False)["error"]
    assert error["code"] == "validation_failed"
    result = _cli("ingest", str(rows), "--group", "scores", "--policy", "quarantine")
    assert (result["rows_received"], result["rows_written"], result["rows_quarantined"]) == (4, 2, 2)
    assert result["violations"] == {"range": 1, "input": 1}

    done = _cli("materialize", "--group", "scores")
    assert (done["keys_written"], done["mode"]) == (1, "full") and done["seconds"] >= 0
    got = _cli("get", "--group", "scores", "--key", "u1")
    assert got["values"] == {"score": 0.7, "tier": "b"} and got["missing"] is False
    assert _cli("get", "--group", "scores", "--key", "u2")["values"] == {"score": 0.0, "tier": None}
    history = _cli("history", "--group", "scores", "--key", "u1")
    assert [r["score"] for r in history["rows"]] == [0.5, 0.7]
    assert _cli("quarantine", "--group", "scores")["total"] == 2
    assert _cli("get", "--group", "nope", "--key", "u1")["missing"] is True
    assert _cli("history", "--group", "nope", "--key", "u1", ok=False)["error"]["code"] == "not_found"
