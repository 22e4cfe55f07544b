"""``llmfti monitor``: the monitoring feature pipeline, its alerts, and the static dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors

ALERT_EXIT_CODE = 3
"""Exit code when at least one alert fired (1 is an error, 2 a usage error)."""


def monitor(
    window: str = typer.Option(None, "--window", help="Window length: 1h or 1d (default: monitoring.window)."),
    since: str = typer.Option(None, "--since", help="Recompute windows from this time (ISO-8601, or 24h / 7d "
                              "back from now). Default: from the last window already written."),
    reference: str = typer.Option(None, "--reference", help="Drift reference: 'first' or an ISO time inside the "
                                  "reference window (default: monitoring.reference)."),
    report: Path = typer.Option(None, "--report", help="Also write the operator's dashboard to this HTML file."),
    as_json: bool = JsonOption,
) -> None:
    """Read the inference log and feedback, upsert one row per window into the monitoring feature group,
    and evaluate alerts (exit code 3 when one fires)."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.monitor import parse_since, run_monitor

        settings = load_settings()
        result = run_monitor(settings, window=window, since=parse_since(since), reference=reference)
        payload = result.to_dict()
        if report is not None:
            from llmfti.monitoring.dashboard import render_dashboard

            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(render_dashboard(settings), encoding="utf-8")
            payload["report"] = str(report)
        emit(payload, as_json, _human)
    if result.alerts:
        raise typer.Exit(ALERT_EXIT_CODE)


def _human(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"monitoring ({result['window']} windows, reference {result['reference'] or 'none'})")
    for column in ("window", "requests", "errors", "fallback", "p95 ms", "emb. drift p", "top-score p",
                   "uncovered", "max PSI", "alerts"):
        table.add_column(column)
    for row in result["windows"]:
        table.add_row(row["window_id"], str(row["requests"]), _pct(row["error_rate"]), _pct(row["fallback_rate"]),
                      _num(row["latency_total_p95_ms"]), _num(row["embedding_drift_p"]),
                      _num(row["top_score_drift_p"]), _pct(row["out_of_coverage_share"]),
                      _num(row["user_feature_psi_max"]), ", ".join(row["alerts"]) or "-")
    out = console()
    out.print(table)
    for alert in result["alerts"]:
        out.print(f"[bold red]ALERT[/] {alert['window_id']} {alert['name']}: {alert['message']}", highlight=False)
    out.print(f"{len(result['windows'])} windows written to {result['group']} (data version "
              f"{result['data_version']}) in {result['seconds']} s; {result['fired']} alerts")
    if result.get("report"):
        out.print(f"dashboard: {result['report']}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
