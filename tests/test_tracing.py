"""OpenTelemetry spans: a chat request's stages as children of one request span (in-memory exporter),
the traceparent passed on to an upstream OpenAI-compatible server (a second instance of ours), pipeline
steps, a real OTLP/HTTP export configured only by ``OTEL_*`` variables, and off by default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from fastapi.testclient import TestClient

from tests.agent_support import ThreadedServer, add_user_features, agent_settings, data_dir_with_index, parse_sse

pytest.importorskip("opentelemetry.sdk.trace", reason="needs the tracing extra: pip install 'llmfti[tracing]'")

STAGES = {"agent.auth", "agent.features.on_demand", "agent.features.user", "agent.embedding", "agent.retrieval",
          "agent.prompt", "agent.generation", "agent.log"}
QUESTION = "How do I roll back the index to an older version?"


@pytest.fixture
def spans():
    """Trace into an in-memory exporter for the test; tracing off again afterwards."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from llmfti import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    yield exporter
    tracing.configure(None)
    provider.shutdown()


@pytest.fixture
def redis_cleanup():
    """Data dirs whose embedded redis-server the test's apps started: stopped at teardown."""
    data_dirs: list = []
    yield data_dirs
    from llmfti.features.embedded_redis import EmbeddedRedis

    for data_dir in data_dirs:
        server = EmbeddedRedis(data_dir)
        if server.ping():
            server.stop(save=False)


def _by_name(finished, name):
    found = [s for s in finished if s.name == name]
    assert found, f"no span {name!r} among {sorted({s.name for s in finished})}"
    return found


def _check_request_trace(finished, request_id: str, answer: dict):
    (root,) = [s for s in _by_name(finished, "llmfti.request") if s.attributes["llmfti.request_id"] == request_id]
    trace_id = root.context.trace_id
    mine = [s for s in finished if s.context.trace_id == trace_id]
    stages = {s.name: s for s in mine if s.name in STAGES}
    assert set(stages) == STAGES
    for stage in stages.values():  # direct children of the one request span
        assert stage.parent is not None and stage.parent.span_id == root.context.span_id, stage.name
    attrs = root.attributes
    assert attrs["llmfti.tenant"] == "acme" and attrs["llmfti.api_key_name"] == "acme-app"
    assert attrs["llmfti.model_version"] == answer["model_version"]
    assert attrs["llmfti.index_version"] == answer["index_version"]
    assert attrs["llmfti.prompt_id"] == answer["prompt_id"]
    assert attrs["http.response.status_code"] == 200
    assert stages["agent.retrieval"].attributes["llmfti.hits"] == len(answer["citations"]) > 0
    assert stages["agent.retrieval"].attributes["llmfti.index_version"] == answer["index_version"]
    assert stages["agent.generation"].attributes["llmfti.model_version"] == answer["model_version"]
    assert stages["agent.features.user"].attributes["llmfti.group"] == "user_profile"
    # never the prompt, the answer or the user's feature values
    values = json.dumps([dict(s.attributes) for s in mine] + [[dict(e.attributes) for e in s.events] for s in mine],
                        default=str)
    assert "roll back" not in values and "zeppelins" not in values and "expert" not in values
    assert "u-trace" not in values
    return root


def test_a_chat_request_is_one_trace_of_stage_spans_with_versions_and_no_private_text(spans, tmp_path,
                                                                                      redis_cleanup):
    from agents.api.app import create_app

    redis_cleanup.append(tmp_path / "data")
    settings = agent_settings(data_dir_with_index(tmp_path / "data"))
    now = datetime(2026, 11, 1, tzinfo=UTC)
    add_user_features(settings, [{"user_id": "u-trace", "event_time": now, "plan": "team",
                                  "expertise_level": "expert", "top_topics_7d": ["zeppelins"], "last_active": now}])
    with TestClient(create_app(settings)) as client:
        _wait_for_redis(client)
        headers = {"Authorization": "Bearer key-acme"}
        body = {"model": "llmfti-extractive", "user": "u-trace",
                "messages": [{"role": "user", "content": QUESTION}]}
        r = client.post("/v1/chat/completions", headers=headers, json=body)
        assert r.status_code == 200, r.text
        _check_request_trace(spans.get_finished_spans(), r.headers["x-request-id"], r.json())

        r = client.post("/v1/chat/completions", headers=headers, json={**body, "stream": True})
        final = [e for e in parse_sse(r.text) if e != "[DONE]"][-1]
        root = _check_request_trace(spans.get_finished_spans(), r.headers["x-request-id"], final)
        generation = [s for s in spans.get_finished_spans()
                      if s.name == "agent.generation" and s.context.trace_id == root.context.trace_id]
        assert generation[0].attributes["llmfti.streamed"] is True

        r = client.post("/v1/chat/completions", headers={"Authorization": "Bearer wrong"}, json=body)
        assert r.status_code == 401
        (failed,) = [s for s in spans.get_finished_spans() if s.name == "llmfti.request"
                     and s.attributes["llmfti.request_id"] == r.headers["x-request-id"]]
        (auth,) = [s for s in spans.get_finished_spans() if s.name == "agent.auth"
                   and s.context.trace_id == failed.context.trace_id]
        assert auth.status.status_code.name == "ERROR" and auth.events[0].name == "exception"
        assert failed.attributes["http.response.status_code"] == 401
        # probes are not traced
        client.get("/healthz")
        assert not [s for s in spans.get_finished_spans() if s.attributes.get("url.path") == "/healthz"]


def _wait_for_redis(client, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not client.get("/readyz").json()["checks"]["redis"]:
        assert time.monotonic() < deadline, "the agent's Redis did not come up"
        time.sleep(0.1)


class _HeaderRecorder:
    """ASGI wrapper around the upstream app: records the headers of every request it receives."""

    def __init__(self, app):
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.seen.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)

    def __getattr__(self, name):  # lifespan/state lookups reach the wrapped app
        return getattr(self.app, name)


