"""The agent's hot path: the query-embedding cache (bounded, keyed by embedder fingerprint and
normalised text, hit rate on /metrics) and the search paths it feeds. Behaviour only, never timing."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.agent_support import agent_settings, data_dir_with_index

AUTH = {"Authorization": "Bearer key-default"}


def _counting_cache(fingerprint: str, max_entries: int):
    from agents.embedding_cache import EmbeddingCache

    calls: list[str] = []

    async def embed_one(text: str) -> list[float]:
        calls.append(text)
        return [float(len(text)), float(len(fingerprint))]

    return EmbeddingCache(embed_one, fingerprint=fingerprint, max_entries=max_entries), calls


def test_query_cache_is_bounded_least_recently_used_first():
    cache, calls = _counting_cache("e@1", max_entries=2)
    asyncio.run(cache.embed(["one", "two"]))
    asyncio.run(cache.embed(["one"]))  # "one" is now the most recently used
    asyncio.run(cache.embed(["three"]))  # evicts "two"
    assert len(cache) == 2
    asyncio.run(cache.embed(["one", "two"]))
    assert calls == ["one", "two", "three", "two"]
    assert (cache.hits, cache.misses) == (2, 4) and cache.hit_rate == pytest.approx(2 / 6)


def test_query_cache_keys_by_fingerprint_and_normalised_text():
    from agents.embedding_cache import normalise

    cache, calls = _counting_cache("minilm@abc", max_entries=10)
    first = asyncio.run(cache.embed_one("How do I roll back?"))
    again = asyncio.run(cache.embed_one("  How do  I\troll back?\n"))  # same text after normalising
    assert first == again and calls == ["How do I roll back?"] and cache.hits == 1
    assert asyncio.run(cache.embed_one("How do I roll back")) is not None and len(calls) == 2  # other text
    assert normalise("  a \n b ") == "a b"
    other, _ = _counting_cache("other@def", max_entries=10)
    assert cache.key("How do I roll back?") != other.key("How do I roll back?")
    assert cache.key("x")[0] == "minilm@abc"


def test_query_cache_of_size_zero_caches_nothing_and_negative_is_refused():
    from agents.embedding_cache import EmbeddingCache

    cache, calls = _counting_cache("e@1", max_entries=0)
    asyncio.run(cache.embed(["a"]))
    asyncio.run(cache.embed(["a"]))
    assert calls == ["a", "a"] and len(cache) == 0
    with pytest.raises(ValueError, match="max_entries=-1"):
        EmbeddingCache(lambda t: None, fingerprint="e@1", max_entries=-1)  # type: ignore[arg-type,return-value]


def test_embedder_fingerprint_changes_with_the_embedder():
    from llmfti.embedders import EmbedderInfo
    from llmfti.embedders.base import embedder_fingerprint

    a = EmbedderInfo(name="m1", dimension=384, max_tokens=254, tokenizer_fingerprint="t1")
    assert embedder_fingerprint(a) == embedder_fingerprint(EmbedderInfo(**a.to_dict()))
    for change in ({"name": "m2"}, {"tokenizer_fingerprint": "t2"}, {"dimension": 768}):
        assert embedder_fingerprint(EmbedderInfo(**{**a.to_dict(), **change})) != embedder_fingerprint(a)


def test_normalising_whitespace_never_changes_the_minilm_vector():
    """The cache returns one vector for texts that differ only in whitespace: it must be the same vector."""
    import torch

    from llmfti.config import load_settings
    from llmfti.embedders import load_embedder

    torch.set_num_threads(1)
    embedder = load_embedder(load_settings())
    raw = ["  Which   NFL team\trepresented the AFC?\n", "Where did  Super Bowl 50 take place ?"]
    vectors = embedder.encode(raw + [" ".join(t.split()) for t in raw])
    np.testing.assert_allclose(vectors[:2], vectors[2:], atol=1e-6)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from agents.api.app import create_app

    data_dir = data_dir_with_index(tmp_path_factory.mktemp("hot-path") / "data")
    app = create_app(agent_settings(data_dir, query_embedding_cache=100))
    with TestClient(app) as client:
        yield app, client


def _metric(text: str, name: str, cache: str) -> float:
    match = re.search(rf'^{name}{{cache="{cache}"}} (\S+)$', text, re.M)
    assert match, f"{name}{{cache={cache!r}}} not in /metrics"
    return float(match.group(1))


def test_a_repeated_question_skips_the_encode_and_gets_the_same_answer(served):
    app, client = served
    pipeline = app.state.agent.pipeline
    body = {"model": "llmfti-extractive", "messages": [{"role": "user", "content": "How do I roll back the index?"}]}
    first = client.post("/v1/chat/completions", headers=AUTH, json=body)
    batches = pipeline._batcher.batches
    body["messages"][0]["content"] = "How do I  roll back the index? "
    second = client.post("/v1/chat/completions", headers=AUTH, json=body)
    assert first.status_code == second.status_code == 200, second.text
    cache = pipeline.query_embeddings
    assert cache.hits >= 1 and cache.fingerprint and len(cache) >= 1
    assert first.json()["citations"] == second.json()["citations"]
    assert first.json()["choices"][0]["message"]["content"] == second.json()["choices"][0]["message"]["content"]
    # the sentence vectors of the same passages were cached too: the second request encoded nothing
    assert pipeline._batcher.batches == batches
    metrics = client.get("/metrics").text
    assert _metric(metrics, "llmfti_embedding_cache_hit_rate", "query") == pytest.approx(cache.hit_rate)
    assert _metric(metrics, "llmfti_embedding_cache_entries", "query") == len(cache)
    assert _metric(metrics, "llmfti_embedding_cache_hit_rate", "sentence") > 0
    hits = re.search(r'^llmfti_embedding_cache_lookups\{cache="query",result="hit"\} (\S+)$', metrics, re.M)
    assert hits and float(hits.group(1)) == cache.hits


def test_the_question_is_encoded_once_its_retrieval_vector_serves_the_answer_selection_too(served):
    """A single-turn question is the retrieval query: the extractive generator gets its vector from the
    retrieval step instead of encoding it a second time through the sentence cache."""
    from agents.embedding_cache import normalise

    app, client = served
    pipeline = app.state.agent.pipeline
    question = "Which table keeps the chunks of an index, and who writes it?"
    sentences = pipeline.sentence_embeddings
    texts, sentence_misses, lookups = pipeline._batcher.texts, sentences.misses, sentences.hits + sentences.misses
    token_misses = pipeline.sentence_tokens.misses if pipeline.sentence_tokens else 0  # token matching's sentences
    response = client.post("/v1/chat/completions", headers=AUTH, json={
        "model": "llmfti-extractive", "messages": [{"role": "user", "content": question}]})
    assert response.status_code == 200, response.text
    assert sentences.hits + sentences.misses > lookups  # the answer was selected with sentence vectors
    assert pipeline.query_embeddings.key(question) in pipeline.query_embeddings._vectors
    assert (sentences.fingerprint, normalise(question)) not in sentences._vectors
    # every text the model encoded: the question once, plus the sentences the caches did not have
    token_misses = (pipeline.sentence_tokens.misses if pipeline.sentence_tokens else 0) - token_misses
    assert pipeline._batcher.texts - texts == 1 + sentences.misses - sentence_misses + token_misses


def test_known_vectors_are_used_as_given_neither_counted_nor_cached():
    cache, calls = _counting_cache("e@1", max_entries=10)
    vectors = asyncio.run(cache.embed(["the question", "a sentence", " the  question "],
                                      known={"the question": [9.0, 9.0]}))
    assert vectors == [[9.0, 9.0], [10.0, 3.0], [9.0, 9.0]] and calls == ["a sentence"]
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)


def test_the_embedding_worker_runs_its_setup_on_its_own_thread_and_limits_torch_threads():
    """torch's thread count is per process and OpenMP's per thread: the batcher's worker sets it itself."""
    import threading

    import torch

    from agents.pipeline import limit_threads
    from agents.query_batcher import QueryBatcher

    seen: list[tuple[str, int]] = []
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        batcher = QueryBatcher(lambda texts: [[float(len(t))] for t in texts], setup=lambda: (
            limit_threads(1), seen.append((threading.current_thread().name, torch.get_num_threads()))))
        try:
            assert asyncio.run(batcher.embed("four")) == [4.0]
        finally:
            batcher.close()
        assert seen == [("llmfti-query-embedder", 1)]
        torch.set_num_threads(2)
        limit_threads(None)  # null: torch's default is left alone
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_failing_setup_still_leaves_a_working_batcher():
    from agents.query_batcher import QueryBatcher

    def broken() -> None:
        raise RuntimeError("no such setting")

    batcher = QueryBatcher(lambda texts: [[1.0] for _ in texts], setup=broken)
    try:
        assert asyncio.run(batcher.embed("x")) == [1.0]
    finally:
        batcher.close()


