"""``POST /v1/feedback``: valid and invalid bodies, auth, and the durable path (Redis stream or spool
file, then an idempotent drain into the LanceDB ``feedback`` table)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from tests.agent_support import agent_settings, data_dir_with_index

MODEL = "llmfti-extractive"
ACME = {"Authorization": "Bearer key-acme"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from agents.api.app import create_app

    data_dir = data_dir_with_index(tmp_path_factory.mktemp("agent-feedback") / "data")
    settings = agent_settings(data_dir, max_feedback_chars=200)
    app = create_app(settings)
    with TestClient(app) as client:
        yield settings, app, client


def ask(client, question: str, headers=ACME) -> tuple[str, str]:
    r = client.post("/v1/chat/completions", headers=headers,
                    json={"model": MODEL, "messages": [{"role": "user", "content": question}]})
    assert r.status_code == 200, r.text
    return r.headers["x-request-id"], r.json()["id"]


def test_feedback_is_accepted_and_drained_with_who_gave_it(env):
    from pipelines.drain_logs import drain_logs, open_feedback_table

    settings, app, client = env
    request_id, response_id = ask(client, "When do Acme launches happen?")
    r = client.post("/v1/feedback", headers={**ACME, "X-User-Id": "u-7"},
                    json={"request_id": response_id, "rating": 1, "correction": "Every Tuesday [1].",
                          "comment": "short and right"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "feedback" and body["status"] == "accepted" and body["id"].startswith("fb-")
    assert body["request_id"] == request_id  # the response id was resolved to the request id
    r = client.post("/v1/feedback", headers=ACME, json={"request_id": request_id, "rating": -1})
    assert r.status_code == 200 and r.json()["rating"] == -1

    app.state.agent.feedback.writer.flush()
    result = drain_logs(settings)["feedback"]
    assert result["inserted"] == 2 and result["from_stream"] == 2 and result["table"] == "feedback"
    rows = {r["rating"]: r for r in open_feedback_table(settings).to_arrow().to_pylist()}
    assert rows[1]["request_id"] == rows[-1]["request_id"] == request_id
    assert (rows[1]["correction"], rows[1]["comment"], rows[1]["user_id"]) == ("Every Tuesday [1].",
                                                                              "short and right", "u-7")
    assert (rows[1]["api_key_name"], rows[1]["tenant"]) == ("acme-app", "acme")
    assert rows[-1]["correction"] is None


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"request_id": "req-1", "rating": 5}, "rating", "-1 (bad), 0 (neutral) or 1 (good)"),
        ({"request_id": "req-1", "rating": "great"}, "rating", "valid integer"),
        ({"request_id": "req-1"}, "rating", "Field required"),
        ({"rating": 1}, "request_id", "Field required"),
        ({"request_id": "req 1; drop table", "rating": 1}, "request_id", "x-request-id header"),
        ({"request_id": "req-1", "rating": 1, "correction": "x" * 201}, "correction", "over the limit of 200"),
        ({"request_id": "req-1", "rating": 1, "comment": "x" * 201}, "comment", "over the limit of 200"),
        ({"request_id": "req-1", "rating": 1, "correction": "  "}, "correction", "correction is empty"),
    ],
)
def test_invalid_feedback_is_a_400_naming_the_field(env, body, param, says):
    _, _, client = env
    r = client.post("/v1/feedback", headers=ACME, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert says in error["message"], error["message"]


def test_feedback_needs_a_configured_key(env):
    _, app, client = env
    before = app.state.agent.feedback.writer.appended + app.state.agent.feedback.writer.pending
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = client.post("/v1/feedback", headers=headers, json={"request_id": "req-1", "rating": 1})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    app.state.agent.feedback.writer.flush()
    assert app.state.agent.feedback.writer.appended == before  # nothing was recorded


def record(i: int, rating: int = 1):
    from llmfti.feedback import FeedbackRecord

    return FeedbackRecord(feedback_id=f"fb-{i}", request_id=f"req-{i % 3}", rating=rating,
                          created_at=datetime(2026, 11, 2, 0, 0, i, tzinfo=UTC))


def test_feedback_spools_when_redis_is_down_and_drains_exactly_once(settings):
    from llmfti.features.embedded_redis import redis_client
    from llmfti.feedback import FEEDBACK_SPOOL, FeedbackRecord
    from llmfti.inference_log import STREAM_FIELD, InferenceLogWriter
    from pipelines.drain_logs import drain_logs, open_feedback_table, open_log_table

    def down():
        raise ConnectionError("redis is down")

    writer = InferenceLogWriter(down, settings.agent.feedback_stream, settings.data_dir / "spool",
                                spool_name=FEEDBACK_SPOOL, record_type=FeedbackRecord, replay_every_s=3600)
    writer.start()
    for i in range(6):
        writer.submit(record(i))
    writer.close()
    assert (writer.spooled, writer.appended) == (6, 0)
    assert (settings.data_dir / "spool" / FEEDBACK_SPOOL).is_file()
    client = redis_client(settings)
    for i in range(4, 9):  # 4 and 5 are both spooled and streamed (e.g. a replay raced a drain)
        client.xadd(settings.agent.feedback_stream, {STREAM_FIELD: record(i).to_json().encode()})
    client.xadd(settings.agent.feedback_stream, {STREAM_FIELD: b"{torn"})

    result = drain_logs(settings)
    fb = result["feedback"]
    assert (fb["read"], fb["inserted"], fb["from_spool"], fb["dead_lettered"]) == (11, 9, 6, 1)
    assert result["inserted"] == 0 and open_log_table(settings).count_rows() == 0  # the inference log is apart
    assert client.xlen(settings.agent.feedback_stream) == 0
    assert drain_logs(settings)["feedback"]["inserted"] == 0
    table = open_feedback_table(settings)
    assert sorted(table.to_arrow().column("feedback_id").to_pylist()) == [f"fb-{i}" for i in range(9)]
    assert any(idx.columns == ["feedback_id"] for idx in table.list_indices())


def test_feedback_redelivered_by_a_redis_restored_from_an_old_snapshot_is_not_stored_twice(settings):
    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import STREAM_FIELD
    from pipelines.drain_logs import drain_logs, open_feedback_table

    client = redis_client(settings)
    stream = settings.agent.feedback_stream
    entries = [record(i).to_json().encode() for i in range(4)]
    for raw in entries:
        client.xadd(stream, {STREAM_FIELD: raw})
    assert drain_logs(settings)["feedback"]["inserted"] == 4
    before = open_feedback_table(settings).to_arrow().sort_by("feedback_id")
    for raw in entries[1:3]:  # what a stale RDB snapshot held: entries drained since
        client.xadd(stream, {STREAM_FIELD: raw})
    again = drain_logs(settings)["feedback"]
    assert (again["read"], again["inserted"], again["duplicates_skipped"]) == (2, 0, 2)
    assert open_feedback_table(settings).to_arrow().sort_by("feedback_id").equals(before)
    assert client.xlen(stream) == 0


def test_acknowledged_feedback_survives_kill_9_of_redis(tmp_path):
    import os
    import signal

    from agents.api.app import create_app
    from llmfti.features.embedded_redis import embedded_server, redis_client
    from pipelines.drain_logs import drain_logs, open_feedback_table

    settings = agent_settings(data_dir_with_index(tmp_path / "data"))
    app = create_app(settings)
    with TestClient(app) as client:
        request_id, _ = ask(client, "When do Acme launches happen?")
        ids = []
        for rating in (1, -1, 0):
            r = client.post("/v1/feedback", headers=ACME, json={"request_id": request_id, "rating": rating})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])  # acknowledged: durable from here on
        server = embedded_server(settings)
        os.kill(server.pid(), signal.SIGKILL)  # no SAVE: only the fsync'd AOF counts
    embedded_server(settings)
    redis_client(settings).ping()
    result = drain_logs(settings)["feedback"]
    assert result["stream_error"] is None and result["inserted"] == 3
    assert sorted(open_feedback_table(settings).to_arrow().column("feedback_id").to_pylist()) == sorted(ids)
