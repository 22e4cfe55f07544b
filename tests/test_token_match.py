"""Token max-sim (late interaction) in answer selection: the real MiniLM's token vectors, from the same forward
pass as the pooled vector, through the query batcher and a bounded cache; and first-sentence presence over answers."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.agent_support import agent_settings, data_dir_with_index

AUTH = {"Authorization": "Bearer key-default"}
# (question, decoy: close to the question as a whole, answer: holds what is asked); every pair was checked on
# all-MiniLM-L6-v2: the pooled cosine prefers the decoy, token max-sim the answer (asserted below, not assumed)
CASES = [
    ("What colour was the lighthouse keeper's boat?",
     "Lighthouse keepers lived isolated lives, tending the lamps of coastal towers through long nights.",
     "Every morning the keeper rowed his red boat to the village market for bread and oil."),
    ("How many bridges cross the Danube in Budapest?",
     "Budapest is the capital of Hungary and is split by the Danube into Buda and Pest.",
     "Today nine bridges cross the river within the city limits, the oldest from 1849."),
]


@pytest.fixture(scope="module")
def minilm():
    import torch

    from llmfti.config import load_settings
    from llmfti.embedders import load_embedder

    torch.set_num_threads(1)
    return load_embedder(load_settings())


def test_token_vectors_come_from_the_same_forward_pass_as_the_pooled_vector(minilm) -> None:
    texts = ["How do I roll back an index?", "The capital of France is Paris.", "x"]
    encoded = minilm.encode_tokens(texts)
    np.testing.assert_allclose(np.stack([e.vector for e in encoded]), minilm.encode(texts), atol=1e-5)
    assert [e.pieces[:4] for e in encoded[:1]] == [("how", "do", "i", "roll")]  # no [CLS]/[SEP]
    for e in encoded:
        assert e.tokens.shape == (len(e.pieces), minilm.info.dimension) and e.tokens.dtype == np.float16
        np.testing.assert_allclose(np.linalg.norm(e.tokens.astype(np.float32), axis=1), 1.0, atol=1e-2)


def test_max_sim_picks_the_answering_sentence_that_the_sentence_cosine_misses(minilm) -> None:
    from llmfti.llm.backends.answer_selection import Weights, select
    from llmfti.llm.backends.base import Passage
    from llmfti.llm.backends.token_match import max_sim

    meaning_only = Weights(words=0, rank=0, answer_type=0, coverage=0, word_pairs=0, meaning=1,
                           token_match=1, meaning_beside_tokens=0)
    for question, decoy, answer in CASES:
        vectors = minilm.encode([question, decoy, answer])
        cosines = [float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])]
        q, *sentences = minilm.encode_tokens([question, decoy, answer])
        token_scores = max_sim(q, sentences)
        assert cosines[0] > cosines[1], (question, cosines)  # the cosine misses the answer
        assert token_scores[1] > token_scores[0], (question, token_scores)  # max-sim finds it
        passages = [Passage(n=1, chunk_id="c1", doc_id="d1", text=decoy, score=1.0),
                    Passage(n=2, chunk_id="c2", doc_id="d2", text=answer, score=1.0)]
        by_cosine = select(question, passages, 1, similarities=cosines, weights=meaning_only)
        by_tokens = select(question, passages, 1, similarities=cosines, weights=meaning_only, token_match=token_scores)
        assert by_cosine.chosen[0].sentence == decoy and by_tokens.chosen[0].sentence == answer
        # abstention's evidence stays in the units its models were fit in: the score without max-sim, and a
        # negative lead where max-sim overruled it
        assert by_tokens.features["chosen_score"] == pytest.approx(cosines[1])
        assert by_tokens.features["chosen_margin"] == pytest.approx(cosines[1] - cosines[0])
        assert by_cosine.features["chosen_margin"] == pytest.approx(cosines[0] - cosines[1])


def test_the_generator_matches_tokens_of_its_top_candidates_only(minilm) -> None:
    from llmfti.llm.backends.base import GenerationRequest, Passage
    from llmfti.llm.backends.extractive import ExtractiveGenerator

    question, decoy, answer = CASES[1]
    asked: list[list[str]] = []

    async def embed(texts):
        return minilm.encode(list(texts))

    async def embed_tokens(texts):
        asked.append(list(texts))
        return minilm.encode_tokens(list(texts))

    passages = [Passage(n=i + 1, chunk_id=f"c{i}", doc_id=f"d{i}", text=t, score=1.0)
                for i, t in enumerate([decoy, answer, "Unrelated words about cooking pasta in salted water."])]
    request = GenerationRequest(messages=[{"role": "user", "content": question}], question=question,
                                passages=passages, embed=embed, embed_tokens=embed_tokens)
    generator = ExtractiveGenerator(token_match_candidates=2, token_match_lead=10.0)
    similarities = asyncio.run(generator.similarities(request))
    found = asyncio.run(generator.token_match(request, similarities))
    assert asked == [[question, answer, decoy]]  # the question, then the 2 best by the other evidence
    assert found[2] is None and found[0] is not None and found[1] > found[0]
    result = asyncio.run(generator.generate(request))
    assert result.text.startswith(answer)
    assert asyncio.run(ExtractiveGenerator(token_match_candidates=0).token_match(request, similarities)) is None
    # a best candidate that leads by token_match_lead or more is kept as it is: no token vectors encoded
    lead = generator.answer(request, similarities).evidence_features["chosen_margin"]
    asked.clear()
    clear = ExtractiveGenerator(token_match_candidates=2, token_match_lead=lead)
    assert asyncio.run(clear.token_match(request, similarities)) is None and asked == []
    close = ExtractiveGenerator(token_match_candidates=2, token_match_lead=lead + 1e-6)
    assert asyncio.run(close.token_match(request, similarities)) is not None and len(asked) == 1


def test_the_batcher_returns_token_vectors_that_match_a_direct_encode(minilm) -> None:
    from agents.query_batcher import QueryBatcher

    texts = ["Which NFL team won Super Bowl 50?", "Where is the Louvre?", "How many bridges cross the Danube?",
             "A much longer sentence, so that the batch is padded for the others to the same length as this one."]
    batcher = QueryBatcher(minilm.encode, encode_tokens=minilm.encode_tokens)
    try:
        async def both():
            return await asyncio.gather(*(batcher.embed(t, tokens=i % 2 == 0) for i, t in enumerate(texts)))

        got = asyncio.run(both())
        plain_only = QueryBatcher(minilm.encode)
        with pytest.raises(RuntimeError, match="without encode_tokens"):
            asyncio.run(plain_only.embed("x", tokens=True))
        plain_only.close()
    finally:
        batcher.close()
    direct = [minilm.encode_tokens([t])[0] for t in texts]
    for i, (g, d) in enumerate(zip(got, direct, strict=True)):
        if i % 2 == 0:  # asked with tokens: a TokenEncoding equal to encoding the text alone
            assert g.pieces == d.pieces
            np.testing.assert_allclose(g.vector, d.vector, atol=1e-5)
            np.testing.assert_allclose(g.tokens.astype(np.float32), d.tokens.astype(np.float32), atol=5e-3)
        else:  # asked without: the pooled vector only, as encode gives it
            assert isinstance(g, np.ndarray) and g.shape == (minilm.info.dimension,)
            np.testing.assert_allclose(g, d.vector, atol=1e-5)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from agents.api.app import create_app

    data_dir = data_dir_with_index(tmp_path_factory.mktemp("token-match") / "data")
    app = create_app(agent_settings(data_dir, generator={"token_match_candidates": 3, "token_match_cache": 2,
                                                         "token_match_lead": 100.0}))
    with TestClient(app) as client:
        yield app, client


def test_the_agent_reuses_the_query_encode_and_bounds_the_sentence_token_cache(served) -> None:
    from agents.embedding_cache import normalise

    app, client = served
    pipeline = app.state.agent.pipeline
    tokens, sentences = pipeline.sentence_tokens, pipeline.sentence_embeddings
    for question in ("How do I roll back an index?", "Which table keeps the chunks of an index, and who writes it?"):
        texts = pipeline._batcher.texts
        misses = (tokens.misses, sentences.misses)
        response = client.post("/v1/chat/completions", headers=AUTH, json={
            "model": "llmfti-extractive", "messages": [{"role": "user", "content": question}]})
        assert response.status_code == 200, response.text
        assert tokens.misses > misses[0]  # token vectors of candidate sentences were asked for
        assert len(tokens) <= 2  # agent.generator.token_match_cache
        assert hasattr(pipeline.query_embeddings._vectors[pipeline.query_embeddings.key(question)], "tokens")
        assert (tokens.fingerprint, normalise(question)) not in tokens._vectors
        # the question was encoded once (tokens and pooled vector together); the rest are sentences
        encoded = pipeline._batcher.texts - texts
        assert encoded == 1 + (tokens.misses - misses[0]) + (sentences.misses - misses[1])
    metrics = client.get("/metrics").text
    assert f'llmfti_embedding_cache_entries{{cache="sentence_tokens"}} {float(len(tokens))}' in metrics


def test_first_sentence_presence_is_over_answers_and_nan_when_none_was_answered() -> None:
    from evals.datasets import EvalRow
    from evals.metrics import RowResult, aggregate, score_rows
    from llmfti.llm.backends.extractive import ABSTAIN

    rows = [EvalRow(f"a{i}", "q", ["Paris"], ["d1"]) for i in range(4)]
    answers = ["Paris is the capital. [1]", "Lyon is a city. Paris too. [1]", ABSTAIN, ABSTAIN]
    results = [RowResult(r, a, ["c1"], ["d1"], ["c1"]) for r, a in zip(rows, answers, strict=True)]
    names = ["answered", "first_sentence_presence"]
    score_rows(results, names, None)
    means, unmeasured = aggregate(results, names)
    assert means == {"answered": 0.5, "first_sentence_presence": 0.5} and not any(unmeasured.values())
    nothing = [RowResult(r, ABSTAIN, ["c1"], ["d1"], ["c1"]) for r in rows]
    score_rows(nothing, names, None)
    means, unmeasured = aggregate(nothing, names)
    assert means["answered"] == 0 and math.isnan(means["first_sentence_presence"]) and not any(unmeasured.values())


def test_token_matching_is_off_when_serving_the_suites_measure_that_and_a_suite_can_turn_it_on() -> None:
    from evals.runner import suite_settings
    from evals.suite import load_suite
    from llmfti.config import load_settings
    from llmfti.llm.backends.extractive import ExtractiveGenerator

    settings = load_settings()
    assert settings.agent.generator.token_match_candidates == 0
    assert ExtractiveGenerator.from_settings(settings.agent.generator).token_match_candidates == 0
    for name in ("squad", "docs", "followups"):  # the gate measures what is served
        suite = load_suite(name)
        assert suite.token_match_candidates is None
        assert suite_settings(settings, suite).agent.generator.token_match_candidates == 0
        run = suite_settings(settings, suite.model_copy(update={"token_match_candidates": 3}))
        assert ExtractiveGenerator.from_settings(run.agent.generator).token_match_candidates == 3
