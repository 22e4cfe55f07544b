"""Chunking is measured in the embedder's tokenizer: never over its limit, stable ids, overlap."""

from __future__ import annotations

import re

import pytest

from llmfti.errors import ConfigError
from llmfti.text.chunking import Chunker

SENTENCES = [f"Sentence number {i} talks about topic {i % 7} with several extra words in it." for i in range(120)]
LONG_TEXT = " ".join(SENTENCES)


def test_no_chunk_exceeds_the_model_limit(embedder) -> None:
    chunker = Chunker(embedder.token_spans, embedder.info.max_tokens, 32)
    run_on = "word " * 3000 + "unpunctuated"  # one giant "sentence" must still be split
    weird = "ünïcödé " * 400 + "ok. " + "a" * 5000  # long subword runs
    for doc_id, text in [("long", LONG_TEXT), ("run-on", run_on), ("weird", weird)]:
        (chunks,) = chunker.chunk_many([(doc_id, text)])
        assert len(chunks) > 1
        tokenizer = embedder._model.tokenizer
        for chunk in chunks:
            with_specials = len(tokenizer(chunk.text, add_special_tokens=True)["input_ids"])
            assert with_specials <= 256, (doc_id, with_specials)  # MiniLM max_seq_length: nothing truncated
            assert chunk.n_tokens <= embedder.info.max_tokens == 254


def test_sentence_boundaries_and_overlap(embedder) -> None:
    chunker = Chunker(embedder.token_spans, 100, 30)
    (chunks,) = chunker.chunk_many([("doc", LONG_TEXT)])
    for chunk in chunks:
        assert re.search(r"\.$", chunk.text), chunk.text[-40:]  # ends at a sentence end
        assert chunk.text.startswith("Sentence number")
    for before, after in zip(chunks, chunks[1:], strict=False):
        first_sentence_of_next = after.text.split(". ")[0] + "."
        assert first_sentence_of_next in before.text  # whole trailing sentences are repeated
    covered = " ".join(c.text for c in chunks)
    assert all(s in covered for s in SENTENCES)  # nothing lost


def test_chunk_ids_are_stable_and_content_derived(embedder) -> None:
    chunker = Chunker(embedder.token_spans, 100, 0)
    (a,) = chunker.chunk_many([("doc", LONG_TEXT)])
    (b,) = chunker.chunk_many([("doc", LONG_TEXT)])
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]
    (other_doc,) = chunker.chunk_many([("other", LONG_TEXT)])
    assert not {c.chunk_id for c in a} & {c.chunk_id for c in other_doc}
    # editing the end of a document keeps the ids of the untouched chunks at its start
    (edited,) = chunker.chunk_many([("doc", LONG_TEXT + " A brand new closing sentence.")])
    assert a[0].chunk_id == edited[0].chunk_id and a[-1].chunk_id != edited[-1].chunk_id
    repeated = "Same sentence here. " * 2
    (dups,) = Chunker(embedder.token_spans, 5, 0).chunk_many([("rep", repeated)])
    assert len({c.chunk_id for c in dups}) == len(dups)


def test_overlap_must_be_smaller_than_half_the_chunk(embedder) -> None:
    with pytest.raises(ConfigError, match="overlap_tokens"):
        Chunker(embedder.token_spans, 64, 40)


def test_no_chunk_without_words(embedder) -> None:
    """SQuAD Huguenot#21: a 255-token sentence once left a chunk holding only "." (chars 742-743)."""
    import json

    from llmfti.text.cleaning import clean_text
    from tests.conftest import SQUAD_DEV

    article = next(a for a in json.loads(SQUAD_DEV.read_text())["data"] if a["title"] == "Huguenot")
    huguenot = clean_text(article["paragraphs"][21]["context"])
    punctuation = "Real words come first. " + "... !!! ??? --- " * 30 + "\n\n. . . .\n\nAnd real words last."
    chunker = Chunker(embedder.token_spans, embedder.info.max_tokens, 32)
    small = Chunker(embedder.token_spans, 8, 2)
    for chunks in chunker.chunk_many([("huguenot", huguenot), ("punct", punctuation)]) + small.chunk_many(
            [("punct", punctuation)]):
        assert chunks and all(re.search(r"\w", c.text) for c in chunks), [c.text for c in chunks]
        assert min(c.n_tokens for c in chunks) > 1
    (hug,) = chunker.chunk_many([("huguenot", huguenot)])
    assert "Visagie (Visage)." in " ".join(c.text for c in hug)  # the split sentence is kept whole across chunks
