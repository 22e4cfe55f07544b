"""HTML: visible text only; scripts, styles, navigation, headers and footers are boilerplate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from llmfti.text.document import Document
from llmfti.text.loaders.base import LoadContext, read_text

_BOILERPLATE_TAGS = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "template"]
_BLOCK_TAGS = ["p", "div", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "br", "section", "article", "pre"]


def load(path: Path, ctx: LoadContext) -> Iterator[Document]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(read_text(path, ctx), "html.parser")
    title = soup.title.get_text(strip=True) if soup.title else ""
    for tag in soup(_BOILERPLATE_TAGS):
        tag.decompose()
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    body = soup.body or soup
    text = body.get_text(" ")
    metadata = {"title": title or path.stem, "path": ctx.default_doc_id, "format": "html"}
    yield ctx.document(ctx.default_doc_id, text, path, metadata)
