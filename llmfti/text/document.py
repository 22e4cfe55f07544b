"""What loaders produce: a document to index, or a quarantined input with its reason."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def document_key(tenant: str, doc_id: str) -> str:
    """A document's identity as one string: (tenant, doc id). Chunk ids derive from it, so two
    tenants' documents with the same id never share a chunk id."""
    return f"{tenant}\x00{doc_id}"


@dataclass(frozen=True)
class Document:
    """One document: a stable id, its cleaned text and metadata. Identity is ``(tenant, doc_id)``."""

    doc_id: str
    text: str
    source: str  # the path given to the build that produced this document
    event_time: datetime
    tenant: str
    metadata: dict[str, Any] = field(default_factory=dict)
    origin: str = ""  # the file it was read from (absolute path): a file that fails to load keeps its documents

    @property
    def identity(self) -> tuple[str, str]:
        return (self.tenant, self.doc_id)

    @property
    def key(self) -> str:
        return document_key(self.tenant, self.doc_id)

    @property
    def title(self) -> str:
        return str(self.metadata.get("title") or self.doc_id)

    def fingerprint(self, salt: str) -> str:
        """Hash of everything that changes the stored rows; ``salt`` carries the chunking config."""
        payload = json.dumps(
            [self.text, self.metadata, self.tenant, self.source, self.origin, salt],
            sort_keys=True, ensure_ascii=False, default=str,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Quarantined:
    """An input that could not become a document; kept with the reason, never dropped.

    ``origin`` is the file it came from (absolute path); ``line`` the line number for
    line-based formats. A file with any quarantined part keeps the indexed documents that
    this load could not read (they are never deleted on a partial or failed load).
    """

    path: str
    reason: str
    doc_id: str | None = None
    size_bytes: int | None = None
    origin: str = ""
    line: int | None = None
