"""Loaders: every format yields documents; every bad input is quarantined with a reason."""

from __future__ import annotations

import json
from pathlib import Path

from llmfti.text.document import Document, Quarantined
from llmfti.text.loaders import discover
from tests.conftest import SQUAD_DEV
from tests.documents import write_corpus


def _discover(*paths: Path, max_file_bytes: int = 10_000_000) -> tuple[dict[str, Document], list[Quarantined]]:
    items = list(discover(list(paths), tenant="default", max_file_bytes=max_file_bytes, max_doc_chars=1_000_000))
    docs = {i.doc_id: i for i in items if isinstance(i, Document)}
    return docs, [i for i in items if isinstance(i, Quarantined)]


def test_every_supported_format_loads(tmp_path: Path) -> None:
    docs, bad = _discover(write_corpus(tmp_path / "corpus"))
    assert bad == []
    assert set(docs) == {"corpus/bees.md", "corpus/volcano.txt", "corpus/chess.html", "corpus/tides.pdf",
                         "kb-1", "kb-2"}
    assert docs["corpus/bees.md"].title == "Honey bees"
    assert "gravity of the Moon" in docs["corpus/tides.pdf"].text
    html = docs["corpus/chess.html"]
    assert html.title == "Chess" and "knight" in html.text
    assert "tracking" not in html.text and "Home | About" not in html.text and "Copyright" not in html.text
    assert docs["kb-1"].metadata["lang"] == "en" and docs["kb-2"].tenant == "acme" and docs["kb-1"].tenant == "default"


def test_bad_files_are_quarantined_with_reasons(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "binary.txt").write_bytes(b"abc\x00\x01\x02")
    (folder / "empty.md").write_text("   \n\n  ")
    (folder / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (folder / "big.txt").write_text("x" * 2000)
    (folder / "image.png").write_bytes(b"\x89PNG")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    (folder / "dangling.md").symlink_to(folder / "missing-target.md")
    (folder / "lines.jsonl").write_text('{"id": "ok", "text": "fine"}\nnot json\n{"id": "", "text": "x"}\n'
                                        '{"id": "ok", "text": "dup"}\n')
    (folder / "other.json").write_text(json.dumps({"hello": "world"}))
    (folder / "good.md").write_text("# Fine\n\nThis one is good.")
    docs, bad = _discover(folder, max_file_bytes=1000)
    assert set(docs) == {"bad/good.md", "ok"}
    reasons = {Path(q.path).name: q.reason for q in bad if not q.path.endswith(".jsonl")}
    assert "binary" in reasons["binary.txt"]
    assert "no text left" in reasons["empty.md"]
    assert "not valid UTF-8" in reasons["latin1.txt"] and "fix" in reasons["latin1.txt"]
    assert "over the limit of 1,000" in reasons["big.txt"]
    assert "unsupported file type '.png'" in reasons["image.png"]
    assert "not a readable PDF" in reasons["broken.pdf"]
    assert "unreadable" in reasons["dangling.md"]
    assert "not SQuAD format" in reasons["other.json"]
    line_reasons = [q.reason for q in bad if Path(q.path).name == "lines.jsonl"]
    assert any("line 2" in r and "invalid JSON" in r for r in line_reasons)
    assert any("line 3" in r and "'id'" in r for r in line_reasons)
    assert any("line 4" in r and "duplicate id" in r for r in line_reasons)
    assert len(bad) == 11  # nothing silently dropped


def test_squad_dev_imports_every_paragraph() -> None:
    docs, bad = _discover(SQUAD_DEV)
    assert bad == []
    assert len(docs) == 2067  # the dataset README's count
    first = docs["Super_Bowl_50#0"]
    assert first.metadata["article"] == "Super_Bowl_50" and first.metadata["paragraph_index"] == 0
    assert first.title == "Super Bowl 50"
