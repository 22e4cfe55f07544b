"""The query tower (``train-embedder --method query-tower``): a tuned query copy of the encoder, passages by the
frozen one; saved as one routed sentence-transformers model, registered, re-embedded into an index, searched and
served, with each text taking its route (queries the tuned one, passages and answer sentences the frozen one)."""

from __future__ import annotations

import numpy as np
import pytest

from llmfti.errors import InvalidInputError
from pipelines.embedder_pairs import corpus_pairs
from tests.test_train_embedder import TOPICS, _cli, _minilm, _passages
from tests.test_train_embedder_recipe import QUESTIONS

PROBE = ["Which piece moves in an L shape?", "Worker bees collect nectar and pollen from many flowers."]


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, (title, body) in TOPICS.items():
        (folder / f"{name}.md").write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    torch.set_num_threads(1)


def _config(**overrides):
    from pipelines.train_embedder import EmbedderTrainConfig

    return EmbedderTrainConfig(**{"method": "query-tower", "max_pairs": 60, "max_steps": 40, "batch_size": 6,
                                  "tower_layers": 2, "heldout": 4, **overrides})


def _ranks(query_vectors: np.ndarray, passage_vectors: np.ndarray) -> np.ndarray:
    scores = query_vectors @ passage_vectors.T
    gold = np.arange(len(query_vectors))
    return (scores > scores[gold, gold][:, None]).sum(axis=1) + 1


def test_the_query_tower_tunes_queries_only_and_saves_as_one_routed_model(tmp_path) -> None:
    from llmfti.config import load_settings
    from llmfti.embedders.sentence_transformer import SentenceTransformerEmbedder
    from pipelines.embedder_adapter import encode_texts, idf_word_weights, insert_word_weights
    from pipelines.train_embedder import adapt, objective

    config = _config()
    pairs = corpus_pairs(_passages(), config.pair_config())
    bodies = [body for _, body in TOPICS.values()]
    frozen = insert_word_weights(_minilm(), idf_word_weights(_minilm(), bodies))  # what passages must keep
    model, metrics = adapt(_minilm(), pairs, config, corpus=_passages())
    assert [type(m).__name__ for m in model] == ["Router"]
    assert metrics["steps"] == 40 and metrics["final_loss"] < metrics["first_loss"]
    assert metrics["candidates"] == len(TOPICS)  # every pair's positive is a chunk: one candidate each
    assert "every passage of the corpus" in objective(config) and "top 2 layers" in objective(config)

    passages = model.encode(bodies, normalize_embeddings=True, convert_to_numpy=True)
    assert np.allclose(passages, encode_texts(frozen, bodies), atol=1e-5)  # the document route is untouched
    assert np.allclose(model.encode_document(bodies, normalize_embeddings=True), passages, atol=1e-6)
    queries = model.encode_query(PROBE, normalize_embeddings=True, convert_to_numpy=True)
    assert not np.allclose(queries, model.encode(PROBE, normalize_embeddings=True), atol=1e-3)  # tuned

    # the people's questions (never trained on) rank their topic at least as well as before
    asked = list(QUESTIONS.values())
    before = _ranks(encode_texts(frozen, asked), passages)
    after = _ranks(model.encode_query(asked, normalize_embeddings=True, convert_to_numpy=True), passages)
    assert np.mean(1.0 / after) >= np.mean(1.0 / before) - 1e-6 and (after == 1).sum() >= (before == 1).sum()

    model.save(str(tmp_path / "tower"))
    loaded = SentenceTransformerEmbedder(load_settings(data_dir=tmp_path / "data").embedder, name="tower",
                                         path=str(tmp_path / "tower"))
    assert loaded.routed and loaded.info.dimension == 384
    assert np.allclose(loaded.encode(bodies), passages, atol=1e-5)
    assert np.allclose(loaded.encode_queries(PROBE), queries, atol=1e-5)
    traced = loaded.query_encoder()  # the agent's: the query route traced into one graph
    assert traced != loaded.encode_queries and np.allclose(traced(PROBE), queries, atol=1e-4)


