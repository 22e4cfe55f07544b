"""Entry point of the ``llmfti`` command; sub-commands live one module per noun."""

from __future__ import annotations

import typer

from llmfti.cli import features as features_cmd
from llmfti.cli import index as index_cmd

app = typer.Typer(
    name="llmfti",
    help="llmfti: feature pipelines, training and an OpenAI-compatible RAG service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(index_cmd.app, name="index")
app.add_typer(features_cmd.app, name="features")
app.command("search")(index_cmd.search)


def run() -> None:
    app()


if __name__ == "__main__":
    run()
