"""The CLI surface other scripts rely on: exact JSON keys, one object on stdout, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.documents import write_corpus

LLMFTI = str(Path(sys.executable).with_name("llmfti"))
BUILD_KEYS = {"index", "version", "docs_added", "docs_updated", "docs_deleted", "docs_unchanged", "chunks_embedded",
              "quarantined", "seconds"}


def _json(*args: str) -> dict:
    out = subprocess.run([LLMFTI, *args, "--json"], capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout + out.stderr  # exactly one JSON object on stdout
    return json.loads(lines[0])


def test_index_commands_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "junk.bin").write_bytes(b"\x00\x01")
    built = _json("index", "build", str(corpus), "--index", "kb")
    assert set(built) == BUILD_KEYS and built["docs_added"] == 6 and built["quarantined"] == 1
    (bad,) = _json("index", "quarantine", "--index", "kb")["quarantined"]
    assert bad["path"].endswith("junk.bin") and "unsupported file type" in bad["reason"] and bad["at"]

    found = _json("search", "queen of the colony", "--index", "kb", "--k", "2", "--mode", "hybrid")
    assert set(found) >= {"version", "results"} and found["version"] == built["version"]
    assert set(found["results"][0]) == {"chunk_id", "doc_id", "score", "text", "metadata"}
    assert found["results"][0]["doc_id"] == "corpus/bees.md"

    assert _json("index", "tag", "first", "--index", "kb")["version"] == built["version"]
    (corpus / "bees.md").unlink()
    rebuilt = _json("index", "build", str(corpus), "--index", "kb")
    assert rebuilt["docs_deleted"] == 1 and rebuilt["chunks_embedded"] == 0

    versions = _json("index", "versions", "--index", "kb")
    assert [v["version"] for v in versions["versions"]] == [built["version"], rebuilt["version"]]
    assert versions["versions"][0]["tags"] == ["first"]

    old = _json("search", "queen of the colony", "--index", "kb", "--k", "1", "--version", "first")
    assert old["results"][0]["doc_id"] == "corpus/bees.md"
    rolled = _json("index", "rollback", "first", "--index", "kb")
    assert rolled["restored_version"] == built["version"] and rolled["version"] > rebuilt["version"]

    error = _json("search", "x", "--index", "missing")
    assert error["error"]["code"] == "not_found" and "llmfti index build" in error["error"]["message"]
