"""`llmfti serve` as a real uvicorn process on an empty data_dir (it indexes the sample docs first),
driven by the official ``openai`` client; then `llmfti logs drain` stores exactly what was served."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent_support import api_keys_setting, free_port, wait_http

MODEL = "llmfti-extractive"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("agent-server") / "data"
    port = free_port()
    env = {**os.environ, "LLMFTI_DATA_DIR": str(data_dir), "LLMFTI_AGENT__API_KEYS": json.dumps(api_keys_setting()),
           "HF_HUB_OFFLINE": "1"}
    exe = Path(sys.executable).with_name("llmfti")
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port), "--json", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout_s=180, proc=proc)
        yield f"http://127.0.0.1:{port}/v1", env, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        from llmfti.features.embedded_redis import EmbeddedRedis

        server = EmbeddedRedis(data_dir)
        if server.ping():  # the server process is gone; do not leave its embedded Redis behind
            server.stop(save=False)


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server[0], api_key="key-default", max_retries=0)


def test_serve_prints_one_json_object_and_indexed_the_samples(server, client):
    _, _, proc = server
    assert [m.id for m in client.models.list().data] == [MODEL]
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Which port does the chat API listen on?"}])
    assert "8000" in answer.choices[0].message.content
    assert any(c["doc_id"].endswith("serving.md") for c in answer.model_extra["citations"])


def test_openai_client_chat_streaming_and_usage(client):
    question = [{"role": "user", "content": "How do I roll back the index?"}]
    whole = client.chat.completions.create(model=MODEL, messages=question, user="u-42")
    assert whole.choices[0].finish_reason == "stop" and whole.usage.total_tokens > 0
    assert whole.model_extra["prompt_id"].startswith("rag_answer@")
    stream = client.chat.completions.create(model=MODEL, messages=question, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_openai_client_completions(client):
    done = client.completions.create(model=MODEL, prompt="How do I roll back the index?", max_tokens=5)
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="How do I roll back the index?", max_tokens=5, stream=True) if c.choices)
    assert streamed == done.choices[0].text


def test_openai_client_sees_typed_errors(server, client):
    import openai

    url = server[0]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="nope", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="model_not_found"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="over the limit of 1024"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5000)
    slow = openai.OpenAI(base_url=url, api_key="key-slow", max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(4):
            slow.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_logs_drain_stores_every_served_request_once(server, client):
    from llmfti.config import load_settings
    from pipelines.drain_logs import drain_logs

    _, env, _ = server
    settings = load_settings(data_dir=env["LLMFTI_DATA_DIR"])
    time.sleep(0.3)  # let the server's writer thread append what earlier tests served
    before = drain_logs(settings)["table_rows"]
    for i in range(5):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"version {i}?"}])
    inserted = 0
    deadline = time.monotonic() + 10
    while inserted < 5 and time.monotonic() < deadline:  # the writer thread appends asynchronously
        time.sleep(0.1)
        inserted += drain_logs(settings)["inserted"]
    assert inserted == 5

    exe = Path(sys.executable).with_name("llmfti")
    out = subprocess.run([str(exe), "logs", "drain", "--json"], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    again = json.loads(lines[0])
    assert again["inserted"] == 0 and again["table_rows"] == before + 5