def test_the_openai_backend_passes_the_traceparent_to_the_upstream_server(spans, tmp_path, monkeypatch,
                                                                          redis_cleanup):
    from agents.api.app import create_app

    redis_cleanup.extend([tmp_path / "upstream", tmp_path / "proxy"])

    upstream = _HeaderRecorder(create_app(agent_settings(data_dir_with_index(tmp_path / "upstream"))))
    with ThreadedServer(upstream) as server:
        monkeypatch.setenv("LLMFTI_UPSTREAM_API_KEY", "key-default")
        settings = agent_settings(data_dir_with_index(tmp_path / "proxy"), generator={
            "backend": "openai", "base_url": server.url + "/v1", "model": "llmfti-extractive",
            "served_name": "llmfti-proxy", "timeout_s": 20})
        with TestClient(create_app(settings)) as client:
            body = {"model": "llmfti-proxy", "messages": [{"role": "user", "content": QUESTION}]}
            for stream in (False, True):
                upstream.seen.clear()
                r = client.post("/v1/chat/completions", headers={"Authorization": "Bearer key-acme"},
                                json={**body, "stream": stream})
                assert r.status_code == 200, r.text
                (proxy_root,) = [s for s in spans.get_finished_spans() if s.name == "llmfti.request"
                                 and s.attributes.get("llmfti.request_id") == r.headers["x-request-id"]]
                trace_id = proxy_root.context.trace_id
                (sent,) = [h for h in upstream.seen if h.get("authorization") == "Bearer key-default"]
                version, header_trace, parent_span, flags = sent["traceparent"].split("-")
                assert version == "00" and int(header_trace, 16) == trace_id and int(flags, 16) & 1  # sampled
                # the upstream's own request span continued the same trace, under the proxy's span
                upstream_roots = [s for s in spans.get_finished_spans() if s.name == "llmfti.request"
                                  and s.context.trace_id == trace_id and s is not proxy_root]
                assert len(upstream_roots) == 1
                assert upstream_roots[0].parent.span_id == int(parent_span, 16)
                if not stream:  # whole answers generate inside the generation span
                    (generation,) = [s for s in spans.get_finished_spans() if s.name == "agent.generation"
                                     and s.context.trace_id == trace_id and s.parent.span_id ==
                                     proxy_root.context.span_id]
                    assert int(parent_span, 16) == generation.context.span_id


def test_pipeline_steps_are_spans(spans, tmp_path):
    from llmfti.config import load_settings
    from pipelines.drain_logs import drain_logs
    from pipelines.index_build import build_index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nThe first document talks about rockets and fuel.\n")
    settings = load_settings(data_dir=tmp_path / "data")
    summary = build_index(settings, [docs])
    finished = spans.get_finished_spans()
    (build,) = _by_name(finished, "index.build")
    for name in ("index.load", "index.chunk_and_embed", "index.commit"):
        (step,) = _by_name(finished, name)
        assert step.parent.span_id == build.context.span_id
    (chunk_embed,) = _by_name(finished, "index.chunk_and_embed")
    for name in ("index.chunk", "index.embed"):
        assert _by_name(finished, name)[0].parent.span_id == chunk_embed.context.span_id
    assert _by_name(finished, "index.commit")[0].attributes["llmfti.version"] == summary["version"]
    assert _by_name(finished, "index.load")[0].attributes["llmfti.docs"] == 1

    drain_logs(settings, include_stream=False)
    finished = spans.get_finished_spans()
    (drain,) = _by_name(finished, "logs.drain")
    kinds = _by_name(finished, "logs.drain_kind")
    assert len(kinds) == 2 and all(k.parent.span_id == drain.context.span_id for k in kinds)
    assert {k.attributes["llmfti.table"] for k in kinds} == {"inference_log", "feedback"}


def test_tracing_is_off_by_default_and_import_llmfti_loads_no_opentelemetry(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = ("import sys, llmfti, llmfti.tracing as t\n"
            "with t.span('x') as s: s.set(a=1)\n"
            "assert not t.enabled() and t.inject_headers() == {}\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
])
def test_which_otel_variables_turn_tracing_on(env, on):
    from llmfti.tracing import _env_enabled

    assert _env_enabled(env) is on


def test_an_unknown_exporter_is_a_clear_error():
    from llmfti.errors import ConfigError
    from llmfti.tracing import _exporters

    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER='zipkin2' is not supported"):
        _exporters({"OTEL_TRACES_EXPORTER": "zipkin2"})


def test_otel_variables_alone_export_spans_over_otlp_http(tmp_path):
    """A real OTLP/HTTP exporter, configured only by environment variables, posts protobuf spans."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[tuple[str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            received.append((self.path, self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
               "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
               "OTEL_SERVICE_NAME": "llmfti-test"}
        code = ("from llmfti.tracing import span, enabled\n"
                "with span('index.build', index='docs'):\n"
                "    with span('index.commit', version=3): pass\n"
                "assert enabled()\n")
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)  # flushed at exit
    finally:
        server.shutdown()
        server.server_close()
    assert received and received[0][0] == "/v1/traces"
    names, attrs, services = set(), {}, set()
    for _, payload in received:
        request = ExportTraceServiceRequest.FromString(payload)
        for resource_spans in request.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    names.add(s.name)
                    attrs.update({a.key: a.value for a in s.attributes})
    assert names == {"index.build", "index.commit"} and services == {"llmfti-test"}
    assert attrs["llmfti.version"].int_value == 3 and attrs["llmfti.index"].string_value == "docs"
