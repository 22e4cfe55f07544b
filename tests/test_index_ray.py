"""``index build --engine ray``: the same build as the local engine, with its steps on Ray Data workers.

One small local Ray (2 CPUs, no dashboard) serves the whole module; it takes ~10 s to start and each
embedding worker loads MiniLM once (~10 s on the shared cores), so the Ray tests are marked slow.
The engine's option checks run in the default suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmfti.errors import ConfigError
from tests.documents import write_corpus

LLMFTI = str(Path(sys.executable).with_name("llmfti"))
LONG_DOC = " ".join(
    f"Paragraph {i} says that the river number {i} flows north for {i * 7} kilometres before it meets the sea."
    for i in range(60)
)


def _cli(*args: str) -> tuple[int, dict]:
    out = subprocess.run([LLMFTI, *args, "--json"], capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout + out.stderr
    return out.returncode, json.loads(lines[0])


def test_unknown_engine_is_refused_before_anything_loads(tmp_path: Path, data_dir: Path) -> None:
    code, payload = _cli("index", "build", str(tmp_path), "--engine", "spark")
    assert code == 1
    assert "unknown index build engine 'spark'" in payload["error"]["message"]
    assert "local, ray" in payload["error"]["message"]


def test_an_address_where_no_ray_listens_fails_fast(tmp_path: Path, data_dir: Path) -> None:
    """Ray itself would retry for minutes; the build says what is wrong at once and writes nothing."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write_corpus(tmp_path / "corpus")
    code, payload = _cli("index", "build", str(tmp_path / "corpus"), "--engine", "ray", "--ray-address",
                         f"127.0.0.1:{port}")
    assert code == 1 and f"nothing answers at the Ray address '127.0.0.1:{port}'" in payload["error"]["message"]
    assert not (data_dir / "lancedb").exists()


def test_ray_options_without_the_ray_engine_are_refused() -> None:
    from pipelines.index_build_ray import check_engine_options

    with pytest.raises(ConfigError, match="--ray-address only apply to --engine ray"):
        check_engine_options("local", "ray://head:10001", 0.0, None)
    with pytest.raises(ConfigError, match="--num-gpus, --workers only apply"):
        check_engine_options("local", None, 1.0, 2)
    with pytest.raises(ConfigError, match="--workers 0 is below 1"):
        check_engine_options("ray", None, 0.0, 0)
    with pytest.raises(ConfigError, match="--num-gpus -1.0 is negative"):
        check_engine_options("ray", None, -1.0, None)
    check_engine_options("ray", None, 0.5, 2)  # fine


def _corpus(folder: Path) -> Path:
    write_corpus(folder)
    (folder / "junk.bin").write_bytes(b"\x00\x01")  # quarantined by both engines
    (folder / "rivers.txt").write_text(LONG_DOC + "\n")  # several chunks with overlap
    with (folder / "many.jsonl").open("w") as out:  # enough documents for several batches and workers
        for i in range(70):
            out.write(json.dumps({"id": f"note-{i}", "text": f"Note {i}: the lighthouse keeper logged {i} ships "
                                  f"passing the cape on day {i % 7} of the week."}) + "\n")
    return folder


def _rows(settings, name: str) -> dict[str, dict]:
    from llmfti.index.vector_index import table_name
    from llmfti.lance import connect

    table = connect(settings).open_table(table_name(name)).to_arrow().to_pylist()
    return {row["chunk_id"]: row for row in table}


def _assert_same_index(a: dict[str, dict], b: dict[str, dict]) -> None:
    import numpy as np

    assert a.keys() == b.keys()
    for chunk_id, row in a.items():
        other = b[chunk_id]
        for column in ("doc_id", "text", "metadata", "tenant", "source", "title", "content_hash", "doc_hash"):
            assert row[column] == other[column], (chunk_id, column)
        u, v = np.asarray(row["embedding"]), np.asarray(other["embedding"])
        assert float(u @ v / np.linalg.norm(u) / np.linalg.norm(v)) >= 0.9999, chunk_id
        s, t = np.asarray(row["sentence_embeddings"]), np.asarray(other["sentence_embeddings"])  # driver-embedded
        assert s.shape == t.shape and s.shape[0] >= 1 and np.allclose(s, t, atol=1e-5), chunk_id


