"""Fusion maths by hand: plain and weighted RRF, min-max and z-score fusion, document-level fusion,
and the validation of a stored fusion."""

from __future__ import annotations

import pytest

from llmfti.errors import ConfigError, InvalidInputError
from llmfti.index import SearchHit
from llmfti.index.fusion import Fusion, decode, encode, fuse


def hits(*pairs: tuple[str, float], doc: dict[str, str] | None = None, title: dict[str, str] | None = None):
    doc, title = doc or {}, title or {}
    return [SearchHit(cid, doc.get(cid, cid.upper()), score, f"text of {cid}",
                      {"title": title[cid]} if cid in title else {}) for cid, score in pairs]


DENSE = hits(("a", 0.9), ("b", 0.5), ("c", 0.1))
FTS = hits(("c", 10.0), ("a", 2.0))


def scores(result: list[SearchHit]) -> list[tuple[str, float]]:
    return [(h.chunk_id, round(h.score, 6)) for h in result]


def test_plain_rrf_is_the_sum_of_reciprocal_ranks() -> None:
    fused = fuse(DENSE, FTS, Fusion(rrf_k=5), k=10)
    assert scores(fused) == [("a", round(1 / 6 + 1 / 7, 6)), ("c", round(1 / 8 + 1 / 6, 6)), ("b", round(1 / 7, 6))]
    assert fused[0].text == "text of a" and fused[0].doc_id == "A"  # the hit itself, with the fused score
    assert [h.chunk_id for h in fuse(DENSE, FTS, Fusion(rrf_k=5), k=2)] == ["a", "c"]


def test_weights_change_the_order() -> None:
    fused = fuse(DENSE, FTS, Fusion(rrf_k=5, fts_weight=3.0), k=10)
    assert scores(fused) == [("c", round(1 / 8 + 3 / 6, 6)), ("a", round(1 / 6 + 3 / 7, 6)), ("b", round(1 / 7, 6))]
    only_dense = fuse(DENSE, FTS, Fusion(rrf_k=5, fts_weight=0.0), k=10)
    assert [h.chunk_id for h in only_dense] == ["a", "b", "c"]


def test_min_max_score_fusion() -> None:
    # dense normalised a 1, b .5, c 0; fts c 1, a 0 (b missing: 0)
    assert scores(fuse(DENSE, FTS, Fusion("score"), k=10)) == [("a", 1.0), ("c", 1.0), ("b", 0.5)]  # tie: chunk id
    assert scores(fuse(DENSE, FTS, Fusion("score", fts_weight=2.0), k=10)) == [("c", 2.0), ("a", 1.0), ("b", 0.5)]


def test_z_score_fusion_gives_a_missing_chunk_the_lowest_score_of_that_ranking() -> None:
    # dense 0.9, 0.5, 0.1: mean 0.5, std sqrt(0.32/3); fts 10, 2: mean 6, std 4 -> c +1, a -1 (b missing: -1)
    std = (0.32 / 3) ** 0.5
    z = {"a": 0.4 / std, "b": 0.0, "c": -0.4 / std}
    expected = {"a": z["a"] - 1, "b": z["b"] - 1, "c": z["c"] + 1}
    fused = fuse(DENSE, FTS, Fusion("score", normalise="zscore"), k=10)
    assert scores(fused) == sorted(((c, round(v, 6)) for c, v in expected.items()), key=lambda p: -p[1])


def test_document_level_fusion_lifts_the_chunks_of_a_strong_document() -> None:
    doc = {"x1": "X", "x2": "X", "x3": "X", "y": "Y"}
    dense = hits(("y", 0.9), ("x1", 0.8), ("x2", 0.7), ("x3", 0.6), doc=doc)
    fts = hits(("y", 9.0), ("x2", 8.0), ("x1", 7.0), ("x3", 6.0), doc=doc)
    chunk_only = fuse(dense, fts, Fusion(rrf_k=1), k=4)
    assert chunk_only[0].chunk_id == "y"
    summed = fuse(dense, fts, Fusion(rrf_k=1, doc_weight=1.0, doc_aggregate="sum", doc_top=3), k=4)
    assert [h.doc_id for h in summed] == ["X", "X", "Y", "X"]  # X's three chunks outweigh Y's one
    # max: X's best chunk scores below Y's, so the order of the chunk level stays
    by_max = fuse(dense, fts, Fusion(rrf_k=1, doc_weight=1.0, doc_aggregate="max"), k=4)
    assert by_max[0].chunk_id == "y"
    # the chunk score plus doc_weight x the document's score, by hand for y (its own document)
    y_chunk = 1 / 2 + 1 / 2
    assert by_max[0].score == pytest.approx(y_chunk + 1.0 * y_chunk)


