"""The operator's dashboard: one self-contained HTML page, plots drawn server-side by matplotlib as
inline SVG (no JavaScript, no build step, nothing fetched by the browser).

Sections: the monitoring rows over time (traffic, health rates, latency, drift p-values, coverage),
drift per user feature, eval history per prompt id and model version (the ``eval_runs`` table), and
a timeline of index versions and model alias moves with who, when and why. The same page is served
by the agent (``GET /dashboard``, admin key) and written by ``llmfti monitor --report PATH``.
"""

from __future__ import annotations

import html
import io
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llmfti.errors import MissingDependencyError
from llmfti.lance import connect, table_names

if TYPE_CHECKING:
    from llmfti.config import Settings

EVAL_RUNS_TABLE = "eval_runs"
INDEX_BUILDS_TABLE = "index_builds"
ALIAS_EVENTS_TABLE = "registry_alias_events"
_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 6px;
text-align:left}th{background:#f4f4f4}.alert{color:#b00;font-weight:600}.muted{color:#777}
figure{margin:.5em 0}svg{max-width:100%;height:auto}"""


def dashboard_data(settings: Settings) -> dict[str, Any]:
    """Everything the page shows, read from the stores (plain rows, JSON-friendly)."""
    from llmfti.errors import NotFoundError
    from llmfti.features.feature_group import FeatureGroup
    from llmfti.monitoring.group import SCHEMA_VERSION

    try:
        rows = FeatureGroup.open(settings, settings.monitoring.group, SCHEMA_VERSION).read().to_pylist()
    except NotFoundError:
        rows = []
    rows.sort(key=lambda r: (r["window"], r["window_start"]))
    db = connect(settings)
    names = set(table_names(db))

    def table_rows(name: str) -> list[dict[str, Any]]:
        return db.open_table(name).to_arrow().to_pylist() if name in names else []

    evals = []
    for row in table_rows(EVAL_RUNS_TABLE):
        summary = json.loads(row["summary"])
        evals.append({"at": row["created_at"], "suite": row["suite"], "passed": row["passed"],
                      "prompt_ids": summary.get("prompt_ids") or [], "model_version": summary.get("model_version"),
                      "metrics": {k: v for k, v in (summary.get("metrics") or {}).items()
                                  if isinstance(v, int | float) and v == v}})
    timeline = []
    for row in table_rows(INDEX_BUILDS_TABLE):
        summary = json.loads(row["summary"] or "{}")
        timeline.append({"at": row["at"], "what": f"index {row['index_name']}", "event": f"{row['kind']} -> "
                         f"v{row['version']}", "who": summary.get("by"), "why": summary.get("reason")})
    for row in table_rows(ALIAS_EVENTS_TABLE):
        source = "" if row["from_version"] is None else f" (from v{row['from_version']})"
        timeline.append({"at": row["at"], "what": f"model {row['name']}:{row['alias']}",
                         "event": f"{row['action']} -> v{row['version']}{source}", "who": row.get("actor"),
                         "why": row["reason"]})
    timeline.sort(key=lambda e: e["at"])
    return {"monitoring": rows, "evals": sorted(evals, key=lambda e: e["at"]), "timeline": timeline}


def render_dashboard(settings: Settings, *, now: datetime | None = None) -> str:
    """The dashboard as one HTML document."""
    plt = _pyplot()
    data = dashboard_data(settings)
    rows = data["monitoring"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>llmfti dashboard</title>"
             f"<style>{_CSS}</style></head><body><h1>llmfti operator dashboard</h1>"
             f"<p class='muted'>data_dir {html.escape(str(settings.data_dir))}; rendered "
             f"{html.escape((now or datetime.now().astimezone()).isoformat(timespec='seconds'))}</p>"]
    parts.append("<h2>Monitoring windows</h2>")
    if rows:
        parts.append(_alerts_table(rows))
        parts += _monitoring_figures(plt, rows, settings)
    else:
        parts.append("<p class='muted'>No monitoring rows yet: run <code>llmfti monitor</code>.</p>")
    parts.append("<h2>Drift per user feature</h2>")
    parts.append(_psi_section(plt, rows, settings))
    parts.append("<h2>Eval history per prompt id and model version</h2>")
    parts.append(_eval_section(plt, data["evals"]))
    parts.append("<h2>Index versions and alias moves</h2>")
    parts.append(_timeline_section(plt, data["timeline"]))
    parts.append("</body></html>")
    return "".join(parts)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError("the dashboard needs matplotlib", fix="pip install 'llmfti[monitor]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _svg(plt: Any, fig: Any, title: str) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prologue and doctype: inline in HTML
    return f"<figure aria-label='{html.escape(title)}'>{svg}</figure>"


def _series(plt: Any, rows: list[dict[str, Any]], fields: dict[str, str], title: str, *, ylabel: str,
            threshold: float | None = None, log: bool = False) -> str:
    fig, ax = plt.subplots(figsize=(10, 2.6))
    times = [r["window_start"] for r in rows]
    for field, label in fields.items():
        values = [r.get(field) for r in rows]
        ax.plot(times, [float("nan") if v is None else v for v in values], marker="o", markersize=3, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="#b00", linestyle="--", linewidth=1, label=f"alert threshold {threshold:g}")
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _svg(plt, fig, title)


def _monitoring_figures(plt: Any, rows: list[dict[str, Any]], settings: Settings) -> list[str]:
    config = settings.monitoring
    figures = []
    for window in sorted({r["window"] for r in rows}):
        mine = [r for r in rows if r["window"] == window]
        figures += [
            f"<h3>{html.escape(window)} windows</h3>",
            _series(plt, mine, {"requests": "requests"}, "Requests per window", ylabel="requests"),
            _series(plt, mine, {"error_rate": "errors", "fallback_rate": "fallback", "degraded_rate": "degraded",
                                "no_answer_rate": "no answer", "negative_feedback_share": "negative feedback"},
                    "Health rates", ylabel="share"),
            _series(plt, mine, {"latency_total_p50_ms": "p50", "latency_total_p95_ms": "p95",
                                "latency_total_p99_ms": "p99"}, "End-to-end latency", ylabel="ms",
                    threshold=config.latency_p95_ms_max),
            _series(plt, mine, {"embedding_drift_p": "query embeddings (MMD)", "top_score_drift_p": "top score (KS)"},
                    "Drift p-values vs the reference (lower = more drift)", ylabel="p-value",
                    threshold=config.drift_p_value, log=True),
            _series(plt, mine, {"out_of_coverage_share": "out of coverage", "feedback_rate": "feedback rate",
                                "citations_per_answer": "citations per answer"},
                    "Coverage and answers", ylabel="share / count", threshold=config.out_of_coverage_max),
        ]
    return figures


def _alerts_table(rows: list[dict[str, Any]]) -> str:
    head = ("<table><tr><th>window</th><th>requests</th><th>errors</th><th>p95 ms</th><th>models</th>"
            "<th>prompts</th><th>index</th><th>reference</th><th>alerts</th></tr>")
    body = []
    for r in rows[-24:]:
        alerts = ", ".join(r["alerts"] or [])
        body.append(
            f"<tr><td>{_e(r['window_id'])}</td><td>{r['requests']}</td><td>{_pct(r['error_rate'])}</td>"
            f"<td>{_num(r['latency_total_p95_ms'])}</td><td>{_e(', '.join(r['model_versions'] or []))}</td>"
            f"<td>{_e(', '.join(r['prompt_ids'] or []))}</td><td>{_e(', '.join(r['index_versions'] or []))}</td>"
            f"<td>{_e(r['reference'])}</td><td class='{'alert' if alerts else 'muted'}'>"
            f"{_e(alerts or 'none')}</td></tr>")
    return head + "".join(body) + "</table>"


def _psi_section(plt: Any, rows: list[dict[str, Any]], settings: Settings) -> str:
    measured = [(r, json.loads(r["user_feature_psi"] or "{}")) for r in rows]
    measured = [(r, psi) for r, psi in measured if psi]
    if not measured:
        return "<p class='muted'>No user-feature drift measured yet (no logged user features).</p>"
    features = sorted({f for _, psi in measured for f in psi})
    fig, ax = plt.subplots(figsize=(10, 3))
    times = [r["window_start"] for r, _ in measured]
    for feature in features:
        ax.plot(times, [psi.get(feature, float("nan")) for _, psi in measured], marker="o", markersize=3,
                label=feature)
    ax.axhline(settings.monitoring.psi_max, color="#b00", linestyle="--", linewidth=1, label="alert threshold")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylabel("PSI")
    ax.set_title(f"PSI per user feature vs {measured[-1][0]['user_feature_reference']}", fontsize=10)
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    latest_row, latest = measured[-1]
    table = "".join(f"<tr><td>{_e(f)}</td><td class='{'alert' if v > settings.monitoring.psi_max else ''}'>"
                    f"{v:.3f}</td></tr>" for f, v in sorted(latest.items(), key=lambda kv: -kv[1]))
    return (_svg(plt, fig, "PSI per user feature")
            + f"<p>Latest window {_e(latest_row['window_id'])}:</p><table><tr><th>feature</th><th>PSI</th></tr>"
            + table + "</table>")


def _eval_section(plt: Any, evals: list[dict[str, Any]]) -> str:
    if not evals:
        return "<p class='muted'>No eval runs recorded yet (<code>llmfti eval run</code>).</p>"
    metrics = sorted({m for e in evals for m in e["metrics"]})[:8]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(10, 1.8 * len(metrics) + 0.6), squeeze=False, sharex=True)
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        series: dict[str, list[tuple[datetime, float]]] = {}
        for e in evals:
            if metric in e["metrics"]:
                key = f"{','.join(e['prompt_ids']) or '?'} | {e['model_version']}"
                series.setdefault(key, []).append((e["at"], e["metrics"][metric]))
        for key, points in sorted(series.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=key)
        ax.set_ylabel(metric, fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, title="prompt id | model version", title_fontsize=7)
    axes[0, 0].set_title("Eval metrics per run", fontsize=10)
    fig.autofmt_xdate()
    rows = "".join(f"<tr><td>{_e(e['at'].isoformat(timespec='seconds'))}</td><td>{_e(e['suite'])}</td>"
                   f"<td>{_e(', '.join(e['prompt_ids']))}</td><td>{_e(e['model_version'])}</td>"
                   f"<td>{'pass' if e['passed'] else 'fail' if e['passed'] is False else '-'}</td></tr>"
                   for e in evals[-20:])
    return (_svg(plt, fig, "Eval history") + "<table><tr><th>when</th><th>suite</th><th>prompt ids</th>"
            "<th>model version</th><th>gate</th></tr>" + rows + "</table>")


def _timeline_section(plt: Any, timeline: list[dict[str, Any]]) -> str:
    if not timeline:
        return "<p class='muted'>No index builds or alias moves recorded yet.</p>"
    lanes = sorted({e["what"] for e in timeline})
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(lanes) + 1.2))
    for lane_number, lane in enumerate(lanes):
        events = [e for e in timeline if e["what"] == lane]
        ax.scatter([e["at"] for e in events], [lane_number] * len(events), s=25)
        for e in events:
            ax.annotate(e["event"].split(" (")[0].split("-> ")[-1], (e["at"], lane_number), fontsize=7,
                        xytext=(2, 4), textcoords="offset points")
    ax.set_yticks(range(len(lanes)), lanes, fontsize=8)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.set_title("Index versions and alias moves", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.autofmt_xdate()
    rows = "".join(f"<tr><td>{_e(e['at'].isoformat(timespec='seconds'))}</td><td>{_e(e['what'])}</td>"
                   f"<td>{_e(e['event'])}</td><td>{_e(e['who'] or 'not recorded')}</td>"
                   f"<td>{_e(e['why'] or '-')}</td></tr>" for e in reversed(timeline[-40:]))
    return (_svg(plt, fig, "Timeline") + "<table><tr><th>when</th><th>what</th><th>event</th><th>who</th>"
            "<th>why</th></tr>" + rows + "</table>")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