def _summary(s: dict) -> dict:
    return {k: v for k, v in s.items() if k not in ("seconds", "sentence_seconds")}


@pytest.mark.slow
def test_cli_builds_with_a_local_ray_and_stops_it(tmp_path: Path, data_dir: Path) -> None:
    """The command starts a small local Ray, builds, and shuts it down (runs before the module's Ray)."""
    corpus = _corpus(tmp_path / "corpus")
    code, built = _cli("index", "build", str(corpus), "--index", "kb", "--engine", "ray", "--workers", "1")
    assert code == 0, built
    assert built["docs_added"] == 6 + 1 + 70 and built["quarantined"] == 1 and built["chunks_embedded"] > 77
    code, found = _cli("search", "queen of the colony", "--index", "kb", "--k", "1")
    assert found["results"][0]["doc_id"] == "corpus/bees.md"


@pytest.fixture(scope="module")
def ray_local():
    """One small local Ray for the module (reused by every RayEngine build below)."""
    import torch

    from pipelines.index_build_ray import ray_session

    torch.set_num_threads(1)
    with ray_session() as startup_s:
        yield startup_s


@pytest.mark.slow
def test_ray_and_local_engines_build_the_same_index_and_rebuild_only_what_changed(
    ray_local: float, tmp_path: Path
) -> None:
    from llmfti.config import load_settings
    from llmfti.index import history
    from llmfti.lance import connect
    from pipelines.index_build import build_index
    from pipelines.index_build_ray import RayEngine

    corpus = _corpus(tmp_path / "corpus")
    local_settings = load_settings(data_dir=tmp_path / "local")
    ray_settings = load_settings(data_dir=tmp_path / "ray")
    engine = RayEngine(workers=2)

    local = build_index(local_settings, [corpus], "kb")
    on_ray = build_index(ray_settings, [corpus], "kb", engine=engine)
    assert _summary(on_ray) == _summary(local)
    assert local["docs_added"] == 77 and local["quarantined"] == 1
    before = _rows(ray_settings, "kb")
    _assert_same_index(before, _rows(local_settings, "kb"))
    assert engine.timings["workers"] == 2 and engine.timings["worker_model_load_s"] > 0
    quarantined = [history.quarantined(connect(s), "kb") for s in (local_settings, ray_settings)]
    assert [(q["path"], q["reason"]) for q in quarantined[0]] == [(q["path"], q["reason"]) for q in quarantined[1]]

    # one sentence of the long document changes, one note is added, one document is deleted
    (corpus / "rivers.txt").write_text(LONG_DOC.replace("river number 55 flows north", "river number 55 flows "
                                                        "south") + "\n")
    with (corpus / "many.jsonl").open("a") as out:
        out.write(json.dumps({"id": "note-new", "text": "A new note about the harbour."}) + "\n")
    (corpus / "bees.md").unlink()

    local = build_index(local_settings, [corpus], "kb")
    on_ray = build_index(ray_settings, [corpus], "kb", engine=engine)
    assert _summary(on_ray) == _summary(local)
    assert (on_ray["docs_added"], on_ray["docs_updated"], on_ray["docs_deleted"]) == (1, 1, 1)
    after = _rows(ray_settings, "kb")
    _assert_same_index(after, _rows(local_settings, "kb"))
    new_ids = after.keys() - before.keys()
    assert on_ray["chunks_embedded"] == len(new_ids)  # only chunks that did not exist before were embedded
    rivers = [r for r in after.values() if r["doc_id"] == "corpus/rivers.txt"]
    assert 0 < sum(r["chunk_id"] in new_ids for r in rivers) < len(rivers)  # unchanged chunks kept their vectors

    unchanged = build_index(ray_settings, [corpus], "kb", engine=engine)
    assert unchanged["chunks_embedded"] == 0 and unchanged["version"] == on_ray["version"]


@pytest.mark.slow
def test_gpu_workers_on_a_cluster_without_gpus_are_refused(ray_local: float) -> None:
    from pipelines.index_build_ray import check_gpus

    with pytest.raises(ConfigError, match=r"needs 2 GPU\(s\); the Ray cluster has 0"):
        check_gpus(1.0, 2)
