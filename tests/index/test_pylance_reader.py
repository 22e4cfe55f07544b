"""``llmfti search``'s fast path (llmfti/index/pylance_reader.py) answers exactly what VectorIndex answers:
same rows, order and scores, for every mode, published version, tag, rollback, tenant and filter; it
declines (None) whatever VectorIndex must answer or refuse itself; and a CLI search imports no lancedb,
torch, sentence-transformers or pandas, yet falls back to VectorIndex with the same answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmfti.config import load_settings
from llmfti.filters import Filter
from llmfti.index import VectorIndex
from llmfti.index.pylance_reader import query_embedder, search_published
from pipelines.index_build import build_index
from tests.conftest import SQUAD_DEV
from tests.documents import write_corpus
from tests.test_storage_s3 import s3_endpoint, s3_settings  # noqa: F401 - the moto S3 server fixtures

LLMFTI = str(Path(sys.executable).with_name("llmfti"))
QUERIES = ["Which NFL team represented the AFC at Super Bowl 50?", "Where did the Broncos practice?",
           "honey bees queen", "How do plants make sugar from light?", "magma volcano", "Super Bowl 50",
           "Who was the MVP?", "xylophonequasar"]
FILTERS = [[], [Filter.parse("doc_id prefix Super_Bowl_50#1")], [Filter.parse("title=Honey bees")]]


def _squad(folder: Path, paragraphs: int) -> Path:
    article = json.loads(SQUAD_DEV.read_text(encoding="utf-8"))["data"][0]  # Super_Bowl_50
    rows = [{"id": f"{article['title']}#{i}", "text": p["context"]}
            for i, p in enumerate(article["paragraphs"][:paragraphs])]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "squad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, embedder):  # noqa: ARG001 - the session's loaded model
    """An index with two builds (the first tagged ``first``) and another tenant's documents."""
    root = tmp_path_factory.mktemp("reader")
    settings = load_settings(data_dir=root / "data")
    corpus = write_corpus(root / "corpus")
    squad = _squad(root / "squad", 30)
    first = build_index(settings, [corpus, squad])["version"]
    VectorIndex.open(settings).tag("first", first)
    (corpus / "bees.md").write_text("# Honey bees\n\nA colony has one queen and thousands of workers.\n")
    second = build_index(settings, [corpus, squad])["version"]
    return settings, first, second


def _same(settings, query: str, **kwargs) -> list:
    """search_published(...) == VectorIndex.search(...) on the same query vector; returns the hits."""
    fast = search_published(settings, query, **kwargs)
    assert fast is not None, kwargs
    vector = None
    if kwargs.get("mode") in ("dense", "hybrid"):
        vector = query_embedder(settings).encode([query])[0]
    args = {k: v for k, v in kwargs.items() if k != "index"}
    slow = VectorIndex.open(settings, kwargs.get("index")).search(query, vector=vector, **args)
    assert (fast.version, fast.mode) == (slow.version, slow.mode)
    assert fast.hits == slow.hits, (query, kwargs)  # chunk ids, doc ids, scores, texts, metadata; in order
    return fast.hits


def test_same_results_as_vector_index(built) -> None:
    settings, first, second = built
    found = 0
    for mode in ("fts", "dense", "hybrid"):
        for query in QUERIES:
            for version in (None, first, "first", second):
                for filters in FILTERS:
                    found += len(_same(settings, query, mode=mode, k=5, version=version, filters=filters))
            _same(settings, query, mode=mode, k=3, tenant="acme")
        assert [h.doc_id for h in _same(settings, "How do plants make sugar from light?", mode=mode, k=10,
                                        tenant="acme")] == ["kb-2"]
    assert found > 500  # not a comparison of empty lists
    old = search_published(settings, "queen", mode="fts", k=10, version="first").hits
    new = search_published(settings, "queen", mode="fts", k=10).hits
    assert "single queen" in old[0].text and "one queen" in new[0].text  # time travel reads the old rows


def test_newest_published_version_only(built, tmp_path: Path) -> None:
    """A commit not yet published (a build in progress) is invisible; a rollback is the new newest version."""
    settings, first, second = built
    idx = VectorIndex.open(settings)
    idx.apply(None, replace=[("default", "corpus/volcano.txt")])  # deletes the document: an unpublished commit
    assert idx.head_version > second
    hits = _same(settings, "magma volcano", mode="fts", k=3)
    assert hits[0].doc_id == "corpus/volcano.txt" and search_published(settings, "magma", mode="fts").version == second
    rolled = idx.rollback("first")
    assert search_published(settings, "queen", mode="fts").version == rolled
    assert "single queen" in _same(settings, "queen", mode="hybrid", k=3)[0].text
    assert search_published(settings, "queen", mode="fts", version=idx.head_version - 1) is None


def test_stored_fusion(built) -> None:
    """Hybrid search fuses as the version's stored fusion says (llmfti index tune-fusion), like VectorIndex."""
    from llmfti.index.fusion import Fusion

    settings, _, _ = built
    idx = VectorIndex.open(settings)
    plain = search_published(settings, "Who was the MVP of Super Bowl 50?", mode="hybrid", k=8)
    stored = idx.store_fusion(Fusion(method="score", dense_weight=0.3, fts_weight=1.0, doc_weight=0.5),
                              {"by": "test"})
    tuned = _same(settings, "Who was the MVP of Super Bowl 50?", mode="hybrid", k=8)
    assert search_published(settings, "MVP", mode="hybrid").version == stored
    assert [h.score for h in tuned] != [h.score for h in plain.hits]  # the stored fusion is not plain RRF
    assert _same(settings, "Who was the MVP of Super Bowl 50?", mode="hybrid", k=8, version=plain.version) == \
        plain.hits  # the version before keeps its own fusion
    idx.clear_fusion("test over")


