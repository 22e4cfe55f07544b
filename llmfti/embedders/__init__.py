"""Embedders: turn text into vectors; one small module per provider behind one protocol.

``load_embedder(settings.embedder)`` returns the process-wide instance for that configuration
(models load once per process, never per request).
"""

from llmfti.embedders.base import Embedder, EmbedderInfo, load_embedder

__all__ = ["Embedder", "EmbedderInfo", "load_embedder"]
