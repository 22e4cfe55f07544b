"""An HTML report per run: metric table, gate verdict, per-metric history plots, per-row drill-down."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any


def write_report(folder: Path, run: dict[str, Any], history: list[dict[str, Any]], gate: dict[str, Any] | None) -> Path:
    """Write ``report.html`` into the run's folder; ``history`` holds earlier run summaries of the suite."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{_fmt(value)}</td><td>{run['unmeasured'].get(name, 0)}</td>"
        f"<td>{_sparkline([h['metrics'].get(name) for h in history] + [value])}</td></tr>"
        for name, value in run["metrics"].items()
    )
    verdict = ""
    if gate is not None:
        failures = "".join(
            f"<li>{esc(f['metric'])}: {_fmt(f['value'])} vs {esc(str(f['rule']))} {_fmt(f['limit'])}</li>"
            for f in gate["failures"])
        notes = "".join(f"<li>{esc(n)}</li>" for n in gate["notes"])
        verdict = (f"<h2>Gate: {'PASSED' if gate['passed'] else 'FAILED'}</h2><ul>{failures}{notes}</ul>")
    details = "".join(
        f"<details><summary>{esc(r['id'])}: {esc(r['question'])} "
        f"<small>{' '.join(f'{k}={_fmt(v)}' for k, v in r['scores'].items())}</small></summary>"
        f"<p><b>answer</b>: {esc(r['answer'])}</p><p><b>references</b>: {esc('; '.join(r['answers']))}</p>"
        f"<p><b>gold docs</b>: {esc(', '.join(r['reference_doc_ids']))}<br><b>retrieved</b>: "
        f"{esc(', '.join(r['retrieved_doc_ids']))}</p></details>"
        for r in run["per_row"]
    )
    meta = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(run[k]))}</td></tr>" for k in (
        "run_id", "suite", "created_at", "rows", "dataset_hash", "prompt_ids", "model_version", "generator_backend",
        "index_name", "index_version", "retrieval_mode", "git_commit", "durations_s"))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>eval {esc(run['run_id'])}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:auto}}td,th{{padding:2px 8px;text-align:left}}
details{{border-bottom:1px solid #ddd;padding:4px}}</style></head><body>
<h1>Eval run {esc(run['run_id'])}</h1><table>{meta}</table>{verdict}
<h2>Metrics</h2><table><tr><th>metric</th><th>value</th><th>unmeasured</th><th>history</th></tr>{rows}</table>
<h2>Rows</h2>{details}</body></html>"""
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def _sparkline(values: list[Any], width: int = 160, height: int = 30) -> str:
    """An inline SVG line of a metric over the suite's runs (the last point is this run)."""
    points = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    if len(points) < 2:
        return f"<svg width='{width}' height='{height}'></svg>"
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    step = width / (len(points) - 1)
    coords = " ".join(f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}"
                      for i, v in enumerate(points))
    return (f"<svg width='{width}' height='{height}'><polyline fill='none' stroke='#36c' stroke-width='1.5' "
            f"points='{coords}'/></svg>")
