"""The agent's HTTP API driven through the real app (TestClient): shapes, streaming, errors, auth,
rate limits, tenant isolation, user features and the inference log."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from tests.agent_support import add_user_features, agent_settings, data_dir_with_index, parse_sse

MODEL = "llmfti-extractive"
AUTH = {"Authorization": "Bearer key-default"}


def chat(question: str, **extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], **extra}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from agents.api.app import create_app

    data_dir = data_dir_with_index(tmp_path_factory.mktemp("agent-api") / "data")
    settings = agent_settings(data_dir, max_messages=8, max_input_tokens=200, max_completion_tokens=300,
                              max_request_bytes=20_000, max_input_chars=10_000)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    add_user_features(settings, [{
        "user_id": "u-team", "event_time": now, "language": "de", "plan": "team", "expertise_level": "expert",
        "top_topics_7d": ["index"], "top_topics_30d": ["index", "serving"], "events_24h": 2, "events_7d": 5,
        "events_30d": 11, "last_active": now,
    }])
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            yield settings, app, client
    finally:  # never leave the module's embedded redis-server running, even after a failed setup
        from llmfti.features.embedded_redis import shutdown_embedded

        shutdown_embedded(settings, save=False)


def drain(env):
    from pipelines.drain_logs import drain_logs

    settings, app, _ = env
    app.state.agent.pipeline.log_writer.flush()
    return drain_logs(settings)


def logged(settings, request_id: str) -> dict:
    from pipelines.drain_logs import open_log_table

    rows = open_log_table(settings).search().where(f"request_id = '{request_id}'").to_list()
    assert len(rows) == 1, rows
    return rows[0]


def test_chat_completion_answers_with_citations_and_extensions(env):
    _, _, client = env
    r = client.post("/v1/chat/completions", headers=AUTH, json=chat("How do I roll back the index version?"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["id"] == "chatcmpl-" + r.headers["x-request-id"]
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    assert "rollback" in choice["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    cited = [c for c in body["citations"] if c["referenced"]]
    assert cited and cited[0]["doc_id"].endswith("rollback.md")
    assert f"[{cited[0]['n']}]" in choice["message"]["content"]
    assert isinstance(body["index_version"], int)
    assert re.fullmatch(r"rag_answer@[0-9a-f]{12}", body["prompt_id"])
    assert body["model_version"] == body["system_fingerprint"]
    assert {"auth", "rate_limit", "query_embedding", "retrieval", "prompt", "generation",
            "total"} <= set(body["timings_ms"])
    assert body["fallback"] is False and body["degraded"] == []


def test_streaming_chat_matches_the_whole_answer(env):
    _, _, client = env
    question = "Which port does the agent listen on?"
    whole = client.post("/v1/chat/completions", headers=AUTH, json=chat(question)).json()
    r = client.post("/v1/chat/completions", headers=AUTH,
                    json=chat(question, stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    final = chunks[-2]
    assert final["choices"][0]["finish_reason"] == "stop" and final["citations"] and final["prompt_id"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == whole["usage"][
        "completion_tokens"]
    assert all(c["usage"] is None for c in chunks[:-1])

    plain = parse_sse(client.post("/v1/chat/completions", headers=AUTH, json=chat(question, stream=True)).text)
    assert plain[-2]["choices"][0]["finish_reason"] == "stop"  # no usage chunk without include_usage


def test_completions_non_streaming_and_streaming(env):
    _, _, client = env
    body = {"model": MODEL, "prompt": "How do I roll back the index?", "max_tokens": 50}
    r = client.post("/v1/completions", headers=AUTH, json=body)
    assert r.status_code == 200, r.text
    whole = r.json()
    assert whole["object"] == "text_completion" and "rollback" in whole["choices"][0]["text"]
    events = parse_sse(client.post("/v1/completions", headers=AUTH,
                                   json={**body, "stream": True, "stream_options": {"include_usage": True}}).text)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])
    assert text == whole["choices"][0]["text"]
    assert events[-2]["usage"]["total_tokens"] == whole["usage"]["total_tokens"]


def test_max_tokens_and_stop_end_the_answer(env):
    _, _, client = env
    r = client.post("/v1/chat/completions", headers=AUTH, json=chat("How do I roll back the index?", max_tokens=3))
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 3
    full = client.post("/v1/chat/completions", headers=AUTH, json=chat("How do I roll back the index?")).json()
    text = full["choices"][0]["message"]["content"]
    stop = text.split()[2]
    for stream in (False, True):
        r = client.post("/v1/chat/completions", headers=AUTH,
                        json=chat("How do I roll back the index?", stop=[stop], stream=stream))
        if stream:
            events = parse_sse(r.text)[:-1]
            got = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
            reason = events[-1]["choices"][0]["finish_reason"]
        else:
            got, reason = r.json()["choices"][0]["message"]["content"], r.json()["choices"][0]["finish_reason"]
        assert got == text[: text.index(stop)] and reason == "stop"


@pytest.mark.parametrize(
    ("payload", "status", "code", "param", "says"),
    [
        ("{not json", 400, "invalid_json", None, "JSON"),
        ({"model": MODEL}, 400, "invalid_value", "messages", "Field required"),
        (chat("hi", n=2), 400, "invalid_value", "n", "less than or equal to 1"),
        (chat("hi", temperature=5), 400, "invalid_value", "temperature", "got 5"),
        ({**chat("hi"), "model": "gpt-9"}, 404, "model_not_found", "model", "llmfti-extractive"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}] * 9}, 400, "too_many_messages", "messages",
         "9 messages is over the limit of 8"),
        (chat("word " * 300), 400, "context_length_exceeded", "messages", "over the limit of 200"),
        (chat("hi", max_tokens=301), 400, "invalid_value", "max_tokens", "over the limit of 300"),
        (chat("hi", tools=[{"type": "function", "function": {"name": "f"}}]), 400, "unsupported_parameter",
         "tools", "not supported"),
        ({"model": MODEL, "messages": [{"role": "assistant", "content": "x"}]}, 400, "invalid_value",
         "messages.0.role", "last message must be from the user"),
        ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, 400, "invalid_value", "messages.0.role",
         "got 'tool'"),
        (chat("x" * 30_000), 413, "request_too_large", None, "over the limit of 20000 bytes"),
        # poison input: each a 4xx naming the field, never a 500
        ('{"model": "llmfti-extractive", "messages": [{"role": "user", "content": "\\ud800 lens"}]}', 400,
         "invalid_encoding", "messages.0.content", "lone surrogate U+D800 at character 0"),
        ('{"model": "x",\n "messages": [}', 400, "invalid_json", None, "Expecting value at line 2, column 15"),
        (chat("hi", response_format="json_object"), 400, "invalid_value", "response_format", '{"type": "text"}'),
        (chat("hi", response_format=["json"]), 400, "invalid_value", "response_format", "got list"),
        (chat("hi", response_format=1), 400, "invalid_value", "response_format", "got int 1"),
        (chat("hi", response_format={"type": "json_object"}), 400, "unsupported_parameter", "response_format.type",
         "'json_object' is not supported"),
        (chat("   "), 400, "empty_question", "messages.0.content", "messages.0.content is empty"),
        (chat("y" * 12_000 + " lens"), 413, "input_too_large", "messages.0.content",
         "12005 characters, over the limit of 10000"),
        (chat("z" * 3_000), 400, "context_length_exceeded", "messages", "250 tokens"),  # one word, many tokens
    ],
)
def test_errors_are_openai_shaped_with_status_limit_and_value(env, payload, status, code, param, says):
    _, _, client = env
    kwargs = {"content": payload, "headers": {**AUTH, "Content-Type": "application/json"}} if isinstance(
        payload, str) else {"json": payload, "headers": AUTH}
    r = client.post("/v1/chat/completions", **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param
    assert says in error["message"], error["message"]
    assert "Traceback" not in r.text


def test_unknown_route_and_method_are_openai_shaped(env):
    _, _, client = env
    r = client.get("/v1/nothing", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = client.get("/v1/chat/completions", headers=AUTH)
    assert r.status_code == 405 and "error" in r.json()


def test_auth_requires_a_configured_key(env, tmp_path):
    from agents.api.app import create_app
    from llmfti.config import load_settings
    from llmfti.errors import ConfigError

    _, _, client = env
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic key-default"}):
        r = client.post("/v1/chat/completions", headers=headers, json=chat("hi"))
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", headers
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer key-acme"}).status_code == 200
    with pytest.raises(ConfigError, match="llmfti serve --dev"):
        create_app(load_settings(data_dir=tmp_path))  # no keys and no explicit dev mode: refuse to start


def test_dev_mode_is_explicit_and_accepts_no_key(env, tmp_path):
    from agents.api.auth import KeyAuthenticator
    from llmfti.config import load_settings

    auth = KeyAuthenticator(load_settings(data_dir=tmp_path, agent={"auth_mode": "dev"}).agent)
    assert auth.authenticate(None).name == "dev"


def test_rate_limit_per_key_answers_429_with_retry_after(env):
    _, app, client = env
    slow = {"Authorization": "Bearer key-slow"}
    codes = [client.post("/v1/chat/completions", headers=slow, json=chat("hi")).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.post("/v1/chat/completions", headers=slow, json=chat("hi"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    error = r.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "3 requests per minute" in error["message"]
    assert client.post("/v1/chat/completions", headers=AUTH, json=chat("hi")).status_code == 200  # others unaffected
    # the counter lives in Redis, shared by every replica
    assert app.state.agent.pipeline.redis.client().zcard("llmfti:ratelimit:slow-app") == 3  # accepted only


@pytest.mark.parametrize(
    ("key", "doc"),
    [("key-acme", "acme.md"), ("key-globex", "globex.md"), ("key-default", None)],
)
def test_a_keys_tenant_restricts_retrieval(env, key, doc):
    _, _, client = env
    r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                    json=chat("Where is the Globex secret formula stored, and what does the Acme engine burn?"))
    docs = {c["doc_id"].rsplit("/", 1)[-1] for c in r.json()["citations"]}
    if doc is None:
        assert docs and not docs & {"acme.md", "globex.md"}
    else:
        assert docs == {doc}


def test_user_features_are_used_and_logged_untransformed(env):
    settings, _, client = env
    r = client.post("/v1/chat/completions", headers={**AUTH, "X-User-Id": "u-team"}, json=chat("How to roll back?"))
    known = r.headers["x-request-id"]
    r = client.post("/v1/chat/completions", headers=AUTH, json=chat("How to roll back?", user="u-unknown"))
    unknown = r.headers["x-request-id"]
    drain(env)
    row = logged(settings, known)
    features = json.loads(row["user_features"])
    assert features["plan"] == "team" and features["top_topics_30d"] == ["index", "serving"]
    assert row["user_features_missing"] is False and "plan=team" in row["prompt"]
    assert row["retrieved_chunk_ids"] and len(row["retrieved_scores"]) == len(row["retrieved_chunk_ids"])
    assert row["prompt_id"].startswith("rag_answer@") and row["answer"]
    assert json.loads(row["timings_ms"])["retrieval"] > 0
    assert json.loads(row["on_demand_features"])["query_words"] == 4
    missing = logged(settings, unknown)
    assert missing["user_id"] == "u-unknown" and missing["user_features_missing"] is True


def test_health_readiness_metrics_and_models(env):
    _, _, client = env
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"index": True, "model": True, "redis": True}
    models = client.get("/v1/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == [MODEL] and models["data"][0]["version"]
    client.post("/v1/chat/completions", headers=AUTH, json=chat("hi"))
    metrics = client.get("/metrics").text
    assert 'llmfti_requests_total{route="/v1/chat/completions",status="200"}' in metrics
    assert 'llmfti_stage_seconds_count{stage="retrieval"}' in metrics


def test_every_served_request_is_stored_exactly_once(env):
    settings, _, client = env
    drain(env)
    ids = []
    for i in range(12):
        stream = i % 2 == 0
        r = client.post("/v1/chat/completions", headers=AUTH, json=chat(f"question {i} about versions", stream=stream))
        assert r.status_code == 200
        ids.append(r.headers["x-request-id"])
    result = drain(env)  # each streamed request also wrote a started record, replaced by its final one
    assert result["inserted"] == 12 and result["from_stream"] == 12 + 6
    assert drain(env)["inserted"] == 0
    for request_id in ids:
        logged(settings, request_id)


def test_a_body_without_json_content_type_is_told_to_send_it(env):
    _, _, client = env
    r = client.post("/v1/chat/completions", headers=AUTH, content=json.dumps(chat("secret words")).encode())
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "invalid_content_type"
    assert "content-type: application/json" in error["message"] and "secret words" not in error["message"]


def test_an_oversized_chunked_body_is_a_413_with_the_limit(env):
    _, _, client = env

    def pieces():
        for _ in range(30):
            yield b"x" * 1000

    r = client.post("/v1/chat/completions", headers={**AUTH, "Content-Type": "application/json"}, content=pieces())
    assert r.request.headers.get("transfer-encoding") == "chunked"  # no Content-Length was sent
    assert r.status_code == 413 and "over the limit of 20000 bytes" in r.json()["error"]["message"]


def test_an_empty_prompt_is_named_in_the_users_terms(env):
    _, _, client = env
    r = client.post("/v1/completions", headers=AUTH, json={"model": MODEL, "prompt": " "})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    assert "prompt is empty" in r.json()["error"]["message"] and "search" not in r.json()["error"]["message"]


def test_a_failing_query_fails_alone_in_its_embedding_batch(env):
    """The real embedder cannot encode a lone surrogate; the batch it lands in still answers the others."""
    import asyncio

    _, app, _ = env
    batcher = app.state.agent.pipeline._batcher
    texts = [f"how do I roll back version {i}?" for i in range(12)]

    async def embed_all():
        jobs = [batcher.embed(t) for t in texts[:6]] + [batcher.embed("\ud800 lens")] + [
            batcher.embed(t) for t in texts[6:]]
        return await asyncio.gather(*jobs, return_exceptions=True)

    before = batcher.isolated_failures
    results = asyncio.run(embed_all())
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and results[6] is failed[0]
    assert all(len(r) == 384 for i, r in enumerate(results) if i != 6)
    assert batcher.isolated_failures == before + 1


def test_feedback_needs_a_request_served_to_the_callers_tenant(env):
    _, _, client = env
    acme = {"Authorization": "Bearer key-acme"}
    r = client.post("/v1/feedback", headers=acme, json={"request_id": "nope", "rating": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"
    assert r.json()["error"]["param"] == "request_id"
    served = client.post("/v1/chat/completions", headers=acme, json=chat("What does the Acme engine burn?"))
    request_id = served.headers["x-request-id"]
    # right after the response, before any drain: the owner may rate it, nobody else learns it exists
    for key in ("key-globex", "key-default"):
        other = client.post("/v1/feedback", headers={"Authorization": f"Bearer {key}"},
                            json={"request_id": request_id, "rating": -1})
        assert other.status_code == 404, other.text
    ok = client.post("/v1/feedback", headers=acme, json={"request_id": served.json()["id"], "rating": 1})
    assert ok.status_code == 200 and ok.json()["request_id"] == request_id


def test_feedback_for_a_drained_request_is_found_in_the_log_table(env):
    settings, app, client = env
    r = client.post("/v1/chat/completions", headers=AUTH, json=chat("Which port does the agent use?"))
    request_id = r.headers["x-request-id"]
    drain(env)
    served = app.state.agent.pipeline.served_requests
    served._local.clear()
    served.redis.run(lambda c: c.delete(f"llmfti:served:{request_id}"))  # as after the Redis record expired
    assert client.post("/v1/feedback", headers=AUTH, json={"request_id": request_id, "rating": 1}).status_code == 200
    assert client.post("/v1/feedback", headers={"Authorization": "Bearer key-acme"},
                       json={"request_id": request_id, "rating": 1}).status_code == 404


def test_user_features_are_scoped_to_the_keys_tenant(env):
    settings, _, client = env
    ids = {}
    for key in ("key-default", "key-acme"):
        r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}", "X-User-Id": "u-team"},
                        json=chat("How to roll back?"))
        assert r.status_code == 200
        ids[key] = r.headers["x-request-id"]
    drain(env)
    assert logged(settings, ids["key-default"])["user_features_missing"] is False
    other = logged(settings, ids["key-acme"])  # u-team is the default tenant's user: acme cannot read it
    assert other["user_features_missing"] is True and "plan=team" not in other["prompt"]


def test_rate_limit_rejections_do_not_count_and_retry_after_is_the_true_wait(env):
    from agents.api.rate_limit import RateLimiter, rate_key
    from agents.redis_link import RedisLink
    from llmfti.errors import RateLimitError
    from tests.agent_support import free_port

    settings, app, _ = env
    now = [1000.0]
    shared = RateLimiter(app.state.agent.pipeline.redis.run, clock=lambda: now[0], window_s=10)
    dead = RedisLink(agent_settings(settings.data_dir, redis={"url": f"redis://127.0.0.1:{free_port()}/0",
                                                                "socket_timeout_s": 0.2}))
    local = RateLimiter(dead.run, clock=lambda: now[0], window_s=10)  # Redis down: per-process fallback
    for limiter, name in ((shared, "unit-shared"), (local, "unit-local")):
        now[0] = 1000.0
        for t in (0, 1, 2):
            now[0] = 1000.0 + t
            assert limiter.check(name, 3) is (limiter is shared)
        for t in range(3, 9):  # hammering while limited: none of these may count
            now[0] = 1000.0 + t
            with pytest.raises(RateLimitError) as rejected:
                limiter.check(name, 3)
        assert rejected.value.retry_after_s == pytest.approx(2.0)  # the request at t=0 leaves at t=10
        now[0] = 1010.0  # waited exactly the advertised time
        limiter.check(name, 3)
        with pytest.raises(RateLimitError) as again:
            limiter.check(name, 3)
        assert again.value.retry_after_s == pytest.approx(1.0)
    assert app.state.agent.pipeline.redis.client().zcard(rate_key("unit-shared")) == 3


def test_a_request_keeps_the_model_and_index_version_it_started_with(env):
    """An alias switch between retrieval and generation must not mix versions in one answer."""
    import asyncio
    import inspect

    from agents.pipeline import AgentRequest
    from agents.served_model import ServedModel
    from llmfti.llm.backends import create_generator

    settings, app, _ = env
    pipeline = app.state.agent.pipeline
    original = pipeline.served
    other = create_generator(settings.agent.generator.model_copy(update={"served_name": "switched"}))

    async def answer_across_a_switch():
        turn = await pipeline.prepare(AgentRequest(messages=[{"role": "user", "content": "How to roll back?"}]))
        pipeline.served = ServedModel(other, index_version=1)  # the alias moves mid-request
        try:
            result, used, reason = await pipeline._generate(turn)
            answer = pipeline._finish(turn, result, used, reason)
            return await answer if inspect.isawaitable(answer) else answer
        finally:
            pipeline.served = original

    answer = asyncio.run(answer_across_a_switch())
    assert answer.model_id == original.generator.model_id != "switched"
    assert answer.index_version == (original.index_version or answer.index_version) != 1


@pytest.fixture(scope="module")
def served_url(env):
    """The module's app (already started by its TestClient) also on a real loopback port."""
    import threading

    import uvicorn

    from tests.agent_support import free_port, wait_http

    _, app, _ = env
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/healthz")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_citations_are_openai_annotations_the_openai_client_keeps(env, served_url):
    import openai

    client = openai.OpenAI(base_url=served_url + "/v1", api_key="key-default", max_retries=0)
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "How do I roll back the index version?"}])
    message = response.choices[0].message
    assert message.annotations, message
    for annotation in message.annotations:
        cite = annotation.url_citation
        assert annotation.type == "url_citation" and cite.title.endswith("rollback.md")
        assert message.content[cite.start_index:cite.end_index] in {"[1]", "[2]", "[3]", "[4]", "[5]"}
        assert cite.url.startswith("llmfti:docs/")
        assert any(cite.url.endswith("#" + c["chunk_id"]) for c in response.citations)  # the extension agrees


