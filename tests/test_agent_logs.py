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
                seen.extend(e.record.request_id for e in read_spool(path))
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
        seen.extend(e.record.request_id for e in read_spool(path))
    assert len(seen) == 800 and len(set(seen)) == 800  # nothing lost, nothing read twice


def test_a_torn_spool_line_goes_to_the_dead_letter_table_with_its_bytes(settings):
    from llmfti.inference_log import claim_spool, read_spool, spool_append
    from pipelines.drain_logs import drain_logs, open_dead_letter_table, open_log_table

    spool = settings.data_dir / "spool"
    spool_append(spool, [record(1).to_json(), record(2).to_json()])
    torn = record(3).to_json()[:40]
    with open(spool / "inference_log.jsonl", "a") as handle:
        handle.write(torn)
    [path] = claim_spool(spool)
    entries = list(read_spool(path))
    assert [e.record.request_id for e in entries[:2]] == ["req-1", "req-2"]
    assert entries[2].record is None and entries[2].entry_id == f"{path.name}:3" and "JSON" in entries[2].reason

    result = drain_logs(settings)
    assert (result["inserted"], result["dead_lettered"]) == (2, 1)
    [dead] = open_dead_letter_table(settings).to_arrow().to_pylist()
    assert (dead["source"], dead["location"], dead["entry_id"]) == ("spool", path.name, f"{path.name}:3")
    assert dead["raw"] == torn.encode() and dead["log_table"] == "inference_log" and dead["dead_at"]
    assert open_log_table(settings).count_rows() == 2 and not list(spool.glob("*.jsonl"))


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
    futures = [writer.submit(record(i, user_features={"plan": "pro", "score": 0.5})) for i in range(10)]
    assert [f.result(10) for f in futures] == ["spool"] * 10  # resolved only once fsync'd in the spool
    assert (writer.spooled, writer.appended) == (10, 0)
    up["ok"] = True
    assert writer.write(record(10), timeout_s=10) == "stream"
    assert writer.appended == 1
    assert writer.replay_spool() == 10
    writer.close()
    entries = read_stream(client, "test:log", 100)
    assert sorted(e.record.request_id for e in entries) == sorted(f"req-{i}" for i in range(11))
    first = next(e.record for e in entries if e.record.request_id == "req-0")
    assert first.user_features == {"plan": "pro", "score": 0.5}


def test_drain_is_idempotent_when_a_record_is_both_spooled_and_streamed(settings):
    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import STREAM_FIELD, spool_append
    from pipelines.drain_logs import drain_logs, open_dead_letter_table, open_log_table

    client = redis_client(settings)
    stream = settings.agent.log_stream
    for i in range(5):
        client.xadd(stream, {STREAM_FIELD: record(i).to_json().encode()})
    broken_id = client.xadd(stream, {STREAM_FIELD: b"{broken"}).decode()
    other_id = client.xadd(stream, {b"unexpected": b"\xff\xfe"}).decode()
    spool_append(settings.data_dir / "spool", [record(i).to_json() for i in range(3, 8)])
    result = drain_logs(settings)
    assert result["inserted"] == 8 and result["read"] == 10 and result["dead_lettered"] == 2
    assert client.xlen(stream) == 0  # deleted from the stream only once kept in LanceDB
    dead = {r["entry_id"]: r for r in open_dead_letter_table(settings).to_arrow().to_pylist()}
    assert dead[broken_id]["raw"] == b"{broken" and dead[broken_id]["source"] == "stream"
    assert dead[broken_id]["location"] == stream and "JSON" in dead[broken_id]["reason"]
    assert "no 'r' field" in dead[other_id]["reason"] and b"unexpected" in dead[other_id]["raw"]
    assert drain_logs(settings)["inserted"] == 0
    table = open_log_table(settings)
    assert table.count_rows() == 8
    assert any(idx.columns == ["request_id"] for idx in table.list_indices())


def test_a_final_record_completes_a_started_one_never_the_reverse(settings):
    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import INCOMPLETE, STREAM_FIELD
    from pipelines.drain_logs import drain_logs, open_log_table

    client = redis_client(settings)
    stream = settings.agent.log_stream

    def add(*records):
        for r in records:
            client.xadd(stream, {STREAM_FIELD: r.to_json().encode()})

    add(record(1, error=INCOMPLETE, streamed=True), record(2, error=INCOMPLETE, streamed=True))
    assert drain_logs(settings)["inserted"] == 2
    add(record(1, answer="done", streamed=True), record(3, answer="x", streamed=True),
        record(3, error=INCOMPLETE, streamed=True))  # a started record after its final one (replay order)
    result = drain_logs(settings)
    assert (result["inserted"], result["completed"]) == (1, 1)
    add(record(1, error=INCOMPLETE, streamed=True))  # re-delivered: must not undo the final record
    assert drain_logs(settings)["completed"] == 0
    rows = {r["request_id"]: r for r in open_log_table(settings).to_arrow().to_pylist()}
    assert (rows["req-1"]["answer"], rows["req-1"]["error"]) == ("done", None)
    assert rows["req-2"]["error"] == INCOMPLETE  # the stream that never finished stays, marked incomplete
    assert (rows["req-3"]["answer"], rows["req-3"]["error"]) == ("x", None)


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


