"""``llmfti logs ...``: move inference-log records into LanceDB, see what is pending."""

from __future__ import annotations

import typer

from llmfti.cli.output import JsonOption, emit, reporting_errors

app = typer.Typer(help="The inference log: drain it from Redis (and spool files) into LanceDB.",
                  no_args_is_help=True)


@app.command("drain")
def drain(
    batch_size: int = typer.Option(5000, min=1, max=100_000, help="Records per LanceDB commit."),
    as_json: bool = JsonOption,
) -> None:
    """Store every pending record in the inference_log table, idempotently by request id."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.drain_logs import drain_logs

        emit(drain_logs(load_settings(), batch_size=batch_size), as_json)


@app.command("status")
def status(as_json: bool = JsonOption) -> None:
    """Records waiting in the Redis stream and in spool files, and rows already stored."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from llmfti.inference_log import spool_size
        from pipelines.drain_logs import open_log_table

        settings = load_settings()
        result = {
            "stream": settings.agent.log_stream,
            "spool_bytes": spool_size(settings.data_dir / "spool"),
            "table_rows": open_log_table(settings).count_rows(),
        }
        try:
            from llmfti.features.embedded_redis import redis_client

            result["stream_pending"] = int(redis_client(settings).xlen(settings.agent.log_stream))
        except Exception as exc:  # noqa: BLE001 - report, do not fail: the point is to see what is pending
            result["stream_pending"] = None
            result["stream_error"] = f"{type(exc).__name__}: {exc}"
        emit(result, as_json)