def test_langchain_chat_openai_users_see_the_sources(env, served_url):
    """LangChain's ChatOpenAI drops extra fields and chat-completions annotations; with the Responses API
    (use_responses_api=True, served by POST /v1/responses) it keeps the citations as annotations."""
    from langchain_openai import ChatOpenAI

    question = "How do I roll back the index version?"
    plain = ChatOpenAI(model=MODEL, base_url=served_url + "/v1", api_key="key-default", max_retries=0)
    answer = plain.invoke(question)
    assert "rollback" in answer.content and "[1]" in answer.content
    assert answer.response_metadata["id"].startswith("chatcmpl-req-")  # the request id, for /v1/feedback

    llm = ChatOpenAI(model=MODEL, base_url=served_url + "/v1", api_key="key-default", max_retries=0,
                     use_responses_api=True)
    message = llm.invoke(question)
    blocks = [b for b in message.content if isinstance(b, dict) and b.get("type") == "text"]
    assert blocks and "rollback" in blocks[0]["text"]
    sources = blocks[0]["annotations"]
    assert sources and all(s["title"].endswith("rollback.md") and s["url"].startswith("llmfti:docs/")
                           for s in sources), sources
    assert blocks[0]["text"][sources[0]["start_index"]:sources[0]["end_index"]] == "[1]"
    assert message.usage_metadata["input_tokens"] > 0 and message.usage_metadata["output_tokens"] > 0


