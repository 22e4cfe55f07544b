"""``llmfti logs ...``: move inference-log records into LanceDB, see what is pending or dead-lettered."""

from __future__ import annotations

import typer

from llmfti.cli.output import JsonOption, emit, reporting_errors

app = typer.Typer(help="The inference and feedback logs: drain them from Redis (and spool files) into LanceDB.",
                  no_args_is_help=True)


@app.command("drain")
def drain(
    batch_size: int = typer.Option(5000, min=1, max=100_000, help="Records per LanceDB commit."),
    as_json: bool = JsonOption,
) -> None:
    """Store pending records in the inference_log (by request id) and feedback (by feedback id) tables."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.drain_logs import drain_logs

        emit(drain_logs(load_settings(), batch_size=batch_size), as_json)


@app.command("status")
def status(as_json: bool = JsonOption) -> None:
    """Records waiting in the Redis streams and in spool files, and rows already stored."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from llmfti.inference_log import spool_size
        from pipelines.drain_logs import feedback_kind, inference_log_kind, open_table

        settings = load_settings()
        result = {}
        for label, kind in (("inference_log", inference_log_kind(settings)), ("feedback", feedback_kind(settings))):
            part = {
                "stream": kind.stream,
                "spool_bytes": spool_size(settings.data_dir / "spool", kind.spool_name),
                "table_rows": open_table(settings, kind).count_rows(),
            }
            try:
                from llmfti.features.embedded_redis import redis_client

                part["stream_pending"] = int(redis_client(settings).xlen(kind.stream))
            except Exception as exc:  # noqa: BLE001 - report, do not fail: the point is to see what is pending
                part["stream_pending"] = None
                part["stream_error"] = f"{type(exc).__name__}: {exc}"
            result[label] = part
        from pipelines.drain_logs import open_dead_letter_table

        dead = {"table": settings.logs.dead_letter_table, "rows": open_dead_letter_table(settings).count_rows()}
        emit({**result["inference_log"], "feedback": result["feedback"], "dead_letter": dead}, as_json)


@app.command("dead-letter")
def dead_letter(
    limit: int = typer.Option(20, min=1, max=10_000, help="Most recent rows to show."),
    as_json: bool = JsonOption,
) -> None:
    """Unreadable log entries kept by the drain (never deleted): where each came from, why, its raw bytes."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.drain_logs import open_dead_letter_table

        settings = load_settings()
        rows = open_dead_letter_table(settings).to_arrow().sort_by([("dead_at", "descending")]).to_pylist()
        shown = [{**{k: v for k, v in row.items() if k != "raw"}, "dead_at": row["dead_at"].isoformat(),
                  "raw": row["raw"][:500].decode("utf-8", "backslashreplace"), "raw_bytes": len(row["raw"])}
                 for row in rows[:limit]]
        emit({"table": settings.logs.dead_letter_table, "rows": len(rows), "entries": shown}, as_json)