PARIS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "The Louvre holds the Mona Lisa and thousands of other paintings.",
    "Paris has twenty administrative districts called arrondissements.",
    "The Seine flows through the centre of the city from east to west.",
    "Gustave Eiffel's company designed and built the tower over two years.",
    "The Paris Metro opened in 1900 and now has sixteen lines.",
    "Notre-Dame cathedral was damaged by a fire in 2019.",
    "The tower is 330 metres tall, about the height of an 81-storey building.",
    "Montmartre is a hill in the north of the city known for its artists.",
    "The Arc de Triomphe honours those who fought for France.",
]


def test_only_the_lexically_best_sentences_are_embedded_and_the_answer_is_the_same():
    """The extractive generator embeds at most ``embed_candidates`` sentences (the lexically best) and the
    others rank below them: on a passage of ten sentences, four embedded give the answer all ten give."""
    import torch

    from llmfti.config import GeneratorSettings, load_settings
    from llmfti.embedders import load_embedder
    from llmfti.llm.backends import create_generator
    from llmfti.llm.backends.base import GenerationRequest, Passage
    from llmfti.llm.backends.extractive import ExtractiveGenerator

    torch.set_num_threads(1)
    embedder = load_embedder(load_settings())
    sent: list[list[str]] = []

    async def embed(texts):
        sent.append(list(texts))
        return embedder.encode(list(texts))

    question = "When was the Eiffel Tower completed?"
    passages = [Passage(n=1, chunk_id="c1", doc_id="paris", text=" ".join(PARIS[:5]), score=0.9),
                Passage(n=2, chunk_id="c2", doc_id="paris", text=" ".join(PARIS[5:]), score=0.8)]
    request = GenerationRequest(messages=[{"role": "user", "content": question}], question=question,
                                passages=passages, embed=embed)
    everything = asyncio.run(ExtractiveGenerator(embed_candidates=100).generate(request))
    bounded = asyncio.run(ExtractiveGenerator(embed_candidates=4).generate(request))
    assert [len(texts) for texts in sent] == [1 + 10, 1 + 4]
    assert sent[1][0] == question and PARIS[0] in sent[1][1:]  # the sentence that answers was embedded
    assert bounded.text == everything.text and bounded.text.startswith(PARIS[0])
    assert bounded.evidence == pytest.approx(everything.evidence, abs=1e-5)  # the best cosine was among the four
    assert create_generator(GeneratorSettings(embed_candidates=4), backend="extractive").embed_candidates == 4