def test_responses_endpoint_refuses_what_it_cannot_do(env):
    _, _, client = env
    r = client.post("/v1/responses", headers=AUTH, json={"model": MODEL, "input": "hi", "stream": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    r = client.post("/v1/responses", headers=AUTH, json={"model": MODEL, "input": "   "})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input" and "is empty" in r.text
    r = client.post("/v1/responses", headers=AUTH, json={"model": MODEL, "instructions": "Be brief.",
                                                         "input": [{"role": "user", "content": "Which port?"}]})
    assert r.status_code == 200 and r.json()["output"][0]["content"][0]["text"]


def test_a_streamed_answer_carries_the_same_annotations_in_its_last_chunk(env):
    _, _, client = env
    body = chat("How do I roll back the index version?")
    whole = client.post("/v1/chat/completions", headers=AUTH, json=body).json()
    events = parse_sse(client.post("/v1/chat/completions", headers=AUTH, json={**body, "stream": True}).text)
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    last = events[-2]["choices"][0]
    assert last["finish_reason"] == "stop" and text == whole["choices"][0]["message"]["content"]
    annotations = last["delta"]["annotations"]
    assert annotations == whole["choices"][0]["message"]["annotations"] and annotations
    assert all(text[a["url_citation"]["start_index"]:a["url_citation"]["end_index"]].startswith("[")
               for a in annotations)


def test_tokenizing_and_prompt_fitting_run_off_the_event_loop(env):
    import asyncio

    from agents.pipeline import AgentRequest

    _, app, _ = env
    pipeline = app.state.agent.pipeline
    generator = pipeline.generator
    on_loop: list[bool] = []
    real_count = type(generator).count_tokens

    def count_tokens(text: str) -> int:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:  # a worker thread has no running loop
            on_loop.append(False)
        return real_count(generator, text)

    generator.count_tokens = count_tokens  # the real count, recording which thread asked
    generator.context_length = 100_000  # make prompt fitting tokenize the rendered prompt too
    try:
        request = AgentRequest(messages=[{"role": "user", "content": "How do I roll back? " * 20}])
        asyncio.run(pipeline.prepare(request))
    finally:
        del generator.count_tokens, generator.context_length
    assert len(on_loop) >= 2 and not any(on_loop)  # input limit check and prompt fitting, both on threads
