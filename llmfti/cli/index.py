"""``llmfti index ...`` and ``llmfti search``: build, version and query the vector index."""

from __future__ import annotations

import typer

app = typer.Typer(help="Build, version, tag and roll back the document vector index.", no_args_is_help=True)


def search() -> None:
    """Search the index (dense, full-text or hybrid)."""
    raise NotImplementedError
