"""The extractive generator picks the sentence that answers, never a heading, and abstains when
nothing in the passages is close to the question (with the real MiniLM embedder); abstention models:
tests/test_abstention.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmfti.llm.backends.answer_selection import EVIDENCE_FEATURES, split_sentences
from llmfti.llm.backends.base import GenerationRequest, Passage
from llmfti.llm.backends.extractive import ABSTAIN, ExtractiveGenerator, is_no_answer

SAMPLES = Path(__file__).resolve().parents[1] / "pipelines" / "samples" / "docs"


@pytest.fixture(scope="module")
def embed():
    import torch

    from llmfti.config import load_settings
    from llmfti.embedders.base import load_embedder

    torch.set_num_threads(1)
    embedder = load_embedder(load_settings().embedder)

    async def embed_texts(texts):
        return embedder.encode(list(texts))

    return embed_texts


def passages(*names: str) -> list[Passage]:
    return [Passage(n=i + 1, chunk_id=f"c{i}", doc_id=name, text=(SAMPLES / name).read_text(), score=1.0 / (i + 1))
            for i, name in enumerate(names)]


def answer(question: str, found: list[Passage], embed, abstain_below: float | None = 0.25):
    request = GenerationRequest(messages=[{"role": "user", "content": question}], question=question,
                                passages=found, embed=embed, abstain_below=abstain_below)
    return asyncio.run(ExtractiveGenerator().generate(request))


def first_sentence(text: str) -> str:
    return text.split(" [", 1)[0]


def test_headings_and_fragments_are_never_candidates():
    text = ("# The chat API\n\nThe agent is an OpenAI-compatible HTTP service started with `llmfti serve`.\n\n"
            "## Keys\nOK.")
    assert split_sentences(text) == ["The agent is an OpenAI-compatible HTTP service started with `llmfti serve`."]


def test_the_sentence_that_says_how_comes_first(embed):
    result = answer("How do I roll back an index?", passages("versions.md", "indexing.md", "search.md"), embed)
    assert "llmfti index rollback" in first_sentence(result.text), result.text
    assert not result.abstained and result.evidence is not None and result.evidence > 0.25


def test_a_question_about_starting_the_server_is_not_answered_with_a_heading(embed):
    result = answer("How do I start the API server and does it need an API key?",
                    passages("serving.md", "architecture.md", "versions.md"), embed)
    assert "llmfti serve" in first_sentence(result.text), result.text
    assert not first_sentence(result.text).startswith("The chat API")


def test_an_off_topic_question_gets_i_dont_know_with_the_closest_passages(embed):
    found = passages("serving.md", "versions.md")
    result = answer("What is the capital of France?", found, embed)
    assert result.abstained and result.text.startswith(ABSTAIN) and is_no_answer(result.text)
    assert result.cited == [1, 2]  # the closest passages stay cited, so the user can look
    kept = answer("What is the capital of France?", found, embed, abstain_below=None)
    assert not kept.abstained and not is_no_answer(kept.text)  # abstention off: answers as before


def test_the_same_answer_without_an_embedder_is_lexical_and_never_abstains():
    result = answer("How do I roll back an index?", passages("versions.md"), None)
    assert result.evidence is None and not result.abstained
    assert "llmfti index rollback" in first_sentence(result.text), result.text


def test_a_calibrated_model_decides_over_the_cosine_setting(embed):
    """With a model in the request, its answerability decides; the abstain_below cosine is then ignored."""
    from llmfti.answer_calibration import AbstentionModel

    # answerability = sigmoid(20 * (best_cosine - 0.3)): abstain when the best cosine is under 0.3
    model = AbstentionModel(("best_cosine",), (0.3,), (1.0,), (20.0,), 0.0, 0.5)
    found = passages("serving.md", "versions.md")
    question = "What is the capital of France?"
    request = GenerationRequest(messages=[{"role": "user", "content": question}], question=question,
                                passages=found, embed=embed, abstain_below=-1.0, abstention=model)
    result = asyncio.run(ExtractiveGenerator().generate(request))
    assert result.abstained and result.text.startswith(ABSTAIN)
    assert set(result.evidence_features) == set(EVIDENCE_FEATURES)
    assert result.evidence_features["best_cosine"] == result.evidence
    rollback = passages("versions.md", "indexing.md")
    request = GenerationRequest(messages=[{"role": "user", "content": "How do I roll back an index?"}],
                                question="How do I roll back an index?", passages=rollback, embed=embed,
                                abstain_below=0.99, abstention=model)
    kept = asyncio.run(ExtractiveGenerator().generate(request))
    assert not kept.abstained and "llmfti index rollback" in first_sentence(kept.text)


def test_embedding_cache_computes_each_text_once_and_stays_bounded():
    from agents.embedding_cache import EmbeddingCache

    calls: list[str] = []

    async def embed_one(text):
        calls.append(text)
        return [float(len(text))]

    cache = EmbeddingCache(embed_one, fingerprint="e@1", max_entries=3)
    assert asyncio.run(cache.embed(["a", "bb", "a"])) == [[1.0], [2.0], [1.0]]
    assert asyncio.run(cache.embed(["bb", "ccc", "dddd"])) == [[2.0], [3.0], [4.0]]
    assert calls == ["a", "bb", "ccc", "dddd"] and cache.hits == 2 and cache.misses == 4
    asyncio.run(cache.embed(["a"]))  # evicted (least recently used): computed again
    assert calls[-1] == "a"