def test_a_query_tower_goes_on_from_a_tower_and_refuses_what_it_cannot_tune() -> None:
    from pipelines.train_embedder import adapt

    pairs = corpus_pairs(_passages(), _config().pair_config())
    bodies = [body for _, body in TOPICS.values()]
    first, _ = adapt(_minilm(), pairs, _config(max_steps=10), corpus=_passages())
    second, metrics = adapt(first, pairs, _config(max_steps=10, tower_layers=1, seed=5), corpus=_passages())
    assert metrics["steps"] == 10 and [type(m).__name__ for m in second] == ["Router"]
    kw = {"normalize_embeddings": True, "convert_to_numpy": True}
    assert np.allclose(second.encode(bodies, **kw), first.encode(bodies, **kw), atol=1e-6)  # same passage vectors
    assert not np.allclose(second.encode_query(PROBE, **kw), first.encode_query(PROBE, **kw), atol=1e-4)
    routes = second[0].sub_modules
    trained = [n for n, p in routes["query"].named_parameters() if
               not p.detach().equal(dict(first[0].sub_modules["query"].named_parameters())[n].detach())]
    assert trained and all(".layer.5." in n for n in trained)  # from the first tower, its top layer only

    with pytest.raises(InvalidInputError, match="--method adapter") as refused:
        adapt(first, pairs, _config(method="adapter", max_steps=1), corpus=_passages())
    assert "--method query-tower" in refused.value.fix
    with pytest.raises(InvalidInputError, match="tower_layers=7") as refused:
        adapt(_minilm(), pairs, _config(tower_layers=7), corpus=_passages())
    assert "1 to 6" in str(refused.value)
    with pytest.raises(InvalidInputError, match="tower_layers=0"):
        _config(tower_layers=0)


def test_a_query_tower_is_registered_reembedded_searched_and_served_by_route(settings, corpus, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from agents.api.app import create_app
    from llmfti.embedders.registry_embedder import with_embedder
    from llmfti.index import VectorIndex
    from pipelines.index_build import build_index
    from tests.agent_support import agent_settings
    from tests.test_agent_api import AUTH

    build_index(settings, [corpus], "docs")
    trained = _cli("train-embedder", "--index", "docs", "--method", "query-tower", "--max-pairs", "60",
                   "--max-steps", "20", "--batch-size", "6", "--tower-layers", "1", "--heldout", "4")
    v1 = trained["embedder_ref"]
    hyper = trained["model_version"]["hyperparameters"]
    assert (hyper["method"], hyper["tower_layers"]) == ("query-tower", 1) and trained["metrics"]["steps"] == 20
    assert trained["metrics"]["heldout_mrr10_after"] is not None
    version = _cli("index", "build", str(corpus), "--index", "docs", "--embedder", v1)["reembedded"]["version"]

    tuned = VectorIndex.open(with_embedder(settings, v1), "docs")
    embedder = tuned.embedder()
    assert tuned.version == version and embedder.routed
    question = "Which piece moves in an L shape?"
    assert np.allclose(tuned.embed_query(question), embedder.encode_queries([question])[0])
    assert tuned.search(question, k=1, mode="dense").hits[0].doc_id == "corpus/chess.md"

    served = with_embedder(agent_settings(settings.data_dir, index={"name": "docs"}), v1)
    app = create_app(served)
    with TestClient(app) as client:
        response = client.post("/v1/chat/completions", headers=AUTH, json={
            "model": "llmfti-extractive", "messages": [{"role": "user", "content": question}]})
        assert response.status_code == 200, response.text
        assert "L shape" in response.json()["choices"][0]["message"]["content"]
        pipeline = app.state.agent.pipeline
        queries, sentences = pipeline._batcher, pipeline._sentence_batcher
        assert sentences is not queries and queries.texts >= 1 and sentences.texts >= 1
        cache = pipeline.query_embeddings
        assert np.allclose(cache._vectors[cache.key(question)], embedder.encode_queries([question])[0], atol=1e-5)