def test_logs_cli_shows_dead_letters_and_status(settings):
    import json

    from typer.testing import CliRunner

    from llmfti.cli.main import app
    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import STREAM_FIELD

    client = redis_client(settings)
    client.xadd(settings.agent.log_stream, {STREAM_FIELD: record(1).to_json().encode()})
    client.xadd(settings.agent.log_stream, {STREAM_FIELD: b"\xff not json"})
    runner = CliRunner()
    drained = json.loads(runner.invoke(app, ["logs", "drain", "--json"]).stdout)
    assert (drained["inserted"], drained["dead_lettered"]) == (1, 1)
    status = json.loads(runner.invoke(app, ["logs", "status", "--json"]).stdout)
    assert status["dead_letter"] == {"table": "log_dead_letter", "rows": 1} and status["stream_pending"] == 0
    shown = json.loads(runner.invoke(app, ["logs", "dead-letter", "--json"]).stdout)
    [entry] = shown["entries"]
    assert entry["raw"] == "\\xff not json" and entry["raw_bytes"] == 10 and entry["source"] == "stream"
    assert "unreadable as InferenceRecord" in entry["reason"]


def test_a_drain_racing_a_replay_of_the_same_spool_loses_and_duplicates_nothing(settings):
    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import InferenceLogWriter, spool_append
    from pipelines.drain_logs import drain_logs, open_log_table

    client = redis_client(settings)
    spool = settings.data_dir / "spool"
    for chunk in range(10):
        spool_append(spool, [record(chunk * 50 + i).to_json() for i in range(50)])
        spool_append(spool, [b"{torn"])
    writer = InferenceLogWriter(lambda: client, settings.agent.log_stream, spool, batch_size=20)
    errors = []

    def replay():
        try:
            writer.replay_spool()
        except Exception as exc:  # noqa: BLE001 - the assertion below reports it
            errors.append(exc)

    racing = threading.Thread(target=replay)
    racing.start()
    first = drain_logs(settings)
    racing.join()
    last = drain_logs(settings)
    assert not errors
    ids = open_log_table(settings).to_arrow().column("request_id").to_pylist()
    assert len(ids) == len(set(ids)) == 500  # every record once, whichever reader got it
    assert first["dead_lettered"] + last["dead_lettered"] >= 10  # each torn line kept, never dropped
    assert not list(spool.glob("*.jsonl")) and client.xlen(settings.agent.log_stream) == 0


def test_a_record_that_does_not_fit_the_table_is_dead_lettered_not_blocking_the_drain(settings):
    import json

    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import STREAM_FIELD
    from pipelines.drain_logs import drain_logs, open_dead_letter_table, open_log_table

    client = redis_client(settings)
    bad = json.loads(record(2).to_json())
    bad["prompt_tokens"] = "many"  # valid JSON, a known record shape, but not an int64 column
    raw = json.dumps(bad).encode()
    for entry in (record(1).to_json().encode(), raw, record(3).to_json().encode()):
        client.xadd(settings.agent.log_stream, {STREAM_FIELD: entry})
    result = drain_logs(settings)
    assert (result["inserted"], result["dead_lettered"]) == (2, 1)
    assert sorted(open_log_table(settings).to_arrow().column("request_id").to_pylist()) == ["req-1", "req-3"]
    [dead] = open_dead_letter_table(settings).to_arrow().to_pylist()
    assert dead["raw"] == raw and "does not fit the inference_log table" in dead["reason"]
    assert client.xlen(settings.agent.log_stream) == 0


def test_racing_drains_store_each_record_once(settings):
    """Replicas, cron jobs and operators may drain at the same moment: a Redis lock makes them take turns
    (two merge-inserts adding the same keys at once would both succeed)."""
    import threading

    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import STREAM_FIELD
    from pipelines.drain_logs import drain_logs, open_log_table

    client = redis_client(settings)
    for i in range(300):
        client.xadd(settings.agent.log_stream, {STREAM_FIELD: record(i).to_json().encode()})
    results: list[dict] = []
    barrier = threading.Barrier(3)

    def drain() -> None:
        barrier.wait()
        results.append(drain_logs(settings, batch_size=50))

    threads = [threading.Thread(target=drain) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 3  # no drain crashed (racing creates of the log table once failed one: CI)
    ids = open_log_table(settings).to_arrow().column("request_id").to_pylist()
    assert len(ids) == len(set(ids)) == 300
    assert sum(r["inserted"] for r in results) == 300 and all(r["stream_error"] is None for r in results)
    assert client.xlen(settings.agent.log_stream) == 0
    assert client.get(f"{settings.agent.log_stream}:drain-lock") is None  # released
