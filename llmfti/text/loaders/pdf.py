"""PDF through pypdf: the text layer of every page, page breaks kept as blank lines."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from llmfti.errors import DocumentError
from llmfti.text.document import Document
from llmfti.text.loaders.base import LoadContext, read_bytes


def load(path: Path, ctx: LoadContext) -> Iterator[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    data = read_bytes(path, ctx)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise DocumentError(
                f"{path.name} is an encrypted PDF", fix="save an unencrypted copy and index that"
            )
        pages = [page.extract_text() or "" for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or path.stem
    except (PyPdfError, ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as exc:
        # pypdf raises more than its own errors on damaged files
        raise DocumentError(f"{path.name} is not a readable PDF: {exc or type(exc).__name__}",
                            fix="re-export the PDF") from None
    yield ctx.document(
        ctx.default_doc_id,
        "\n\n".join(pages),
        path,
        {"title": str(title), "path": ctx.default_doc_id, "format": "pdf", "pages": len(pages)},
    )
