"""The ``monitoring`` feature group: one row per (window length, window start), and its alerts.

Rows are upserted on (``window_id``, ``window_start``), so re-running the monitor over a window
replaces its row in a new data version; every earlier computation stays readable by time travel.
Dict-valued statistics (latency per stage, PSI per user feature) are JSON text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from llmfti.features.spec import Feature, FeatureGroupSpec

if TYPE_CHECKING:
    from llmfti.config import MonitoringSettings

SCHEMA_VERSION = 1


def _f(name: str, type_: str, description: str) -> Feature:
    return Feature(name=name, type=type_, description=description)  # type: ignore[arg-type]


def monitoring_spec(name: str = "monitoring") -> FeatureGroupSpec:
    return FeatureGroupSpec(
        name=name,
        version=SCHEMA_VERSION,
        description="Traffic, health and drift of the served agent, one row per window (llmfti monitor).",
        key="window_id",
        event_time="window_start",
        features=[
            _f("window", "string", "Window length: 1h or 1d"),
            _f("window_end", "timestamp", "End of the window (exclusive)"),
            _f("requests", "int64", "Logged requests in the window"),
            _f("error_rate", "float64", "Share of requests with an error or a status >= 400"),
            _f("fallback_rate", "float64", "Share answered by the fallback generator"),
            _f("degraded_rate", "float64", "Share served without a dependency (Redis, features...)"),
            _f("no_answer_rate", "float64", "Share of successful requests whose answer is empty or 'no answer'"),
            _f("latency_total_p50_ms", "float64", "Median end-to-end latency (ms)"),
            _f("latency_total_p95_ms", "float64", "95th percentile end-to-end latency (ms)"),
            _f("latency_total_p99_ms", "float64", "99th percentile end-to-end latency (ms)"),
            _f("latency_stages_ms", "string", "JSON: stage -> {p50, p95, p99} from the logged timings_ms"),
            _f("citations_per_answer", "float64", "Mean distinct [n] citations in successful answers"),
            _f("feedback_count", "int64", "Feedback records on this window's requests"),
            _f("feedback_rate", "float64", "Share of requests that got feedback"),
            _f("negative_feedback_share", "float64", "Share of feedback records rated -1"),
            _f("prompt_ids", "list<string>", "Prompt ids in use"),
            _f("model_versions", "list<string>", "Model versions in use"),
            _f("index_versions", "list<string>", "Index versions in use (name@version)"),
            _f("reference", "string", "What drift was measured against (window id, or 'none')"),
            _f("queries_embedded", "int64", "Queries of this window re-embedded for the drift tests"),
            _f("embedding_mmd", "float64", "MMD^2 of query embeddings vs the reference (RBF kernel)"),
            _f("embedding_drift_p", "float64", "Permutation p-value of embedding_mmd"),
            _f("top_score_mean", "float64", "Mean best cosine score of a query against the index"),
            _f("top_score_ks", "float64", "KS statistic of best scores vs the reference"),
            _f("top_score_drift_p", "float64", "KS p-value of best scores vs the reference"),
            _f("coverage_threshold", "float64", "Best score below which a query is out of coverage"),
            _f("out_of_coverage_share", "float64", "Share of queries whose best score is below the threshold"),
            _f("user_feature_reference", "string", "Where user-feature drift was measured against"),
            _f("user_feature_psi", "string", "JSON: user feature -> PSI vs the reference"),
            _f("user_feature_psi_max", "float64", "Largest PSI over user features"),
            _f("user_feature_drift_p", "string", "JSON: user feature -> chi-square p-value on the PSI bins"),
            _f("alerts", "list<string>", "Alerts that fired for this window"),
        ],
    )


@dataclass(frozen=True)
class Alert:
    """One fired alert: which statistic passed which threshold in which window."""

    name: str
    window_id: str
    value: float
    threshold: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# (alert name, row field, setting name, direction): '>' fires above the threshold, '<' below it.
RULES: tuple[tuple[str, str, str, str], ...] = (
    ("error_rate", "error_rate", "error_rate_max", ">"),
    ("fallback_rate", "fallback_rate", "fallback_rate_max", ">"),
    ("degraded_rate", "degraded_rate", "degraded_rate_max", ">"),
    ("no_answer_rate", "no_answer_rate", "no_answer_rate_max", ">"),
    ("latency_p95", "latency_total_p95_ms", "latency_p95_ms_max", ">"),
    ("negative_feedback", "negative_feedback_share", "negative_feedback_max", ">"),
    ("query_embedding_drift", "embedding_drift_p", "drift_p_value", "<"),
    ("top_score_drift", "top_score_drift_p", "drift_p_value", "<"),
    ("out_of_coverage", "out_of_coverage_share", "out_of_coverage_max", ">"),
)


def evaluate_alerts(row: dict[str, Any], settings: MonitoringSettings) -> list[Alert]:
    """Alerts of one monitoring row (missing statistics never fire)."""
    alerts = []
    for name, column, setting, direction in RULES:
        value, threshold = row.get(column), float(getattr(settings, setting))
        if value is None or value != value:  # None or NaN: not measured
            continue
        if (value > threshold) if direction == ">" else (value < threshold):
            word = "above" if direction == ">" else "below"
            alerts.append(Alert(name, row["window_id"], float(value), threshold,
                                f"{column}={value:.4g} is {word} monitoring.{setting}={threshold:g}"))
    p_values = json.loads(row.get("user_feature_drift_p") or "{}")
    for feature, value in sorted(json.loads(row.get("user_feature_psi") or "{}").items()):
        p_value = p_values.get(feature, 0.0)
        if value is not None and value > settings.psi_max and p_value < settings.drift_p_value:
            alerts.append(Alert(f"user_feature_drift:{feature}", row["window_id"], float(value), settings.psi_max,
                                f"PSI of user feature {feature}={value:.3f} is above monitoring.psi_max="
                                f"{settings.psi_max:g} (chi-square p={p_value:.2g} < {settings.drift_p_value:g})"))
    return alerts


GAUGES: tuple[str, ...] = (
    "requests", "error_rate", "fallback_rate", "degraded_rate", "no_answer_rate", "latency_total_p95_ms",
    "citations_per_answer", "feedback_rate", "negative_feedback_share", "embedding_mmd", "embedding_drift_p",
    "top_score_drift_p", "out_of_coverage_share", "user_feature_psi_max",
)
"""Row fields the agent's /metrics exposes as ``llmfti_monitoring_<field>`` gauges."""


def latest_row(settings: Any) -> dict[str, Any] | None:
    """The most recent window's row of the monitoring group, or None when there is none yet."""
    from llmfti.errors import NotFoundError
    from llmfti.features.feature_group import FeatureGroup

    try:
        group = FeatureGroup.open(settings, settings.monitoring.group, SCHEMA_VERSION)
    except NotFoundError:
        return None
    rows = group.read().to_pylist()
    return max(rows, key=lambda r: (r["window_start"], r["ingested_at"])) if rows else None
