"""JSON Lines: one document per line with ``id`` and ``text``, optional ``metadata`` and fields.

A bad line is quarantined on its own (with its line number); the other lines still load.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from llmfti.errors import DocumentError
from llmfti.text.document import Document, Quarantined
from llmfti.text.loaders.base import LoadContext, decode_utf8, read_bytes

_RESERVED = {"id", "text", "metadata"}


def load(path: Path, ctx: LoadContext) -> Iterator[Document | Quarantined]:
    """Each line decoded on its own: a bad byte or bad JSON loses only its line."""
    seen: set[str] = set()
    data = read_bytes(path, ctx)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            line = decode_utf8(raw, where)
            yield _document(json.loads(line), where, path, ctx, seen)
        except json.JSONDecodeError as exc:
            yield Quarantined(str(path), f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); "
                              "fix: one JSON object per line", line=number)
        except DocumentError as exc:
            yield Quarantined(str(path), f"{where}: {exc}" if not str(exc).startswith(where) else str(exc),
                              line=number)


def _document(row: object, where: str, path: Path, ctx: LoadContext, seen: set[str]) -> Document:
    expected = 'an object like {"id": "a1", "text": "...", "metadata": {...}}'
    if not isinstance(row, dict):
        raise DocumentError(f"a {type(row).__name__}, not an object", expected=expected)
    doc_id, text = row.get("id"), row.get("text")
    if not isinstance(doc_id, str | int) or str(doc_id).strip() == "":
        raise DocumentError("missing or empty 'id'", expected=expected, fix="give every line a unique id")
    if not isinstance(text, str):
        raise DocumentError(f"'text' of id {doc_id!r} is missing or not a string", expected=expected)
    doc_id = str(doc_id)
    if doc_id in seen:
        raise DocumentError(f"duplicate id {doc_id!r}", fix="ids must be unique within the file")
    seen.add(doc_id)
    metadata = row.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DocumentError(f"'metadata' of id {doc_id!r} must be an object")
    extra = {k: v for k, v in row.items() if k not in _RESERVED}
    return ctx.document(doc_id, text, path, {**metadata, **extra})