def test_a_sentence_that_is_a_whole_chunk_is_never_encoded_again(tmp_path):
    """On an index of one-sentence chunks the answer's sentence vectors are the chunks' stored vectors:
    a new question costs one encode (the question), and those vectors are what the model gives."""
    import json

    import torch

    from agents.api.app import create_app
    from llmfti.embedders import load_embedder
    from llmfti.features.embedded_redis import EmbeddedRedis
    from llmfti.index import VectorIndex
    from pipelines.index_build import build_index

    torch.set_num_threads(1)
    corpus = tmp_path / "paris.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"paris-{i}", "text": t}) + "\n" for i, t in enumerate(PARIS)))
    settings = agent_settings(tmp_path / "data")
    build_index(settings, [corpus])
    question = "When was the Eiffel Tower completed?"
    hits = VectorIndex.open(settings).search(question, k=5, with_vectors=True).hits
    model = load_embedder(settings).encode([h.text for h in hits])
    np.testing.assert_allclose(np.stack([h.vector for h in hits]), model, atol=1e-5)
    assert VectorIndex.open(settings).search(question, k=5).hits[0].vector is None  # only when asked
    for mode in ("fts", "hybrid", "dense"):  # no full-text match at all: an empty half is no error
        found = VectorIndex.open(settings).search("zqxj wvkp", k=5, mode=mode, with_vectors=True).hits
        assert all(h.vector is not None for h in found) and (mode != "fts" or not found)
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            pipeline = app.state.agent.pipeline
            texts, sentences = pipeline._batcher.texts, pipeline.sentence_embeddings
            response = client.post("/v1/chat/completions", headers=AUTH, json={
                "model": "llmfti-extractive", "messages": [{"role": "user", "content": question}]})
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"].startswith(PARIS[0])
            # the question; every sentence vector came from the index (token matching's token vectors do not)
            token_misses = pipeline.sentence_tokens.misses if pipeline.sentence_tokens else 0
            assert pipeline._batcher.texts - texts == 1 + token_misses
            assert (sentences.hits, sentences.misses, len(sentences)) == (0, 0, 0)
    finally:
        EmbeddedRedis(tmp_path / "data").stop(save=False)


def test_search_on_the_lance_dataset_ranks_like_the_lancedb_query_builder(tmp_path):
    """VectorIndex.search runs on the pylance dataset directly: same chunks, order and scores as lancedb's
    query builder (the way it searched before), for dense and full-text, within the tenant."""
    from lancedb.query import MatchQuery

    from llmfti.index import VectorIndex

    settings = agent_settings(data_dir_with_index(tmp_path / "data"))
    idx = VectorIndex.open(settings)
    table, where = idx._at(None), "tenant = 'default'"
    for question in ("How do I roll back the index?", "Which port does the agent listen on?"):
        vector = idx.embed_query(question)
        dense = idx.search(question, k=3, mode="dense", vector=vector)
        expected = (table.search(vector, vector_column_name="embedding").distance_type("cosine")
                    .where(where, prefilter=True).limit(3).to_list())
        assert [h.chunk_id for h in dense.hits] == [r["chunk_id"] for r in expected]
        assert [h.score for h in dense.hits] == pytest.approx([1 - r["_distance"] for r in expected], abs=1e-5)
        fts = idx.search(question, k=3, mode="fts")
        expected = table.search(MatchQuery(question, "text"), query_type="fts").where(where, prefilter=True).limit(3)
        rows = expected.to_list()
        assert rows and [h.chunk_id for h in fts.hits] == [r["chunk_id"] for r in rows]
        assert [h.score for h in fts.hits] == pytest.approx([r["_score"] for r in rows], rel=1e-5)
        assert dense.version == fts.version == idx.version
    acme = idx.search("rocket engine fuel", k=3, mode="hybrid", tenant="acme")
    assert acme.hits and {h.doc_id for h in acme.hits} == {"acme/acme.md"}  # never another tenant's chunk
