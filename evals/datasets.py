"""Eval datasets: a seeded SQuAD sample (read from ../shared, never copied) and our golden sets.

A suite whose index holds SQuAD articles out (``index.hold_out_articles``) builds its index from a
copy of the source without them (:func:`index_sources`, under the data dir), asks its answerable
questions about the articles it holds, and adds questions about the held-out ones as unanswerable
rows (``answerable=False``: the right answer is "I don't know").
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from evals.suite import Suite
from llmfti.errors import ConfigError, NotFoundError


@dataclass(frozen=True)
class EvalRow:
    id: str
    question: str
    answers: list[str]  # acceptable references; the first is "the" reference
    reference_doc_ids: list[str]  # gold documents; their chunk ids are the reference contexts
    history: tuple[str, ...] = ()  # earlier user messages of the conversation (follow-up questions)
    group: str = ""  # what the row is about (the SQuAD article): rows are split into folds by it
    answerable: bool = True  # False: about an article the index holds out; the right answer is "I don't know"


def load_rows(suite: Suite, *, full: bool = False) -> list[EvalRow]:
    spec = suite.dataset
    path = suite.resolve(spec.path)
    if not path.is_file():
        raise NotFoundError(f"dataset of suite {suite.name!r} not found at {path}",
                            fix="for the squad suite, ../shared/data/squad-v1.1-dev/ must sit beside the repo")
    loaders = {"squad": _squad, "squad_followups": _squad_followups, "golden": _golden}
    rows = loaders[spec.kind](path)
    held_out = held_out_articles(suite)
    answerable = [r for r in rows if r.group not in held_out]
    answerable = answerable if full else _sample(answerable, spec.sample, spec.seed)
    unanswerable = [replace(r, answerable=False) for r in rows if r.group in held_out]
    if spec.unanswerable == 0:
        return answerable
    return answerable + (unanswerable if full else _sample(unanswerable, spec.unanswerable, spec.seed))


def held_out_articles(suite: Suite) -> set[str]:
    """Titles of the articles the suite's index leaves out (a seeded sample of its source's articles)."""
    if not suite.index.hold_out_articles:
        return set()
    titles = sorted({a["title"] for a in _squad_articles(suite.resolve(suite.index.sources[0]))})
    if suite.index.hold_out_articles >= len(titles):
        raise ConfigError(f"suite {suite.name!r} holds out {suite.index.hold_out_articles} articles of {len(titles)}",
                          expected=f"fewer than {len(titles)}", fix="lower index.hold_out_articles")
    return set(random.Random(suite.index.hold_out_seed).sample(titles, suite.index.hold_out_articles))


def index_sources(suite: Suite, data_dir: Path) -> list[Path]:
    """What the suite's index is built from: its sources, or, when it holds articles out, a copy of its
    SQuAD source without them (written once under ``data_dir/evals/sources``; the name says which)."""
    sources = [suite.resolve(s) for s in suite.index.sources]
    held_out = held_out_articles(suite)
    if not held_out:
        return sources
    data = json.loads(sources[0].read_text(encoding="utf-8"))
    data["data"] = [a for a in data["data"] if a["title"] not in held_out]
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()[:12]
    path = data_dir / "evals" / "sources" / f"{sources[0].stem}-without-{len(held_out)}-articles-{digest}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        partial.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        partial.replace(path)  # atomic: a concurrent or interrupted run never sees half a file
    return [path]


def dataset_hash(rows: list[EvalRow]) -> str:
    # a row without history hashes as before the field existed, so recorded baselines keep their hash
    defaults = {"history": (), "group": "", "answerable": True}
    records = [{k: v for k, v in asdict(r).items() if k not in defaults or v != defaults[k]} for r in rows]
    payload = json.dumps(records, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _sample(rows: list[EvalRow], size: int | None, seed: int) -> list[EvalRow]:
    if size is None or size >= len(rows):
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), size))
    return [rows[i] for i in picked]


def _squad_articles(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["data"]


def _squad(path: Path) -> list[EvalRow]:
    from llmfti.text.loaders.squad import squad_doc_id

    rows = []
    for article in _squad_articles(path):
        for index, paragraph in enumerate(article["paragraphs"]):
            doc_id = squad_doc_id(article["title"], index)
            for qa in paragraph["qas"]:
                answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
                rows.append(EvalRow(qa["id"], qa["question"], answers, [doc_id], group=article["title"]))
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
    for article in _squad_articles(path):
        name = article_name(article["title"])
        pattern = re.compile(rf"\b(?:the\s+)?{re.escape(name)}\b", re.IGNORECASE)
        naming = [(i, qa) for i, p in enumerate(article["paragraphs"]) for qa in p["qas"]
                  if pattern.search(qa["question"])]
        for (index, qa), (_, first) in zip(naming[1:], naming, strict=False):
            follow_up = pattern.sub("it", qa["question"])
            answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))
            rows.append(EvalRow(f"{qa['id']}-followup", follow_up, answers,
                                [squad_doc_id(article["title"], index)], history=(first["question"],),
                                group=article["title"]))
    return rows


def _golden(path: Path) -> list[EvalRow]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            rows.append(EvalRow(str(data["id"]), data["question"], list(data["answers"]), list(data["doc_ids"]),
                                history=tuple(data.get("history", ()))))
    return rows
