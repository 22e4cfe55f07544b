"""Generator backends for real: a tiny random Llama (with and without a LoRA adapter) through the
``transformers`` backend, and the ``openai`` backend talking to a second instance of our server."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from tests.agent_support import ThreadedServer, agent_settings, data_dir_with_index, parse_sse

AUTH = {"Authorization": "Bearer key-default"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random Llama + BPE tokenizer, and a LoRA adapter on it with non-zero (random) weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.tiny_llm import build_llama, build_tokenizer

    root = tmp_path_factory.mktemp("tiny-model")
    model_dir = root / "base"
    build_tokenizer(model_dir, extra_text="roll back the index version rollback command")
    from transformers import AutoTokenizer

    build_llama(model_dir, vocab_size=len(AutoTokenizer.from_pretrained(str(model_dir))), init_range=0.5)
    torch.manual_seed(1)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(model_dir)),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter_dir = root / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    return model_dir, adapter_dir


def _request(**overrides):
    from llmfti.llm.backends import GenerationRequest

    base = {"messages": [{"role": "user", "content": "which fruit is red ?"}], "question": "which fruit is red ?",
            "max_tokens": 8}
    return GenerationRequest(**{**base, **overrides})


def _run(generator, request, stream=False):
    async def go():
        await generator.start()
        try:
            if not stream:
                return await generator.generate(request)
            pieces = [item async for item in generator.stream(request)]
            return pieces
        finally:
            await generator.close()

    return asyncio.run(go())


def test_transformers_backend_generates_counts_tokens_and_streams(tiny_model):
    from llmfti.llm.backends.transformers_lm import TransformersGenerator

    model_dir, _ = tiny_model
    result = _run(TransformersGenerator(str(model_dir)), _request())
    assert result.completion_tokens > 0 and result.finish_reason in ("stop", "length")
    assert result.completion_tokens <= 8
    from llmfti.llm.tokenization import load_tokenizer

    pinned = load_tokenizer(model_dir)
    assert result.prompt == pinned.render([{"role": "user", "content": "which fruit is red ?"}])
    assert result.prompt_tokens == len(pinned.encode_text(result.prompt))

    pieces = _run(TransformersGenerator(str(model_dir)), _request(), stream=True)
    final = pieces[-1]
    assert "".join(pieces[:-1]) == final.text == result.text  # greedy: streaming = whole answer
    assert final.completion_tokens == result.completion_tokens


def test_a_lora_adapter_changes_the_output_and_the_model_version(tiny_model):
    from peft import PeftModel

    from llmfti.llm.backends.transformers_lm import TransformersGenerator

    model_dir, adapter_dir = tiny_model
    base = TransformersGenerator(str(model_dir))
    tuned = TransformersGenerator(str(model_dir), adapter=str(adapter_dir))
    plain = _run(base, _request(max_tokens=12))
    adapted = _run(tuned, _request(max_tokens=12))
    assert isinstance(tuned._model, PeftModel)
    assert adapted.text != plain.text
    assert tuned.model_version.startswith("base+adapter@") and base.model_version.startswith("base@")
    assert tuned.model_version != base.model_version


def test_transformers_backend_refuses_prompts_over_the_context(tiny_model):
    from llmfti.errors import RequestLimitError
    from llmfti.llm.backends.transformers_lm import TransformersGenerator

    model_dir, _ = tiny_model
    long = "red " * 2000
    with pytest.raises(RequestLimitError, match="context of 512"):
        _run(TransformersGenerator(str(model_dir)), _request(messages=[{"role": "user", "content": long}]))


def test_the_agent_serves_a_transformers_model_with_adapter(tiny_model, tmp_path):
    from agents.api.app import create_app

    model_dir, adapter_dir = tiny_model
    settings = agent_settings(data_dir_with_index(tmp_path / "data"), retrieval_k=2, generator={
        "backend": "transformers", "model": str(model_dir), "adapter": str(adapter_dir), "served_name": "tiny"})
    app = create_app(settings)
    with TestClient(app) as client:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "How do I roll back?"}], "max_tokens": 6}
        whole = client.post("/v1/chat/completions", headers=AUTH, json=body)
        assert whole.status_code == 200, whole.text
        whole = whole.json()
        assert whole["fallback"] is False and whole["model_version"].startswith("base+adapter@")
        assert 0 < whole["usage"]["completion_tokens"] <= 6
        assert whole["citations"] and whole["timings_ms"]["generation"] > 0
        events = parse_sse(client.post("/v1/chat/completions", headers=AUTH,
                                       json={**body, "stream": True, "stream_options": {"include_usage": True}}).text)
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
        assert text == whole["choices"][0]["message"]["content"]
        assert events[-2]["usage"] == whole["usage"]
        assert client.get("/readyz").json()["checks"]["model"] is True


class _BodyRecorder:
    """ASGI wrapper keeping the body of every chat completion the wrapped app sends (what it counted)."""

    def __init__(self, app):
        self.app, self.bodies = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        parts = []

        async def capture(message):
            if message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        self.bodies.append(b"".join(parts))


def test_openai_backend_against_a_second_instance_of_our_server(tmp_path, monkeypatch):
    from agents.api.app import create_app

    upstream_app = _BodyRecorder(create_app(agent_settings(data_dir_with_index(tmp_path / "upstream"))))
    with ThreadedServer(upstream_app) as upstream:
        monkeypatch.setenv("LLMFTI_UPSTREAM_API_KEY", "key-default")
        settings = agent_settings(data_dir_with_index(tmp_path / "proxy"), generator={
            "backend": "openai", "base_url": upstream.url + "/v1", "model": "llmfti-extractive",
            "served_name": "llmfti-proxy", "timeout_s": 20})
        app = create_app(settings)
        with TestClient(app) as client:
            body = {"model": "llmfti-proxy", "messages": [{"role": "user", "content": "How do I roll back the index?"}]}
            r = client.post("/v1/chat/completions", headers=AUTH, json=body)
            assert r.status_code == 200, r.text
            answer = r.json()
            assert answer["fallback"] is False and answer["model"] == "llmfti-proxy"
            assert answer["model_version"].startswith("llmfti-extractive@http://127.0.0.1")
            assert "rollback" in answer["choices"][0]["message"]["content"]
            # usage is what the upstream counted (its prompt holds its own retrieved passages: far more
            # tokens than this proxy's prompt, so a locally counted figure cannot match by chance)
            (upstream_answer,) = [json.loads(b) for b in upstream_app.bodies]
            assert answer["usage"] == upstream_answer["usage"] and answer["usage"]["prompt_tokens"] > 0
            events = [e for e in parse_sse(client.post("/v1/chat/completions", headers=AUTH, json={
                **body, "stream": True, "stream_options": {"include_usage": True}}).text) if isinstance(e, dict)]
            text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
            assert text == answer["choices"][0]["message"]["content"]
            upstream_usage = [e["usage"] for e in parse_sse(upstream_app.bodies[1].decode())
                              if isinstance(e, dict) and e.get("usage")]
            assert [e["usage"] for e in events if e.get("usage")] == upstream_usage and len(upstream_usage) == 1
            assert [e["fallback"] for e in events if "fallback" in e] == [False]
        monkeypatch.setenv("LLMFTI_UPSTREAM_API_KEY", "wrong-key")
        app = create_app(settings)
        with TestClient(app) as client:
            r = client.post("/v1/chat/completions", headers=AUTH, json=body)
            assert r.json()["fallback"] is True and "401" in r.json()["fallback_reason"]


def test_the_agent_serves_the_production_alias_from_the_registry_with_its_index_version(tiny_model, tmp_path):
    from agents.api.app import create_app
    from llmfti.index import VectorIndex
    from llmfti.llm.tokenization import load_tokenizer
    from llmfti.registry.model_registry import ModelRegistry

    model_dir, adapter_dir = tiny_model
    settings = agent_settings(data_dir_with_index(tmp_path / "data"), retrieval_k=2,
                              generator={"backend": "transformers", "model": "registry:production"})
    builds = [v for v in VectorIndex.open(settings).versions() if v["rows"] > 0]
    first = builds[0]["version"]  # only the default tenant's documents were indexed at this version
    registry = ModelRegistry(settings)
    mv = registry.register(adapter_dir=adapter_dir, tokenizer=load_tokenizer(model_dir), base_model=str(model_dir),
                           training_dataset_id="ds-test", index_name="docs", index_version=first)
    registry.record_eval(mv.version, "run-1", passed=True, suite="docs")
    registry.promote(mv.version, "production")

    app = create_app(settings)
    with TestClient(app) as client:
        models = client.get("/v1/models", headers=AUTH).json()["data"]
        assert [(m["id"], m["version"]) for m in models] == [("assistant", "assistant:v1"),
                                                            ("production", "assistant:v1")]
        body = {"model": "production", "messages": [{"role": "user", "content": "How do I roll back?"}],
                "max_tokens": 4}
        r = client.post("/v1/chat/completions", headers=AUTH, json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["model"] == "assistant" and answer["model_version"] == "assistant:v1"
        assert answer["index_version"] == first and answer["fallback"] is False
        acme = client.post("/v1/chat/completions", headers={"Authorization": "Bearer key-acme"}, json=body).json()
        assert acme["citations"] == []  # acme's documents came after the pinned index version


def test_the_agent_follows_a_registry_rollback_without_a_restart(tiny_model, tmp_path):
    """promote v2 while serving v1, then roll back: model and coupled index version move together, live."""
    import time

    from agents.api.app import create_app
    from llmfti.index import VectorIndex
    from llmfti.llm.tokenization import load_tokenizer
    from llmfti.registry.model_registry import ModelRegistry

    model_dir, adapter_dir = tiny_model
    settings = agent_settings(data_dir_with_index(tmp_path / "data"), retrieval_k=2, registry_poll_s=0.2,
                              generator={"backend": "transformers", "model": "registry:production"})
    builds = [v["version"] for v in VectorIndex.open(settings).versions() if v["rows"] > 0]
    first, latest = builds[0], builds[-1]
    assert first != latest
    registry = ModelRegistry(settings)
    for index_version in (first, latest):
        mv = registry.register(adapter_dir=adapter_dir, tokenizer=load_tokenizer(model_dir), base_model=str(model_dir),
                               training_dataset_id="ds-test", index_name="docs", index_version=index_version)
        registry.record_eval(mv.version, f"run-{mv.version}", passed=True, suite="docs")
    registry.promote(1, "production")

    body = {"model": "assistant", "messages": [{"role": "user", "content": "How do I roll back?"}], "max_tokens": 4}

    def served(client):
        answer = client.post("/v1/chat/completions", headers=AUTH, json=body).json()
        return answer["model_version"], answer["index_version"]

    def wait_for(client, expected):
        deadline = time.monotonic() + 30
        while served(client) != expected and time.monotonic() < deadline:
            time.sleep(0.2)
        return served(client)

    with TestClient(create_app(settings)) as client:
        assert served(client) == ("assistant:v1", first)
        registry.promote(2, "production")
        assert wait_for(client, ("assistant:v2", latest)) == ("assistant:v2", latest)
        registry.rollback("production")
        assert wait_for(client, ("assistant:v1", first)) == ("assistant:v1", first)
