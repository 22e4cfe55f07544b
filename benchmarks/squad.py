"""SQuAD v1.1 dev as the benchmarks use it: paragraphs with their llmfti doc ids, and questions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from benchmarks.reporting import REPO
from llmfti.text.loaders.squad import squad_doc_id

SQUAD_DEV = REPO.parent / "shared" / "data" / "squad-v1.1-dev" / "dev-v1.1.json"


@dataclass(frozen=True)
class Paragraph:
    doc_id: str  # the id the SQuAD importer gives it: f"{title}#{paragraph_index}"
    title: str
    index: int
    context: str


@dataclass(frozen=True)
class Question:
    qid: str
    text: str
    doc_id: str  # the gold paragraph


@cache
def _raw(path: Path = SQUAD_DEV) -> dict:
    if not path.is_file():
        raise SystemExit(f"SQuAD dev not found at {path}; it is expected beside the repository in ../shared/data")
    return json.loads(path.read_text(encoding="utf-8"))


def paragraphs() -> list[Paragraph]:
    return [Paragraph(squad_doc_id(a["title"], i), a["title"], i, p["context"])
            for a in _raw()["data"] for i, p in enumerate(a["paragraphs"])]


def questions() -> list[Question]:
    return [Question(q["id"], q["question"], squad_doc_id(a["title"], i))
            for a in _raw()["data"] for i, p in enumerate(a["paragraphs"]) for q in p["qas"]]
