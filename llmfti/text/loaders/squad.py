"""SQuAD-format JSON: every paragraph becomes a document ``{title}#{paragraph_index}``.

Metadata keeps the article title and paragraph index, so eval suites can map a question's gold
paragraph to its chunks. A ``.json`` file in any other shape is quarantined.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from llmfti.errors import DocumentError
from llmfti.text.document import Document, Quarantined
from llmfti.text.loaders.base import LoadContext, read_text

_EXPECTED = 'SQuAD format: {"version": ..., "data": [{"title": ..., "paragraphs": [{"context": ...}]}]}'


def squad_doc_id(title: str, paragraph_index: int) -> str:
    return f"{title}#{paragraph_index}"


def load(path: Path, ctx: LoadContext) -> Iterator[Document | Quarantined]:
    try:
        data = json.loads(read_text(path, ctx))
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"{path.name} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            expected=_EXPECTED,
            fix="repair or re-download the file; its last indexed paragraphs are kept meanwhile",
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DocumentError(
            f"{path.name} is JSON but not SQuAD format",
            expected=_EXPECTED,
            fix="for one document per line use .jsonl with id/text fields",
        )
    for article in data["data"]:
        title = str(article.get("title", "untitled")) if isinstance(article, dict) else "untitled"
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            yield Quarantined(str(path), f"article {title!r} has no 'paragraphs' list; expected: {_EXPECTED}")
            continue
        for index, paragraph in enumerate(paragraphs):
            doc_id = squad_doc_id(title, index)
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            if not isinstance(context, str):
                yield Quarantined(str(path), f"{doc_id}: paragraph has no 'context' string", doc_id=doc_id)
                continue
            try:
                metadata = {"title": title.replace("_", " "), "article": title, "paragraph_index": index,
                            "format": "squad"}
                yield ctx.document(doc_id, context, path, metadata)
            except DocumentError as exc:
                yield Quarantined(str(path), str(exc), doc_id=doc_id)