def test_stored_sentence_fusion(built) -> None:
    """A fusion with sentence evidence reads the stored sentence vectors on the CLI's pylance path too."""
    from llmfti.index.fusion import Fusion

    settings, _, _ = built
    idx = VectorIndex.open(settings)
    query = "Who was the MVP of Super Bowl 50?"
    plain = _same(settings, query, mode="hybrid", k=8)
    idx.store_fusion(Fusion(method="score", normalise="zscore", sentence_weight=1.5, coverage_weight=1.0),
                     {"by": "test"})
    with_sentences = _same(settings, query, mode="hybrid", k=8)
    assert [h.score for h in with_sentences] != [h.score for h in plain]
    assert with_sentences[0].sentence_vectors is not None
    idx.clear_fusion("test over")


def test_declines_what_vector_index_answers_itself(built) -> None:
    settings, first, _ = built
    assert search_published(settings, "bees", index="missing") is None
    assert search_published(settings, "bees", version=first - 1) is None  # a build's intermediate commit
    assert search_published(settings, "bees", version=10_000) is None
    assert search_published(settings, "bees", version="no-such-tag") is None
    assert search_published(settings, "bees", k=settings.index.max_k + 1) is None
    assert search_published(settings, "   ") is None
    other = settings.model_copy(update={"embedder": settings.embedder.model_copy(update={"model": "/no/such/model"})})
    for mode in ("fts", "dense", "hybrid"):
        assert search_published(other, "bees", mode=mode) is None  # VectorIndex reports the embedder mismatch
    registry = settings.model_copy(update={"embedder": settings.embedder.model_copy(
        update={"model": "registry:emb@production"})})
    assert search_published(registry, "bees", mode="fts") is None


def _run_cli(args: list[str], data_dir: Path, *, full_path: bool = False) -> tuple[dict, set[str]]:
    """(the --json answer, the heavy modules loaded when the process exits) of one cold CLI run;
    ``full_path``: as for a model the numpy encoder cannot run (VectorIndex + sentence-transformers)."""
    heavy = ("lancedb", "torch", "transformers", "sentence_transformers", "pandas")
    code = ("import atexit, sys\n"
            + ("import llmfti.index.pylance_reader as r; r.query_embedder = lambda settings: None\n" if full_path
               else "")
            + f"atexit.register(lambda: print('LOADED:' + ','.join(m for m in {heavy!r} if m in sys.modules), "
            "file=sys.stderr))\n"
            f"sys.argv = {['llmfti', *args, '--json']!r}\n"
            "from llmfti.cli.main import run\nrun()\n")
    env = {**os.environ, "LLMFTI_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    loaded = [line for line in out.stderr.splitlines() if line.startswith("LOADED:")]
    assert loaded, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), set(filter(None, loaded[-1][7:].split(",")))


def test_cli_search_loads_no_lancedb_or_model(built) -> None:
    settings, first, _ = built
    for mode in ("fts", "dense", "hybrid"):
        answer, heavy = _run_cli(["search", "Who was the MVP?", "--mode", mode, "--k", "3", "--version", "first"],
                                 settings.data_dir)
        assert heavy == set(), mode
        assert answer["version"] == first and answer["results"][0]["doc_id"].startswith("Super_Bowl_50#"), answer
    answer, heavy = _run_cli(["search", "bees", "--version", "999999"], settings.data_dir)  # the full path's error
    assert answer["error"]["code"] == "not_found" and "lancedb" in heavy
    fast, _ = _run_cli(["search", "Who was the MVP?", "--mode", "hybrid", "--k", "3"], settings.data_dir)
    full, heavy = _run_cli(["search", "Who was the MVP?", "--mode", "hybrid", "--k", "3"], settings.data_dir,
                           full_path=True)  # after the lean `import lance`, lancedb and torch still work
    assert {"lancedb", "torch", "sentence_transformers"} <= heavy
    assert [r["chunk_id"] for r in full["results"]] == [r["chunk_id"] for r in fast["results"]]
    assert [r["score"] for r in full["results"]] == pytest.approx([r["score"] for r in fast["results"]], abs=1e-6)


def test_object_store(s3_settings, tmp_path: Path, embedder) -> None:  # noqa: F811, ARG001
    """storage.uri = s3://... with storage.options (endpoint, allow_http, region): the reader opens the same
    tables as lancedb does, versions and tags included; nothing is read from or written to data_dir."""
    settings = s3_settings
    corpus = write_corpus(tmp_path / "corpus")
    first = build_index(settings, [corpus])["version"]
    VectorIndex.open(settings).tag("first", first)
    (corpus / "bees.md").write_text("# Honey bees\n\nA colony has one queen and thousands of workers.\n")
    second = build_index(settings, [corpus])["version"]
    for mode in ("fts", "dense", "hybrid"):
        for version in (None, "first"):
            assert _same(settings, "honey bees queen", mode=mode, k=3, version=version)
    assert search_published(settings, "queen", mode="fts", version="first").hits[0].text.count("single queen")
    assert not (Path(settings.data_dir) / "lancedb").exists()
    answer, heavy = _run_cli(["search", "queen", "--mode", "fts", "--k", "1"], settings.data_dir)
    assert heavy == set() and answer["version"] == second and "one queen" in answer["results"][0]["text"]
