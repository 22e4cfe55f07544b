"""The CLI surface other scripts rely on: exact JSON keys, one object on stdout, clean errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.documents import write_corpus

LLMFTI = str(Path(sys.executable).with_name("llmfti"))
BUILD_KEYS = {"index", "version", "docs_added", "docs_updated", "docs_deleted", "docs_unchanged", "chunks_embedded",
              "quarantined", "sentence_seconds", "seconds"}


def _text(*args: str, rc: int = 0) -> str:
    out = subprocess.run([LLMFTI, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == rc, out.stdout + out.stderr
    return " ".join((out.stdout + out.stderr).split())


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
    tagged = _text("index", "tag", "again", "--index", "kb")  # without --json: a sentence, not JSON
    assert f"tag again -> version {built['version']}" in tagged and "{" not in tagged
    assert "no results" in _text("search", "xylophonequasar", "--index", "kb", "--mode", "fts")
    # an intermediate commit of the build is not a version users can name; the error lists those they can
    hidden = _json("search", "bees", "--index", "kb", "--version", str(built["version"] - 1))["error"]
    assert hidden["code"] == "not_found" and f"one of the versions {built['version']} " in hidden["message"]
    (corpus / "bees.md").unlink()
    rebuilt = _json("index", "build", str(corpus), "--index", "kb")
    assert rebuilt["docs_deleted"] == 1 and rebuilt["chunks_embedded"] == 0

    versions = _json("index", "versions", "--index", "kb")
    assert [v["version"] for v in versions["versions"]] == [built["version"], rebuilt["version"]]
    assert versions["versions"][0]["tags"] == ["again", "first"]

    old = _json("search", "queen of the colony", "--index", "kb", "--k", "1", "--version", "first")
    assert old["results"][0]["doc_id"] == "corpus/bees.md"
    rolled = _json("index", "rollback", "first", "--index", "kb")
    assert rolled["restored_version"] == built["version"] and rolled["version"] > rebuilt["version"]
    again = _text("index", "rollback", str(rebuilt["version"]), "--index", "kb")
    assert f"the content of version {rebuilt['version']} is now the latest" in again and "{" not in again

    error = _json("search", "x", "--index", "missing")
    assert error["error"]["code"] == "not_found" and "llmfti index build" in error["error"]["message"]


def test_a_missing_build_path_fails_with_the_fix(data_dir: Path) -> None:
    message = _text("index", "build", "/no/such/path", "--index", "kb", rc=1)
    assert "/no/such/path: no such file or folder" in message and "fix: check the path" in message
    error = _json("index", "build", "/no/such/path", "--index", "kb")["error"]
    assert error["code"] == "not_found"
    assert not data_dir.exists() or not any(data_dir.rglob("kb__chunks*"))  # nothing written


def test_serve_on_a_taken_port_fails_before_printing_its_url(data_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = _text("serve", "--dev", "--no-samples", "--port", str(port), rc=1)
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in message
    assert f"--port {port + 1}" in message and f"make demo PORT={port + 1}" in message
    assert "llmfti agent on" not in message
