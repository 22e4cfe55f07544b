"""Instruction examples made from indexed documents by fixed templates (no model involved).

Each chunk of the vector index (read at one pinned index version) gives one example per template;
the chunk itself is the example's only passage, so the prompt has the same shape as at serving:

- ``about``: "What does the documentation say about <title>?" -> the chunk's first sentences (at
  most :data:`ABOUT_SENTENCES`, headings dropped) followed by the citation ``[1]``;
- ``continue``: 'Continue this passage from "<title>": "<first half>"' -> the rest of the chunk
  (split at the sentence boundary nearest the middle; chunks of one sentence are skipped).

Rows carry ``source = documents:<index>@v<version>:<template>`` and the chunk's own event time.
Only one tenant's chunks are used (default: the default tenant), so a model trained for everyone
does not learn a tenant's private documents unless asked to (``tenant="*"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from llmfti.config import Settings
from llmfti.errors import InvalidInputError, NotFoundError
from llmfti.filters import Filter, where_clause
from llmfti.lance import connect, table_names

ALL_TENANTS = "*"
ABOUT_SENTENCES = 3
MIN_CHARS = 40
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _sentences(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [s.strip() for s in _SENTENCE_END.split(" ".join(" ".join(lines).split())) if s.strip()]


def about(title: str, text: str) -> tuple[str, str] | None:
    sentences = _sentences(text)
    if not sentences:
        return None
    return f"What does the documentation say about {title}?", " ".join(sentences[:ABOUT_SENTENCES]) + " [1]"


def continuation(title: str, text: str) -> tuple[str, str] | None:
    sentences = _sentences(text)
    if len(sentences) < 2:
        return None
    total, split, running = sum(len(s) for s in sentences), 1, 0
    best = None
    for i, sentence in enumerate(sentences[:-1], 1):
        running += len(sentence)
        distance = abs(total / 2 - running)
        if best is None or distance < best:
            best, split = distance, i
    head, tail = " ".join(sentences[:split]), " ".join(sentences[split:])
    return f'Continue this passage from "{title}": "{head}"', tail


TEMPLATES: dict[str, Callable[[str, str], tuple[str, str] | None]] = {"about": about, "continue": continuation}


def document_rows(
    settings: Settings,
    *,
    templates: list[str],
    index: str | None = None,
    version: int | None = None,
    tenant: str | None = None,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, str]], dict[str, Any]]:
    """(rows, rejected, lineage) from the chunks of ``index`` at ``version`` (default: latest).

    Only the chunks of ``tenant`` (default: ``ingest.default_tenant``, the documents every key can
    read); ``"*"`` takes every tenant's chunks into one dataset.
    """
    from llmfti.index.vector_index import table_name

    unknown = [t for t in templates if t not in TEMPLATES]
    if unknown or not templates:
        raise InvalidInputError(f"unknown document templates {unknown}", expected=f"some of {sorted(TEMPLATES)}",
                                fix="pass --template about and/or --template continue")
    name = index or settings.index.name
    db = connect(settings)
    if table_name(name) not in table_names(db):
        raise NotFoundError(f"index {name!r} does not exist under {settings.data_dir}",
                            fix=f"build it first: llmfti index build PATH --index {name}")
    table = db.open_table(table_name(name))
    if version is not None:
        table = db.open_table(table_name(name), version=version)
    pinned = int(table.version)
    query = table.search().select(["chunk_id", "doc_id", "text", "title", "event_time"]).limit(None)
    if tenant != ALL_TENANTS:
        scope = tenant or settings.ingest.default_tenant
        query = query.where(where_clause([Filter("tenant", "eq", scope)], {"tenant": "string"}))
    chunks = sorted(query.to_arrow().to_pylist(), key=lambda c: c["chunk_id"])[:limit]
    rows, rejected = [], []
    for template in templates:
        source = f"documents:{name}@v{pinned}:{template}"
        for chunk in chunks:
            example_id = f"doc:{template}:{chunk['chunk_id']}"
            text = chunk["text"] or ""
            made = TEMPLATES[template](chunk["title"] or chunk["doc_id"], text) if len(text) >= MIN_CHARS else None
            if made is None:
                rejected.append({"example_id": example_id, "reason": f"chunk too short for the {template} template"})
                continue
            question, answer = made
            passage = {"chunk_id": chunk["chunk_id"], "doc_id": chunk["doc_id"], "text": text, "score": 1.0}
            rows.append({"example_id": example_id, "event_time": chunk["event_time"], "question": question,
                         "context": text, "doc_id": chunk["doc_id"], "passages": json.dumps([passage], sort_keys=True),
                         "answer": answer, "source": source})
    return rows, rejected, {"index": name, "index_version": pinned, "chunks": len(chunks), "templates": templates}
