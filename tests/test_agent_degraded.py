"""The agent when things break: Redis down (serve without user features, flag it, spool the log),
Redis back (replay), a failing or hanging model backend (fall back to extractive, or a 503)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.agent_support import (
    HangingServer,
    add_user_features,
    agent_settings,
    data_dir_with_index,
    free_port,
    parse_sse,
)

AUTH = {"Authorization": "Bearer key-default"}


def chat(question: str, **extra):
    return {"model": extra.pop("model", "llmfti-extractive"), "messages": [{"role": "user", "content": question}],
            **extra}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return data_dir_with_index(tmp_path_factory.mktemp("agent-degraded") / "data")


def test_redis_down_serves_without_user_features_flags_it_and_spools_the_log(data_dir, tmp_path):
    from agents.api.app import create_app
    from pipelines.drain_logs import drain_logs

    own = data_dir_with_index(tmp_path / "data")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = agent_settings(own, redis={"url": dead, "socket_timeout_s": 0.2})
    app = create_app(settings)
    with TestClient(app) as client:
        ids = []
        for stream in (False, True, False):
            r = client.post("/v1/chat/completions", headers={**AUTH, "X-User-Id": "u1"},
                            json=chat("How do I roll back the index?", stream=stream))
            assert r.status_code == 200, r.text
            body = parse_sse(r.text)[-2] if stream else r.json()
            assert set(body["degraded"]) == {"user_features", "rate_limit"}
            assert "rollback" in str(body["citations"])
            ids.append(r.headers["x-request-id"])
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] is False
        writer = app.state.agent.pipeline.log_writer
        writer.flush()  # the streamed request wrote a started and a final record
        assert writer.spooled == 4 and writer.appended == 0
    assert (own / "spool" / "inference_log.jsonl").exists()

    result = drain_logs(settings)  # the stream is unreachable, the spool is not
    assert result["from_spool"] == 4 and result["inserted"] == 3 and result["stream_error"]
    assert not (own / "spool" / "inference_log.jsonl").exists()
    assert drain_logs(settings)["inserted"] == 0


def test_a_killed_embedded_redis_is_restarted_by_the_agent_and_nothing_is_lost(data_dir):
    import os
    import signal

    from agents.api.app import create_app
    from llmfti.features.embedded_redis import embedded_server
    from pipelines.drain_logs import drain_logs, open_log_table

    settings = agent_settings(data_dir, redis_retry_s=0.1)
    add_user_features(settings, [{"user_id": "u1", "event_time": "2026-11-01T00:00:00Z", "plan": "pro"}])
    drain_logs(settings)
    app = create_app(settings)
    ids = []
    with TestClient(app) as client:
        pipeline = app.state.agent.pipeline

        def ask(stream=False):
            r = client.post("/v1/chat/completions", headers={**AUTH, "X-User-Id": "u1"},
                            json=chat("Rollback?", stream=stream))
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-request-id"])
            return parse_sse(r.text)[-2] if stream else r.json()

        assert ask()["degraded"] == []
        server = embedded_server(settings)
        killed = server.pid()
        os.kill(killed, signal.SIGKILL)  # the real fault: no SAVE, no shutdown
        for i in range(6):
            ask(stream=i % 2 == 1)  # every request is still answered (degraded or not)
        for _ in range(200):  # bounded: /readyz turns green without restarting the API
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        ready = client.get("/readyz").json()
        assert ready["checks"]["redis"] is True and ready["redis_recoveries"] >= 1
        assert server.pid() != killed
        for _ in range(200):  # bounded: whatever was spooled during the outage is replayed into Redis
            if client.get("/readyz").json()["log_spool_bytes"] == 0:
                break
            time.sleep(0.05)
        assert client.get("/readyz").json()["log_spool_bytes"] == 0
        assert ask()["degraded"] == []  # user features are back
        pipeline.log_writer.flush()
    result = drain_logs(settings)
    assert result["stream_error"] is None
    logged = set(open_log_table(settings).to_arrow().column("request_id").to_pylist())
    assert set(ids) <= logged  # acknowledged before, during and after the outage


@pytest.mark.parametrize("stream", [False, True])
def test_a_failing_model_backend_falls_back_to_extractive(data_dir, stream):
    from agents.api.app import create_app

    settings = agent_settings(data_dir, generator={
        "backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "upstream",
        "served_name": "llmfti-rag", "timeout_s": 5})
    app = create_app(settings)
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", headers=AUTH,
                        json=chat("How do I roll back the index?", model="llmfti-rag", stream=stream))
        assert r.status_code == 200, r.text
        body = parse_sse(r.text)[-2] if stream else r.json()
        assert body["fallback"] is True and "Error" in body["fallback_reason"]
        assert body["model_version"].startswith("extractive")
        text = ("".join(e["choices"][0]["delta"].get("content") or "" for e in parse_sse(r.text)[:-1])
                if stream else body["choices"][0]["message"]["content"])
        assert "rollback" in text
        assert "llmfti_generator_fallbacks_total 1.0" in client.get("/metrics").text


def test_a_hanging_model_backend_times_out_and_falls_back(data_dir):
    from agents.api.app import create_app

    with HangingServer() as hang:
        settings = agent_settings(data_dir, generator={
            "backend": "openai", "base_url": f"http://127.0.0.1:{hang.port}/v1", "model": "upstream",
            "timeout_s": 0.5})
        app = create_app(settings)
        with TestClient(app) as client:
            r = client.post("/v1/chat/completions", headers=AUTH, json=chat("Rollback?", model="upstream"))
            body = r.json()
            assert r.status_code == 200 and body["fallback"] is True
            assert body["fallback_reason"] in ("timeout after 0.5 s",) or "Timeout" in body["fallback_reason"]
            assert body["timings_ms"]["generation"] < 3000


def test_without_fallback_a_failing_backend_is_a_503(data_dir):
    from agents.api.app import create_app

    settings = agent_settings(data_dir, generator={
        "backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "upstream",
        "fallback": False})
    app = create_app(settings)
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", headers=AUTH, json=chat("Rollback?", model="upstream"))
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["type"] == "service_unavailable_error" and error["code"] == "generation_failed"
        assert "openai generator failed" in error["message"]
        # streaming fails before any event: a plain error response, not a 200 stream
        r = client.post("/v1/chat/completions", headers=AUTH, json=chat("Rollback?", model="upstream", stream=True))
        assert r.status_code == 503 and r.json()["error"]["code"] == "generation_failed"


def test_a_missing_index_is_a_503_until_it_is_built(tmp_path):
    from agents.api.app import create_app
    from tests.agent_support import index_template

    settings = agent_settings(tmp_path / "empty")
    app = create_app(settings)
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", headers=AUTH, json=chat("Rollback?"))
        assert r.status_code == 503 and "not built" in r.json()["error"]["message"]
        assert client.get("/readyz").json()["checks"]["index"] is False
        import shutil

        shutil.copytree(index_template() / "lancedb", tmp_path / "empty" / "lancedb", dirs_exist_ok=True)
        assert client.post("/v1/chat/completions", headers=AUTH, json=chat("Rollback?")).status_code == 200
