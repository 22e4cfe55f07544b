"""Sentence-level evidence: the splitter, the fusion maths by hand, the vectors a real build stores (reused on a
rebuild, coupled to the index version), hybrid search with a stored sentence fusion, an index from before the
column, and the tuner's numpy scorer against search's own fusion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from llmfti.config import load_settings
from llmfti.index import SearchHit, VectorIndex
from llmfti.index import fusion_tuning as ft
from llmfti.index.fusion import Fusion, fuse, fused_scores
from llmfti.index.sentences import MAX_SENTENCES, coverages, split_sentences, zscores
from llmfti.index.vector_index import SENTENCES, chunks_schema, table_name
from llmfti.lance import connect, open_or_create_table
from pipelines.index_build import build_index
from tests.documents import write_corpus


def test_split_sentences_keeps_every_word_and_joins_fragments() -> None:
    text = ("Honey bees live in colonies. The queen lays eggs! Why? Workers (mostly female) forage.\n\n"
            "- a list item here")
    assert split_sentences(text) == ["Honey bees live in colonies.", "The queen lays eggs! Why?",
                                     "Workers (mostly female) forage.", "- a list item here"]
    assert split_sentences("no end mark at all") == ["no end mark at all"]
    assert split_sentences("e.g. lower case after a dot stays in the sentence.") == [
        "e.g. lower case after a dot stays in the sentence."]
    assert len(split_sentences(" ".join(f"Sentence number {i} is here." for i in range(50)))) == MAX_SENTENCES


def _hit(cid: str, text: str, sentences: list[list[float]] | None) -> SearchHit:
    matrix = None if sentences is None else np.asarray(sentences, dtype=np.float32)
    return SearchHit(cid, cid.upper(), 1.0, text, {}, None, matrix)


def test_the_best_sentence_lifts_its_chunk_over_an_equal_fused_score() -> None:
    query = np.array([1.0, 0.0], dtype=np.float32)
    a = _hit("a", "Alpha one. Alpha two.", [[0.0, 1.0], [0.6, 0.8]])
    b = _hit("b", "Beta one. Beta two.", [[0.0, 1.0], [1.0, 0.0]])  # one sentence says exactly what was asked
    c = _hit("c", "Gamma one.", None)  # built without sentence vectors: counts as average
    dense, fts = [a, b, c], [b, a, c]  # a and b tie on plain RRF
    plain = [h.chunk_id for h in fuse(dense, fts, Fusion(), 3)]
    assert plain == ["a", "b", "c"]  # the tie goes to the smaller chunk id
    lifted = fuse(dense, fts, Fusion(sentence_weight=1.0), 3, "anything", query)
    assert [h.chunk_id for h in lifted] == ["b", "a", "c"]
    scores, _ = fused_scores(dense, fts, Fusion(sentence_weight=1.0), "anything", query)
    base = zscores([1 / 6 + 1 / 7, 1 / 7 + 1 / 6, 2 / 8])
    best = zscores([0.6, 1.0, math.nan])
    assert scores["b"] == pytest.approx(base[1] + best[1]) and scores["c"] == pytest.approx(base[2])
    with pytest.raises(ValueError, match="needs the query"):
        fuse(dense, fts, Fusion(sentence_weight=1.0), 3)


def test_coverage_weighs_rare_question_words_in_one_sentence() -> None:
    texts = ["The castle was built in 1066 by the Normans. It is old.",
             "The castle is old. The Normans came later. 1066 was a year.",  # the words, but not in one sentence
             "The castle is old."]
    covered = coverages("Who built the castle in 1066?", texts)
    assert covered[0] > covered[1] > covered[2] > 0  # "castle" is in every chunk: it counts for little
    assert coverages("the of and", texts) == [0.0, 0.0, 0.0]  # only stop words: no evidence
    dense = [_hit(c, t, None) for c, t in zip("zyx", texts, strict=True)]
    top = fuse(dense[::-1], dense[::-1], Fusion(coverage_weight=2.0), 3, "Who built the castle in 1066?", None)
    assert top[0].chunk_id == "z"  # last on both rankings, first on coverage
    base, cover = zscores([2 / 8, 2 / 7, 2 / 6]), zscores(covered)
    assert [h.score for h in top] == pytest.approx(sorted((b + 2 * c for b, c in zip(base, cover, strict=True)),
                                                          reverse=True))


def test_a_sentence_fusion_round_trips_and_says_what_it_does() -> None:
    fusion = Fusion("score", normalise="zscore", fts_weight=1.25, sentence_weight=1.5, coverage_weight=0.75)
    assert Fusion.from_dict(fusion.to_dict()) == fusion and fusion.uses_sentences
    assert fusion.describe().endswith("+ best sentence x1.5, coverage x0.75")
    assert not Fusion().uses_sentences
    with pytest.raises(ValueError, match="sentence_weight -1"):
        Fusion(sentence_weight=-1)


def test_a_build_stores_each_chunks_sentence_vectors_and_reuses_them(settings, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    first = build_index(settings, [corpus])
    idx = VectorIndex.open(settings)
    rows = idx._table.to_arrow().select(["chunk_id", "text", SENTENCES]).to_pylist()
    embedder = idx.embedder()
    for row in rows:  # the stored vectors are the embedder's vectors of the chunk's sentences
        stored = np.asarray(row[SENTENCES], dtype=np.float32)
        expected = embedder.encode(split_sentences(row["text"]))
        assert stored.shape == expected.shape and np.allclose(stored, expected, atol=1e-5), row["chunk_id"]
    assert first["sentence_seconds"] > 0

    (corpus / "bees.md").write_text("# Honey bees\n\nHoney bees dance to say where the flowers are.\n")
    again = build_index(settings, [corpus])
    assert again["docs_updated"] == 1 and again["chunks_embedded"] == 1
    after = {r["chunk_id"]: r for r in VectorIndex.open(settings)._table.to_arrow().to_pylist()}
    for row in rows:
        if row["chunk_id"] in after:  # unchanged chunks keep their vectors, byte for byte
            assert after[row["chunk_id"]][SENTENCES] == row[SENTENCES]
    bees = [r for r in after.values() if r["doc_id"].endswith("bees.md")]
    assert bees and all(np.asarray(r[SENTENCES]).shape[0] == len(split_sentences(r["text"])) for r in bees)
    # the old version still holds the old chunk's sentence vectors: time travel and rollback stay coupled
    old = VectorIndex.open(settings).search("Which insect is ruled by a queen?", mode="fts", version=first["version"])
    assert "queen" in old.hits[0].text


def test_hybrid_search_with_a_stored_sentence_fusion_ranks_as_the_offline_fusion(settings, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    build_index(settings, [corpus])
    idx = VectorIndex.open(settings)
    fusion = Fusion("score", normalise="zscore", sentence_weight=1.5, coverage_weight=1.0)
    idx.store_fusion(fusion, {"by": "test"})
    for text in ("Which insect is ruled by a queen?", "Where are there many active volcanoes?"):
        vector = idx.embed_query(text)
        live = idx.search(text, k=5, mode="hybrid", vector=vector).hits
        offline = fuse(*idx.candidates(text, vector, 50), fusion, 5, text, vector)
        assert [h.chunk_id for h in live] == [h.chunk_id for h in offline]
        assert [h.score for h in live] == pytest.approx([h.score for h in offline])
        assert live[0].sentence_vectors is not None  # read from the index, not recomputed
        both = idx.search(text, k=5, mode="hybrid", vector=vector, with_vectors=True).hits  # the agent's call
        assert [h.chunk_id for h in both] == [h.chunk_id for h in live]
        assert all(h.vector.shape == (384,) and h.sentence_vectors.shape[1] == 384 for h in both)
    assert idx.search("Which insect is ruled by a queen?", k=1, mode="hybrid").hits[0].doc_id == "corpus/bees.md"


def _squad_part(tmp_path: Path) -> tuple[Path, list[ft.Question]]:
    from tests.index.test_fusion_tuning import _articles

    articles = _articles()
    source = tmp_path / "squad-part.json"
    source.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    return source, [ft.Question(qa["question"], frozenset([f"{a['title']}#{i}"]))
                    for a in articles for i, p in enumerate(a["paragraphs"]) for qa in p["qas"]]


def test_an_index_from_before_sentence_vectors_stays_readable_and_tuning_says_what_to_do(
        settings, tmp_path: Path) -> None:
    from llmfti.embedders import load_embedder

    info = load_embedder(settings).info
    old_schema = chunks_schema(info)
    old_schema = old_schema.remove(old_schema.get_field_index(SENTENCES))
    open_or_create_table(connect(settings), table_name("sq"), old_schema)  # what an earlier llmfti created
    source, questions = _squad_part(tmp_path)
    build_index(settings, [source], "sq")
    idx = VectorIndex.open(settings, "sq")
    assert not idx.has_sentence_vectors() and SENTENCES not in idx._table.schema.names
    before = [h.chunk_id for h in idx.search(questions[0].text, k=5, mode="hybrid").hits]
    idx.store_fusion(Fusion(sentence_weight=1.0), {"by": "test"})  # e.g. copied from another index
    hits = idx.search(questions[0].text, k=5, mode="hybrid").hits  # the evidence it lacks counts as average
    assert [h.chunk_id for h in hits] == before and hits[0].sentence_vectors is None
    result = ft.tune_index(idx, questions, source="test", store=False)
    assert result["sentence_evidence"].startswith("not tried") and "build the documents into a new index" in \
        result["sentence_evidence"]
    assert not Fusion.from_dict(result["chosen"]).uses_sentences


def test_the_sentence_grid_scorer_measures_what_search_fusion_does(tmp_path: Path) -> None:
    """SentenceBatch (numpy, stage three of the grid) against evaluate() (search's own fuse) on a real index."""
    source, questions = _squad_part(tmp_path)
    settings = load_settings(data_dir=tmp_path / "data")
    build_index(settings, [source], "sq")
    idx = VectorIndex.open(settings, "sq")
    vectors = idx.embedder().encode([q.text for q in questions])
    rankings = ft.collect(idx, questions, vectors)
    batch = ft.SentenceBatch(rankings, questions, vectors)
    everyone = list(range(len(questions)))
    bases = [Fusion(), Fusion("score", normalise="zscore", fts_weight=1.25)]
    for base in bases:
        for s, c in ((1.0, 0.0), (0.0, 1.0), (1.5, 0.75), (2.0, 1.5)):
            fusion = Fusion(**{**base.to_dict(), "sentence_weight": s, "coverage_weight": c})
            expected = ft.evaluate(fusion, rankings, questions, everyone, vectors)
            got = batch.metrics(base, s, c, everyone)
            assert got == pytest.approx({k: v for k, v in expected.items() if k != "questions"}), fusion
    plain = ft.evaluate(Fusion(), rankings, questions, everyone, vectors)
    with_sentences = ft.evaluate(Fusion(sentence_weight=1.0, coverage_weight=1.0), rankings, questions, everyone,
                                 vectors)
    assert with_sentences["mrr@10"] > plain["mrr@10"]  # on SQuAD questions the evidence helps, untuned
