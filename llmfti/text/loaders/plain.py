"""Plain text and markdown: the title is the first heading (or YAML front matter's title)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml

from llmfti.text.document import Document
from llmfti.text.loaders.base import LoadContext, read_text

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.DOTALL)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def load(path: Path, ctx: LoadContext) -> Iterator[Document]:
    text = read_text(path, ctx)
    metadata: dict[str, object] = {"path": ctx.default_doc_id, "format": path.suffix.lstrip(".").lower()}
    match = _FRONT_MATTER.match(text)
    if match:
        try:
            front = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            front = None
        if isinstance(front, dict):
            metadata.update({str(k): v for k, v in front.items() if isinstance(v, str | int | float | bool)})
            text = text[match.end():]
    text = _HTML_COMMENT.sub("", text)
    if "title" not in metadata:
        heading = _HEADING.search(text)
        metadata["title"] = heading.group(1) if heading else path.stem
    yield ctx.document(ctx.default_doc_id, text, path, metadata)
