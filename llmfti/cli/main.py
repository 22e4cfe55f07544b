"""Entry point of the ``llmfti`` command; sub-commands live one module per noun."""

from __future__ import annotations

import typer

from llmfti.cli import dataset as dataset_cmd
from llmfti.cli import embedder as embedder_cmd
from llmfti.cli import eval as eval_cmd
from llmfti.cli import features as features_cmd
from llmfti.cli import index as index_cmd
from llmfti.cli import logs as logs_cmd
from llmfti.cli import monitor as monitor_cmd
from llmfti.cli import registry as registry_cmd
from llmfti.cli import serve as serve_cmd
from llmfti.cli import train as train_cmd
from llmfti.cli import users as users_cmd

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
app.command("train")(train_cmd.train)
app.command("train-embedder")(embedder_cmd.train)
app.add_typer(embedder_cmd.app, name="embedder")
app.add_typer(dataset_cmd.app, name="dataset")
app.add_typer(registry_cmd.app, name="registry")
app.command("serve")(serve_cmd.serve)
app.add_typer(logs_cmd.app, name="logs")
app.add_typer(eval_cmd.app, name="eval")
app.command("monitor")(monitor_cmd.monitor)
app.add_typer(users_cmd.app, name="users")


def run() -> None:
    import signal
    import sys

    def terminate(signum: int, frame: object) -> None:
        sys.exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):  # exit like Ctrl+C: cleanup runs, the embedded Redis stops
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, terminate)
    try:
        app()
    finally:
        redis = sys.modules.get("llmfti.features.embedded_redis")  # not imported: no server was used
        if redis is not None:
            redis.stop_unused_servers()  # unless another llmfti process still uses it


if __name__ == "__main__":
    run()
