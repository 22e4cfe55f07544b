"""The vLLM path without a GPU: ``registry export`` writes what ``vllm serve --lora-modules`` loads, our
server offers vLLM's ``POST /tokenize``/``/detokenize``, and the ``openai`` backend refuses an upstream
whose tokenizer differs from the pinned one. The upstreams are real llmfti servers (uvicorn on loopback)
serving the tiny Llama of ``tests/tiny_llm.py``: one with the pinned tokenizer, one with another."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmfti.errors import GenerationError, InvalidInputError, TokenizerMismatchError
from tests.agent_support import DOCS, ThreadedServer, agent_settings, data_dir_with_index

AUTH = {"Authorization": "Bearer key-default"}
LLMFTI = str(Path(sys.executable).with_name("llmfti"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two tiny Llamas with different BPE tokenizers, and a LoRA adapter on the first."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.tiny_llm import build_llama, build_tokenizer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vllm-path")
    pinned_dir, other_dir = root / "base", root / "other"
    build_tokenizer(pinned_dir, vocab_size=1200, extra_text=" ".join(t for d in DOCS.values() for t in d.values()))
    build_tokenizer(other_dir, vocab_size=300, extra_text="a different corpus gives different merges")
    for folder in (pinned_dir, other_dir):
        build_llama(folder, vocab_size=len(AutoTokenizer.from_pretrained(str(folder))))
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(pinned_dir)),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(str(root / "adapter"))
    return pinned_dir, other_dir, root / "adapter"


def _register(settings, tiny, index_version=None):  # noqa: ANN202
    from llmfti.llm.tokenization import load_tokenizer
    from llmfti.registry.model_registry import ModelRegistry

    pinned_dir, _, adapter = tiny
    registry = ModelRegistry(settings)
    mv = registry.register(adapter_dir=adapter, tokenizer=load_tokenizer(pinned_dir), base_model=str(pinned_dir),
                           training_dataset_id="ds-test", index_name="docs" if index_version else None,
                           index_version=index_version)
    return registry, mv


def _upstream(tmp_path: Path, model_dir: Path | None, name: str):  # noqa: ANN202
    """An llmfti server serving ``model_dir`` with the transformers backend (extractive when None)."""
    from agents.api.app import create_app

    generator = {"backend": "transformers", "model": str(model_dir), "served_name": name} if model_dir else {}
    folder = tmp_path / f"{name}-{model_dir.name if model_dir else 'extractive'}"
    return ThreadedServer(create_app(agent_settings(data_dir_with_index(folder), generator=generator)))


def _start(generator) -> None:  # noqa: ANN001
    async def go() -> None:
        await generator.start()
        await generator.close()

    asyncio.run(go())


def test_registry_export_writes_what_vllm_loads_and_prints_the_command(settings, tiny, tmp_path, data_dir) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmfti.llm.tokenization import load_tokenizer
    from llmfti.registry.export import export_for_vllm

    registry, mv = _register(settings, tiny)
    out = subprocess.run([LLMFTI, "registry", "export", str(mv.version), "--to", str(tmp_path / "lora"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    folder = Path(result["folder"])
    assert result["module"] == "assistant-v1" and result["ref"] == mv.ref
    assert result["command"].startswith(f"vllm serve {mv.base_model} --tokenizer {folder} ")
    assert f"--enable-lora --lora-modules assistant-v1={folder}" in result["command"]
    assert f"--chat-template {folder / 'chat_template.jinja'}" in result["command"]

    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == mv.base_model and config["r"] == 4
    exported = load_tokenizer(folder)
    assert exported.fingerprint == mv.tokenizer_fingerprint
    assert (folder / "chat_template.jinja").read_text() == exported.tokenizer.chat_template
    assert json.loads((folder / "llmfti_export.json").read_text())["tokenizer_fingerprint"] == mv.tokenizer_fingerprint
    base = AutoModelForCausalLM.from_pretrained(mv.base_model)
    loaded = PeftModel.from_pretrained(base, str(folder))  # the folder is a loadable PEFT adapter
    assert loaded.peft_config["default"].r == 4

    with pytest.raises(InvalidInputError, match="is not empty"):
        export_for_vllm(mv, folder)
    assert export_for_vllm(mv, folder, overwrite=True).folder == folder


def test_our_server_offers_vllm_tokenize_and_detokenize(tiny, tmp_path) -> None:
    import httpx

    from llmfti.llm.tokenization import load_tokenizer

    pinned_dir = tiny[0]
    pinned = load_tokenizer(pinned_dir)
    messages = [{"role": "user", "content": "which fruit is red ?"}]
    with _upstream(tmp_path, pinned_dir, "tiny") as server, httpx.Client(base_url=server.url, headers=AUTH) as http:
        text = http.post("/tokenize", json={"model": "tiny", "prompt": "which fruit is red ?"}).json()
        assert text["tokens"] == pinned.tokenizer("which fruit is red ?")["input_ids"]  # special tokens by default
        assert text["count"] == len(text["tokens"]) and text["max_model_len"] == 512
        assert text["tokenizer_fingerprint"] == pinned.fingerprint
        chat = http.post("/tokenize", json={"model": "tiny", "messages": messages}).json()
        assert chat["tokens"] == pinned.encode_prompt(messages)
        back = http.post("/detokenize", json={"model": "tiny", "tokens": chat["tokens"]}).json()
        assert back["prompt"] == pinned.render(messages)

        assert http.post("/tokenize", json={"model": "gpt-9", "prompt": "x"}).status_code == 404
        assert http.post("/tokenize", json={"prompt": "x", "messages": messages}).status_code == 400
        assert http.post("/detokenize", json={"tokens": [10**9]}).status_code == 400
        assert httpx.post(server.url + "/tokenize", json={"prompt": "x"}).status_code == 401


def test_openai_backend_accepts_the_pinned_tokenizer_and_refuses_another(tiny, tmp_path, monkeypatch) -> None:
    from llmfti.llm.backends.base import GenerationRequest
    from llmfti.llm.backends.openai_compat import OpenAICompatGenerator
    from llmfti.llm.tokenization import load_tokenizer

    pinned_dir, other_dir, _ = tiny
    fingerprint = load_tokenizer(pinned_dir).fingerprint
    monkeypatch.setenv("LLMFTI_UPSTREAM_API_KEY", "key-default")

    def generator(url: str) -> OpenAICompatGenerator:
        return OpenAICompatGenerator(url + "/v1", "tiny", api_key="key-default", timeout_s=30,
                                     tokenizer=str(pinned_dir), tokenizer_fingerprint=fingerprint)

    with _upstream(tmp_path, pinned_dir, "tiny") as same, _upstream(tmp_path, other_dir, "tiny") as other:
        accepted = generator(same.url)

        async def answer() -> str:
            await accepted.start()
            try:
                request = GenerationRequest(messages=[{"role": "user", "content": "which fruit is red ?"}],
                                            question="which fruit is red ?", max_tokens=4)
                return (await accepted.generate(request)).prompt
            finally:
                await accepted.close()

        prompt = asyncio.run(answer())
        assert accepted.tokenizer_verified is True
        assert prompt == load_tokenizer(pinned_dir).render([{"role": "user", "content": "which fruit is red ?"}])

        refused = generator(other.url)
        with pytest.raises(TokenizerMismatchError) as error:
            _start(refused)
        message = str(error.value)
        other_fingerprint = load_tokenizer(other_dir).fingerprint
        assert fingerprint in message and other_fingerprint in message  # names both tokenizers
        assert str(pinned_dir) in message and other.url in message and "first difference at token" in message
        assert refused.tokenizer_verified is None and not refused.ready()

        from agents.api.app import create_app

        settings = agent_settings(data_dir_with_index(tmp_path / "agent"), generator={  # agent.generator.tokenizer
            "backend": "openai", "base_url": other.url + "/v1", "model": "tiny", "tokenizer": str(pinned_dir)})
        with pytest.raises(TokenizerMismatchError), TestClient(create_app(settings)):
            pass  # the agent refuses to start serving

        with pytest.raises(GenerationError, match="refused the tokenizer check for model 'assistant-v7'"):
            _start(OpenAICompatGenerator(same.url + "/v1", "assistant-v7", api_key="key-default", timeout_s=30,
                                         tokenizer=str(pinned_dir), tokenizer_fingerprint=fingerprint))

    with _upstream(tmp_path, None, "extractive") as plain:  # no tokenizer there: 400 no_tokenizer, served unverified
        unverified = OpenAICompatGenerator(plain.url + "/v1", "llmfti-extractive", api_key="key-default",
                                           timeout_s=30, tokenizer=str(pinned_dir))
        _start(unverified)
        assert unverified.tokenizer_verified is False


def test_a_registry_alias_on_the_openai_backend_serves_the_exported_module_with_its_index_version(
    tiny, tmp_path, monkeypatch
) -> None:
    """registry:production on vLLM's path: the LoRA module of that version, its pinned tokenizer checked,
    retrieval at the index version it was registered with; a promote or rollback moves module and index
    together, live, once the upstream serves the new module (until then the agent keeps the old one)."""
    import time

    from agents.api.app import create_app
    from agents.served_model import follows_alias
    from llmfti.index import VectorIndex

    pinned_dir = tiny[0]
    monkeypatch.setenv("LLMFTI_UPSTREAM_API_KEY", "key-default")
    with _upstream(tmp_path, pinned_dir, "assistant-v1") as upstream:  # what `vllm serve --lora-modules` names
        settings = agent_settings(data_dir_with_index(tmp_path / "agent"), retrieval_k=1, registry_poll_s=0.2,
                                  generator={"backend": "openai", "model": "registry:production",
                                             "base_url": upstream.url + "/v1", "timeout_s": 30})
        builds = [v["version"] for v in VectorIndex.open(settings).versions() if v["rows"] > 0]
        first, latest = builds[0], builds[-1]
        assert first != latest
        registry, v1 = _register(settings, tiny, first)
        _, v2 = _register(settings, tiny, latest)
        for mv in (v1, v2):
            registry.record_eval(mv.version, f"run-{mv.version}", passed=True, suite="docs")
        registry.promote(1, "production")
        assert follows_alias(settings)
        body = {"model": "production", "messages": [{"role": "user", "content": "How do I roll back?"}],
                "max_tokens": 4}

        def served(client: TestClient) -> tuple[str, int]:
            response = client.post("/v1/chat/completions", headers=AUTH, json=body)
            answer = response.json()
            assert response.status_code == 200 and answer["fallback"] is False, (response.status_code, answer)
            return answer["model_version"], answer["index_version"]

        def wait_for(client: TestClient, expected: tuple[str, int]) -> tuple[str, int]:
            deadline = time.monotonic() + 30
            while served(client) != expected and time.monotonic() < deadline:
                time.sleep(0.2)
            return served(client)

        with TestClient(create_app(settings)) as client:
            assert served(client) == ("assistant:v1", first)
            registry.promote(2, "production")
            time.sleep(1.5)  # several polls: assistant-v2 is not served upstream, so its check fails
            assert served(client) == ("assistant:v1", first)
            # now the upstream also answers to assistant-v2, as one vLLM with two --lora-modules does
            upstream.server.config.app.state.agent.pipeline.generator.aliases = ["assistant-v2"]
            assert wait_for(client, ("assistant:v2", latest)) == ("assistant:v2", latest)
            registry.rollback("production")
            assert wait_for(client, ("assistant:v1", first)) == ("assistant:v1", first)
