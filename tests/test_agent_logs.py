"""The inference log's parts: spool files under concurrent writers and readers, replay, drain
idempotency, and the on-demand feature function shared with backfills."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest


def record(i: int, **extra):
    from llmfti.inference_log import InferenceRecord

    return InferenceRecord(request_id=f"req-{i}", created_at=datetime(2026, 11, 1, tzinfo=UTC), endpoint="chat",
                           model_id="m", model_version="v", prompt_id="p@0", **extra)


def test_spool_survives_concurrent_appends_and_claims(tmp_path):
    from llmfti.inference_log import claim_spool, read_spool, spool_append

    spool = tmp_path / "spool"
    seen: list[str] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            for path in claim_spool(spool):
                seen.extend(r.request_id for r in read_spool(path))
                path.unlink()

    def writer(w: int):
        for i in range(200):
            spool_append(spool, [record(w * 1000 + i).to_json()])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    reading = threading.Thread(target=reader)
    reading.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    reading.join()
    for path in claim_spool(spool):
        seen.extend(r.request_id for r in read_spool(path))
    assert len(seen) == 800 and len(set(seen)) == 800  # nothing lost, nothing read twice


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path, caplog):
    from llmfti.inference_log import claim_spool, read_spool, spool_append

    spool = tmp_path / "spool"
    spool_append(spool, [record(1).to_json(), record(2).to_json()])
    with open(spool / "inference_log.jsonl", "a") as handle:
        handle.write(record(3).to_json()[:40])
    [path] = claim_spool(spool)
    assert [r.request_id for r in read_spool(path)] == ["req-1", "req-2"]
    assert "unreadable line 3" in caplog.text


def test_writer_spools_when_redis_fails_and_replays_into_the_stream(settings):
    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import InferenceLogWriter, read_stream

    client = redis_client(settings)
    up = {"ok": False}

    def factory():
        if not up["ok"]:
            raise ConnectionError("redis is down")
        return client

    writer = InferenceLogWriter(factory, "test:log", settings.data_dir / "spool", replay_every_s=3600)
    writer.start()
    for i in range(10):
        writer.submit(record(i, user_features={"plan": "pro", "score": 0.5}))
    writer.flush()
    assert (writer.spooled, writer.appended) == (10, 0)
    up["ok"] = True
    writer.submit(record(10))
    writer.flush()
    assert writer.appended == 1
    assert writer.replay_spool() == 10
    writer.close()
    entries = read_stream(client, "test:log", 100)
    assert sorted(r.request_id for _, r in entries) == sorted(f"req-{i}" for i in range(11))
    assert next(r for _, r in entries if r.request_id == "req-0").user_features == {"plan": "pro", "score": 0.5}


def test_drain_is_idempotent_when_a_record_is_both_spooled_and_streamed(settings):
    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import STREAM_FIELD, spool_append
    from pipelines.drain_logs import drain_logs, open_log_table

    client = redis_client(settings)
    stream = settings.agent.log_stream
    for i in range(5):
        client.xadd(stream, {STREAM_FIELD: record(i).to_json().encode()})
    client.xadd(stream, {STREAM_FIELD: b"{broken"})
    spool_append(settings.data_dir / "spool", [record(i).to_json() for i in range(3, 8)])
    result = drain_logs(settings)
    assert result["inserted"] == 8 and result["read"] == 10 and result["unreadable_skipped"] == 1
    assert client.xlen(stream) == 0
    assert drain_logs(settings)["inserted"] == 0
    table = open_log_table(settings)
    assert table.count_rows() == 8
    assert any(idx.columns == ["request_id"] for idx in table.list_indices())


def test_on_demand_features_are_the_same_online_and_in_a_backfill():
    from llmfti.on_demand import backfill_request_features, request_features

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "How do I roll back?"}]
    at = datetime(2026, 11, 3, 14, 5, tzinfo=UTC)
    online = request_features(messages, at=at)
    assert online == {"query_chars": 19, "query_words": 5, "is_question": True, "conversation_turns": 2,
                      "history_messages": 3, "has_system_message": True, "hour_of_day": 14, "day_of_week": 1}
    rec = record(1, request_messages=messages)
    rec.created_at = at
    [backfilled] = backfill_request_features([rec.to_row()])
    assert backfilled == {"request_id": "req-1", **online}


def test_prompt_ids_change_with_content(tmp_path):
    from llmfti.errors import ConfigError, NotFoundError
    from llmfti.prompts import load_prompt

    (tmp_path / "p.yaml").write_text("system: 'Passages: {{ passages | length }}'\nuser: '{{ question }}'\n")
    first = load_prompt("p", tmp_path)
    assert first.render(question="q", passages=[{"text": "a"}])[0]["content"] == "Passages: 1"
    (tmp_path / "p.yaml").write_text("system: 'Passages: {{ passages | length }}!'\nuser: '{{ question }}'\n")
    assert load_prompt("p", tmp_path).id != first.id and first.id.startswith("p@")
    with pytest.raises(NotFoundError, match="expected: one of \\['p'\\]"):
        load_prompt("missing", tmp_path)
    (tmp_path / "bad.yaml").write_text("system: '{% if %}'\nuser: x\n")
    with pytest.raises(ConfigError, match="Jinja2 syntax error"):
        load_prompt("bad", tmp_path)
