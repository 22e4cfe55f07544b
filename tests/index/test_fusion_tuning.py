"""Tuned fusion on a real index (a few SQuAD articles, real MiniLM + BM25): the stored choice drives hybrid
search, lives in the index version (a later build keeps it, a rollback restores the earlier one), the tuner's
held-out figures are what real searches then measure, and bad input is refused with the fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from llmfti.config import load_settings
from llmfti.errors import InvalidInputError
from llmfti.index import VectorIndex
from llmfti.index import fusion_tuning as ft
from llmfti.index.fusion import Fusion, fuse
from pipelines.index_build import build_index
from tests.conftest import SQUAD_DEV

LLMFTI = str(Path(sys.executable).with_name("llmfti"))
INDEX = "sq"


def _articles() -> list[dict]:
    """The first SQuAD dev articles (their first 6 paragraphs) until each split side has >= 60 questions."""
    picked, sides = [], [0, 0]
    for article in json.loads(SQUAD_DEV.read_text(encoding="utf-8"))["data"]:
        article = {"title": article["title"], "paragraphs": article["paragraphs"][:6]}
        side = zlib.crc32(article["title"].encode("utf-8")) % 2
        if sides[side] >= 60:
            continue
        picked.append(article)
        sides[side] += sum(len(p["qas"]) for p in article["paragraphs"])
        if min(sides) >= 60:
            return picked
    raise AssertionError("SQuAD dev has too few articles")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ft.Question]]:
    """A SQuAD-subset index, built once; each test copies it."""
    root = tmp_path_factory.mktemp("fusion")
    articles = _articles()
    source = root / "squad-part.json"
    source.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    build_index(load_settings(data_dir=root / "data"), [source], INDEX)
    questions = [ft.Question(qa["question"], frozenset([f"{a['title']}#{i}"]))
                 for a in articles for i, p in enumerate(a["paragraphs"]) for qa in p["qas"]]
    return root, questions


@pytest.fixture
def index(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VectorIndex:
    root, _ = built
    shutil.copytree(root / "data", tmp_path / "data")
    monkeypatch.setenv("LLMFTI_DATA_DIR", str(tmp_path / "data"))
    return VectorIndex.open(load_settings(data_dir=tmp_path / "data"), INDEX)


def _hybrid(index: VectorIndex, text: str, version: int | None = None) -> list[str]:
    return [h.chunk_id for h in index.search(text, k=10, mode="hybrid", version=version).hits]


def _offline(index: VectorIndex, text: str, fusion: Fusion, version: int | None = None) -> list[str]:
    dense = index.search(text, k=ft.DEPTH, mode="dense", version=version).hits
    fts = index.search(text, k=ft.DEPTH, mode="fts", version=version).hits
    return [h.chunk_id for h in fuse(dense, fts, fusion, 10)]


def test_the_stored_fusion_drives_search_and_moves_with_the_index_version(index: VectorIndex, built) -> None:
    root, questions = built
    texts = [q.text for q in questions[:25]]
    plain = Fusion(rrf_k=index.settings.index.rrf_k)
    first = index.version
    assert index.fusion() == plain and index.fusion_record() is None
    assert [_hybrid(index, t) for t in texts] == [_offline(index, t, plain) for t in texts]

    tuned = Fusion("score", normalise="zscore", fts_weight=1.5, doc_weight=0.5, doc_key="title")
    assert any(_offline(index, t, tuned) != _offline(index, t, plain) for t in texts)  # a choice that matters
    stored = index.store_fusion(tuned, {"by": "test", "questions": 25})
    assert stored > first and index.version == stored and index.published_versions()[-1] == stored
    assert index.count_rows(stored) == index.count_rows(first)  # same chunks, new metadata
    assert index.fusion() == tuned and index.fusion_record()["chosen"] == {"by": "test", "questions": 25}
    assert [_hybrid(index, t) for t in texts] == [_offline(index, t, tuned) for t in texts]
    assert [_hybrid(index, t, first) for t in texts] == [_offline(index, t, plain, first) for t in texts]  # the past
    fresh = VectorIndex.open(index.settings, INDEX)  # another process would read the same
    assert fresh.fusion() == tuned and _hybrid(fresh, texts[0]) == _offline(fresh, texts[0], tuned)
    entry = index.versions()[-1]
    assert (entry["version"], entry["kind"], entry["summary"]["fusion"]) == (stored, "fusion", tuned.to_dict())

    # a later build keeps the fusion: the choice belongs to the index, not to one set of rows
    extra = root / "extra.json"
    extra.write_text(json.dumps({"version": "1.1", "data": [{"title": "Zebra_facts", "paragraphs": [
        {"context": "Zebras are African equines with black and white stripes.", "qas": []}]}]}))
    rebuilt = build_index(index.settings, [extra], INDEX)
    assert rebuilt["version"] > stored and index.fusion(rebuilt["version"]) == tuned

    # rollback to the first version restores its fusion (none stored: plain RRF)
    restored = index.rollback(first)
    assert index.fusion(restored) == plain and index.fusion_record(restored) is None
    assert _hybrid(index, texts[1]) == _offline(index, texts[1], plain)
    assert index.fusion(stored) == tuned  # time travel to the tuned version still fuses as it did
    cleared = index.clear_fusion("test")
    assert index.fusion(cleared) == plain


def test_an_unreadable_stored_fusion_falls_back_to_plain_rrf_and_says_so(index: VectorIndex, built, caplog) -> None:
    _, questions = built
    table = index._table
    table.to_lance().update_schema_metadata({"llmfti.fusion": '{"fusion": {"method": "quantum"}}'})
    table.checkout_latest()
    broken = index.record_build("fusion", {"text": "written by hand"})
    with caplog.at_level("WARNING"):
        hits = _hybrid(index, questions[0].text)
    assert hits == _offline(index, questions[0].text, Fusion(rrf_k=index.settings.index.rrf_k), broken)
    assert "method 'quantum'" in caplog.text and "plain RRF" in caplog.text
    with pytest.raises(Exception, match="unreadable.*tune-fusion"):
        index.fusion_record()


def test_tuning_reports_on_held_out_questions_what_search_then_does(index: VectorIndex, built) -> None:
    _, questions = built
    result = ft.tune_index(index, questions, source="test")
    tuning, held_out = ft.split(questions)
    assert result["held_out"]["chosen"]["questions"] == len(held_out) > 0
    assert result["tuning"]["chosen"]["questions"] == len(tuning) > 0
    assert {q.group for q in (questions[i] for i in tuning)}.isdisjoint(questions[i].group for i in held_out)
    stage_two = len(ft.chunk_grid()) + ft.STAGE_TWO_BASES * len(ft.document_grid(Fusion()))
    stage_three = len(ft.SENTENCE_WEIGHTS) * len(ft.COVERAGE_WEIGHTS) - 1  # per base: the tuned one and plain RRF
    assert result["candidates"] in (stage_two + stage_three, stage_two + 2 * stage_three)
    chosen = Fusion.from_dict(result["chosen"])
    if result["improves_on_held_out"]:
        assert result["stored_version"] == index.version and index.fusion() == chosen
    else:
        assert result["stored_version"] is None and "not stored" in result["decision"]
    # the held-out figures are what real hybrid searches with the chosen fusion measure
    hit5 = rr = 0.0
    vectors = index.embedder().encode([q.text for q in questions])
    for i in held_out:
        q = questions[i]
        docs = [h.doc_id for h in fuse(*ft.collect(index, [q], vectors[i:i + 1])[0], chosen, 10, q.text, vectors[i])]
        rank = next((r for r, d in enumerate(docs, start=1) if d in q.gold), None)
        hit5 += rank is not None and rank <= 5
        rr += 1 / rank if rank else 0.0
    assert result["held_out"]["chosen"]["hit@5"] == round(hit5 / len(held_out), 4)
    assert result["held_out"]["chosen"]["mrr@10"] == round(rr / len(held_out), 4)
    assert result["held_out"]["default"]["hit@5"] > 0.5  # a real index answering real questions


def test_dry_run_stores_nothing(index: VectorIndex, built) -> None:
    _, questions = built
    before = index.version
    result = ft.tune_index(index, questions, source="test", store=False)
    assert result["stored_version"] is None and result["decision"].startswith("not stored (--dry-run)")
    assert index.version == before and index.fusion_record() is None


def test_questions_about_another_index_or_too_few_are_refused(index: VectorIndex, built) -> None:
    _, questions = built
    strangers = [ft.Question(q.text, frozenset(["Elsewhere#0"])) for q in questions]
    with pytest.raises(InvalidInputError, match="only 0 of .* have a gold document in index 'sq'"):
        ft.tune_index(index, strangers, source="test")
    with pytest.raises(InvalidInputError, match="at least 20 questions on each side"):
        ft.tune_index(index, questions[:15], source="test")
    assert index.fusion_record() is None


def test_cli_tune_fusion(index: VectorIndex, built, tmp_path: Path) -> None:
    _, questions = built
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text("\n".join(json.dumps({"question": q.text, "doc_ids": sorted(q.gold)}) for q in questions))
    out = subprocess.run([LLMFTI, "index", "tune-fusion", INDEX, "--questions", str(qfile), "--json"],
                         capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and len(lines) == 1, out.stdout + out.stderr
    result = json.loads(lines[0])
    assert {"chosen", "default", "held_out", "tuning", "stored_version", "decision", "questions"} <= set(result)
    assert result["questions"] == len(questions)
    if result["stored_version"] is not None:
        assert VectorIndex.open(index.settings, INDEX).fusion() == Fusion.from_dict(result["chosen"])
    versions = subprocess.run([LLMFTI, "index", "versions", "--index", INDEX], capture_output=True, text=True,
                              timeout=300)
    assert versions.returncode == 0, versions.stderr
    assert ("fusion:" in versions.stdout) == (result["stored_version"] is not None)

    both = subprocess.run([LLMFTI, "index", "tune-fusion", INDEX, "--json"], capture_output=True, text=True,
                          timeout=300)
    error = json.loads(both.stdout)["error"]
    assert both.returncode != 0 and "--questions FILE or --suite NAME" in error["message"]

    reset = subprocess.run([LLMFTI, "index", "tune-fusion", INDEX, "--reset", "--json"], capture_output=True,
                           text=True, timeout=300)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    reopened = VectorIndex.open(index.settings, INDEX)
    assert json.loads(reset.stdout)["version"] == reopened.version and reopened.fusion_record() is None
    assert reopened.fusion() == Fusion(rrf_k=index.settings.index.rrf_k)


def test_the_grid_scorer_measures_what_search_fusion_does(index: VectorIndex, built) -> None:
    """FusionBatch (numpy, for the grid) against evaluate() (search's own fuse) on real rankings."""
    from llmfti.index.fusion_batch import FusionBatch

    _, questions = built
    rankings = ft.collect(index, questions)
    batch = FusionBatch(rankings, questions)
    half = ft.split(questions)[0]
    fusions = [Fusion(rrf_k=1, fts_weight=0.5), Fusion(rrf_k=60), Fusion("score"), Fusion("score", fts_weight=2.0),
               Fusion("score", normalise="zscore", fts_weight=1.25)]
    fusions += [replace(f, doc_weight=w, doc_key=key, doc_aggregate=agg, doc_top=top)
                for f in fusions[::2] for key in ("doc_id", "title") for agg, top in (("max", 3), ("sum", 2))
                for w in (0.3, 2.0)]
    for fusion in fusions:
        assert batch.metrics(fusion, half) == pytest.approx(ft.evaluate(fusion, rankings, questions, half)), fusion
    assert len({round(batch.metrics(f)["mrr@10"], 6) for f in fusions}) > 3  # the fusions differ on this index


def test_hybrid_search_reads_whole_rows_only_for_the_best_and_ranks_as_fusing_whole_rows(index: VectorIndex,
                                                                                         built) -> None:
    """Hybrid search scores its candidates on row ids (plus only what the fusion needs) and reads the rows of
    the best alone: the hits, their order (ties by chunk id), scores and texts equal fusing whole rows."""
    from llmfti.index.vector_index import SENTENCES, search_where

    _, questions = built
    number, dataset = index._dataset_at(None)
    where = search_where(index.settings, None)
    vectors = index.embedder().encode([q.text for q in questions[:40]])
    fusions = [Fusion(), Fusion(rrf_k=1, fts_weight=0.5), Fusion("score", normalise="zscore"),
               Fusion(doc_weight=0.5, doc_key="title", doc_aggregate="sum", doc_top=2),
               Fusion(doc_weight=2.0), Fusion(sentence_weight=1.0, coverage_weight=1.0)]
    assert SENTENCES in dataset.schema.names
    for fusion in fusions:
        for question, vector in zip(questions[:40], vectors, strict=True):
            searched = VectorIndex.ranked(dataset, "hybrid", question.text, vector, where, 10, fusion,
                                          with_vectors=True)
            extra = ["embedding", SENTENCES]
            whole = fuse(VectorIndex._dense(dataset, vector, where, 50, extra),
                         VectorIndex._fts(dataset, question.text, where, 50, extra), fusion, 10, question.text, vector)
            assert [(h.chunk_id, h.doc_id, h.text, h.metadata) for h in searched] == \
                [(h.chunk_id, h.doc_id, h.text, h.metadata) for h in whole], (fusion, question.text)
            assert [h.score for h in searched] == pytest.approx([h.score for h in whole])
            assert all(h.vector is not None and len(h.vector) == vector.shape[0] for h in searched)


def test_rows_by_row_id_without_take_rows_come_from_a_row_id_scan(index: VectorIndex) -> None:
    """``_take``'s fallback (a pylance without ``_take_rows``) reads the same rows as ``_take_rows``."""
    from llmfti.index.vector_index import _take

    _, dataset = index._dataset_at(None)
    row_ids = dataset.to_table(columns=[], with_row_id=True, limit=7).column("_rowid").to_pylist()[::-1]

    class WithoutTakeRows:  # the real dataset, minus the private method
        def to_table(self, **kwargs):  # noqa: ANN003, ANN202
            return dataset.to_table(**kwargs)

    columns = ["chunk_id", "text"]
    taken = {r["_rowid"]: r for r in _take(dataset, row_ids, columns).to_pylist()}
    scanned = {r["_rowid"]: r for r in _take(WithoutTakeRows(), row_ids, columns).to_pylist()}
    assert taken == scanned and sorted(taken) == sorted(row_ids)
