from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedder():
    """The real default embedder (all-MiniLM-L6-v2), loaded once for the whole session."""
    from llmfti.config import load_settings
    from llmfti.embedders import load_embedder

    return load_embedder(load_settings().embedder)
