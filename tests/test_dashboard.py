"""The operator's dashboard: the same page from ``llmfti monitor --report`` and ``GET /dashboard``
(admin keys only), with monitoring time series, PSI per user feature, eval history per prompt id and
model version, and the index / alias timeline with who and why; /metrics exposes the latest window."""

from __future__ import annotations

import getpass
import random
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.agent_support import agent_settings, api_keys_setting, data_dir_with_index
from tests.test_monitor import _register_model

H0 = datetime(2026, 11, 2, tzinfo=UTC)
ADMIN = {"Authorization": "Bearer key-ops"}
SCREENSHOT = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "dashboard.png"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    from agents.api.auth import hash_key
    from benchmarks.monitoring import records, write_log
    from evals.runner import EvalRun
    from evals.runs import save_run
    from llmfti.index import VectorIndex
    from llmfti.registry import ModelRegistry

    data_dir = data_dir_with_index(tmp_path_factory.mktemp("dashboard") / "data")
    keys = [*api_keys_setting(), {"name": "ops", "sha256": hash_key("key-ops"), "admin": True}]
    settings = agent_settings(data_dir, api_keys=keys)
    index = VectorIndex.open(settings)
    rng = random.Random(1)
    for hour, shifted in ((0, False), (1, False), (2, True)):
        write_log(settings, records(rng, start=H0 + timedelta(hours=hour), count=60, shifted=shifted,
                                    index_name=index.name, index_version=index.version))
    for i, (prompt, model) in enumerate((("rag_answer@aaa111", "extractive-1"), ("rag_answer@bbb222", "assistant:v2"))):
        save_run(settings, EvalRun(run_id=f"run-{i}", suite="docs", created_at=H0 + timedelta(days=i), dataset_hash="h",
                                   rows=3, full=False, prompt_ids=[prompt], model_version=model,
                                   generator_backend="extractive", index_name="docs", index_version=index.version,
                                   retrieval_mode="hybrid", git_commit="abc", metrics={"exact_match": 0.5 + i / 10},
                                   unmeasured={}, durations_s={}), passed=True)
    registry = ModelRegistry(settings)
    for _ in range(2):
        _register_model(settings, tmp_path_factory.mktemp("model"), "qa_train")
    registry.promote(1, "staging", reason="first candidate", actor="bob")
    registry.promote(2, "staging", reason="better eval on docs", actor="alice")
    yield settings


def test_monitor_report_is_a_static_page_with_every_section(env, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from llmfti.cli.main import app

    monkeypatch.setenv("LLMFTI_DATA_DIR", str(env.data_dir))
    report = tmp_path / "report" / "dashboard.html"
    result = CliRunner().invoke(app, ["monitor", "--json", "--report", str(report)])
    assert result.exit_code == 3, result.output  # the shifted hour fires alerts
    page = report.read_text()
    assert "<script" not in page and page.count("<svg") >= 7  # plots drawn server-side, no JavaScript
    for text in ("Monitoring windows", "1h@2026-11-02T02:00Z", "query_embedding_drift", "Drift per user feature",
                 "<td>plan</td>", "rag_answer@aaa111", "assistant:v2", "model assistant:staging",
                 "promote -&gt; v2 (from v1)", "alice", "bob", "better eval on docs", "index docs"):
        assert text in page, text
    assert f"<td>{getpass.getuser()}</td>" in page and "not recorded" not in page  # who built each index version
    if Path("/usr/bin/chromium").exists():  # the page renders in a real browser
        shot = SCREENSHOT
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        f"--screenshot={shot}", "--window-size=1280,3600", report.as_uri()],
                       check=True, capture_output=True, timeout=120)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        print(f"dashboard screenshot: {shot}")


def test_agent_serves_the_dashboard_to_admin_keys_only_and_exports_gauges(env) -> None:
    from agents.api.app import create_app
    from llmfti.features.embedded_redis import shutdown_embedded
    from llmfti.monitoring.group import latest_row
    from pipelines.monitor import run_monitor

    run_monitor(env, window="1h", since=H0)
    try:
        with TestClient(create_app(env)) as client:
            assert client.get("/dashboard").status_code == 401
            denied = client.get("/dashboard", headers={"Authorization": "Bearer key-default"})
            assert denied.status_code == 403 and "admin" in denied.json()["error"]["message"]
            page = client.get("/dashboard", headers=ADMIN)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "<svg" in page.text and "1h@2026-11-02T02:00Z" in page.text
            metrics = client.get("/metrics").text
    finally:
        shutdown_embedded(env, save=False)
    row = latest_row(env)
    value = re.search(r"^llmfti_monitoring_out_of_coverage_share (\S+)$", metrics, re.M)
    assert value and float(value.group(1)) == pytest.approx(row["out_of_coverage_share"])
    alerts = re.search(r"^llmfti_monitoring_alerts (\S+)$", metrics, re.M)
    assert alerts and float(alerts.group(1)) == len(row["alerts"]) > 0