def test_documents_can_be_grouped_by_title() -> None:
    title = {"p1": "Article", "p2": "Article", "q": "Other"}
    dense = hits(("q", 0.9), ("p1", 0.85), ("p2", 0.8), title=title)
    fts = hits(("q", 5.0), ("p2", 4.9), ("p1", 4.8), title=title)
    # chunk level (rrf_k=1): q 1/2 + 1/2 = 1, p1 = p2 = 1/3 + 1/4; the article sums to 7/6
    by_doc = fuse(dense, fts, Fusion(rrf_k=1, doc_weight=3.0, doc_aggregate="sum"), k=3)
    by_title = fuse(dense, fts, Fusion(rrf_k=1, doc_weight=3.0, doc_aggregate="sum", doc_key="title"), k=3)
    assert by_doc[0].chunk_id == "q"  # every paragraph is its own document
    assert [h.chunk_id for h in by_title] == ["p1", "p2", "q"]  # one article with two matching paragraphs
    assert by_title[0].score == pytest.approx(7 / 12 + 3.0 * 7 / 6) and by_title[2].score == pytest.approx(1 + 3.0)


@pytest.mark.parametrize(("fields", "named"), [
    ({"method": "bm25"}, "method 'bm25'"),
    ({"rrf_k": 0}, "rrf_k 0"),
    ({"fts_weight": -1.0}, "fts_weight -1.0"),
    ({"dense_weight": 0.0, "fts_weight": 0.0}, "both 0"),
    ({"doc_key": "source"}, "doc_key 'source'"),
    ({"doc_aggregate": "mean"}, "doc_aggregate 'mean'"),
    ({"normalise": "rank"}, "normalise 'rank'"),
    ({"doc_top": 0}, "doc_top 0"),
])
def test_an_invalid_fusion_says_what_is_wrong(fields: dict, named: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid fusion") as caught:
        Fusion(**fields)
    assert named in str(caught.value) and "expected" in str(caught.value)


def test_a_stored_fusion_round_trips_and_a_bad_record_is_a_clear_error() -> None:
    fusion = Fusion("score", normalise="zscore", fts_weight=1.25, doc_weight=0.5, doc_key="title")
    assert decode(encode(fusion, {"questions": 12})) == (fusion, {"questions": 12})
    assert Fusion.from_dict(fusion.to_dict()) == fusion
    with pytest.raises(ConfigError, match="unreadable.*tune-fusion"):
        decode('{"fusion": {"method": "rrf", "shiny": 1}}')  # a field this version does not know
    with pytest.raises(ConfigError, match="unreadable"):
        decode(b"{not json")


def test_the_grid_scorer_breaks_ties_and_aggregates_documents_like_fuse() -> None:
    from llmfti.index.fusion_batch import FusionBatch
    from llmfti.index.fusion_tuning import Question, evaluate

    doc = {"a": "D1", "b": "D2", "c": "D1", "d": "D3", "e": "D2"}
    title = {"a": "T", "b": "T", "c": "U", "d": "U", "e": "T"}
    dense = hits(("b", 0.8), ("a", 0.7), ("e", 0.7), doc=doc, title=title)
    fts = hits(("a", 3.0), ("d", 2.0), ("c", 2.0), doc=doc, title=title)  # ties at equal ranks: chunk id decides
    rankings = [(dense, fts), (fts, dense), (dense, []), ([], fts)]
    questions = [Question("q", frozenset([g])) for g in ("D2", "D3", "D1", "D1")]
    batch = FusionBatch(rankings, questions)
    for fusion in (Fusion(rrf_k=1), Fusion(rrf_k=3, fts_weight=2.0), Fusion("score"),
                   Fusion("score", normalise="zscore"), Fusion(rrf_k=1, doc_weight=1.0, doc_aggregate="sum", doc_top=2),
                   Fusion("score", normalise="zscore", doc_weight=0.7, doc_key="title", doc_aggregate="sum"),
                   Fusion("score", doc_weight=2.0, doc_key="title")):
        assert batch.metrics(fusion) == pytest.approx(evaluate(fusion, rankings, questions)), fusion
