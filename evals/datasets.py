"""Eval datasets: a seeded SQuAD sample (read from ../shared, never copied) and our golden sets."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from evals.suite import DatasetSpec, Suite
from llmfti.errors import NotFoundError


@dataclass(frozen=True)
class EvalRow:
    id: str
    question: str
    answers: list[str]  # acceptable references; the first is "the" reference
    reference_doc_ids: list[str]  # gold documents; their chunk ids are the reference contexts
    history: tuple[str, ...] = ()  # earlier user messages of the conversation (follow-up questions)


def load_rows(suite: Suite, *, full: bool = False) -> list[EvalRow]:
    spec = suite.dataset
    path = suite.resolve(spec.path)
    if not path.is_file():
        raise NotFoundError(f"dataset of suite {suite.name!r} not found at {path}",
                            fix="for the squad suite, ../shared/data/squad-v1.1-dev/ must sit beside the repo")
    loaders = {"squad": _squad, "squad_followups": _squad_followups, "golden": _golden}
    rows = loaders[spec.kind](path)
    return rows if full else _sample(rows, spec)


def dataset_hash(rows: list[EvalRow]) -> str:
    # a row without history hashes as before the field existed, so recorded baselines keep their hash
    records = [{k: v for k, v in asdict(r).items() if k != "history" or v} for r in rows]
    payload = json.dumps(records, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _sample(rows: list[EvalRow], spec: DatasetSpec) -> list[EvalRow]:
    if spec.sample is None or spec.sample >= len(rows):
        return rows
    picked = sorted(random.Random(spec.seed).sample(range(len(rows)), spec.sample))
    return [rows[i] for i in picked]


def _squad(path: Path) -> list[EvalRow]:
    from llmfti.text.loaders.squad import squad_doc_id

    rows = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for index, paragraph in enumerate(article["paragraphs"]):
            doc_id = squad_doc_id(article["title"], index)
            for qa in paragraph["qas"]:
                answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                rows.append(EvalRow(qa["id"], qa["question"], answers, [doc_id]))
    return rows


def article_name(title: str) -> str:
    """How questions name a SQuAD article: "Fresno,_California" -> "Fresno", "Sky_(United_Kingdom)" -> "Sky"."""
    return re.split(r"[,(]", title.replace("_", " "))[0].strip()


def _squad_followups(path: Path) -> list[EvalRow]:
    """Two-turn conversations about one SQuAD article: a question that names the article, then a
    follow-up about the same article with the name replaced by "it" (so, alone, it no longer says
    what it is about). The gold document is the follow-up's paragraph."""
    from llmfti.text.loaders.squad import squad_doc_id

    rows = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        name = article_name(article["title"])
        pattern = re.compile(rf"\b(?:the\s+)?{re.escape(name)}\b", re.IGNORECASE)
        naming = [(i, qa) for i, p in enumerate(article["paragraphs"]) for qa in p["qas"]
                  if pattern.search(qa["question"])]
        for (index, qa), (_, first) in zip(naming[1:], naming, strict=False):
            follow_up = pattern.sub("it", qa["question"])
            answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
            rows.append(EvalRow(f"{qa['id']}-followup", follow_up, answers,
                                [squad_doc_id(article["title"], index)], history=(first["question"],)))
    return rows


def _golden(path: Path) -> list[EvalRow]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            rows.append(EvalRow(str(data["id"]), data["question"], list(data["answers"]), list(data["doc_ids"]),
                                history=tuple(data.get("history", ()))))
    return rows
