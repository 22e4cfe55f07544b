"""What loaders produce: a document to index, or a quarantined input with its reason."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Document:
    """One document: a stable id, its cleaned text and metadata."""

    doc_id: str
    text: str
    source: str  # the path given to the build that produced this document
    event_time: datetime
    tenant: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return str(self.metadata.get("title") or self.doc_id)

    def fingerprint(self, salt: str) -> str:
        """Hash of everything that changes the chunks; ``salt`` carries the chunking config."""
        payload = json.dumps(
            [self.text, self.metadata, self.tenant, self.source, salt], sort_keys=True, ensure_ascii=False, default=str
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Quarantined:
    """An input that could not become a document; kept with the reason, never dropped."""

    path: str
    reason: str
    doc_id: str | None = None
    size_bytes: int | None = None
