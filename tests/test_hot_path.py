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
